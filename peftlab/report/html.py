"""A self-contained HTML page (inline CSS, no scripts, no network) of a before/after evaluation."""

from __future__ import annotations

import html
from typing import Any

from peftlab.report.tables import ROUGE_LABELS, pick_samples

STYLE = """
body{font-family:system-ui,sans-serif;max-width:60rem;margin:2rem auto;padding:0 1rem;color:#222;line-height:1.45}
h1{font-size:1.5rem}h2{font-size:1.15rem;margin-top:2rem}
table{border-collapse:collapse;margin:.5rem 0}th,td{padding:.3rem .7rem;border-bottom:1px solid #ddd;text-align:right}
th:first-child,td:first-child{text-align:left}.gain{color:#176b2c;font-weight:600}
.bar{display:inline-block;height:.6rem;background:#4a7bd0;vertical-align:middle;margin-right:.4rem}
.sample{border:1px solid #ddd;border-radius:6px;padding:.6rem .9rem;margin:.8rem 0}
.sample dt{font-weight:600;margin-top:.3rem}.sample dd{margin:0 0 .2rem 0}
pre{white-space:pre-wrap;background:#f6f6f6;padding:.5rem;border-radius:4px;font-size:.85rem}
.meta{color:#555;font-size:.9rem}
"""


def escape(value: Any) -> str:
    return html.escape(str(value))


def _score_rows(results: dict[str, dict[str, Any]], labels: dict[str, str]) -> str:
    rows = []
    for name, row in results.items():
        cells = "".join(f"<td><span class='bar' style='width:{100 * row[c]:.0f}px'></span>{100 * row[c]:.2f}</td>" for c in labels)
        rows.append(f"<tr><td>{escape(name)}</td>{cells}<td>{row['summaries_per_second']:.2f}</td></tr>")
    if len(results) > 1:
        first, last = list(results.values())[0], list(results.values())[-1]
        gains = "".join(f"<td class='gain'>{100 * (last[c] - first[c]):+.2f}</td>" for c in labels)
        rows.append(f"<tr><td>gain</td>{gains}<td></td></tr>")
    head = "".join(f"<th>{escape(label)}</th>" for label in labels.values())
    return f"<table><tr><th>model</th>{head}<th>answers/s</th></tr>{''.join(rows)}</table>"


def confusion_html(results: dict[str, dict[str, Any]]) -> str:
    """A label task's confusion table for each model or run that has one (true label by predicted label)."""
    parts = []
    for name, row in results.items():
        if not row.get("confusion"):
            continue
        columns = list(next(iter(row["confusion"].values())))
        head = "".join(f"<th>{escape(c)}</th>" for c in columns)
        body = "".join(f"<tr><td>{escape(label)}</td>{''.join(f'<td>{counts[c]}</td>' for c in columns)}</tr>"
                       for label, counts in row["confusion"].items())
        parts.append(f"<h3>{escape(name)}: true label (rows) by predicted label</h3><table><tr><th></th>{head}</tr>{body}</table>")
    return f"<h2>Confusion</h2>{''.join(parts)}" if parts else ""


def sample_html(record: dict[str, Any], key: str = "rougeL", label: str = "ROUGE-L") -> str:
    """One row: input, references, and each model's answer with its `key` score (the primary metric's)."""
    refs = "".join(f"<dd>{escape(r)}</dd>" for r in record["references"])
    outputs = "".join(
        f"<dt>{escape(name)} <span class='meta'>({escape(label)} {100 * record['scores'][name][key]:.1f})</span></dt><dd>{escape(text) or '<em>(empty)</em>'}</dd>"
        for name, text in record["predictions"].items()
    )
    return (f"<div class='sample'><div class='meta'>{escape(record['where'])}</div>"
            f"<details><summary>input</summary><pre>{escape(record['input'])}</pre></details>"
            f"<dl><dt>reference</dt>{refs}{outputs}</dl></div>")


def evaluation_page(title: str, facts: dict[str, Any], results: dict[str, dict[str, Any]],
                    records: list[dict[str, Any]], note: str = "", samples: int = 8, labels: dict[str, str] | None = None,
                    primary: str = "rougeL") -> str:
    """The page: facts about the run, the scores table (percent; `labels`: key -> name, default ROUGE), a few samples side by side."""
    labels = labels or ROUGE_LABELS
    fact_rows = "".join(f"<tr><td>{escape(k)}</td><td style='text-align:left'>{escape(v)}</td></tr>" for k, v in facts.items())
    body = "".join(sample_html(r, primary, labels[primary]) for r in pick_samples(records, samples))
    return f"""<!DOCTYPE html>
<html lang="en"><head><meta charset="utf-8"><title>{escape(title)}</title><style>{STYLE}</style></head>
<body><h1>{escape(title)}</h1>
<p class="meta">{escape(note)}</p>
<h2>Scores (%)</h2>{_score_rows(results, labels)}{confusion_html(results)}
<h2>Run</h2><table>{fact_rows}</table>
<h2>Samples</h2>{body}
</body></html>
"""
