"""Rows -> examples: sub-sampling, the format of the file, column mapping and the prompt template."""

from __future__ import annotations

import string
from dataclasses import dataclass, field
from typing import Any, Iterable, Iterator

from peftlab.config import DataConfig
from peftlab.data.formats import (CONVERSATIONAL, check_columns, check_messages, describe, row_format, sharegpt_messages,
                                  text_value)
from peftlab.data.readers import Row
from peftlab.errors import PeftlabError

PAIR, TEXT, CHAT = "pair", "text", "chat"  # what an example is: prompt -> response, plain text, a conversation


@dataclass
class Example:
    prompt: str  # pairs: the filled template, before any chat template; text: ""
    response: str  # pairs: the target; text: the whole text
    where: str
    kind: str = PAIR
    messages: list[dict[str, Any]] = field(default_factory=list)  # conversations: every message, system to last
    trained: tuple[int, ...] = ()  # conversations: the messages the loss falls on (train_on=all: every token instead)


def subsample(rows: list[Row], every: int = 1, max_samples: int | None = None) -> list[Row]:
    """Keep every K-th row, then the first N of those: deterministic, so runs stay comparable."""
    kept = rows[::every]
    return kept[:max_samples] if max_samples else kept


def template_fields(template: str) -> list[str]:
    try:
        return [name for _, name, _, _ in string.Formatter().parse(template) if name]
    except ValueError as error:
        raise PeftlabError(f"data.template is not a valid template ({error}); use {{column}} placeholders and double literal braces") from None


def field_value(row: Row, columns: dict[str, str], name: str) -> str:
    """A template field's text: a mapped name (prompt -> dialogue) or a column of the file itself."""
    column = columns.get(name, name)
    if column not in row.values and f"{column}1" in row.values:
        column = f"{column}1"  # several references (summary1, summary2, ...): the first is the target
    if column not in row.values:
        present = ", ".join(map(str, row.values)) or "none"
        hint = f"--columns {name}=COLUMN" if name in columns or name in ("prompt", "response") else "--template"
        raise PeftlabError(f"{row.where}: no column '{column}' (needed for {name}); columns are: {present}; fix with {hint} "
                           "(or give the file messages, prompt/completion, text, conversations or instruction/output columns)")
    return text_value(row.values[column], row.where, column)


def fill_template(row: Row, data: DataConfig) -> str:
    """The row's prompt: the template with every field taken from its column."""
    return data.template.format(**{name: field_value(row, data.columns, name) for name in template_fields(data.template)})


def template_columns(data: DataConfig) -> list[str]:
    return [data.columns.get(name, name) for name in [*template_fields(data.template), "response"]]


def file_format(rows: list[Row], data: DataConfig, need_response: bool = True) -> str:
    """data.format, or the format of the first row's columns; every row must be of it (one format per file)."""
    check = FormatCheck(data, need_response)
    for row in rows:
        check(row)
    return check.name or (data.format if data.format != "auto" else "template")


class FormatCheck:
    """Rows seen one at a time: the first decides the file's format (unless data.format does), the rest must match it."""

    def __init__(self, data: DataConfig, need_response: bool = True):
        self.data, self.columns, self.need_response = data, template_columns(data), need_response
        self.name = data.format if data.format != "auto" else None

    def __call__(self, row: Row) -> str:
        if self.data.format != "auto":
            check_columns(row, self.data.format, self.need_response)
            return self.data.format
        found = row_format(row, self.columns, self.need_response)
        if self.name is None:
            self.name = found
        elif found != self.name:
            raise PeftlabError(f"{row.where}: a {describe(found)} row, but the file's first row is {describe(self.name)}; "
                               "keep one format per file (or set data.format and fix the rows that differ)")
        return found


def conversation(row: Row, name: str, train_on: str) -> tuple[list[dict[str, Any]], tuple[int, ...]]:
    """A conversation's messages and the turns the loss falls on (train_on: assistant | last | all)."""
    if name == "sharegpt":
        messages, first_trained = check_messages(sharegpt_messages(row), row.where, "conversations"), 0
    elif name == "messages":
        messages, first_trained = check_messages(row.values["messages"], row.where), 0
    else:  # conversational prompt/completion: the loss falls on the completion's assistant turns
        prompt = check_messages(row.values["prompt"], row.where, "prompt", need_assistant=False)
        messages, first_trained = prompt + check_messages(row.values["completion"], row.where, "completion"), len(prompt)
    answers = tuple(i for i, m in enumerate(messages) if m["role"] == "assistant" and i >= first_trained)
    if not answers:
        raise PeftlabError(f"{row.where}: the completion has no assistant turn, so nothing to learn; add the assistant's answer")
    return messages, (answers[-1:] if train_on == "last" else answers)


