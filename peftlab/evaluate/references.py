"""Test rows -> prompts (as training built them) and every human reference of each row."""

from __future__ import annotations

import dataclasses
import itertools
from dataclasses import dataclass
from typing import Any

from peftlab.config import DataConfig
from peftlab.data.examples import CHAT, PAIR, TEXT, build_examples, subsample
from peftlab.data.formats import text_value
from peftlab.data.readers import Row


@dataclass
class EvalExample:
    prompt: str | list[dict[str, Any]]  # the filled template (before any chat template), or the conversation before the scored turn
    references: list[str]
    where: str
    text: str | None = None  # a text row: no prompt or reference, scored by its held-out loss (evaluate.held_out)


def row_references(row: Row, column: str) -> list[str]:
    """The response column, or all of COLUMN1, COLUMN2, ... (DialogSum's test split has summary1..3)."""
    if row.values.get(column) is not None:
        return [text_value(row.values[column], row.where, column)]
    numbered = itertools.takewhile(lambda name: name in row.values, (f"{column}{i}" for i in itertools.count(1)))
    return [text_value(row.values[name], row.where, name) for name in numbered if row.values[name] is not None]


def eval_examples(rows: list[Row], data: DataConfig) -> list[EvalExample]:
    """A conversation is scored on its last assistant turn: the prompt is every message before it, the reference its text.
    A text row has neither: it carries its text, scored by the held-out loss."""
    # build_examples reads the rows exactly as training did and names any missing column
    examples = build_examples(rows, dataclasses.replace(data, train_on="last"))
    kept = subsample(rows, data.every, data.max_samples)
    column = data.columns["response"]
    result = []
    for example, row in zip(examples, kept, strict=True):
        if example.kind == TEXT:
            result.append(EvalExample("", [], example.where, example.response))
        elif example.kind == CHAT:
            turn = example.trained[-1]
            result.append(EvalExample(example.messages[:turn], [example.messages[turn]["content"]], example.where))
        elif example.kind == PAIR and (column in row.values or f"{column}1" in row.values):
            result.append(EvalExample(example.prompt, row_references(row, column), example.where))
        else:
            result.append(EvalExample(example.prompt, [example.response], example.where))
    return result
