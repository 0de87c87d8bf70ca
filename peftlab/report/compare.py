"""The comparison's outputs from its records: results.json/.csv, a markdown table, plots, one HTML page."""

from __future__ import annotations

import csv
import io
import json
from pathlib import Path
from typing import Any

from peftlab import atomic
from peftlab.report.html import STYLE, confusion_html, escape, sample_html
from peftlab.report.plots import write_plots
from peftlab.report.tables import pick_samples
from peftlab.report.verdict import verdict

PER_ROW = ("predictions", "example_scores")  # kept out of results.json; they feed the samples


def _interval(record: dict[str, Any]) -> str:
    bounds = (record.get("score_interval") or {}).get(record["primary"])
    return f"{100 * bounds[0]:.1f}-{100 * bounds[1]:.1f}" if bounds else "-"


def columns(records: list[dict[str, Any]]) -> list[tuple[str, Any]]:
    """(header, formatter): the run, every score key (named as its metric names it) with the primary one's interval, then costs."""
    first = records[0]
    scores = []
    for key, label in first["score_labels"].items():
        scores.append((label, lambda r, key=key: f"{100 * r['scores'][key]:.2f}"))
        if key == first["primary"]:
            scores.append((f"{label} 95%", _interval))
    tasks = [("general MC acc. change", lambda r: f"{100 * r['general_tasks_change']:+.1f}" if r.get("general_tasks_change") is not None
              else "-")] if any(r.get("general_tasks") for r in records) else []
    return [("run", lambda r: r["name"]), *scores, *COSTS, *tasks]


COSTS = [  # (header, formatter)
    ("seeds", lambda r: str(len(r["seeds"])) if r.get("seeds") and r["method"] != "base" else "-"),
    ("steps", lambda r: f"{r['steps']:.0f}" if r.get("steps") else "-"),
    ("train tokens", lambda r: f"{r['train_tokens']:.0f}" if r.get("train_tokens") else "-"),
    ("train s", lambda r: f"{r['train_seconds']:.0f}"),
    ("real tok/s", lambda r: f"{r['real_tokens_per_second']:.0f}" if r.get("real_tokens_per_second") else "-"),
    ("peak GiB", lambda r: f"{r['peak_memory_bytes'] / 2**30:.2f}" if r.get("peak_memory_bytes") else "-"),
    ("trainable %", lambda r: f"{r['trainable_percent']:.4f}"),
    ("stored MB", lambda r: f"{r['stored_bytes'] / 1e6:.3f}"),
    ("stored / base", lambda r: f"{100 * r['stored_share']:.2f}%" if r.get("stored_share") is not None else "-"),
    ("forgetting", lambda r: f"{r['forgetting']:+.4f}"),
]


def markdown_table(records: list[dict[str, Any]]) -> str:
    table = columns(records)
    lines = ["| " + " | ".join(h for h, _ in table) + " |", "|" + "---|" * len(table)]
    lines += ["| " + " | ".join(f(r) for _, f in table) + " |" for r in records]
    return "\n".join(lines)


def _csv(records: list[dict[str, Any]]) -> str:
    flat = []
    for r in records:
        row = {k: v for k, v in r.items() if k not in PER_ROW and k not in ("scores", "settings", "score_interval", "score_labels",
                                                                             "tuning", "seeds", "seed_scores", "trackers", "general_tasks",
                                                                             "confusion")}
        row.update({k: v for k, v in r["scores"].items()})
        row["settings"] = " ".join(f"{k}={v}" for k, v in r["settings"].items())
        flat.append(row)
    buffer = io.StringIO()
    writer = csv.DictWriter(buffer, fieldnames=list(dict.fromkeys(key for row in flat for key in row)))
    writer.writeheader()
    writer.writerows(flat)
    return buffer.getvalue()


def sample_records(records: list[dict[str, Any]], rows: list[dict[str, Any]]) -> list[dict[str, Any]]:
    """Per test row: input, human references, and every run's prediction with its scores."""
    samples = []
    for i, row in enumerate(rows):
        samples.append({**row, "predictions": {r["name"]: r["predictions"][i] for r in records},
                        "scores": {r["name"]: r["example_scores"][i] for r in records}})
    return samples


def _differences_html(comparisons: list[dict[str, Any]], label: str) -> str:
    if not comparisons:
        return ""
    rows = "".join(f"<tr><td>{escape(c['first'])} - {escape(c['second'])}</td><td>{100 * c['difference']:+.2f}</td>"
                   f"<td>{100 * c['interval'][0]:+.2f} to {100 * c['interval'][1]:+.2f}</td><td>{c['p_value']:.3f}</td>"
                   f"<td>{'yes' if c['significant'] else 'no'}</td></tr>" for c in comparisons)
    return (f"<h2>Differences</h2><p class='meta'>{escape(label)} points, paired bootstrap over the same test examples (each averaged "
            "over its seeds).</p><table id='differences'><thead><tr><th>pair</th><th>difference</th><th>95% interval</th>"
            f"<th>p</th><th>significant</th></tr></thead><tbody>{rows}</tbody></table>")


