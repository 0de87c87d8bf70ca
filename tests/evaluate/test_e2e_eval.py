"""A real evaluation on the embedded default model and DialogSum's test split (several references)."""

import json

import pytest

from peftlab.cli import main


@pytest.mark.e2e
def test_default_model_on_dialogsum(dialogsum, tmp_path, capsys):
    out = tmp_path / "eval"
    args = ["eval", "--data", str(dialogsum / "test.jsonl"), "--max-samples", "4", "--max-new-tokens", "24",
            "--batch-size", "4", "--output", str(out)]
    assert main(args) == 0
    assert "ROUGE-Lsum" in capsys.readouterr().out
    records = [json.loads(line) for line in (out / "predictions.jsonl").read_text().splitlines()]
    assert len(records) == 4 and all(len(r["references"]) == 3 and r["predictions"]["base"] for r in records)
    base = json.loads((out / "metrics.json").read_text())["results"]["base"]
    assert 0.05 < base["rouge1"] < 1 and base["rouge2"] <= base["rouge1"]
