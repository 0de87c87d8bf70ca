"""`peftlab eval`, top to bottom: load base (+ adapter), generate for the test rows in batches, score, write."""

from __future__ import annotations

from pathlib import Path
from typing import Any, Callable

from peftlab import outputs
from peftlab.artifacts import adapter_folder
from peftlab.config import RunConfig
from peftlab.data.readers import read_rows
from peftlab.evaluate.predictions import EVALUATION, prediction_records, score_generations, write_outputs
from peftlab.evaluate import held_out
from peftlab.evaluate.references import eval_examples
from peftlab.errors import PeftlabError
from peftlab.evaluate.metrics import Metric, check_references, describe
from peftlab.evaluate.metrics.rouge import ROUGE
from peftlab.generation import GenerationSettings, encode_prompts, load_for_generation


def evaluate(config: RunConfig, data: str, output: str | None, adapter: str | None = None,
             settings: GenerationSettings | None = None, include_base: bool = True,
             say: Callable[[str], None] = lambda text: None, overwrite: bool = False, metrics: list[Metric] | None = None,
             base_answers: list[str] | None = None) -> dict[str, Any]:
    """Generate for every test row and score by `metrics` (default ROUGE); with an adapter, also the base (adapter disabled) unless told not to."""
    settings = settings or GenerationSettings()
    settings.check()
    chosen, metrics = metrics, metrics or [ROUGE]
    if any(metric.name == "judge-pairwise" for metric in metrics) and not (adapter and (include_base or base_answers)):
        raise PeftlabError("--metric judge-pairwise compares the tuned answers with the base model's: give --adapter "
                           "and drop --skip-base")
    if output:  # an earlier evaluation there is replaced with --overwrite; anything else is refused
        sources = outputs.inputs(data=data, model=config.model.name, adapter=adapter_folder(adapter) if adapter else None)
        outputs.check_folder(output, overwrite, EVALUATION, sources)
    examples = eval_examples(read_rows(data, config.data.max_row_bytes), config.data)  # names a row without its reference column
    if held_out.is_text(examples):
        if chosen:  # a metric the user named would silently not be computed
            names = ",".join(metric.name for metric in chosen)
            raise PeftlabError(f"{data}: text rows have no reference to score --metric {names} against (eval scores them by "
                               "held-out loss and perplexity); drop --metric, or give prompt/completion or messages rows")
        return _evaluate_text(config, data, output, adapter, examples, include_base, say)
    check_references(metrics, [e.references for e in examples])
    model = config.model
    loaded = load_for_generation(model.name, model.dtype, adapter, model.attn_implementation, model.device)
    prompts, chat = encode_prompts(loaded, [e.prompt for e in examples], config.data.chat_template)
    say(f"eval: {len(examples)} rows of {data} on {loaded.spec} ({loaded.dtype}, {loaded.device})" + (f" + adapter {adapter}" if adapter else ""))

    runs: dict[str, tuple] = {}
    if adapter and include_base:
        if hasattr(loaded.model, "disable_adapter"):  # a PEFT model: the base is one switch away
            with loaded.model.disable_adapter():
                runs["base"] = score_generations("base", loaded, prompts, examples, settings, say, metrics)
        else:  # a result that replaced or changed weights (full, freeze, bitfit, bottleneck): load the base
            base = load_for_generation(model.name, model.dtype, attn_implementation=model.attn_implementation, device=model.device)
            runs["base"] = score_generations("base", base, prompts, examples, settings, say, metrics)
    base_texts = runs["base"][0] if "base" in runs else base_answers
    runs["tuned" if adapter else "base"] = score_generations("tuned" if adapter else "base", loaded, prompts, examples, settings,
                                                             say, metrics, base_texts)

    summary = {
        "data": data, "rows": len(examples), "model": loaded.spec, "model_path": loaded.path, "dtype": loaded.dtype,
        "adapter": str(adapter_folder(adapter)) if adapter else None,
        "template": config.data.template, "chat_template": chat,
        "generation": {"max_new_tokens": settings.max_new_tokens, "num_beams": settings.num_beams, "batch_size": settings.batch_size},
        "metrics": describe(metrics), "primary": metrics[0].primary,
        "results": {key: summary for key, (_, _, summary) in runs.items()},
    }
    records = prediction_records(examples, {key: (texts, scores) for key, (texts, scores, _) in runs.items()})
    if output:
        write_outputs(Path(output), summary, records)
    return {**summary, "records": records}


def _evaluate_text(config: RunConfig, data: str, output: str | None, adapter: str | None, examples: list,
                   include_base: bool, say: Callable[[str], None]) -> dict[str, Any]:
    """Text rows: the held-out loss and perplexity of the base and the tuned model, no generation."""
    model = config.model
    loaded = load_for_generation(model.name, model.dtype, adapter, model.attn_implementation)
    say(f"eval: {len(examples)} rows of {data} on {loaded.spec} ({loaded.dtype})" + (f" + adapter {adapter}" if adapter else ""))
    say(f"eval: {held_out.NOTE}")
    runs = held_out.evaluate_text(loaded, examples, config.data, adapter, include_base,
                                  lambda: load_for_generation(model.name, model.dtype, attn_implementation=model.attn_implementation))
    summary = {
        "data": data, "rows": len(examples), "model": loaded.spec, "model_path": loaded.path, "dtype": loaded.dtype,
        "adapter": str(adapter_folder(adapter)) if adapter else None, "chat_template": False,
        "metrics": {"held-out loss": {"keys": ["loss", "perplexity"], "primary": "loss", "description": held_out.NOTE,
                                      "labels": {"loss": "loss", "perplexity": "perplexity"}}},
        "primary": "loss", "results": {key: figures for key, (_, figures) in runs.items()},
    }
    records = [{"where": example.where, "input": example.text, "scores": {key: per_row[i] for key, (per_row, _) in runs.items()}}
               for i, example in enumerate(examples)]
    if output:
        write_outputs(Path(output), summary, records)
    return {**summary, "records": records}
