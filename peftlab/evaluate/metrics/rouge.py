"""ROUGE-1/2/L/Lsum with stemming, the `rouge-score` computation behind the `evaluate` library's `rouge`.

Several references per example: each example scores against the reference it matches best
(`RougeScorer.score_multi`: the highest F1, per ROUGE type), then the per-example F1 values are
averaged. With one reference per example this is exactly `evaluate.load("rouge").compute(...,
use_stemmer=True, use_aggregator=False)` averaged, and what `use_aggregator=True` estimates by
bootstrap (its "mid", the median of 1000 resampled means, differs from the mean by noise).
"""

from __future__ import annotations

from peftlab.evaluate.metrics.base import Metric, ScoringContext

ROUGE_TYPES = ("rouge1", "rouge2", "rougeL", "rougeLsum")
MULTI_REFERENCE = "best-matching reference per example (highest F1 per ROUGE type, rouge_score's score_multi), then the mean over examples"


def example_scores(predictions: list[str], references: list[list[str]]) -> list[dict[str, float]]:
    """F1 per ROUGE type for each prediction against its references."""
    import logging

    from rouge_score import rouge_scorer

    logging.getLogger("absl").setLevel(logging.WARNING)  # it announces "Using default tokenizer." at INFO

    scorer = rouge_scorer.RougeScorer(list(ROUGE_TYPES), use_stemmer=True)
    scores = []
    for prediction, refs in zip(predictions, references, strict=True):
        best = scorer.score_multi(refs, prediction) if len(refs) > 1 else scorer.score(refs[0], prediction)
        scores.append({name: float(best[name].fmeasure) for name in ROUGE_TYPES})
    return scores


def _score(predictions: list[str], references: list[list[str]], context: ScoringContext) -> list[dict[str, float]]:
    return example_scores(predictions, references)


ROUGE = Metric("rouge", ROUGE_TYPES, "rougeL", "ROUGE-L", _score, f"ROUGE F1 with stemming; {MULTI_REFERENCE}",
               {"rouge1": "ROUGE-1", "rouge2": "ROUGE-2", "rougeL": "ROUGE-L", "rougeLsum": "ROUGE-Lsum"})
