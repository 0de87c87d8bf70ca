"""What both comparison recipes share: the output folder, and one run from start to finish: trained in a process of
its own, scored on the test rows (the chosen metrics, general-text loss, with --general-tasks general multiple-choice
accuracy), recorded in its result.json (what makes a finished run survive a rerun)."""

from __future__ import annotations

import dataclasses
import gc
import json
import shlex
import subprocess
import sys
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Callable

import yaml

from peftlab import artifacts, atomic, outputs
from peftlab.compare.forgetting import general_text_loss
from peftlab.config import CompareSetup, RunConfig
from peftlab.data.readers import read_rows
from peftlab.errors import PeftlabError
from peftlab.evaluate import held_out
from peftlab.evaluate.metrics import JudgeSettings, Metric, described_keys, describe, resolve_metrics
from peftlab.evaluate.metrics.rouge import ROUGE
from peftlab.evaluate.predictions import score_generations
from peftlab.evaluate.references import EvalExample, eval_examples
from peftlab.generation import GenerationSettings, encode_prompts, load_for_generation
from peftlab.models.device import release_cached_memory

SETUP = "compare.yaml"  # what every run shares; a later call must match it to add runs
RESULT = "result.json"  # one per finished run, in its folder
WEIGHT_SUFFIXES = (".safetensors", ".bin", ".pt")  # what a stored result weighs: its weight files


REPORT_FILES = ("results.json", "verdict.json", "results.csv", "results.md", "plots", "report.html")
COMPARISON = outputs.OutputKind("comparison", (SETUP,), (SETUP, "runs", "tuning", "split", "studies.db*", *REPORT_FILES))


def trained_methods(methods: list[str]) -> list[str]:
    """The methods of --methods that train, each once, in order ('base', the zero-shot model, is scored apart);
    checked before anything slow."""
    from peftlab.methods import method_names

    known = set(method_names())
    unknown = [m for m in methods if m != "base" and m not in known]
    if unknown:
        raise PeftlabError(f"unknown method(s) {', '.join(unknown)} in --methods; choose from base, {', '.join(sorted(known))}")
    return list(dict.fromkeys(m for m in methods if m != "base"))


def check_comparison_output(out: Path, setup: CompareSetup, overwrite: bool, launcher_config: str | None) -> None:
    """The comparison folder: continued in place, or replaced with --overwrite; never over an input (reads only)."""
    shared = setup.shared_config()
    sources = outputs.inputs(data=shared.data.train, test_data=setup.eval_data, model=shared.model.name, config=launcher_config)
    outputs.check_folder(out, overwrite, COMPARISON, sources, continuable=True)


def prepare_output(out: Path, setup: CompareSetup, overwrite: bool) -> Path:
    """The folder to build the comparison in: `out` (continued or extended with more methods, with the
    same setup only), or with --overwrite a staging folder beside it that replaces it when finished."""
    work = outputs.replacement_folder(out, keep=lambda staging: not _setup_differences(staging, setup)) if overwrite else out
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


