"""`peftlab eval`, top to bottom: settings from the adapter's run, load, generate in batches, score, write."""

from __future__ import annotations

import json
import time
from pathlib import Path
from typing import Any, Callable

from peftlab import atomic
from peftlab import config as cfg
from peftlab.config import RunConfig
from peftlab.data.readers import read_rows
from peftlab.data.tokenize import uses_chat_template
from peftlab.errors import PeftlabError
from peftlab.inference import GenerationSettings, generate, source_ids
from peftlab.evaluate.references import EvalExample, eval_examples
from peftlab.evaluate.rouge import MULTI_REFERENCE, example_scores, mean_scores
from peftlab.models import load_model
from peftlab.artifacts import RUN_FILE, adapter_folder, load_adapted, recorded_base

PREDICTIONS = "predictions.jsonl"
METRICS = "metrics.json"


def eval_config(adapter: str | None, overrides: list[str], flags: dict[str, Any],
                max_samples: int | None = None, every: int = 1) -> RunConfig:
    """The run config evaluation uses: the adapter's training run (prompt, columns, base), then the flags.

    A template other than the one the adapter learned is refused: the scores would describe a
    prompt the model never trained on.
    """
    run_file = adapter_folder(adapter) / RUN_FILE if adapter else None
    recorded = cfg.load(str(run_file)) if run_file and run_file.is_file() else None
    if adapter and recorded is None and flags.get("model.name") is None:
        flags = {**flags, "model.name": recorded_base(adapter_folder(adapter))[1]}  # a foreign PEFT adapter
    config = cfg.load(str(run_file) if recorded else None, overrides, flags)
    if recorded and config.data.template != recorded.data.template:
        raise PeftlabError(
            f"adapter {adapter} was trained with the template {recorded.data.template!r}; evaluating it with "
            f"{config.data.template!r} would score a prompt it never learned; drop --template"
        )
    # which test rows to use is the evaluation's choice, not the training run's
    config.data.max_samples, config.data.every = max_samples, every
    cfg.validate(config)
    return config


def score_generations(name: str, loaded: Any, prompts: list[list[int]], examples: list[EvalExample],
           settings: GenerationSettings, say: Callable[[str], None]) -> tuple[list[str], list[dict[str, float]], dict[str, Any]]:
    start = time.perf_counter()
    texts = generate(loaded.model, loaded.tokenizer, prompts, loaded.is_seq2seq, settings,
                     progress=lambda done: say(f"  {name}: {done}/{len(prompts)} generated"))
    seconds = time.perf_counter() - start
    scores = example_scores(texts, [e.references for e in examples])
    summary = {**mean_scores(scores), "seconds": seconds, "summaries_per_second": len(texts) / seconds,
               "mean_words": sum(len(t.split()) for t in texts) / len(texts)}
    return texts, scores, summary


def evaluate(config: RunConfig, data: str, output: str | None, adapter: str | None = None,
             settings: GenerationSettings | None = None, include_base: bool = True,
             say: Callable[[str], None] = lambda text: None) -> dict[str, Any]:
    """Generate for every test row and score; with an adapter, also the base (adapter disabled) unless told not to."""
    settings = settings or GenerationSettings()
    settings.check()
    examples = eval_examples(read_rows(data), config.data)  # names a row without its reference column
    name = config.model.name
    loaded = load_adapted(adapter, name, config.model.dtype) if adapter else load_model(name, config.model.dtype)
    chat = uses_chat_template(loaded.tokenizer, config.data.chat_template, loaded.is_seq2seq)
    prompts = [source_ids(loaded.tokenizer, e.prompt, chat, loaded.is_seq2seq) for e in examples]
    say(f"eval: {len(examples)} rows of {data} on {loaded.spec} ({loaded.dtype})" + (f" + adapter {adapter}" if adapter else ""))

    runs: dict[str, tuple] = {}
    if adapter and include_base:
        if hasattr(loaded.model, "disable_adapter"):  # a PEFT model: the base is one switch away
            with loaded.model.disable_adapter():
                runs["base"] = score_generations("base", loaded, prompts, examples, settings, say)
        else:  # a result that replaced or changed weights (full, freeze, bitfit, bottleneck): load the base
            runs["base"] = score_generations("base", load_model(name, config.model.dtype), prompts, examples, settings, say)
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


def prediction_records(examples: list[EvalExample], runs: dict[str, tuple[list[str], list[dict]]]) -> list[dict[str, Any]]:
    """One record per row: input, references, and per model its prediction and ROUGE."""
    records = []
    for i, example in enumerate(examples):
        records.append({
            "where": example.where, "input": example.prompt, "references": example.references,
            "predictions": {key: texts[i] for key, (texts, _) in runs.items()},
            "rouge": {key: scores[i] for key, (_, scores) in runs.items()},
        })
    return records


def write_outputs(out: Path, metrics: dict[str, Any], records: list[dict[str, Any]]) -> None:
    try:
        atomic.write_text(out / PREDICTIONS, "".join(json.dumps(r, ensure_ascii=False) + "\n" for r in records))
        atomic.write_text(out / METRICS, json.dumps(metrics, indent=2) + "\n")
    except OSError as error:
        raise PeftlabError(f"cannot write to output folder {out}: {error.strerror}; choose another --output") from None
