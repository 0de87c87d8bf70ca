"""A tuned comparison's results from its studies: per-method means over seeds with 95% intervals,
paired differences between the top methods, the tuning history, and the verdict."""

from __future__ import annotations

import json
from typing import Any

import numpy as np

from peftlab.compare import studies
from peftlab.compare.search_space import DEFAULT, START_STEP
from peftlab.compare.statistics import interval, paired_difference
from peftlab.report.verdict import verdict

MEANS = ("train_seconds", "real_tokens_per_second", "general_text_loss", "train_loss", "eval_seconds", "train_tokens", "steps")
TOP = 3  # differences are tested between the best three, and for every method against the base


def _scores(records: list[dict[str, Any]], kind: str) -> np.ndarray:
    return np.array([[example[kind] for example in r["example_scores"]] for r in records])  # seeds x examples


def aggregate(runs: list[dict[str, Any]], base: dict[str, Any]) -> dict[str, Any]:
    """One method's seeds as one record: means, the worst peak memory, intervals over seeds and examples."""
    first = runs[0]
    kinds = list(first["scores"])
    record = {k: v for k, v in first.items() if k not in (*MEANS, "scores", "seed", "general_tasks")}
    record["seeds"] = [r.get("seed") for r in runs]
    scores = {kind: _scores(runs, kind) for kind in kinds}
    record["scores"] = {kind: float(scores[kind].mean()) for kind in kinds}
    record["score_interval"] = {kind: interval(scores[kind]) for kind in kinds}
    record["seed_scores"] = [r["scores"][first["primary"]] for r in runs]
    tasks = [r["general_tasks"]["accuracy"] for r in runs if r.get("general_tasks")]
    record["general_tasks"] = {"accuracy": float(np.mean(tasks))} if tasks else None
    base_tasks = (base.get("general_tasks") or {}).get("accuracy")
    record["general_tasks_change"] = record["general_tasks"]["accuracy"] - base_tasks if tasks and base_tasks is not None else None
    if first.get("confusion"):  # counts summed over the seeds
        record["confusion"] = {true: {predicted: sum(r["confusion"][true][predicted] for r in runs) for predicted in row}
                               for true, row in first["confusion"].items()}
    for key in MEANS:
        values = [r[key] for r in runs if r.get(key) is not None]
        record[key] = float(np.mean(values)) if values else None
    memories = [r["peak_memory_bytes"] for r in runs if r.get("peak_memory_bytes")]
    record["peak_memory_bytes"] = max(memories) if memories else None
    record["forgetting"] = record["general_text_loss"] - base["general_text_loss"]
    record["stored_share"] = record["stored_bytes"] / base["base_bytes"] if base.get("base_bytes") else None
    record["example_scores"] = [{kind: float(scores[kind][:, i].mean()) for kind in kinds}
                                for i in range(len(first["example_scores"]))]  # each test example, averaged over seeds
    return record


def starting_point(trial: Any) -> str | None:
    """Which enqueued starting point the trial is (a retry keeps it), None for TPE's. Studies begun before the
    learning-rate bracket enqueued only the default: a trial with fixed parameters and no name is that."""
    return trial.user_attrs.get(studies.START, DEFAULT if "fixed_params" in trial.system_attrs else None)


def tuning_history(study: Any) -> list[dict[str, Any]]:
    """Every trial that ran: its configuration, outcome and validation losses (for the table and the plot)."""
    history = []
    for trial in study.get_trials(deepcopy=False):
        if studies.INDEX not in trial.user_attrs or trial.user_attrs.get(studies.SURPLUS):
            continue
        start = starting_point(trial)
        history.append({"index": trial.user_attrs[studies.INDEX], "state": trial.state.name.lower(), "params": trial.params,
                        "start": start, "default": start == DEFAULT,
                        "validation_loss": trial.user_attrs.get(studies.VALIDATION_LOSS, trial.value),  # older studies: the value
                        "validation_score": trial.user_attrs.get(studies.VALIDATION_SCORE, trial.user_attrs.get(studies.VALIDATION_ROUGE)),
                        "validation_losses": {str(k): v for k, v in trial.intermediate_values.items()}})
    return sorted(history, key=lambda h: h["index"])


def comparisons(records: list[dict[str, Any]]) -> list[dict[str, Any]]:
    """Paired differences in the primary metric: among the best three, and every method against the base."""
    primary = records[0]["primary"]
    ranked = sorted(records, key=lambda r: -r["scores"][primary])
    pairs = [(a, b) for i, a in enumerate(ranked[:TOP]) for b in ranked[i + 1:TOP]]
    base = next(r for r in records if r["method"] == "base")
    pairs += [(r, base) for r in ranked if r is not base and (r, base) not in pairs and (base, r) not in pairs]
    def per_example(record: dict[str, Any]) -> np.ndarray:  # per test example, already averaged over seeds
        return np.array([example[primary] for example in record["example_scores"]])

    return [{"first": a["name"], "second": b["name"], **paired_difference(per_example(a), per_example(b))} for a, b in pairs]


def tuned_results(tuned: Any, examples: list[Any]) -> dict[str, Any]:
    done = studies.done_trials(tuned.final)
    by_item: dict[tuple[str, int], dict[str, Any]] = {}
    for index, trial in done.items():
        if index < len(tuned.items):
            by_item[tuned.items[index]] = json.loads(trial.user_attrs[studies.RECORD])
    missing = [f"{m}" + (f" seed {k}" if m != "base" else "") for m, k in tuned.items if (m, k) not in by_item]
    if missing:
        from peftlab.errors import PeftlabError

        raise PeftlabError(f"the comparison lacks {', '.join(missing[:5])} (failed; see the train.log files in {tuned.out}); "
                           "run the same command again to retry")
    base = by_item[("base", 0)]
    base["seed"] = None
    records = [aggregate([base], base)]
    for method, study in tuned.tuning.items():
        record = aggregate([by_item[(method, k)] for k in range(tuned.setup.seeds)], base)
        history = tuning_history(study)
        default = next((h for h in history if h["default"] and h["state"] == "complete"), {})
        finished = [h for h in history if h["state"] in ("complete", "pruned")]  # retried attempts of one trial count once
        record["tuning"] = {"trials": len(finished), "pruned": sum(h["state"] == "pruned" for h in finished),
                            "select_by": tuned.setup.select_by,
                            "lr_bracket_factor": START_STEP,  # the report tells what trials 1 and 2 were
                            "default_validation_loss": default.get("validation_loss"),
                            "default_validation_score": default.get("validation_score"), "history": history}
        records.append(record)
    tested = comparisons(records)
    return {"records": records, "comparisons": tested, "verdict": verdict(records, tested)}
