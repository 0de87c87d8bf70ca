"""Generate predictions for test examples and score them; one record per row; predictions and metrics files."""

from __future__ import annotations

import json
import time
from pathlib import Path
from typing import Any, Callable

from peftlab import outputs
from peftlab.errors import PeftlabError
from peftlab.evaluate.metrics import Metric, ScoringContext, mean_scores, score_all
from peftlab.evaluate.metrics.exact import confusion
from peftlab.evaluate.metrics.rouge import ROUGE
from peftlab.evaluate.references import EvalExample
from peftlab.generation import GenerationSettings, generate
from peftlab.models.device import peak_memory_bytes, reset_peak_memory

PREDICTIONS = "predictions.jsonl"
METRICS = "metrics.json"
EVALUATION = outputs.OutputKind("evaluation", (METRICS,), (PREDICTIONS, METRICS))


def score_generations(name: str, loaded: Any, prompts: list[list[int]], examples: list[EvalExample],
                      settings: GenerationSettings, say: Callable[[str], None], metrics: list[Metric] | None = None,
                      base_texts: list[str] | None = None) -> tuple[list[str], list[dict[str, float]], dict[str, Any]]:
    """Generate for every prompt, then score by every metric (first: primary); `base_texts`: the base's answers, for the pairwise judge."""
    metrics = metrics or [ROUGE]
    reset_peak_memory(loaded.model.device)
    start = time.perf_counter()
    texts = generate(loaded.model, loaded.tokenizer, prompts, loaded.is_seq2seq, settings,
                     progress=lambda done: say(f"  {name}: {done}/{len(prompts)} generated"), labels=[e.where for e in examples])
    seconds = time.perf_counter() - start
    references = [e.references for e in examples]
    context = ScoringContext([e.prompt for e in examples], texts if name == "base" else base_texts)
    scores = score_all(metrics, texts, references, context)
    summary = {**mean_scores(scores), "seconds": seconds, "summaries_per_second": len(texts) / seconds,
               "mean_words": sum(len(t.split()) for t in texts) / len(texts),
               "peak_memory_bytes": peak_memory_bytes(loaded.model.device)}  # GPU: its allocator's peak while generating; CPU: RSS
    if any(metric.name == "accuracy" for metric in metrics):
        summary["confusion"] = confusion(texts, references)
    return texts, scores, summary


def prediction_records(examples: list[EvalExample], runs: dict[str, tuple[list[str], list[dict]]]) -> list[dict[str, Any]]:
    """One record per row: input, references, and per model its prediction and its scores (every metric's keys)."""
    records = []
    for i, example in enumerate(examples):
        records.append({
            "where": example.where, "input": example.prompt, "references": example.references,
            "predictions": {key: texts[i] for key, (texts, _) in runs.items()},
            "scores": {key: scores[i] for key, (_, scores) in runs.items()},
        })
    return records


def write_outputs(out: Path, metrics: dict[str, Any], records: list[dict[str, Any]]) -> None:
    """Replace the evaluation folder whole: predictions and metrics of one run, never a mix of two."""
    try:
        with outputs.replaced_folder(out, EVALUATION) as tmp:
            (tmp / PREDICTIONS).write_text("".join(json.dumps(r, ensure_ascii=False) + "\n" for r in records), encoding="utf-8")
            (tmp / METRICS).write_text(json.dumps(metrics, indent=2) + "\n", encoding="utf-8")
    except OSError as error:
        raise PeftlabError(f"cannot write to output folder {out}: {error.strerror}; choose another --output") from None
