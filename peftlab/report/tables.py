"""Plain-text views of evaluation results: the ROUGE table and samples side by side."""

from __future__ import annotations

import textwrap
from typing import Any

ROUGE_COLUMNS = ("rouge1", "rouge2", "rougeL", "rougeLsum")


def rouge_table(results: dict[str, dict[str, Any]]) -> str:
    """One row per model (base, tuned): ROUGE F1 in percent, speed, and the gain of the last row over the first."""
    header = f"{'model':<8}" + "".join(f"{name:>11}" for name in ROUGE_COLUMNS) + f"{'summaries/s':>13}"
    lines = [header, "-" * len(header)]
    for name, row in results.items():
        lines.append(f"{name:<8}" + "".join(f"{100 * row[c]:>11.2f}" for c in ROUGE_COLUMNS) + f"{row['summaries_per_second']:>13.2f}")
    if len(results) > 1:
        first, last = list(results.values())[0], list(results.values())[-1]
        lines.append(f"{'gain':<8}" + "".join(f"{100 * (last[c] - first[c]):>+11.2f}" for c in ROUGE_COLUMNS))
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
