"""`peftlab compare --trials N`, top to bottom: carve validation rows, tune each method on them (Optuna,
one study per method), train each method's chosen configuration with K seeds, score those once on the
test rows, and report means with 95% intervals, paired differences and a verdict.

The final runs (the base and each method x seed) are claimed as trials of one more study, "final", although
Optuna chooses nothing there: its shared storage is what lets `--worker` processes on several machines share
them (who runs what, heartbeats, re-queues of a dead worker's run) with no launcher or scheduler of our own.
Each final run's record is still the result.json in its folder; the trial carries a copy for the report."""

from __future__ import annotations

import dataclasses
import json
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Callable

from peftlab import artifacts, outputs
from peftlab import config as cfg
from peftlab.compare import studies
from peftlab.compare.runs import (COMPARISON, Scoring, base_result, base_size, check_comparison_output, examples_info,
                                  prepare_output, read_result, result_record, score, scoring_for, stored_bytes, test_examples,
                                  train, trained_methods, validation_losses, write_result)
from peftlab.compare.search_space import SearchSpace, search_space
from peftlab.compare.split import carve_validation, write_split
from peftlab.config import CompareSetup
from peftlab.evaluate.metrics import check_references
from peftlab.errors import PeftlabError
from peftlab.generation import GenerationSettings

STALE_AFTER_SECONDS = 120  # a trial whose worker has been silent this long is taken over by another


@dataclass
class Sharing:
    """Where the studies live and what this process does with them."""
    storage: str | None = None  # any database URL Optuna supports; None: studies.db in the output folder
    study: str | None = None  # the name shared by every worker; None: the output folder's name
    worker: bool = False  # only work: no report, no waiting for others at the end
    stale_after: int = STALE_AFTER_SECONDS


@dataclass
class Tuned:
    """One comparison's shared pieces, as every worker opens them."""
    setup: CompareSetup
    out: Path
    shared: cfg.RunConfig
    train_file: str
    validation_file: str
    spaces: dict[str, SearchSpace]
    tuning: dict[str, Any]  # method -> its Optuna study
    final: Any  # the final study: base and every (method, seed), scored on the test rows
    items: list[tuple[str, int]]  # the final study's work list: ("base", 0), (method, seed offset)...
    eval_steps: int
    validation_examples: list[Any]  # the validation rows as scored examples (with --select-by metric)
    settings: GenerationSettings
    scoring: Scoring
    launcher_config: str | None
    say: Callable[[str], None]


