"""Rows -> prompt/response text pairs: sub-sampling, column mapping and the prompt template."""

from __future__ import annotations

import string
from dataclasses import dataclass

from peftlab.config import DataConfig
from peftlab.data.readers import Row
from peftlab.errors import PeftlabError


@dataclass
class Example:
    prompt: str  # the filled template, before any chat template
    response: str
    where: str


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
        raise PeftlabError(f"{row.where}: no column '{column}' (needed for {name}); columns are: {present}; fix with {hint}")
    value = row.values[column]
    if value is None:
        raise PeftlabError(f"{row.where}: column '{column}' is empty; fill it or drop the row")
    return str(value)


def fill_template(row: Row, data: DataConfig) -> str:
    """The row's prompt: the template with every field taken from its column."""
    return data.template.format(**{name: field_value(row, data.columns, name) for name in template_fields(data.template)})


def build_examples(rows: list[Row], data: DataConfig) -> list[Example]:
    template_fields(data.template)  # a broken template fails before any row does
    examples = []
    for row in subsample(rows, data.every, data.max_samples):
        examples.append(Example(fill_template(row, data), field_value(row, data.columns, "response"), row.where))
    return examples
