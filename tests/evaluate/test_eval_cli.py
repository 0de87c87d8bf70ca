"""`peftlab eval` end to end on tiny models: the files it writes, the adapter's prompt, and bad input."""

import json
import shutil
from pathlib import Path

import pytest

from peftlab.cli import main
from tests.conftest import TOY_ROWS, write_jsonl

FAST = ["--max-new-tokens", "6", "--batch-size", "3", "--dtype", "fp32"]


def run_eval(*args):
    return main(["eval", *args, *FAST])


def one_error_line(capsys):
    err = capsys.readouterr().err.strip()
    assert "Traceback" not in err
    lines = err.splitlines()
    assert len(lines) == 1 and lines[0].startswith("error: ")
    return lines[0]


def test_writes_predictions_and_metrics(tiny_model, tmp_path, capsys):
    rows = [{"dialogue": r["dialogue"], "summary1": r["summary"], "summary2": "Another summary."} for r in TOY_ROWS]
    data = write_jsonl(tmp_path / "test.jsonl", rows)
    assert run_eval("--model", tiny_model, "--data", str(data), "--output", str(tmp_path / "out")) == 0
    out = capsys.readouterr().out
    assert "ROUGE-1" in out and "reference:" in out and "base:" in out
    records = [json.loads(line) for line in (tmp_path / "out" / "predictions.jsonl").read_text().splitlines()]
    assert len(records) == len(rows)
    assert records[1]["references"] == [TOY_ROWS[1]["summary"], "Another summary."]
    assert TOY_ROWS[1]["dialogue"] in records[1]["input"]
    assert set(records[0]["predictions"]) == {"base"} and set(records[0]["scores"]["base"]) == {"rouge1", "rouge2", "rougeL", "rougeLsum"}
    metrics = json.loads((tmp_path / "out" / "metrics.json").read_text())
    assert metrics["rows"] == len(rows) and metrics["adapter"] is None
    mean = sum(r["scores"]["base"]["rouge1"] for r in records) / len(records)
    assert metrics["results"]["base"]["rouge1"] == pytest.approx(mean)
    assert metrics["generation"] == {"max_new_tokens": 6, "num_beams": 1, "batch_size": 3}


def test_adapter_runs_base_and_tuned_with_the_training_template(tiny_llama, tiny_adapter, tmp_path, capsys):
    data = write_jsonl(tmp_path / "test.jsonl", TOY_ROWS)
    # no --model: the base recorded in the adapter is used
    assert run_eval("--adapter", tiny_adapter, "--data", str(data), "--output", str(tmp_path / "out")) == 0
    assert "tuned" in capsys.readouterr().out
    record = json.loads((tmp_path / "out" / "predictions.jsonl").read_text().splitlines()[0])
    assert record["input"].startswith("Summary of ") and set(record["predictions"]) == {"base", "tuned"}
    metrics = json.loads((tmp_path / "out" / "metrics.json").read_text())
    assert set(metrics["results"]) == {"base", "tuned"} and metrics["template"] == "Summary of {prompt} ->"
    # the training run's max_samples / every do not sub-sample the test set
    assert metrics["rows"] == len(TOY_ROWS)


def test_another_template_than_the_adapters_is_refused(tiny_adapter, toy_data, capsys):
    assert run_eval("--adapter", tiny_adapter, "--data", toy_data, "--template", "TL;DR {prompt}") == 2
    assert "was trained with the template" in one_error_line(capsys)


def test_missing_reference_column(tiny_llama, tmp_path, capsys):
    data = write_jsonl(tmp_path / "test.jsonl", [{"dialogue": "hi", "label": "x"}])
    assert run_eval("--model", tiny_llama, "--data", str(data)) == 2
    line = one_error_line(capsys)
    assert "test.jsonl line 1" in line and "'summary'" in line and "--columns response=" in line


def test_empty_test_file(tiny_llama, tmp_path, capsys):
    (tmp_path / "empty.jsonl").write_text("")
    assert run_eval("--model", tiny_llama, "--data", str(tmp_path / "empty.jsonl")) == 2
    assert "holds no rows" in one_error_line(capsys)


