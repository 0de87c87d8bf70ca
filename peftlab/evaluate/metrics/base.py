"""What a metric is: per-example scores in [0, 1] under named keys, one of them primary (what compare selects and reports by)."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any, Callable


@dataclass
class ScoringContext:
    """What some metrics need beyond predictions and references: the prompts (a judge reads them) and the base model's answers."""

    prompts: list[str] = field(default_factory=list)
    base_predictions: list[str] | None = None  # the pairwise judge compares each answer with the base model's


@dataclass(frozen=True)
class Metric:
    name: str  # as given to --metric
    keys: tuple[str, ...]  # the per-example scores it writes, each in [0, 1]
    primary: str  # the key compare selects and ranks by
    label: str  # the primary key as people name it ("ROUGE-L")
    score: Callable[[list[str], list[list[str]], ScoringContext], list[dict[str, float]]]
    description: str  # how references and normalisation are handled, shown in metrics.json
    labels: dict[str, str] = field(default_factory=dict)  # display names of the keys, where not `label`
    check: Callable[[list[list[str]]], None] | None = None  # refuses unusable references before anything is generated


def mean_scores(scores: list[dict[str, float]], keys: tuple[str, ...] | list[str] | None = None) -> dict[str, float]:
    """The mean of each key (default: every key of the first example) over the examples: the figure a table shows."""
    if not scores:
        return {}
    return {key: sum(s[key] for s in scores) / len(scores) for key in (keys if keys is not None else scores[0])}


def best_over_references(score: Callable[[str, str], float], prediction: str, references: list[str]) -> float:
    """An example scores against the reference it matches best, as SQuAD and rouge_score's score_multi do."""
    return max(score(prediction, reference) for reference in references)


def describe(metrics: list[Metric]) -> dict[str, Any]:
    """What metrics.json and results.json record of the metrics: keys, display names, primary key, how each scores."""
    return {metric.name: {"keys": list(metric.keys), "primary": metric.primary, "description": metric.description,
                          "labels": {key: metric.labels.get(key, metric.label if len(metric.keys) == 1 else key) for key in metric.keys}}
            for metric in metrics}


def described_keys(description: dict[str, Any]) -> dict[str, str]:
    """Every score key of a recorded description (describe's output), in order, with its display name."""
    return {key: entry["labels"][key] for entry in description.values() for key in entry["keys"]}
