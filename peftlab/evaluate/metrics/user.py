"""`--metric python:MODULE:FUNCTION` (or python:path/to/file.py:FUNCTION): the user's own per-example score.

The function is called as FUNCTION(prediction, references) with the answer and the row's list of
reference strings, and returns a number in [0, 1]; its name is the key of its scores.
"""

from __future__ import annotations

import importlib
import importlib.util
import math
import numbers
from pathlib import Path
from typing import Any, Callable

from peftlab.errors import PeftlabError
from peftlab.evaluate.metrics.base import Metric, ScoringContext

PREFIX = "python:"


def _load(spec: str) -> Callable[..., Any]:
    location, _, name = spec[len(PREFIX):].rpartition(":")
    if not location or not name:
        raise PeftlabError(f"--metric {spec}: write python:MODULE:FUNCTION or python:FILE.py:FUNCTION")
    try:
        if location.endswith(".py"):
            path = Path(location)
            if not path.is_file():
                raise PeftlabError(f"--metric {spec}: no file {location}")
            module_spec = importlib.util.spec_from_file_location(f"peftlab_user_metric_{path.stem}", path)
            module = importlib.util.module_from_spec(module_spec)
            module_spec.loader.exec_module(module)
        else:
            module = importlib.import_module(location)
    except PeftlabError:
        raise
    except Exception as error:  # the user's module: any failure to import it is theirs to fix
        raise PeftlabError(f"--metric {spec}: cannot import {location}: {type(error).__name__}: {error}") from None
    function = getattr(module, name, None)
    if not callable(function):
        raise PeftlabError(f"--metric {spec}: {location} has no function {name}")
    return function


def user_metric(spec: str) -> Metric:
    function = _load(spec)
    key = spec[len(PREFIX):].rpartition(":")[2]

    def score(predictions: list[str], references: list[list[str]], context: ScoringContext) -> list[dict[str, float]]:
        scores = []
        for row, (prediction, refs) in enumerate(zip(predictions, references, strict=True), start=1):
            try:
                value = function(prediction, refs)
            except Exception as error:  # the user's code: name it, the row and what it raised
                raise PeftlabError(f"--metric {spec} raised on test row {row}: {type(error).__name__}: {error}") from None
            if not isinstance(value, numbers.Real) or not math.isfinite(value) or not 0 <= value <= 1:
                raise PeftlabError(f"--metric {spec} returned {value!r} for test row {row}; it must return a number in [0, 1]")
            scores.append({key: float(value)})
        return scores

    return Metric(spec, (key,), key, key, score, f"the user's function {spec[len(PREFIX):]}(prediction, references), in [0, 1]")
