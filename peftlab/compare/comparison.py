"""`peftlab compare`, top to bottom: plan the runs, train each (resumable), score each, write the report."""

from __future__ import annotations

from pathlib import Path
from typing import Any, Callable

from peftlab import artifacts, outputs
from peftlab import config as cfg
from peftlab.compare.plan import plan_runs
from peftlab.compare.runs import (COMPARISON, base_result, check_comparison_output, examples_info, prepare_output, read_result,
                                  result_record, train, write_result)
from peftlab.compare.scoring import score, scoring_for, stored_bytes, test_examples
from peftlab.config import CompareSetup
from peftlab.evaluate import held_out
from peftlab.evaluate.metrics import check_references
from peftlab.generation import GenerationSettings


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
