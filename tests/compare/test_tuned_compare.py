"""`peftlab compare --trials` on a tiny model: two workers share one study without running anything twice,
a killed comparison resumes its trial from the checkpoint, and the report renders in headless Chromium."""

import json
import os
import re
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest

from tests.compare.test_compare import environment
from tests.conftest import TOY_ROWS, write_jsonl

METHODS = ["lora"]  # one method keeps the suite short; two workers still share five pieces of work


def tuned_command(tiny_llama, data, out, *extra, steps=4, trials=2, seeds=2):
    return [sys.executable, "-m", "peftlab", "compare", "--model", tiny_llama, "--data", data, "--eval-data", data,
            "--methods", "base," + ",".join(METHODS), "--budget-steps", str(steps), "--dtype", "fp32", "--set", "train.save_steps=2",
            "--set", "lora.r=4", "--max-new-tokens", "4", "--eval-samples", "4", "--trials", str(trials), "--seeds", str(seeds),
            "--output", str(out), *extra]


def trained_folders(out: Path) -> set[str]:
    return {str(p.parent.parent.relative_to(out)) for p in out.glob("**/train/adapter")}


@pytest.fixture(scope="module")
def shared_study(tiny_llama, tmp_path_factory):
    """Two --worker processes on one SQLite study, then the comparison's own command to write the report; trials
    are chosen by validation ROUGE-L (the kill test below covers the default, validation loss)."""
    folder = tmp_path_factory.mktemp("tuned")
    data = str(write_jsonl(folder / "toy.jsonl", TOY_ROWS * 8))
    sharing = ["--storage", f"sqlite:///{folder / 'shared.db'}", "--study", "toy", "--select-by", "rouge"]
    workers = [subprocess.Popen(tuned_command(tiny_llama, data, folder / name, *sharing, "--worker"), env=environment(),
                                stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True) for name in ("one", "two")]
    printed = [worker.communicate(timeout=900)[0] for worker in workers]
    assert [w.returncode for w in workers] == [0, 0], printed
    report = subprocess.run(tuned_command(tiny_llama, data, folder / "report", *sharing), env=environment(),
                            capture_output=True, text=True, timeout=900)
    assert report.returncode == 0, report.stderr[-3000:]
    return folder, printed, report.stdout


def test_two_workers_finish_one_comparison_without_running_anything_twice(shared_study):
    folder, printed, _ = shared_study
    one, two = trained_folders(folder / "one"), trained_folders(folder / "two")
    assert not one & two  # no training ran in both workers
    every = one | two
    for method in METHODS:
        assert {f"tuning/{method}/trial-0", f"tuning/{method}/trial-1"} <= every  # each trial ran once, somewhere
    assert all("training:" in text for text in printed)  # both workers trained something
    # each (method, seed) scored once: seed 43 trained once, seed 42 reused its chosen trial or trained once
    assert sum(f.startswith("runs/") for f in every) <= 2 * len(METHODS)
    for text in printed:
        assert "worker: no work left" in text
    # each final run recorded once, in a result.json in the folder of the worker that ran it
    recorded = [json.loads(p.read_text()) for name in ("one", "two") for p in (folder / name / "runs").glob("**/result.json")]
    assert sorted((r["name"], r.get("seed")) for r in recorded) == [("base", None), ("lora", 42), ("lora", 43)]
    assert all(r["forgetting"] is None for r in recorded if r["name"] != "base")  # the base may be another worker's


def test_the_reporting_command_trained_nothing_and_reports_every_method(shared_study):
    folder, _, printed = shared_study
    report = folder / "report"
    assert not trained_folders(report) and "training:" not in printed
    results = json.loads((report / "results.json").read_text())
    assert [r["name"] for r in results] == ["base", *METHODS]
    for record in results[1:]:
        assert len(record["seeds"]) == 2 and record["seeds"] == [42, 43]
        low, high = record["score_interval"]["rougeL"]
        assert record["primary"] == "rougeL" and low <= record["scores"]["rougeL"] <= high
        history = record["tuning"]["history"]
        assert record["tuning"]["trials"] == 2 and [h["start"] for h in history] == ["default", "higher lr"], history
        assert history[1]["params"]["lr"] == pytest.approx(history[0]["params"]["lr"] * 10 ** 0.5)
        assert record["train_tokens"] > 0 and record["steps"] == 4
        assert record["forgetting"] == pytest.approx(record["general_text_loss"] - results[0]["general_text_loss"])
        assert record["tuning"]["select_by"] == "rouge" and all(h["state"] == "complete" for h in history)
        assert all(0 <= h["validation_score"] <= 1 and h["validation_loss"] > 0 for h in history)
        best = max(history, key=lambda h: h["validation_score"])  # the first of equals, as Optuna's best trial
        assert record["chosen_trial"] == best["index"] and record["validation_score"] == best["validation_score"]
        assert record["tuning"]["default_validation_score"] == history[0]["validation_score"]
    verdict = json.loads((report / "verdict.json").read_text())
    assert verdict["verdict"][0].startswith("Best quality: ")
    assert {frozenset((c["first"], c["second"])) for c in verdict["comparisons"]} == {frozenset(("base", "lora"))}
    assert "Best quality:" in printed and (report / "plots" / "tuning_history.svg").is_file()


