"""`peftlab compare`, top to bottom: plan the runs, train each (resumable), score each, write the report."""

from __future__ import annotations

import json
import shlex
import subprocess
import sys
from pathlib import Path
from typing import Any, Callable

import yaml

from peftlab import artifacts, atomic
from peftlab import config as cfg
from peftlab.compare.plan import PlannedRun, plan_runs
from peftlab.compare.scoring import Scored, base_bytes, score, stored_bytes, test_examples
from peftlab.errors import PeftlabError
from peftlab.config import CompareSetup
from peftlab.generation import GenerationSettings

SETUP = "compare.yaml"  # what every run shares; a later call must match it to add runs
RESULT = "result.json"


def prepare_output(out: Path, setup: CompareSetup, overwrite: bool) -> Path:
    """The folder to build the comparison in: `out` (continued or extended with more methods, with the
    same setup only), or with --overwrite a staging folder beside it that replaces it when finished."""
    work = artifacts.replacement_folder(out, keep=lambda staging: not _setup_differences(staging, setup)) if overwrite else out
    changed = _setup_differences(work, setup)
    if changed:
        raise PeftlabError(f"output folder {out} holds a comparison with another setup (differs in {', '.join(changed[:5])}); "
                           "pass --overwrite to start over or choose another --output")
    try:
        atomic.write_text(work / SETUP, yaml.safe_dump(setup.to_dict(), sort_keys=False))
    except OSError as error:
        raise PeftlabError(f"cannot write to output folder {out}: {error.strerror}; choose another --output") from None
    return work


def _setup_differences(folder: Path, setup: CompareSetup) -> list[str]:
    return artifacts.recorded_differences(folder / SETUP, setup.to_dict()) or []


def train_command(config_file: Path, launcher_config: str | None) -> list[str]:
    prefix = [sys.executable, "-m", "peftlab"]
    if launcher_config:
        prefix = [sys.executable, "-m", "accelerate.commands.launch", "--config_file", launcher_config, "-m", "peftlab"]
    return [*prefix, "train", "--config", str(config_file), "--resume"]


def train(name: str, folder: Path, config: cfg.RunConfig, launcher_config: str | None, say: Callable[[str], None],
          stop_early: Callable[[list[tuple[int, float]]], bool] | None = None) -> dict[str, Any] | None:
    """Train one run in its own process (its peak memory is its own), resuming a half-finished one.

    `stop_early` sees the validation losses logged so far, (step, loss), each time one arrives; when it
    says so the run is stopped and None returned (a pruned tuning trial)."""
    train_dir = folder / "train"
    if not (train_dir / artifacts.ADAPTER_DIR).is_dir():
        config_file = folder / "config.yaml"
        atomic.write_text(config_file, config.to_yaml())
        command = train_command(config_file, launcher_config)
        say(f"[{name}] training: {shlex.join(command)}")
        with open(folder / "train.log", "a", encoding="utf-8") as log:
            process = subprocess.Popen(command, stdout=log, stderr=subprocess.STDOUT)
            try:
                stopped = _watch(process, train_dir / artifacts.LOSS_LOG, stop_early)
            finally:
                if process.poll() is None:  # interrupted or stopped early: the child goes too
                    process.terminate()
                    process.wait()
        if stopped:
            return None
        if process.returncode != 0:
            tail = (folder / "train.log").read_text(encoding="utf-8").strip().splitlines()[-1:] or [""]
            raise PeftlabError(f"run {name} failed (exit {process.returncode}): {tail[0][:300]}; full log: {folder / 'train.log'}")
    return artifacts.read_summary(train_dir)


def _watch(process: subprocess.Popen, log: Path, stop_early: Callable[[list[tuple[int, float]]], bool] | None) -> bool:
    """Wait for the training process; True when `stop_early` asked to stop it."""
    if stop_early is None:
        process.wait()
        return False
    seen = 0
    while True:
        try:
            process.wait(timeout=1.0)
        except subprocess.TimeoutExpired:
            pass
        if process.poll() is not None:
            return False  # finished: nothing left to stop
        losses = validation_losses(log)
        if len(losses) > seen:
            seen = len(losses)
            if stop_early(losses):
                return True


