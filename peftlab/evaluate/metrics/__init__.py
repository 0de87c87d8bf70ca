"""Owns the metrics eval, compare and demo score by: one file per metric, per-example scores in [0, 1], one primary key each.
May import errors and models (the cache folder); never generation, train or compare."""

from __future__ import annotations

from peftlab.errors import PeftlabError
from peftlab.evaluate.metrics.base import Metric, ScoringContext, described_keys, describe, mean_scores
from peftlab.evaluate.metrics.exact import ACCURACY, EXACT
from peftlab.evaluate.metrics.f1 import F1
from peftlab.evaluate.metrics.json_match import JSON
from peftlab.evaluate.metrics.judge import JudgeSettings, judge_metric, pairwise_metric
from peftlab.evaluate.metrics.rouge import ROUGE
from peftlab.evaluate.metrics.sacre import BLEU, CHRF
from peftlab.evaluate.metrics.user import PREFIX, user_metric

FIXED = {metric.name: metric for metric in (ROUGE, EXACT, ACCURACY, F1, CHRF, BLEU, JSON)}
JUDGED = {"judge": judge_metric, "judge-pairwise": pairwise_metric}
NAMES = (*FIXED, *JUDGED, f"{PREFIX}MODULE:FUNCTION")
DEFAULT_METRICS = ["rouge"]  # what eval, demo and compare score by without --metric


def resolve_metrics(names: list[str], judge: JudgeSettings | None = None) -> list[Metric]:
    """The metrics named on the command line, in order; the first is the primary one."""
    metrics = []
    for name in names:
        if name in FIXED:
            metrics.append(FIXED[name])
        elif name in JUDGED:
            metrics.append(JUDGED[name](judge or JudgeSettings()))
        elif name.startswith(PREFIX):
            metrics.append(user_metric(name))
        else:
            raise PeftlabError(f"--metric {name}: unknown metric; choose from {', '.join(NAMES)}")
    keys = [key for metric in metrics for key in metric.keys]
    if len(set(keys)) != len(keys):
        raise PeftlabError(f"--metric {','.join(names)}: a metric is named twice")
    return metrics


def check_references(metrics: list[Metric], references: list[list[str]]) -> None:
    """Refuse, before anything is generated, references a metric cannot score (one class for accuracy)."""
    for metric in metrics:
        if metric.check:
            metric.check(references)


def score_all(metrics: list[Metric], predictions: list[str], references: list[list[str]],
              context: ScoringContext) -> list[dict[str, float]]:
    """Every metric's scores for each example, merged into one dict per example."""
    merged: list[dict[str, float]] = [{} for _ in predictions]
    for metric in metrics:
        for example, scores in zip(merged, metric.score(predictions, references, context), strict=True):
            example.update(scores)
    return merged


def all_keys(metrics: list[Metric]) -> list[str]:
    return [key for metric in metrics for key in metric.keys]


__all__ = ["JudgeSettings", "Metric", "ScoringContext", "all_keys", "check_references", "described_keys", "describe", "mean_scores",
           "resolve_metrics", "score_all", "DEFAULT_METRICS"]