def test_a_worker_with_another_setup_is_refused(shared_study, tiny_llama):
    folder, _, _ = shared_study
    other = subprocess.run([*tuned_command(tiny_llama, str(folder / "toy.jsonl"), folder / "three", "--storage",
                                           f"sqlite:///{folder / 'shared.db'}", "--study", "toy", "--select-by", "rouge", "--worker"),
                            "--set", "train.seed=7"],
                           env=environment(), capture_output=True, text=True, timeout=300)
    assert other.returncode == 2 and "was started with another setup" in other.stderr and "Traceback" not in other.stderr


def test_the_tuned_report_renders_in_headless_chromium(shared_study, tmp_path):
    from tests.compare.test_compare import chromium_flags

    folder, _, _ = shared_study
    flags = chromium_flags(tmp_path)
    page = (folder / "report" / "report.html").as_uri()
    dom = subprocess.run([*flags, "--dump-dom", page], capture_output=True, text=True, timeout=120)
    assert dom.returncode == 0 and "Uncaught" not in dom.stderr and "CONSOLE" not in dom.stderr
    html = dom.stdout
    verdict = html[html.index('<ul id="verdict">'):]
    assert verdict.index("Best quality:") < verdict.index("</ul>")
    results = html[html.index('<table id="results"'):]
    header, body = results[:results.index("</thead>")], results[results.index("<tbody>"):results.index("</tbody>")]
    assert "ROUGE-L 95%" in header and "train tokens" in header
    assert len(re.findall(r"<td>\d+\.\d-\d+\.\d</td>", body)) == 1 + len(METHODS)  # an interval for base and each method
    assert '<table id="differences"' in html and '<table id="tuning"' in html
    assert "<th>chosen val. ROUGE-L</th>" in html and "the highest ROUGE-L of answers generated" in html
    for plot in ("quality vs peak memory", "quality vs stored size", "quality vs training time", "tuning history",
                 "tuning validation score"):
        assert f"<figcaption>{plot}</figcaption><svg" in html
    shot = subprocess.run([*flags, "--window-size=1200,2400", f"--screenshot={tmp_path / 'report.png'}", page],
                          capture_output=True, text=True, timeout=120)
    assert shot.returncode == 0 and (tmp_path / "report.png").stat().st_size > 10_000


def test_a_killed_tuned_comparison_resumes_its_trial_from_the_checkpoint(tiny_llama, tmp_path):
    from peftlab.train.checkpoints import MANIFEST

    data = str(write_jsonl(tmp_path / "toy.jsonl", TOY_ROWS * 8))
    command = tuned_command(tiny_llama, data, tmp_path / "out", "--stale-after", "2", steps=12, trials=1, seeds=1)
    process = subprocess.Popen(command, env=environment(), start_new_session=True, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    trial = tmp_path / "out" / "tuning" / "lora" / "trial-0" / "train"
    deadline = time.time() + 300
    while not list(trial.glob(f"checkpoints/checkpoint-*/{MANIFEST}")) and process.poll() is None and time.time() < deadline:
        time.sleep(0.01)
    os.killpg(process.pid, signal.SIGKILL)  # the comparison and its training child, mid-trial
    process.wait()
    assert not (trial / "adapter").exists(), "the trial finished before the kill"
    again = subprocess.run(command, env=environment(), capture_output=True, text=True, timeout=900)
    assert again.returncode == 0, again.stderr[-3000:]
    records = [json.loads(line) for line in (trial / "log.jsonl").read_text().splitlines()]
    resumed = [r for r in records if r.get("resumed")]
    assert len(resumed) == 1 and resumed[0]["step"] >= 2, records  # taken over once stale, resumed, not restarted
    assert [r["step"] for r in records if "loss" in r] == list(range(1, 13))
    assert [r["name"] for r in json.loads((tmp_path / "out" / "results.json").read_text())] == ["base", "lora"]
    assert {p.parent.name for p in (tmp_path / "out" / "runs").glob("**/result.json")} == {"base", "seed-42"}
