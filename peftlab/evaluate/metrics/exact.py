"""Exact match and label accuracy: the answer after SQuAD's normalisation equals a reference (exact) or the row's label (accuracy)."""

from __future__ import annotations

from collections import Counter

from peftlab.errors import PeftlabError
from peftlab.evaluate.metrics.base import Metric, ScoringContext, best_over_references
from peftlab.evaluate.metrics.normalize import normalize_answer

OTHER = "(other)"  # a prediction that is none of the labels


def _exact(predictions: list[str], references: list[list[str]], context: ScoringContext) -> list[dict[str, float]]:
    same = lambda prediction, reference: float(normalize_answer(prediction) == normalize_answer(reference))  # noqa: E731
    return [{"exact": best_over_references(same, p, refs)} for p, refs in zip(predictions, references, strict=True)]


def label_set(references: list[list[str]]) -> list[str]:
    """The labels of a label task: the distinct (normalised) references of the test rows, sorted; at least two."""
    labels = sorted({normalize_answer(refs[0]) for refs in references})
    if len(labels) < 2:
        raise PeftlabError(f"--metric accuracy needs a label column with at least two classes; the test rows have "
                           f"{len(labels)} ({', '.join(map(repr, labels)) or 'none'}); use --metric exact for one fixed answer")
    return labels


def predicted_label(prediction: str, labels: list[str]) -> str:
    """The label the answer names after normalisation, or OTHER."""
    normalized = normalize_answer(prediction)
    return normalized if normalized in labels else OTHER


def _accuracy(predictions: list[str], references: list[list[str]], context: ScoringContext) -> list[dict[str, float]]:
    labels = label_set(references)
    return [{"accuracy": float(predicted_label(p, labels) == normalize_answer(refs[0]))}
            for p, refs in zip(predictions, references, strict=True)]


def confusion(predictions: list[str], references: list[list[str]]) -> dict[str, dict[str, int]]:
    """Counts per true label (rows) of each predicted label (columns, OTHER among them)."""
    labels = label_set(references)
    counts: dict[str, Counter] = {label: Counter() for label in labels}
    for prediction, refs in zip(predictions, references, strict=True):
        counts[normalize_answer(refs[0])][predicted_label(prediction, labels)] += 1
    return {label: {column: counts[label][column] for column in [*labels, OTHER]} for label in labels}


EXACT = Metric("exact", ("exact",), "exact", "exact match", _exact,
               "1 when the answer equals a reference after SQuAD's normalisation (lower case, no punctuation or articles)")
ACCURACY = Metric("accuracy", ("accuracy",), "accuracy", "accuracy", _accuracy,
                  "label tasks: the labels are the test rows' distinct references; 1 when the normalised answer is the row's label",
                  check=label_set)
