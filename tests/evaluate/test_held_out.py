"""Text rows in eval and compare: no reference to generate against, so the held-out loss and perplexity score them."""

import json
import math
import subprocess

import pytest

from peftlab.cli import main
from tests.compare.test_compare import compare_command, environment
from tests.conftest import TOY_ROWS, write_jsonl
from tests.tiny_models import train_tiny

TEXTS = [f"<s>[INST] Summarize: {row['dialogue']} [/INST] {row['summary']} </s>" for row in TOY_ROWS]


def reference_loss(model_folder: str, text: str) -> float:
    """The row's loss as the model computes it itself, on the tokens training puts the loss on (every token of the text)."""
    import torch
    from transformers import AutoModelForCausalLM

    from peftlab.models import load_tokenizer

    tokenizer = load_tokenizer(model_folder)
    model = AutoModelForCausalLM.from_pretrained(model_folder, dtype=torch.float32).eval()
    start = tokenizer("", add_special_tokens=True)["input_ids"]
    text_ids = tokenizer(text, add_special_tokens=False)["input_ids"] + [tokenizer.eos_token_id]
    with torch.inference_mode():
        return float(model(input_ids=torch.tensor([start + text_ids]), labels=torch.tensor([[-100] * len(start) + text_ids])).loss)


def test_eval_on_a_text_file_reports_held_out_loss_and_perplexity(tiny_llama, tmp_path, capsys):
    data = write_jsonl(tmp_path / "text.jsonl", [{"text": text} for text in TEXTS])
    train_tiny(tiny_llama, data, tmp_path / "run", "train.lr=0.01")
    assert main(["eval", "--adapter", str(tmp_path / "run" / "adapter"), "--data", str(data), "--output", str(tmp_path / "out"), "--dtype", "fp32"]) == 0
    captured = capsys.readouterr()
    assert "no reference to generate against" in captured.err + captured.out and "perplexity" in captured.out
    metrics = json.loads((tmp_path / "out" / "metrics.json").read_text())
    assert metrics["primary"] == "loss" and set(metrics["results"]) == {"base", "tuned"}
    for figures in metrics["results"].values():
        assert figures["perplexity"] == pytest.approx(math.exp(figures["loss"]))
    records = [json.loads(line) for line in (tmp_path / "out" / "predictions.jsonl").read_text().splitlines()]
    assert [r["where"] for r in records] == [f"text.jsonl line {i}" for i in range(1, len(TEXTS) + 1)]
    # the base's figure is the model's own loss on each row (the adapter switched off)
    for record, text in zip(records, TEXTS):
        assert record["scores"]["base"]["loss"] == pytest.approx(reference_loss(tiny_llama, text), rel=1e-4)
    assert metrics["results"]["tuned"]["loss"] != pytest.approx(metrics["results"]["base"]["loss"])


def test_compare_on_a_text_file_ranks_by_held_out_perplexity(tiny_llama, tmp_path):
    data = str(write_jsonl(tmp_path / "text.jsonl", [{"text": text} for text in TEXTS * 2]))
    out = tmp_path / "out"
    command = compare_command(tiny_llama, data, out, methods="base,lora")
    command[command.index("12")] = "2"  # --budget-steps: two steps are enough to be scored
    done = subprocess.run(command, env=environment(), capture_output=True, text=True, timeout=1800)  # a bound for a hang
    assert done.returncode == 0, done.stderr[-2000:]
    assert "no reference to generate against" in done.stdout + done.stderr
    records = json.loads((out / "results.json").read_text())
    assert [r["primary"] for r in records] == ["inverse_perplexity"] * 2
    for record in records:
        assert record["score_labels"]["inverse_perplexity"] == "1/perplexity"
        assert record["held_out"]["perplexity"] == pytest.approx(math.exp(record["held_out"]["loss"]))
        assert 0 < record["scores"]["inverse_perplexity"] <= 1
    assert "1/perplexity" in (out / "results.md").read_text()