def test_folder_that_is_not_an_adapter(tiny_llama, toy_data, tmp_path, capsys):
    assert run_eval("--model", tiny_llama, "--adapter", str(tmp_path), "--data", toy_data) == 2
    assert "is not a PEFT adapter folder" in one_error_line(capsys)


def test_adapter_for_another_base_is_refused(wider_llama, tiny_adapter, toy_data, capsys):
    assert run_eval("--model", wider_llama, "--adapter", tiny_adapter, "--data", toy_data) == 2
    line = one_error_line(capsys)
    assert "was trained on" in line and wider_llama in line and "--model" in line


def test_foreign_adapter_that_does_not_fit_is_one_line(wider_llama, tiny_adapter, toy_data, tmp_path, capsys):
    foreign = Path(shutil.copytree(tiny_adapter, tmp_path / "foreign"))
    (foreign / "peftlab.json").unlink()  # a plain PEFT adapter: only the weights can tell
    (foreign / "run.yaml").unlink()
    assert run_eval("--model", wider_llama, "--adapter", str(foreign), "--data", toy_data) == 2
    line = one_error_line(capsys)
    assert "does not fit base" in line and wider_llama in line


@pytest.mark.parametrize("method", ["freeze", "adapter"])
def test_results_of_non_peft_methods_evaluate_beside_their_base(method, tiny_llama, tmp_path, capsys):
    """Any method's result loads through the registry; the base is scored from a fresh load."""
    from tests.tiny_models import train_tiny

    data = write_jsonl(tmp_path / "toy.jsonl", TOY_ROWS * 2)
    train_tiny(tiny_llama, data, tmp_path / "run", f"method={method}", "train.max_steps=2")
    assert run_eval("--adapter", str(tmp_path / "run"), "--data", str(data), "--output", str(tmp_path / "out")) == 0
    metrics = json.loads((tmp_path / "out" / "metrics.json").read_text())
    assert set(metrics["results"]) == {"base", "tuned"}
    assert metrics["adapter"] == str(tmp_path / "run" / "adapter")


def test_metrics_chosen_on_the_command_line_are_written_and_the_first_is_primary(tiny_llama, tmp_path, capsys):
    rows = [{"dialogue": r["dialogue"], "summary": r["summary"]} for r in TOY_ROWS]
    data = write_jsonl(tmp_path / "test.jsonl", rows)
    assert run_eval("--model", tiny_llama, "--data", str(data), "--output", str(tmp_path / "out"), "--metric", "exact,f1",
                    "--metric", "json") == 0
    assert "exact match" in capsys.readouterr().out
    metrics = json.loads((tmp_path / "out" / "metrics.json").read_text())
    assert metrics["primary"] == "exact" and list(metrics["metrics"]) == ["exact", "f1", "json"]
    assert set(metrics["results"]["base"]) >= {"exact", "f1", "json_valid", "json_exact"}
    records = [json.loads(line) for line in (tmp_path / "out" / "predictions.jsonl").read_text().splitlines()]
    assert set(records[0]["scores"]["base"]) == {"exact", "f1", "json_valid", "json_exact"}


def test_accuracy_on_a_label_task_prints_the_confusion_table(tiny_llama, tmp_path, capsys):
    rows = [{"dialogue": r["dialogue"], "summary": ["greeting", "travel"][i % 2]} for i, r in enumerate(TOY_ROWS)]
    data = write_jsonl(tmp_path / "labels.jsonl", rows)
    assert run_eval("--model", tiny_llama, "--data", str(data), "--metric", "accuracy", "--samples", "0") == 0
    out = capsys.readouterr().out
    assert "accuracy" in out and "confusion of base" in out and "(other)" in out


@pytest.mark.parametrize(("metric", "message"), [
    ("accuracy", "at least two classes"),
    ("bertscore", "unknown metric"),
    ("judge", "--judge-url"),
    ("judge-pairwise", "--judge-url"),
])
def test_a_metric_that_cannot_score_is_one_line_before_generating(tiny_llama, tmp_path, capsys, metric, message):
    data = write_jsonl(tmp_path / "one.jsonl", [{"dialogue": r["dialogue"], "summary": "same"} for r in TOY_ROWS])
    assert run_eval("--model", tiny_llama, "--data", str(data), "--metric", metric) == 2
    assert message in one_error_line(capsys)
