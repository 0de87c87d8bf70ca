"""The comparison's recommendation in words, from its results alone (no torch here)."""

from __future__ import annotations

from typing import Any

FORGETTING_LIMIT = 0.1  # general-text loss rise (nats per token) above which a method is said to hurt general text
MEMORY_SLACK = 1.10  # "within the memory of the cheapest method": at most 10% above its peak
TASKS_LIMIT = 0.05  # general multiple-choice accuracy lost (share of items) above which a method is named
TOKEN_SHORTFALL = 0.95  # a run that saw less than this share of the most tokens any run saw is named


def _quality(record: dict[str, Any]) -> float:
    """The primary metric in percent (the first --metric's deciding key; ROUGE-L by default)."""
    return 100 * record["scores"][record["primary"]]


def metric_label(record: dict[str, Any]) -> str:
    return record["score_labels"][record["primary"]]


def figure(record: dict[str, Any]) -> str:
    """The primary metric with its interval when there is one: 'ROUGE-L 35.2 (95% interval 33.1-37.4)'."""
    bounds = (record.get("score_interval") or {}).get(record["primary"])
    text = f"{metric_label(record)} {_quality(record):.1f}"
    return text + (f" (95% interval {100 * bounds[0]:.1f}-{100 * bounds[1]:.1f})" if bounds else "")


def _gib(record: dict[str, Any]) -> float:
    return record["peak_memory_bytes"] / 2**30


def verdict(records: list[dict[str, Any]], comparisons: list[dict[str, Any]], forgetting_limit: float = FORGETTING_LIMIT) -> list[str]:
    ranked = sorted(records, key=lambda r: -_quality(r))
    trained = [r for r in ranked if r["method"] != "base"]
    best = ranked[0]
    lines = [f"Best quality: {best['name']}, {figure(best)}."]
    tested = {(c["first"], c["second"]): c for c in comparisons}
    if not comparisons:
        lines.append("Each method ran once at its default settings: rerun with --trials N --seeds K to tune them and "
                     "to know which differences are real.")
    else:
        tied = [r["name"] for r in ranked[1:] if (best["name"], r["name"]) in tested and not tested[best["name"], r["name"]]["significant"]]
        beaten = [r["name"] for r in ranked[1:3] if (best["name"], r["name"]) in tested and tested[best["name"], r["name"]]["significant"]]
        if tied:
            lines.append(f"Cannot be told apart from {best['name']}: {', '.join(tied)} (paired bootstrap over the same test examples, 95%).")
        if beaten:
            lines.append(f"{best['name']} is better than {', '.join(beaten)} beyond doubt (paired bootstrap, 95%).")
    with_memory = [r for r in trained if r.get("peak_memory_bytes")]
    if with_memory:
        cheapest = min(with_memory, key=_gib)
        within = [r for r in with_memory if _gib(r) <= _gib(cheapest) * MEMORY_SLACK]
        pick = max(within, key=_quality)
        lines.append(f"Best within the memory of the cheapest method ({cheapest['name']}, {_gib(cheapest):.2f} GiB peak): "
                     f"{pick['name']}, {figure(pick)}.")
    base = next((r for r in records if r["method"] == "base"), None)
    if base is not None:
        below = []
        for r in trained:
            if _quality(r) < _quality(base):
                test = tested.get((base["name"], r["name"]))
                test = test or tested.get((r["name"], base["name"]))
                below.append(r["name"] + ("" if test is None else (" (significant)" if test["significant"] else " (within noise)")))
        if below:
            lines.append(f"Below the untrained base model on {metric_label(base)}: {', '.join(below)}.")
    hurt = [f"{r['name']} ({r['forgetting']:+.3f})" for r in trained if r.get("forgetting") is not None and r["forgetting"] > forgetting_limit]
    lines.append(f"Hurt general text (loss up by more than {forgetting_limit} nats/token): {', '.join(hurt)}." if hurt else
                 f"No method raised the general-text loss by more than {forgetting_limit} nats/token.")
    lost = [f"{r['name']} ({100 * r['general_tasks_change']:+.1f} points)" for r in trained
            if r.get("general_tasks_change") is not None and r["general_tasks_change"] < -TASKS_LIMIT]
    if any(r.get("general_tasks_change") is not None for r in trained):
        lines.append(f"Lost general multiple-choice accuracy (more than {100 * TASKS_LIMIT:.0f} points below the base): {', '.join(lost)}."
                     if lost else f"No method lost more than {100 * TASKS_LIMIT:.0f} points of general multiple-choice accuracy.")
    with_tokens = [r for r in trained if r.get("train_tokens")]
    if with_tokens:
        most = max(with_tokens, key=lambda r: r["train_tokens"])
        short = [f"{r['name']} {100 * r['train_tokens'] / most['train_tokens']:.0f}%" for r in with_tokens
                 if r["train_tokens"] < TOKEN_SHORTFALL * most["train_tokens"]]
        if short:
            lines.append(f"Unequal budget: in the same optimizer steps these saw fewer training tokens than {most['name']}: {', '.join(short)}.")
    return lines
