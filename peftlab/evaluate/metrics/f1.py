"""Token F1 as SQuAD defines it: the overlap of normalised answer and reference tokens, best over the references."""

from __future__ import annotations

from collections import Counter

from peftlab.evaluate.metrics.base import Metric, ScoringContext, best_over_references
from peftlab.evaluate.metrics.normalize import normalize_answer


def token_f1(prediction: str, reference: str) -> float:
    predicted, wanted = normalize_answer(prediction).split(), normalize_answer(reference).split()
    if not predicted or not wanted:  # SQuAD: two empty answers agree, one empty answer scores 0
        return float(predicted == wanted)
    common = sum((Counter(predicted) & Counter(wanted)).values())
    if common == 0:
        return 0.0
    precision, recall = common / len(predicted), common / len(wanted)
    return 2 * precision * recall / (precision + recall)


def _f1(predictions: list[str], references: list[list[str]], context: ScoringContext) -> list[dict[str, float]]:
    return [{"f1": best_over_references(token_f1, p, refs)} for p, refs in zip(predictions, references, strict=True)]


F1 = Metric("f1", ("f1",), "f1", "token F1", _f1, "SQuAD's token F1 after its normalisation, best over the references")