def is_conversation(row: Row, name: str) -> bool:
    return name in CONVERSATIONAL or (name == "prompt-completion" and isinstance(row.values.get("prompt"), list))


def row_example(row: Row, name: str, data: DataConfig) -> Example:
    values, where = row.values, row.where
    if is_conversation(row, name):
        messages, trained = conversation(row, name, data.train_on)
        return Example("", "", where, CHAT, messages, trained)
    if name == "text":
        return Example("", text_value(values["text"], where, "text"), where, TEXT)
    if name == "prompt-completion":
        return Example(text_value(values["prompt"], where, "prompt"), text_value(values["completion"], where, "completion"), where)
    if name == "alpaca":
        return Example(_alpaca_prompt(row), text_value(values["output"], where, "output"), where)
    return Example(fill_template(row, data), field_value(row, data.columns, "response"), where)


def _alpaca_prompt(row: Row) -> str:
    instruction = text_value(row.values["instruction"], row.where, "instruction")
    extra = text_value(row.values["input"], row.where, "input") if row.values.get("input") not in (None, "") else ""
    return f"{instruction}\n\n{extra}" if extra else instruction


def build_examples(rows: list[Row], data: DataConfig) -> list[Example]:
    kept = subsample(rows, data.every, data.max_samples)
    return list(iter_examples(kept, data))


def iter_examples(rows: Iterable[Row], data: DataConfig, check: FormatCheck | None = None) -> Iterator[Example]:
    """Examples as the rows arrive, each row checked against the file's format (`check` keeps what the first row said)."""
    template_fields(data.template)  # a broken template fails before any row does
    check = check or FormatCheck(data)
    for row in rows:
        yield row_example(row, check(row), data)


def generation_prompts(rows: list[Row], data: DataConfig) -> list[str | list[dict[str, Any]]]:
    """What `generate` answers for each row: the filled prompt, or the conversation before its last assistant turn
    (the whole conversation when it ends on another turn)."""
    name = file_format(rows, data, need_response=False)
    prompts = []
    for row in rows:
        if is_conversation(row, name):
            column = {"sharegpt": "conversations", "messages": "messages"}.get(name, "prompt")
            raw = sharegpt_messages(row) if name == "sharegpt" else row.values[column]
            messages = check_messages(raw, row.where, column, need_assistant=False)
            ends_on_answer = messages[-1]["role"] == "assistant" and len(messages) > 1
            prompts.append(messages[:-1] if ends_on_answer else messages)
        else:
            prompts.append(_row_prompt(row, name, data))
    return prompts


def scored_prompts(rows: list[Row], data: DataConfig) -> list[str | list[dict[str, Any]]]:
    """What `eval` scores for each row, without needing its reference: a conversation up to its last assistant turn
    (every message before the turn eval scores), else the row's prompt."""
    name = file_format(rows, data)
    prompts = []
    for row in rows:
        if is_conversation(row, name):
            messages, trained = conversation(row, name, "last")
            prompts.append(messages[:trained[-1]])
        else:
            prompts.append(_row_prompt(row, name, data))
    return prompts


def _row_prompt(row: Row, name: str, data: DataConfig) -> str:
    if name == "text":
        raise PeftlabError(f"{row.where}: a text row has no prompt to answer; give prompt/completion or messages rows")
    if name == "prompt-completion":  # the completion may be absent: rows to answer
        return text_value(row.values["prompt"], row.where, "prompt")
    if name == "alpaca":
        return _alpaca_prompt(row)
    return row_example(row, name, data).prompt if name != "template" else fill_template(row, data)


def bare_prompt(prompt: str, data: DataConfig) -> str | list[dict[str, Any]]:
    """A prompt typed on the command line, built as the rows of data.format were (an adapter records the format it learned)."""
    if data.format in CONVERSATIONAL:
        return [{"role": "user", "content": prompt}]
    if data.format in ("text", "prompt-completion", "alpaca"):
        return prompt
    return fill_template(Row({data.columns.get("prompt", "prompt"): prompt}, "PROMPT"), data)
