"""The comparison's four plots, as PNG and SVG, from results alone (no torch here)."""

from __future__ import annotations

from pathlib import Path
from typing import Any

from peftlab import atomic

QUALITY = "rougeL"  # the quality axis: ROUGE-L F1


def _figure():
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    figure, axes = plt.subplots(figsize=(6.4, 4.0), dpi=110)
    axes.grid(True, alpha=0.3)
    return plt, figure, axes


def _scatter(runs: list[dict[str, Any]], x_key: str, x_label: str, log_x: bool):
    plt, figure, axes = _figure()
    for run in runs:
        x, y = run.get(x_key), run["rouge"][QUALITY] * 100
        if x is None:
            continue
        axes.scatter([x], [y], s=36)
        axes.annotate(run["name"], (x, y), textcoords="offset points", xytext=(4, 4), fontsize=8)
    if log_x:
        axes.set_xscale("log")
    axes.set_xlabel(x_label)
    axes.set_ylabel("ROUGE-L F1 (%)")
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
    """name -> (pyplot, figure) for the four plots."""
    trained = [r for r in results if r["method"] != "base"]
    return {
        "quality_vs_trainable_share": _scatter(results, "trainable_percent_plot", "trainable parameters (% of total, log)", log_x=True),
        "quality_vs_training_time": _scatter(trained, "train_seconds", "training time (s)", log_x=False),
        "peak_memory": _bars(trained, [r["peak_memory_bytes"] / 2**30 for r in trained], "peak training memory (GiB)"),
        "forgetting": _bars(trained, [r["forgetting"] for r in trained], "general-text loss change vs base (nats/token)"),
    }


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
