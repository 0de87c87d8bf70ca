"""Confidence for a comparison: bootstrap intervals over seeds and test examples, paired differences.

Written here rather than taken from scipy.stats.bootstrap: the interval must resample two levels at
once (seeds, then the same test examples for every seed), and the paired test must keep each test
example's pairing across methods; both are a few lines of numpy.
"""

from __future__ import annotations

from typing import Any

import numpy as np

REPLICATES = 2000
LEVEL = 0.95
STREAM = 20261126  # a fixed stream: the same scores always give the same interval


def _bounds(samples: np.ndarray) -> list[float]:
    tail = 100 * (1 - LEVEL) / 2
    return [float(np.percentile(samples, tail)), float(np.percentile(samples, 100 - tail))]


def interval(scores: np.ndarray) -> list[float]:
    """95% interval of the mean of `scores` (seeds x examples): seeds and examples resampled together."""
    scores = np.atleast_2d(np.asarray(scores, dtype=float))
    rng = np.random.default_rng(STREAM)
    seeds, examples = scores.shape
    seed_picks = rng.integers(0, seeds, size=(REPLICATES, seeds))
    example_picks = rng.integers(0, examples, size=(REPLICATES, examples))
    means = np.array([scores[np.ix_(s, e)].mean() for s, e in zip(seed_picks, example_picks)])
    return _bounds(means)


def paired_difference(first: np.ndarray, second: np.ndarray) -> dict[str, Any]:
    """first - second on the same test examples (each averaged over its seeds): the mean difference, its 95%
    interval, and a two-sided bootstrap p-value; significant when the interval excludes zero."""
    a = np.atleast_2d(np.asarray(first, dtype=float)).mean(axis=0)
    b = np.atleast_2d(np.asarray(second, dtype=float)).mean(axis=0)
    differences = a - b
    rng = np.random.default_rng(STREAM)
    picks = rng.integers(0, len(differences), size=(REPLICATES, len(differences)))
    means = differences[picks].mean(axis=1)
    share_below = float((means <= 0).mean())
    p_value = min(1.0, 2 * min(share_below, 1 - share_below + float((means == 0).mean())))
    low, high = _bounds(means)
    return {"difference": float(differences.mean()), "interval": [low, high], "p_value": p_value,
            "significant": bool(low > 0 or high < 0)}