def eval_steps(shared: cfg.RunConfig) -> int:
    """Validation at half the budget (where the pruner may stop a trial) and at its end; each validation pass
    costs about a third of the training on 16-step budgets, so no more (an epoch budget: the user's eval_steps)."""
    return max(1, shared.train.max_steps // 2) if shared.train.max_steps > 0 else shared.train.eval_steps


def open_comparison(setup: CompareSetup, methods: list[str], output: str, sharing: Sharing, settings: GenerationSettings,
                    launcher_config: str | None, overwrite: bool, say: Callable[[str], None]) -> tuple[Tuned, Path]:
    import optuna

    final_out = Path(output)
    trained = trained_methods(methods)
    shared = setup.shared_config()
    for flag, value in (("--trials", setup.trials), ("--seeds", setup.seeds)):
        if value < 1:
            raise PeftlabError(f"{flag} must be at least 1, got {value}")
    if sharing.storage and overwrite:
        raise PeftlabError("--overwrite does not clear a shared --storage; pass another --study name to start over")
    check_comparison_output(final_out, setup, overwrite and not sharing.worker, launcher_config)
    split = carve_validation(shared.data.train, setup.val_share, shared.train.seed)
    storage = studies.open_storage(sharing.storage, sharing.stale_after) if sharing.storage else None  # checked before writing
    out = prepare_output(final_out, setup, overwrite and not sharing.worker)
    train_file, validation_file = write_split(split, out / "split")
    storage = storage or studies.open_storage(f"sqlite:///{(out / 'studies.db').resolve()}", sharing.stale_after)
    name = sharing.study or final_out.resolve().name
    spaces = {m: search_space(m, shared) for m in trained}
    steps = eval_steps(shared)

    def tuning_study(method: str) -> Any:
        sampler = sampler_for(shared.train.seed, setup.trials, 0)
        pruner = optuna.pruners.MedianPruner(n_startup_trials=2)  # at half the budget; a finished trial is kept
        def start(study: Any) -> None:  # the default, then its learning rate bracketed; TPE after
            for role, params in spaces[method].starting_points(setup.trials):
                study.enqueue_trial(params, user_attrs={studies.START: role})

        return studies.open_study(storage, f"{name}/tune/{method}", sampler, pruner, on_create=start)

    record = {**setup.to_dict(), "methods": methods}
    final = studies.open_study(storage, f"{name}/final", on_create=lambda study: study.set_user_attr("setup", record),
                               direction="maximize")  # its values are the primary metric on the test rows
    recorded = final.user_attrs.get("setup")
    if recorded is not None and recorded != record:
        changed = artifacts.config_differences(recorded, record)
        raise PeftlabError(f"study {name} in {sharing.storage or out / 'studies.db'} was started with another setup "
                           f"(differs in {', '.join(changed[:5])}); run every worker with the same options, or pass another --study")
    items = [("base", 0)] + [(m, k) for m in trained for k in range(setup.seeds)]
    tuned = Tuned(setup, out, shared, train_file, validation_file, spaces, {m: tuning_study(m) for m in trained}, final, items,
                  steps, test_examples(shared, validation_file, None), settings, scoring_for(setup), launcher_config, say)
    return tuned, final_out


def sampler_for(seed: int, trials: int, number: int) -> Any:
    """TPE seeded by the trial's number: the same suggestions on a rerun, different ones in two workers
    (a sampler seeded once per process would draw the same first configurations in every worker)."""
    import optuna

    return optuna.samplers.TPESampler(seed=seed + 7919 * number, n_startup_trials=max(1, trials // 2), constant_liar=True)


def run_tuned_compare(setup: CompareSetup, methods: list[str], output: str, settings: GenerationSettings, sharing: Sharing,
                      launcher_config: str | None = None, overwrite: bool = False,
                      say: Callable[[str], None] = lambda text: None) -> list[dict[str, Any]] | None:
    """Tune, train with seeds, score, report. A worker only works; the process without --worker also
    waits for the others and writes the report. Rerunning the command resumes."""
    from peftlab.compare.results import tuned_results
    from peftlab.report.compare import write_report

    examples = test_examples(setup.shared_config(), setup.eval_data, setup.eval_rows)
    tuned, final_out = open_comparison(setup, methods, output, sharing, settings, launcher_config, overwrite, say)
    tuned.scoring = tuned.scoring.for_rows(examples)
    check_references(tuned.scoring.metrics, [e.references for e in examples])
    guide = f"validation {tuned.scoring.labels[tuned.scoring.primary]}" if selects_by_metric(setup) else "validation loss"
    say(f"compare: {len(tuned.spaces)} method(s) x {setup.trials} trial(s) chosen by {guide} on {len(tuned.validation_examples)} "
        f"validation rows carved from the training data, then {setup.seeds} seed(s) each and the base on {len(examples)} test rows; "
        f"output {final_out}")
    for method, study in tuned.tuning.items():
        while studies.claimable(study, setup.trials):
            studies.run_one(study, setup.trials, lambda trial, index, m=method: tuning_trial(tuned, m, trial, index))
    size = base_size(tuned.shared)
    studies.settle(tuned.final, len(tuned.items), lambda trial, index: final_run(tuned, trial, index, examples, settings, size), say)
    if sharing.worker:
        say("worker: no work left; the comparison's own command (without --worker) writes the report")
        return None
    results = tuned_results(tuned, examples)
    table = write_report(tuned.out, results["records"], examples_info(examples), setup.to_dict(), results)
    outputs.publish_replacement(tuned.out, final_out, COMPARISON)
    say(table)
    for line in results["verdict"]:
        say(line)
    say(f"report: {final_out / 'report.html'}")
    return results["records"]


def describe(params: dict[str, Any]) -> str:
    return " ".join(f"{k}={v:.3g}" if isinstance(v, float) else f"{k}={v}" for k, v in params.items())


def selects_by_metric(setup: CompareSetup) -> bool:
    return setup.select_by in ("metric", "rouge")  # "rouge": the older name of the same choice


def tuning_trial(tuned: Tuned, method: str, trial: Any, index: int) -> float:
    """Train one configuration on the training rows; the trial's value (lower is better) is its final validation
    loss, or with --select-by metric minus the primary metric of its answers generated for the validation rows.
    The pruner stops it at a validation checkpoint where its loss trails the median of the trials before it."""
    import optuna

    space = tuned.spaces[method]
    tuned.tuning[method].sampler = sampler_for(tuned.shared.train.seed, tuned.setup.trials, trial.number)
    params = space.suggest(trial)
    folder = tuned.out / "tuning" / method / f"trial-{index}"
    folder.mkdir(parents=True, exist_ok=True)
    trial.set_user_attr("folder", str(folder.relative_to(tuned.out)))
    config = cfg.load(None, [*tuned.setup.overrides, *space.overrides(params), f"data.train={tuned.train_file}",
                             f"data.eval={tuned.validation_file}", f"train.eval_steps={tuned.eval_steps}", f"output={folder / 'train'}"])
    name = f"{method} trial {index}"
    tuned.say(f"[{name}] {describe(params)}")
    reported: set[int] = set()

    def report(losses: list[tuple[int, float]]) -> None:
        for step, loss in losses:
            if step not in reported:
                reported.add(step)
                trial.report(loss, step)

    def hopeless(losses: list[tuple[int, float]]) -> bool:
        report(losses)
        budget = tuned.shared.train.max_steps
        return (budget <= 0 or max(reported) < budget) and trial.should_prune()  # a finished trial is kept

    try:
        summary = train(name, folder, config, tuned.launcher_config, tuned.say, stop_early=hopeless)
    except PeftlabError as error:  # this configuration cannot train (e.g. out of memory): the others still can
        tuned.say(f"[{name}] failed, left out of the choice: {error}")
        raise studies.GaveUp(str(error)) from None
    report(validation_losses(folder / "train" / artifacts.LOSS_LOG))  # the pruner's medians need every finished trial's curve
    if summary is None:
        tuned.say(f"[{name}] pruned at step {max(reported)}: validation loss behind the median of earlier trials")
        raise optuna.TrialPruned()
    trial.set_user_attr("summary", {k: summary.get(k) for k in ("train_seconds", "real_tokens", "steps", "peak_memory_bytes")})
    trial.set_user_attr(studies.VALIDATION_LOSS, summary["eval_loss"])
    tuned.say(f"[{name}] validation loss {summary['eval_loss']:.4f}")
    if not selects_by_metric(tuned.setup):
        return summary["eval_loss"]
    scored = score(config, tuned.validation_examples, tuned.settings, trained=str(folder / "train" / artifacts.ADAPTER_DIR),
                   forgetting=False, scoring=tuned.scoring)
    primary = tuned.scoring.primary
    trial.set_user_attr(studies.VALIDATION_SCORE, scored.scores[primary])
    tuned.say(f"[{name}] validation {tuned.scoring.labels[primary]} {100 * scored.scores[primary]:.2f} ({scored.eval_seconds:.0f} s)")
    return -scored.scores[primary]  # the studies minimise (their pruner compares losses)


def best_trial(tuned: Tuned, method: str) -> Any:
    """The method's chosen configuration: the finished trial with the lowest value (validation loss, or minus
    the validation primary metric)."""
    from optuna.trial import TrialState

    complete = [t for t in studies.done_trials(tuned.tuning[method]).values() if t.state == TrialState.COMPLETE]
    if not complete:
        raise PeftlabError(f"every tuning trial of {method} failed or was stopped; see the train.log files in "
                           f"{tuned.out / 'tuning' / method}")
    return min(complete, key=lambda t: t.value)


def final_run(tuned: Tuned, trial: Any, index: int, examples: list[Any], settings: GenerationSettings,
              base_bytes: int | None) -> float:
    """Score one item of the final list on the test rows: the base, or a method's chosen configuration trained
    with one seed. Its record is the result.json in its run folder (a rerun here finds it there); the trial
    carries a copy, so that the report reaches every worker's records wherever it runs."""
    method, offset = tuned.items[index]
    if method == "base":
        record = base_result(tuned.out / "runs" / "base", tuned.shared, examples, settings, tuned.scoring, tuned.say)
    else:
        seed = tuned.shared.train.seed + offset
        folder = tuned.out / "runs" / method / f"seed-{seed}"
        record = read_result(folder)
        if record is not None:
            tuned.say(f"[{method} seed {seed}] done earlier, kept")
        else:
            record = write_result(folder, seed_run(tuned, method, seed, folder, examples, settings, base_bytes))
    trial.set_user_attr(studies.RECORD, json.dumps(record))
    return record["scores"][record["primary"]]


def seed_run(tuned: Tuned, method: str, seed: int, folder: Path, examples: list[Any], settings: GenerationSettings,
             base_bytes: int | None) -> dict[str, Any]:
    """Train the method's chosen configuration with this seed (the chosen trial's own training when it ran with
    this seed on these rows) and score it. Forgetting is left to the gathering of results: the base may be
    another worker's, not scored yet."""
    tuning = tuned.tuning[method]
    studies.settle(tuning, tuned.setup.trials, lambda t, i: tuning_trial(tuned, method, t, i), tuned.say)
    chosen = best_trial(tuned, method)
    space = tuned.spaces[method]
    config = cfg.load(None, [*tuned.setup.overrides, *space.overrides(chosen.params), f"data.train={tuned.train_file}",
                             f"train.seed={seed}"])
    name = f"{method} seed {seed}"
    trained_in = tuned.out / chosen.user_attrs["folder"]
    if seed == tuned.shared.train.seed and (trained_in / "train" / artifacts.ADAPTER_DIR).is_dir():
        folder = trained_in  # the chosen trial ran with this seed on these rows: the same training, kept
        tuned.say(f"[{name}] the chosen trial {chosen.user_attrs['index']}'s training ({describe(chosen.params)})")
    else:
        folder.mkdir(parents=True, exist_ok=True)
        config = dataclasses.replace(config, output=str(folder / "train"))
        tuned.say(f"[{name}] training the chosen configuration ({describe(chosen.params)})")
    summary = train(name, folder, config, tuned.launcher_config, tuned.say)
    tuned.say(f"[{name}] scoring")
    adapter = folder / "train" / artifacts.ADAPTER_DIR
    base_answers = (read_result(tuned.out / "runs" / "base") or {}).get("predictions")  # for a pairwise judge
    scored = score(config, examples, settings, trained=str(adapter), scoring=tuned.scoring, base_answers=base_answers)
    record = result_record(method, method, {k: str(v) for k, v in chosen.params.items()}, scored, None, summary,
                           stored_bytes(adapter), base_bytes, tuned.scoring)
    record.update({"seed": seed, "chosen_trial": chosen.user_attrs["index"],
                   "validation_loss": chosen.user_attrs.get(studies.VALIDATION_LOSS, chosen.value),  # older studies: the value
                   "validation_score": chosen.user_attrs.get(studies.VALIDATION_SCORE,
                                                             chosen.user_attrs.get(studies.VALIDATION_ROUGE))})
    return record
