"""`peftlab eval`, top to bottom: load base (+ adapter), generate for the test rows in batches, score, write."""

from __future__ import annotations

from pathlib import Path
from typing import Any, Callable

from peftlab.artifacts import adapter_folder, check_output
from peftlab.config import RunConfig
from peftlab.data.readers import read_rows
from peftlab.evaluate.predictions import METRICS, prediction_records, score_generations, write_outputs
from peftlab.evaluate.references import eval_examples
from peftlab.evaluate.rouge import MULTI_REFERENCE
from peftlab.generation import GenerationSettings, encode_prompts, load_for_generation


def evaluate(config: RunConfig, data: str, output: str | None, adapter: str | None = None,
             settings: GenerationSettings | None = None, include_base: bool = True,
             say: Callable[[str], None] = lambda text: None) -> dict[str, Any]:
    """Generate for every test row and score; with an adapter, also the base (adapter disabled) unless told not to."""
    settings = settings or GenerationSettings()
    settings.check()
    if output:  # an earlier evaluation there is replaced; anything else is refused
        check_output(output, True, "evaluation", lambda folder: (folder / METRICS).is_file())
    examples = eval_examples(read_rows(data, config.data.max_row_bytes), config.data)  # names a row without its reference column
    model = config.model
    loaded = load_for_generation(model.name, model.dtype, adapter, model.attn_implementation)
    prompts, chat = encode_prompts(loaded, [e.prompt for e in examples], config.data.chat_template)
    say(f"eval: {len(examples)} rows of {data} on {loaded.spec} ({loaded.dtype})" + (f" + adapter {adapter}" if adapter else ""))

    runs: dict[str, tuple] = {}
    if adapter and include_base:
        if hasattr(loaded.model, "disable_adapter"):  # a PEFT model: the base is one switch away
            with loaded.model.disable_adapter():
                runs["base"] = score_generations("base", loaded, prompts, examples, settings, say)
        else:  # a result that replaced or changed weights (full, freeze, bitfit, bottleneck): load the base
            base = load_for_generation(model.name, model.dtype, attn_implementation=model.attn_implementation)
            runs["base"] = score_generations("base", base, prompts, examples, settings, say)
    runs["tuned" if adapter else "base"] = score_generations("tuned" if adapter else "base", loaded, prompts, examples, settings, say)

    metrics = {
        "data": data, "rows": len(examples), "model": loaded.spec, "model_path": loaded.path, "dtype": loaded.dtype,
        "adapter": str(adapter_folder(adapter)) if adapter else None,
        "template": config.data.template, "chat_template": chat,
        "generation": {"max_new_tokens": settings.max_new_tokens, "num_beams": settings.num_beams, "batch_size": settings.batch_size},
        "multi_reference": MULTI_REFERENCE,
        "results": {key: summary for key, (_, _, summary) in runs.items()},
    }
    records = prediction_records(examples, {key: (texts, scores) for key, (texts, scores, _) in runs.items()})
    if output:
        write_outputs(Path(output), metrics, records)
    return {**metrics, "records": records}


