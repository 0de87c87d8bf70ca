"""Test rows -> prompts (the training template) and every human reference of each row."""

from __future__ import annotations

import itertools
from dataclasses import dataclass

from peftlab.config import DataConfig
from peftlab.data.examples import build_examples, subsample
from peftlab.data.readers import Row


@dataclass
class EvalExample:
    prompt: str  # the filled template, before any chat template
    references: list[str]
    where: str


def row_references(row: Row, column: str) -> list[str]:
    """The response column, or all of COLUMN1, COLUMN2, ... (DialogSum's test split has summary1..3)."""
    if row.values.get(column) is not None:
        return [str(row.values[column])]
    numbered = itertools.takewhile(lambda name: name in row.values, (f"{column}{i}" for i in itertools.count(1)))
    return [str(row.values[name]) for name in numbered if row.values[name] is not None]


def eval_examples(rows: list[Row], data: DataConfig) -> list[EvalExample]:
    # build_examples fills the template exactly as training did and names any missing column
    examples = build_examples(rows, data)
    kept = subsample(rows, data.every, data.max_samples)
    column = data.columns["response"]
    return [EvalExample(example.prompt, row_references(row, column), example.where) for example, row in zip(examples, kept, strict=True)]
