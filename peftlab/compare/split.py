"""The validation rows a tuned comparison decides on, carved from the training data; the test set stays unseen."""

from __future__ import annotations

import json
import random
from pathlib import Path

from peftlab import atomic
from peftlab.data.readers import read_rows
from peftlab.errors import PeftlabError

MIN_VALIDATION_ROWS = 16
MIN_TRAINING_ROWS = 8


def validation_count(total: int, share: float) -> int:
    return max(MIN_VALIDATION_ROWS, round(total * share))


def carve_validation(data: str, share: float, seed: int) -> tuple[list[dict], list[dict]]:
    """Split `data`'s rows into training and validation rows (the same rows for the same data, share and
    seed, on any machine). Rows keep their columns as read. Checked before anything is written."""
    if not 0 < share < 1:
        raise PeftlabError(f"--val-share must be between 0 and 1 (e.g. 0.1), got {share}")
    rows = read_rows(data)
    count = validation_count(len(rows), share)
    if len(rows) - count < MIN_TRAINING_ROWS:
        raise PeftlabError(f"{data} has {len(rows)} rows: too few to keep {count} for validation and still train; "
                           f"add rows or pass --val-share smaller than {share}")
    order = list(range(len(rows)))
    random.Random(seed).shuffle(order)
    chosen = set(order[:count])
    return ([row.values for i, row in enumerate(rows) if i not in chosen], [row.values for i, row in enumerate(rows) if i in chosen])


def write_split(split: tuple[list[dict], list[dict]], folder: Path) -> tuple[str, str]:
    """The training and validation rows as JSONL files in `folder`; returns their paths."""
    folder.mkdir(parents=True, exist_ok=True)
    paths = folder / "train.jsonl", folder / "validation.jsonl"
    for path, rows in zip(paths, split):
        atomic.write_text(path, "".join(json.dumps(row, ensure_ascii=False, default=str) + "\n" for row in rows))
    return str(paths[0]), str(paths[1])
