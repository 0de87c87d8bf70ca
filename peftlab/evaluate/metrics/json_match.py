"""JSON answers: whether the answer parses (json_valid) and whether its value equals a reference's parsed value (json_exact)."""

from __future__ import annotations

import json
import re
from typing import Any

from peftlab.evaluate.metrics.base import Metric, ScoringContext

_FENCE = re.compile(r"^```(?:json)?\s*(.*?)\s*```$", re.DOTALL)
_INVALID = object()


def parse_answer(text: str) -> Any:
    """The JSON value of an answer (a Markdown code fence around it is allowed), or _INVALID."""
    stripped = text.strip()
    fenced = _FENCE.match(stripped)
    try:
        return json.loads(fenced.group(1) if fenced else stripped)
    except (ValueError, RecursionError):
        return _INVALID


def _canonical(value: Any) -> str:
    """Equal values, equal text: keys sorted, and true never equal to 1 (as Python's == would have it)."""
    return json.dumps(value, sort_keys=True)


def _json(predictions: list[str], references: list[list[str]], context: ScoringContext) -> list[dict[str, float]]:
    scores = []
    for prediction, refs in zip(predictions, references, strict=True):
        value = parse_answer(prediction)
        valid = value is not _INVALID
        wanted = {_canonical(ref) for ref in map(parse_answer, refs) if ref is not _INVALID}
        scores.append({"json_valid": float(valid), "json_exact": float(valid and _canonical(value) in wanted)})
    return scores


JSON = Metric("json", ("json_valid", "json_exact"), "json_exact", "JSON exact", _json,
              "json_valid: the answer parses as JSON (a code fence around it allowed); json_exact: its value equals a reference's",
              {"json_valid": "JSON valid", "json_exact": "JSON exact"})