def validation_losses(log: Path) -> list[tuple[int, float]]:
    """(step, eval loss) from a run's loss log (a torn last line, the run writing it, is skipped by read_log)."""
    from peftlab.train.callbacks import read_log

    return [(record["step"], record["eval_loss"]) for record in read_log(log) if "eval_loss" in record]


def result_record(name: str, method: str, settings: dict[str, str], scored: Scored, base_general_loss: float,
                  summary: dict[str, Any] | None, stored: int, base_size: int | None) -> dict[str, Any]:
    summary = summary or {}
    return {
        "name": name, "method": method, "settings": settings,
        "rouge": scored.rouge,
        "train_seconds": summary.get("train_seconds", 0.0),
        "real_tokens_per_second": summary.get("real_tokens_per_second"),
        "peak_memory_bytes": summary.get("peak_memory_bytes"),
        "trainable_parameters": summary.get("trainable_parameters", 0),
        "total_parameters": summary.get("total_parameters"),
        "trainable_percent": summary.get("trainable_percent", 0.0),
        "stored_bytes": stored, "base_bytes": base_size,
        "stored_share": stored / base_size if base_size else None,
        "general_text_loss": scored.general_loss,
        "forgetting": scored.general_loss - base_general_loss,
        "train_loss": summary.get("train_loss"), "eval_loss": summary.get("eval_loss"),
        "steps": summary.get("steps"), "train_tokens": summary.get("real_tokens"),
        "eval_seconds": scored.eval_seconds,
        "trackers": summary.get("trackers") or {},  # where each experiment tracker keeps this run
        "predictions": scored.predictions,
        "example_rouge": scored.example_rouge,
    }


def run_compare(setup: CompareSetup, methods: list[str], sweeps: list[str], output: str, settings: GenerationSettings,
                launcher_config: str | None = None, overwrite: bool = False,
                say: Callable[[str], None] = lambda text: None) -> list[dict[str, Any]]:
    """Train and score every planned run (and the base) on the shared setup; returns one record per run."""
    from peftlab.report.compare import write_report

    final = Path(output)
    runs = plan_runs(methods, sweeps)  # checks method names and sweeps before anything slow
    shared = setup.shared_config()
    artifacts.check_output(final, overwrite, "comparison", lambda folder: (folder / SETUP).is_file(), continuable=True)
    examples = test_examples(shared, setup.eval_data, setup.eval_rows)
    out = prepare_output(final, setup, overwrite)
    say(f"compare: {len(runs)} trained run(s) + base on {len(examples)} test rows; output {final}"
        + (f" (built in {out}, which replaces it when finished)" if out != final else ""))

    base_file = out / "runs" / "base" / RESULT
    if not base_file.is_file():
        say("[base] scoring the zero-shot model")
        scored = score(shared, examples, settings)
        from peftlab.models import resolve_source

        size = base_bytes(resolve_source(shared.model.name)[1])
        atomic.write_text(base_file, json.dumps(result_record("base", "base", {}, scored, scored.general_loss, None, 0, size)))
    base = json.loads(base_file.read_text(encoding="utf-8"))

    records = [base] if "base" in methods else []
    for run in runs:
        folder = out / "runs" / run.folder
        if (folder / RESULT).is_file():
            say(f"[{run.name}] done earlier, kept")
        else:
            config = cfg.load(None, [*setup.overrides, *run.overrides(), f"output={folder / 'train'}"])
            summary = train(run.name, folder, config, launcher_config, say)
            say(f"[{run.name}] scoring")
            adapter = folder / "train" / artifacts.ADAPTER_DIR
            scored = score(config, examples, settings, trained=str(adapter))
            record = result_record(run.name, run.method, run.settings, scored, base["general_text_loss"], summary,
                                   stored_bytes(adapter), base["base_bytes"])
            atomic.write_text(folder / RESULT, json.dumps(record))
        records.append(json.loads((folder / RESULT).read_text(encoding="utf-8")))
    if "base" not in methods:
        records.insert(0, base)  # the reference every gain is measured against
    table = write_report(out, records, examples_info(examples), setup.to_dict())
    artifacts.publish_replacement(out, final)
    say(table)
    say(f"report: {final / 'report.html'}")
    return records


def examples_info(examples: list[Any]) -> list[dict[str, Any]]:
    return [{"where": e.where, "input": e.prompt, "references": e.references} for e in examples]