def _tuning_html(records: list[dict[str, Any]]) -> str:
    tuned = [r for r in records if r.get("tuning")]
    if not tuned:
        return ""
    by_metric = any(r["tuning"].get("select_by") in ("metric", "rouge") for r in tuned)
    label = escape(tuned[0]["score_labels"][tuned[0]["primary"]])

    def number(value: float | None, scale: float = 1.0, digits: int = 4) -> str:
        return "-" if value is None else f"{scale * value:.{digits}f}"

    rows = []
    for r in tuned:
        tuning = r["tuning"]
        chosen = " ".join(f"{k}={v}" for k, v in r["settings"].items())
        metric = (f"<td>{number(tuning.get('default_validation_score'), 100, 2)}</td><td>{number(r.get('validation_score'), 100, 2)}</td>"
                  if by_metric else "")
        rows.append(f"<tr><td>{escape(r['name'])}</td><td>{tuning['trials']}</td><td>{tuning['pruned']}</td>"
                    f"<td>{number(tuning.get('default_validation_loss'))}</td><td>{number(r.get('validation_loss'))}</td>{metric}"
                    f"<td style='text-align:left'>{escape(chosen)}</td></tr>")
    factor = tuned[0]["tuning"]["lr_bracket_factor"]  # the results record it: the report never imports compare
    guide = f"the highest {label} of answers generated for the validation rows" if by_metric else "the lowest final validation loss"
    metric_head = f"<th>default val. {label}</th><th>chosen val. {label}</th>" if by_metric else ""
    return ("<h2>Tuning</h2><p class='meta'>Each method's trials on the validation rows (carved from the training data; the "
            f"test rows were scored once, with the chosen configuration: {guide}). Trial 0 of each method is its default; trials 1 "
            f"and 2 its default with the learning rate times and divided by {factor:.2f}; TPE chooses the rest.</p>"
            "<table id='tuning'><thead><tr><th>method</th><th>trials</th><th>pruned</th><th>default val. loss</th>"
            f"<th>chosen val. loss</th>{metric_head}<th>chosen</th></tr></thead><tbody>{''.join(rows)}</tbody></table>")


def page(records: list[dict[str, Any]], svgs: dict[str, str], samples: list[dict[str, Any]], setup: dict[str, Any],
         lines: list[str], comparisons: list[dict[str, Any]]) -> str:
    table = columns(records)
    head = "".join(f"<th>{escape(h)}</th>" for h, _ in table)
    body = "".join("<tr>" + "".join(f"<td>{escape(f(r))}</td>" for _, f in table) + "</tr>" for r in records)
    primary, label = records[0]["primary"], records[0]["score_labels"][records[0]["primary"]]
    facts = "".join(f"<li>{escape(item)}</li>" for item in setup["overrides"])
    figures = "".join(f"<figure><figcaption>{escape(name.replace('_', ' '))}</figcaption>{svg[svg.find('<svg'):]}</figure>" for name, svg in svgs.items())
    return f"""<!DOCTYPE html>
<html lang="en"><head><meta charset="utf-8"><title>peftlab compare</title>
<style>{STYLE} figure{{display:inline-block;margin:.5rem;max-width:29rem}} figure svg{{width:100%;height:auto}} body{{max-width:64rem}}</style></head>
<body><h1>Method comparison</h1>
<p class="meta">Every run: the same training rows, budget and seed; scores in percent on the same test rows, ranked by
{escape(label)} (several references: best-matching reference per row). Forgetting: change of the loss (nats per token) on a
general-text reference set against the base model. Stored: the weight files a run needs (the whole model for full
fine-tuning) against the base model's. With seeds: means over seeds, 95% intervals from a bootstrap over seeds and
test examples.</p>
<h2>Verdict</h2><ul id="verdict">{''.join(f"<li>{escape(line)}</li>" for line in lines)}</ul>
<h2>Results</h2><table id="results"><thead><tr>{head}</tr></thead><tbody>{body}</tbody></table>
{_differences_html(comparisons, label)}
{confusion_html({r["name"]: r for r in records})}
<h2>Plots</h2><p class="meta">Quality against each cost; the ringed points joined by the line are the Pareto front (no
other run is better in quality and cheaper at once); bars are 95% intervals.</p>{figures}
{_tuning_html(records)}
<h2>Setup</h2><ul class="meta">{facts}<li>test data: {escape(setup.get('eval_data'))}</li></ul>
<h2>Samples</h2>{''.join(sample_html(s, primary, label) for s in pick_samples(samples, 6))}
</body></html>
"""


def write_report(out: Path, records: list[dict[str, Any]], rows: list[dict[str, Any]], setup: dict[str, Any],
                 tested: dict[str, Any] | None = None) -> str:
    """Write every output; return the markdown table. `tested`: a tuned comparison's differences and verdict."""
    comparisons = (tested or {}).get("comparisons", [])
    lines = (tested or {}).get("verdict") or verdict(records, comparisons)
    summary = [{k: v for k, v in r.items() if k not in PER_ROW} for r in records]
    atomic.write_text(out / "results.json", json.dumps(summary, indent=2) + "\n")
    atomic.write_text(out / "verdict.json", json.dumps({"verdict": lines, "comparisons": comparisons}, indent=2) + "\n")
    atomic.write_text(out / "results.csv", _csv(records))
    table = markdown_table(records)
    atomic.write_text(out / "results.md", table + "\n\n" + "\n".join(f"- {line}" for line in lines) + "\n")
    plots = out / "plots"
    plots.mkdir(exist_ok=True)
    svgs = write_plots(summary, plots)
    atomic.write_text(out / "report.html", page(records, svgs, sample_records(records, rows), setup, lines, comparisons))
    return table
