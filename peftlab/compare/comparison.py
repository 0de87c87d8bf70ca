"""`peftlab compare`, top to bottom: plan the runs (one per method, times the values of each --sweep that applies),
train each (resumable), score each, write the report."""

from __future__ import annotations

import itertools
import re
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable

from peftlab import artifacts, outputs
from peftlab import config as cfg
from peftlab.compare.runs import (COMPARISON, base_result, check_comparison_output, examples_info, prepare_output, read_result,
                                  result_record, score, scoring_for, stored_bytes, test_examples, train, trained_methods,
                                  write_result)
from peftlab.config import CompareSetup
from peftlab.errors import PeftlabError
from peftlab.evaluate import held_out
from peftlab.evaluate.metrics import check_references
from peftlab.generation import GenerationSettings


SHARED_SECTIONS = ("train", "data", "model")  # a sweep over these applies to every trained run


@dataclass
class PlannedRun:
    method: str
    settings: dict[str, str] = field(default_factory=dict)  # --set key -> value, this run only

    @property
    def name(self) -> str:
        if not self.settings:
            return self.method
        return f"{self.method} " + " ".join(f"{key.split('.', 1)[1]}={value}" for key, value in self.settings.items())

    @property
    def folder(self) -> str:
        return re.sub(r"[^A-Za-z0-9._-]+", "_", self.name.replace(" ", "__"))

    def overrides(self) -> list[str]:
        return [f"method={self.method}"] + [f"{key}={value}" for key, value in self.settings.items()]


def parse_sweep(text: str) -> tuple[str, list[str]]:
    key, sep, values = text.partition("=")
    choices = [v.strip() for v in values.split(",") if v.strip()]
    if not sep or "." not in key or not choices:
        raise PeftlabError(f"--sweep {text!r}: expected SECTION.KEY=V1,V2 (e.g. lora.r=8,32 or train.lr=1e-4,1e-3)")
    return key.strip(), choices


def check_sweep(key: str, values: list[str]) -> None:
    """Every value of a sweep names a setting that exists and has the right type, before any run starts."""
    from peftlab import config as cfg
    from peftlab.methods import get_method

    for value in values:
        raw: dict = {}
        try:
            cfg.apply_override(raw, f"{key}={value}")
            config = cfg.from_dict(raw)
            for method, settings in config.methods.items():
                get_method(method).parse_settings(settings)
        except PeftlabError as error:
            raise PeftlabError(f"--sweep {key}={value}: {str(error).removeprefix('config: ')}") from None


def plan_runs(methods: list[str], sweeps: list[str]) -> list[PlannedRun]:
    """Runs in a stable order; 'base' (the zero-shot model) is evaluated separately and not listed."""
    trained = trained_methods(methods)
    parsed = [parse_sweep(s) for s in sweeps]
    for key, values in parsed:
        section = key.split(".", 1)[0]
        if section not in SHARED_SECTIONS and section not in methods:
            raise PeftlabError(f"--sweep {key}: '{section}' is neither a method in --methods nor one of {', '.join(SHARED_SECTIONS)}")
        check_sweep(key, values)
    runs = []
    for method in trained:
        mine = [(key, values) for key, values in parsed if key.split(".", 1)[0] in (method, *SHARED_SECTIONS)]
        keys = [key for key, _ in mine]
        for combination in itertools.product(*(values for _, values in mine)):
            runs.append(PlannedRun(method, dict(zip(keys, combination))))
    return runs


def run_compare(setup: CompareSetup, methods: list[str], sweeps: list[str], output: str, settings: GenerationSettings,
                launcher_config: str | None = None, overwrite: bool = False,
                say: Callable[[str], None] = lambda text: None) -> list[dict[str, Any]]:
    """Train and score every planned run (and the base) on the shared setup; returns one record per run."""
    from peftlab.report.compare import write_report

    final = Path(output)
    runs = plan_runs(methods, sweeps)  # checks method names and sweeps before anything slow
    shared = setup.shared_config()
    scoring = scoring_for(setup)  # a metric that cannot score is one line before anything slow
    check_comparison_output(final, setup, overwrite, launcher_config)
    examples = test_examples(shared, setup.eval_data, setup.eval_rows)
    scoring = scoring.for_rows(examples)
    if held_out.is_text(examples):
        say(f"compare: {held_out.NOTE}")
    check_references(scoring.metrics, [e.references for e in examples])
    out = prepare_output(final, setup, overwrite)
    say(f"compare: {len(runs)} trained run(s) + base on {len(examples)} test rows; output {final}"
        + (f" (built in {out}, which replaces it when finished)" if out != final else ""))

    base = base_result(out / "runs" / "base", shared, examples, settings, scoring, say)
    records = [base] if "base" in methods else []
    for run in runs:
        folder = out / "runs" / run.folder
        record = read_result(folder)
        if record is not None:
            say(f"[{run.name}] done earlier, kept")
        else:
            config = cfg.load(None, [*setup.overrides, *run.overrides(), f"output={folder / 'train'}"])
            summary = train(run.name, folder, config, launcher_config, say)
            say(f"[{run.name}] scoring")
            adapter = folder / "train" / artifacts.ADAPTER_DIR
            scored = score(config, examples, settings, trained=str(adapter), scoring=scoring, base_answers=base["predictions"])
            record = write_result(folder, result_record(run.name, run.method, run.settings, scored, base, summary,
                                                        stored_bytes(adapter), base["base_bytes"], scoring))
        records.append(record)
    if "base" not in methods:
        records.insert(0, base)  # the reference every gain is measured against
    table = write_report(out, records, examples_info(examples), setup.to_dict())
    outputs.publish_replacement(out, final, COMPARISON)
    say(table)
    say(f"report: {final / 'report.html'}")
    return records
