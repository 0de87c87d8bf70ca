"""The comparison's plots, as PNG and SVG, from results alone (no torch here): quality against each cost
with its Pareto front, memory and forgetting bars, and the tuning history."""

from __future__ import annotations

from pathlib import Path
from typing import Any

from peftlab import atomic



def _figure():
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    figure, axes = plt.subplots(figsize=(6.4, 4.0), dpi=110)
    axes.grid(True, alpha=0.3)
    return plt, figure, axes


def pareto_front(points: list[tuple[float, float, str]]) -> list[tuple[float, float, str]]:
    """The (cost, quality, name) points no other point beats on both (lower cost and higher quality), by cost."""
    front, best = [], float("-inf")
    for cost, quality, name in sorted(points, key=lambda p: (p[0], -p[1])):
        if quality > best:
            front.append((cost, quality, name))
            best = quality
    return front


def _scatter(runs: list[dict[str, Any]], x_key: str, x_label: str, log_x: bool):
    plt, figure, axes = _figure()
    points = []
    quality = runs[0]["primary"]  # the quality axis: the primary metric
    for run in runs:
        x, y = run.get(x_key), run["scores"][quality] * 100
        if x is None:
            continue
        points.append((x, y, run["name"]))
        bounds = (run.get("score_interval") or {}).get(quality)
        error = [[y - 100 * bounds[0]], [100 * bounds[1] - y]] if bounds else None
        axes.errorbar([x], [y], yerr=error, fmt="o", markersize=5, capsize=3)
        axes.annotate(run["name"], (x, y), textcoords="offset points", xytext=(4, 4), fontsize=8)
    front = pareto_front(points)
    if front:
        axes.plot([p[0] for p in front], [p[1] for p in front], color="#444", linewidth=1, linestyle="--", zorder=0)
        axes.scatter([p[0] for p in front], [p[1] for p in front], s=140, facecolors="none", edgecolors="#d04a4a", linewidths=1.5)
    if log_x:
        axes.set_xscale("log")
    axes.set_xlabel(x_label)
    axes.set_ylabel(f"{runs[0]['score_labels'][quality]} (%)")
    return plt, figure


def _tuning(runs: list[dict[str, Any]], key: str, label: str, scale: float = 1.0):
    """Each method's trials: learning rate against a final validation figure (x: a pruned trial, at its last loss)."""
    plt, figure, axes = _figure()
    for run in runs:
        history = (run.get("tuning") or {}).get("history", [])
        done = [h for h in history if h["state"] == "complete" and h.get(key) is not None]
        line = axes.scatter([h["params"]["lr"] for h in done], [scale * h[key] for h in done], s=30, label=run["name"])
        if key == "validation_loss":
            pruned = [h for h in history if h["state"] == "pruned" and h["validation_losses"]]
            axes.scatter([h["params"]["lr"] for h in pruned], [list(h["validation_losses"].values())[-1] for h in pruned],
                         marker="x", s=30, color=line.get_facecolor()[0])
    axes.set_xscale("log")
    axes.set_xlabel("learning rate (log; x = pruned, at its last validation loss)" if key == "validation_loss" else "learning rate (log)")
    axes.set_ylabel(label)
    axes.legend(fontsize=7)
    return plt, figure


def _bars(runs: list[dict[str, Any]], values: list[float], label: str):
    plt, figure, axes = _figure()
    names = [run["name"] for run in runs]
    axes.bar(range(len(values)), values, color="#4a7bd0")
    axes.set_xticks(range(len(values)), names, rotation=30, ha="right", fontsize=8)
    axes.set_ylabel(label)
    axes.axhline(0, color="#444", linewidth=0.8)
    return plt, figure


def plots(results: list[dict[str, Any]]) -> dict[str, Any]:
    """name -> (pyplot, figure) for each plot."""
    trained = [r for r in results if r["method"] != "base"]
    if not trained:  # the base alone (`--methods base`): no cost to plot quality against
        return {}
    for run in trained:
        run["peak_memory_gib_plot"] = run["peak_memory_bytes"] / 2**30 if run.get("peak_memory_bytes") else None
        run["stored_mb_plot"] = run["stored_bytes"] / 1e6
    figures = {
        "quality_vs_peak_memory": _scatter(trained, "peak_memory_gib_plot", "peak training memory (GiB)", log_x=False),
        "quality_vs_stored_size": _scatter(trained, "stored_mb_plot", "stored size (MB, log)", log_x=True),
        "quality_vs_training_time": _scatter(trained, "train_seconds", "training time (s)", log_x=False),
        "quality_vs_trainable_share": _scatter(results, "trainable_percent_plot", "trainable parameters (% of total, log)", log_x=True),
        "peak_memory": _bars(trained, [r["peak_memory_bytes"] / 2**30 for r in trained], "peak training memory (GiB)"),
        "forgetting": _bars(trained, [r["forgetting"] for r in trained], "general-text loss change vs base (nats/token)"),
    }
    if any(r.get("tuning") for r in trained):
        figures["tuning_history"] = _tuning(trained, "validation_loss", "validation loss")
    if any(h.get("validation_score") is not None for r in trained for h in (r.get("tuning") or {}).get("history", [])):
        label = trained[0]["score_labels"][trained[0]["primary"]]
        figures["tuning_validation_score"] = _tuning(trained, "validation_score", f"validation {label} (%)", scale=100)
    for run in trained:
        run.pop("peak_memory_gib_plot"), run.pop("stored_mb_plot")
    return figures


def write_plots(results: list[dict[str, Any]], folder: Path) -> dict[str, str]:
    """Write PNG and SVG of each plot into `folder`; return name -> SVG text for inlining."""
    import io

    for run in results:  # the base trains nothing; place it at the left edge of the log axis
        share = run.get("trainable_percent") or 0.0
        run["trainable_percent_plot"] = share if share > 0 else min(
            [r["trainable_percent"] for r in results if r.get("trainable_percent")] or [1.0]) / 10
    svgs = {}
    for name, (plt, figure) in plots(results).items():
        figure.tight_layout()
        for kind in ("png", "svg"):
            buffer = io.BytesIO()
            figure.savefig(buffer, format=kind)
            path = folder / f"{name}.{kind}"
            atomic.write_bytes(path, buffer.getvalue())
            if kind == "svg":
                svgs[name] = buffer.getvalue().decode("utf-8")
        plt.close(figure)
    for run in results:
        run.pop("trainable_percent_plot", None)
    return svgs
