"""The comparison's outputs from its records: results.json/.csv, a markdown table, plots, one HTML page."""

from __future__ import annotations

import csv
import io
import json
from pathlib import Path
from typing import Any

from peftlab import atomic
from peftlab.report.html import STYLE, escape, sample_html
from peftlab.report.plots import write_plots
from peftlab.report.tables import pick_samples

PER_ROW = ("predictions", "example_rouge")  # kept out of results.json; they feed the samples
COLUMNS = [  # (header, formatter)
    ("run", lambda r: r["name"]),
    ("ROUGE-1", lambda r: f"{100 * r['rouge']['rouge1']:.2f}"),
    ("ROUGE-2", lambda r: f"{100 * r['rouge']['rouge2']:.2f}"),
    ("ROUGE-L", lambda r: f"{100 * r['rouge']['rougeL']:.2f}"),
    ("ROUGE-Lsum", lambda r: f"{100 * r['rouge']['rougeLsum']:.2f}"),
    ("train s", lambda r: f"{r['train_seconds']:.0f}"),
    ("real tok/s", lambda r: f"{r['real_tokens_per_second']:.0f}" if r.get("real_tokens_per_second") else "-"),
    ("peak GiB", lambda r: f"{r['peak_memory_bytes'] / 2**30:.2f}" if r.get("peak_memory_bytes") else "-"),
    ("trainable %", lambda r: f"{r['trainable_percent']:.4f}"),
    ("stored MB", lambda r: f"{r['stored_bytes'] / 1e6:.3f}"),
    ("stored / base", lambda r: f"{100 * r['stored_share']:.2f}%" if r.get("stored_share") is not None else "-"),
    ("forgetting", lambda r: f"{r['forgetting']:+.4f}"),
]


def markdown_table(records: list[dict[str, Any]]) -> str:
    lines = ["| " + " | ".join(h for h, _ in COLUMNS) + " |", "|" + "---|" * len(COLUMNS)]
    lines += ["| " + " | ".join(f(r) for _, f in COLUMNS) + " |" for r in records]
    return "\n".join(lines)


def _csv(records: list[dict[str, Any]]) -> str:
    flat = []
    for r in records:
        row = {k: v for k, v in r.items() if k not in PER_ROW and k not in ("rouge", "settings")}
        row.update({k: v for k, v in r["rouge"].items()})
        row["settings"] = " ".join(f"{k}={v}" for k, v in r["settings"].items())
        flat.append(row)
    buffer = io.StringIO()
    writer = csv.DictWriter(buffer, fieldnames=list(flat[0]))
    writer.writeheader()
    writer.writerows(flat)
    return buffer.getvalue()


def sample_records(records: list[dict[str, Any]], rows: list[dict[str, Any]]) -> list[dict[str, Any]]:
    """Per test row: input, human references, and every run's prediction with its ROUGE."""
    samples = []
    for i, row in enumerate(rows):
        samples.append({**row, "predictions": {r["name"]: r["predictions"][i] for r in records},
                        "rouge": {r["name"]: r["example_rouge"][i] for r in records}})
    return samples


def page(records: list[dict[str, Any]], svgs: dict[str, str], samples: list[dict[str, Any]], setup: dict[str, Any]) -> str:
    head = "".join(f"<th>{escape(h)}</th>" for h, _ in COLUMNS)
    body = "".join("<tr>" + "".join(f"<td>{escape(f(r))}</td>" for _, f in COLUMNS) + "</tr>" for r in records)
    facts = "".join(f"<li>{escape(item)}</li>" for item in setup["overrides"])
    figures = "".join(f"<figure><figcaption>{escape(name.replace('_', ' '))}</figcaption>{svg[svg.find('<svg'):]}</figure>" for name, svg in svgs.items())
    return f"""<!DOCTYPE html>
<html lang="en"><head><meta charset="utf-8"><title>peftlab compare</title>
<style>{STYLE} figure{{display:inline-block;margin:.5rem;max-width:29rem}} figure svg{{width:100%;height:auto}} body{{max-width:64rem}}</style></head>
<body><h1>Method comparison</h1>
<p class="meta">Every run: the same training rows, budget and seed; ROUGE F1 in percent on the same test rows
(several references: best-matching reference per row). Forgetting: change of the loss (nats per token) on a
general-text reference set against the base model. Stored: the weight files a run needs (the whole model for full
fine-tuning) against the base model's.</p>
<h2>Results</h2><table id="results"><thead><tr>{head}</tr></thead><tbody>{body}</tbody></table>
<h2>Plots</h2>{figures}
<h2>Setup</h2><ul class="meta">{facts}<li>test data: {escape(setup.get('eval_data'))}</li></ul>
<h2>Samples</h2>{''.join(sample_html(s) for s in pick_samples(samples, 6))}
</body></html>
"""


def write_report(out: Path, records: list[dict[str, Any]], rows: list[dict[str, Any]], setup: dict[str, Any]) -> str:
    """Write every output; return the markdown table."""
    summary = [{k: v for k, v in r.items() if k not in PER_ROW} for r in records]
    atomic.write_text(out / "results.json", json.dumps(summary, indent=2) + "\n")
    atomic.write_text(out / "results.csv", _csv(records))
    table = markdown_table(records)
    atomic.write_text(out / "results.md", table + "\n")
    plots = out / "plots"
    plots.mkdir(exist_ok=True)
    svgs = write_plots(summary, plots)
    atomic.write_text(out / "report.html", page(records, svgs, sample_records(records, rows), setup))
    return table
