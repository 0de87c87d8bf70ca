"""Plain-text views of evaluation results: the scores table, the confusion table of a label task, samples side by side."""

from __future__ import annotations

import textwrap
from typing import Any

ROUGE_LABELS = {"rouge1": "ROUGE-1", "rouge2": "ROUGE-2", "rougeL": "ROUGE-L", "rougeLsum": "ROUGE-Lsum"}


def scores_table(results: dict[str, dict[str, Any]], labels: dict[str, str] | None = None) -> str:
    """One row per model (base, tuned): each score in percent (`labels`: key -> column name; default ROUGE), speed,
    and the gain of the last row over the first."""
    labels = labels or ROUGE_LABELS
    width = max(11, *(len(label) + 2 for label in labels.values()))
    header = f"{'model':<8}" + "".join(f"{label:>{width}}" for label in labels.values()) + f"{'answers/s':>11}"
    lines = [header, "-" * len(header)]
    for name, row in results.items():
        lines.append(f"{name:<8}" + "".join(f"{100 * row[c]:>{width}.2f}" for c in labels) + f"{row['summaries_per_second']:>11.2f}")
    if len(results) > 1:
        first, last = list(results.values())[0], list(results.values())[-1]
        lines.append(f"{'gain':<8}" + "".join(f"{100 * (last[c] - first[c]):>+{width}.2f}" for c in labels))
    return "\n".join(lines)


def loss_table(results: dict[str, dict[str, Any]]) -> str:
    """Held-out loss per token and perplexity, one row per model (lower is better), and the change of the last over the first."""
    header = f"{'model':<8}{'loss':>10}{'perplexity':>12}{'tokens':>10}"
    lines = [header, "-" * len(header)]
    lines += [f"{name:<8}{row['loss']:>10.4f}{row['perplexity']:>12.2f}{row['tokens']:>10,}" for name, row in results.items()]
    if len(results) > 1:
        first, last = list(results.values())[0], list(results.values())[-1]
        lines.append(f"{'change':<8}{last['loss'] - first['loss']:>+10.4f}{last['perplexity'] - first['perplexity']:>+12.2f}")
    return "\n".join(lines)


def confusion_table(confusion: dict[str, dict[str, int]]) -> str:
    """Rows: the true label; columns: the predicted one (`(other)`: an answer that is no label)."""
    columns = list(next(iter(confusion.values())))
    width = max(8, *(len(c) + 2 for c in columns))
    first = max(10, *(len(label) + 2 for label in confusion))
    lines = ["true/pred".ljust(first) + "".join(f"{c:>{width}}" for c in columns)]
    lines += [f"{label:<{first}}" + "".join(f"{row[c]:>{width}}" for c in columns) for label, row in confusion.items()]
    return "\n".join(lines)


def pick_samples(records: list[dict[str, Any]], count: int) -> list[dict[str, Any]]:
    """`count` records spread evenly over the test set (deterministic)."""
    if count <= 0 or not records:
        return []
    step = max(1, len(records) // count)
    return records[::step][:count]


def samples_text(records: list[dict[str, Any]], count: int = 3, width: int = 100) -> str:
    """The (first) reference summary beside each model's, for a few rows."""
    blocks = []
    for record in pick_samples(records, count):
        lines = [f"--- {record['where']} ---"]
        rows = [("reference", record["references"][0])] + list(record["predictions"].items())
        for label, text in rows:
            wrapped = textwrap.wrap(text or "(empty)", width=width - 11) or ["(empty)"]
            lines.append(f"{label + ':':<10} {wrapped[0]}")
            lines += [f"{'':<10} {more}" for more in wrapped[1:]]
        blocks.append("\n".join(lines))
    return "\n\n".join(blocks)