def train(name: str, folder: Path, config: RunConfig, launcher_config: str | None, say: Callable[[str], None],
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


@dataclass
class Scoring:
    """What every run of a comparison is scored by: its metrics (the first one's primary key decides) and whether
    general multiple-choice accuracy is measured."""

    metrics: list[Metric] = dataclasses.field(default_factory=lambda: [ROUGE])
    general_tasks: bool = False

    @property
    def primary(self) -> str:
        return self.metrics[0].primary

    @property
    def labels(self) -> dict[str, str]:
        return described_keys(describe(self.metrics))

    def for_rows(self, examples: list[EvalExample]) -> Scoring:
        """Text rows have no reference to generate against: every run is then ranked by its held-out 1/perplexity."""
        return dataclasses.replace(self, metrics=[held_out.HELD_OUT]) if held_out.is_text(examples) else self

    def stamp(self) -> dict[str, object]:
        """What each record carries so that reports name the metric without knowing it (report never imports evaluate)."""
        return {"primary": self.primary, "score_labels": self.labels}


def scoring_for(setup: CompareSetup) -> Scoring:
    """The setup's metrics resolved (a user function imported, a judge configured), before anything slow."""
    judge = JudgeSettings(**setup.judge) if setup.judge else JudgeSettings()
    scoring = Scoring(resolve_metrics(setup.metrics, judge), setup.general_tasks)
    if setup.select_by in ("metric", "rouge") and setup.trials and scoring.metrics[0].name == "judge-pairwise":
        raise PeftlabError("--select-by metric cannot use judge-pairwise (the validation rows have no base answers to "
                           "compare with); put another metric first, or select by loss")
    return scoring


@dataclass
class Scored:
    predictions: list[str]
    example_scores: list[dict[str, float]]
    scores: dict[str, float]
    general_loss: float
    eval_seconds: float
    general_tasks: dict | None = None  # accuracy over the general multiple-choice items, and per task
    confusion: dict | None = None  # label tasks (--metric accuracy): counts per true label of each predicted label
    held_out: dict | None = None  # text rows: the pooled held-out loss per token, its perplexity, the tokens scored


def test_examples(config: RunConfig, data: str, max_rows: int | None) -> list[EvalExample]:
    """The test rows every run is scored on (the first `max_rows`; the training sub-sampling does not apply)."""
    return eval_examples(read_rows(data, config.data.max_row_bytes), dataclasses.replace(config.data, max_samples=max_rows, every=1))


def score(config: RunConfig, examples: list[EvalExample], settings: GenerationSettings, trained: str | None = None,
          forgetting: bool = True, scoring: Scoring | None = None, base_answers: list[str] | None = None) -> Scored:
    """Load the base (with the trained result in `trained` applied), generate, score, free the model.
    Without `forgetting` neither general-text loss (nan) nor general tasks are measured: validation needs the metric alone.
    `base_answers`: the base model's answers to the same rows, for a pairwise judge."""
    from peftlab.compare.general_tasks import general_task_accuracy

    scoring = scoring or Scoring()
    model = config.model
    loaded = load_for_generation(model.name, model.dtype, trained, model.attn_implementation, model.device)
    if held_out.is_text(examples):  # text rows: nothing to generate, each row scored by its held-out loss
        per_example, summary = held_out.score_text(loaded, examples, config.data)
        texts = [""] * len(examples)
    else:
        prompts, _ = encode_prompts(loaded, [e.prompt for e in examples], config.data.chat_template)
        texts, per_example, summary = score_generations("base" if trained is None else trained, loaded, prompts, examples,
                                                        settings, lambda text: None, scoring.metrics, base_answers)
    general = general_text_loss(loaded.model, loaded.tokenizer, loaded.is_seq2seq) if forgetting else float("nan")
    tasks = general_task_accuracy(loaded.model, loaded.tokenizer, loaded.is_seq2seq) if forgetting and scoring.general_tasks else None
    del loaded
    gc.collect()
    release_cached_memory()
    keys = [key for metric in scoring.metrics for key in metric.keys]
    pooled = {k: summary[k] for k in ("loss", "perplexity", "tokens")} if held_out.is_text(examples) else None
    return Scored(texts, per_example, {k: summary[k] for k in keys}, general, summary["seconds"], tasks, summary.get("confusion"),
                  pooled)


def stored_bytes(folder: Path) -> int:
    """What must be kept to use the result: its weight files (the whole model for full fine-tuning)."""
    return sum(p.stat().st_size for p in folder.rglob("*") if p.is_file() and p.name.endswith(WEIGHT_SUFFIXES))


def base_bytes(model_path: str) -> int | None:
    folder = Path(model_path)
    return stored_bytes(folder) if folder.is_dir() else None


def result_record(name: str, method: str, settings: dict[str, str], scored: Scored, base: dict[str, Any] | None,
                  summary: dict[str, Any] | None, stored: int, base_size: int | None, scoring: Scoring) -> dict[str, Any]:
    """One scored run. `base` None: the base is not scored yet (another worker's), so forgetting is left None here
    and computed against the base when the results are gathered."""
    summary = summary or {}
    base_loss = None if base is None else base["general_text_loss"]
    base_tasks = None if base is None else (base.get("general_tasks") or {}).get("accuracy")
    return {
        "name": name, "method": method, "settings": settings, **scoring.stamp(),
        "scores": scored.scores,
        "train_seconds": summary.get("train_seconds", 0.0),
        "real_tokens_per_second": summary.get("real_tokens_per_second"),
        "peak_memory_bytes": summary.get("peak_memory_bytes"),
        "trainable_parameters": summary.get("trainable_parameters", 0),
        "total_parameters": summary.get("total_parameters"),
        "trainable_percent": summary.get("trainable_percent", 0.0),
        "stored_bytes": stored, "base_bytes": base_size,
        "stored_share": stored / base_size if base_size else None,
        "general_text_loss": scored.general_loss,
        "forgetting": None if base_loss is None else scored.general_loss - base_loss,
        "general_tasks": scored.general_tasks,
        "confusion": scored.confusion,
        "held_out": scored.held_out,  # text test rows: pooled loss and perplexity beside the ranked 1/perplexity
        "general_tasks_change": None if base_tasks is None or scored.general_tasks is None
        else scored.general_tasks["accuracy"] - base_tasks,
        "train_loss": summary.get("train_loss"), "eval_loss": summary.get("eval_loss"),
        "steps": summary.get("steps"), "train_tokens": summary.get("real_tokens"),
        "eval_seconds": scored.eval_seconds,
        "trackers": summary.get("trackers") or {},  # where each experiment tracker keeps this run
        "predictions": scored.predictions,
        "example_scores": scored.example_scores,
    }


def base_size(shared: RunConfig) -> int | None:
    """The base model's weight files in bytes: what a stored adapter is measured against."""
    from peftlab.models import resolve_source

    return base_bytes(resolve_source(shared.model.name)[1])


def base_result(folder: Path, shared: RunConfig, examples: list[Any], settings: Any, scoring: Scoring,
                say: Callable[[str], None]) -> dict[str, Any]:
    """The zero-shot model's record: scored once, then read from its result.json."""
    record = read_result(folder)
    if record is None:
        say("[base] scoring the zero-shot model")
        scored = score(shared, examples, settings, scoring=scoring)
        itself = {"general_text_loss": scored.general_loss, "general_tasks": scored.general_tasks}
        record = write_result(folder, result_record("base", "base", {}, scored, itself, None, 0, base_size(shared), scoring))
    return record


def read_result(folder: Path) -> dict[str, Any] | None:
    """The run's record when it finished earlier (its result.json is written last, whole), else None."""
    path = folder / RESULT
    return json.loads(path.read_text(encoding="utf-8")) if path.is_file() else None


def write_result(folder: Path, record: dict[str, Any]) -> dict[str, Any]:
    atomic.write_text(folder / RESULT, json.dumps(record))
    return record


def examples_info(examples: list[Any]) -> list[dict[str, Any]]:
    return [{"where": e.where, "input": e.prompt if e.text is None else e.text, "references": e.references} for e in examples]
