"""Training stops on a non-finite loss or trainable weight, says so in one line, and keeps nothing: no adapter, no
checkpoint, the output as it was. Before, `--set train.lr=inf` saved an all-NaN adapter, reported "final train loss
0.0000" (the Trainer logs a NaN step as the mean of the finite ones) and exited 0."""

from __future__ import annotations

import hashlib
from pathlib import Path

import pytest
from transformers import TrainerCallback

from peftlab.cli import main
from peftlab.train.finite import NonFiniteTraining, StopOnNonFinite
from peftlab.train.recipe import run
from tests.tiny_models import tiny_run_config


def train_argv(llama: str, data: str, out: Path, *extra: str) -> list[str]:
    return ["train", "--model", llama, "--dtype", "fp32", "--data", data, "--output", str(out), "--max-steps", "3",
            "--batch-size", "2", "--set", "lora.r=4", *extra]


def one_error_line(capsys) -> str:
    """The error, a line of its own after the progress bar's (which draws on stderr), without a traceback."""
    captured = capsys.readouterr()
    errors = [line for line in captured.err.splitlines() if line.startswith("error: ")]
    assert len(errors) == 1 and captured.err.rstrip().endswith(errors[0]) and "Traceback" not in captured.err, captured
    return errors[0]


def checksum(folder: Path) -> str:
    digest = hashlib.sha256()
    for path in sorted(folder.rglob("*")):
        digest.update(str(path.relative_to(folder)).encode() + (path.read_bytes() if path.is_file() else b"/"))
    return digest.hexdigest()


def test_an_infinite_learning_rate_fails_and_writes_nothing(tiny_llama, toy_data, tmp_path, capsys):
    out = tmp_path / "run"
    assert main(train_argv(tiny_llama, toy_data, out, "--set", "train.lr=inf", "--set", "train.save_steps=1")) == 2
    line = one_error_line(capsys)
    assert "training diverged" in line and "NaN or infinite" in line and "nothing was saved" in line and "train.lr" in line
    assert not out.exists()
    empty = tmp_path / "empty"
    empty.mkdir()
    assert main(train_argv(tiny_llama, toy_data, empty, "--set", "train.lr=inf")) == 2
    assert list(empty.iterdir()) == []  # an empty folder given as --output is left empty


def test_a_diverged_replacement_leaves_the_earlier_run_as_it_was(tiny_llama, toy_data, tmp_path, capsys):
    out = tmp_path / "run"
    assert main(train_argv(tiny_llama, toy_data, out)) == 0
    before = checksum(out)
    assert main(train_argv(tiny_llama, toy_data, out, "--overwrite", "--set", "train.lr=inf")) == 2
    assert "training diverged" in one_error_line(capsys)
    assert checksum(out) == before and sorted(path.name for path in tmp_path.iterdir()) == ["run", "toy.jsonl"]  # no staging left


class NaNAfterStep(TrainerCallback):
    """A weight turns NaN in the optimizer step after `step` (as an overflowing update leaves it)."""

    def __init__(self, step: int):
        self.step = step

    def on_optimizer_step(self, args, state, control, model=None, **kwargs):
        if state.global_step == self.step:
            next(parameter for parameter in model.parameters() if parameter.requires_grad).data.view(-1)[0] = float("nan")


def test_a_run_that_diverges_after_a_checkpoint_keeps_nothing(tiny_llama, toy_data, tmp_path):
    out = tmp_path / "run"
    config = tiny_run_config(tiny_llama, toy_data, out, "train.max_steps=4", "train.save_steps=1")
    seen = []

    class Watch(TrainerCallback):
        def on_save(self, args, state, control, **kwargs):
            seen.append(sorted(path.name for path in (out / "checkpoints").iterdir()))

    with pytest.raises(NonFiniteTraining, match="after step 2 trainable weights are NaN"):
        run(config, callbacks=(NaNAfterStep(1), Watch()))
    assert seen == [["checkpoint-1"]]  # step 1's checkpoint was saved (finite); step 2's never
    assert not out.exists()


def test_a_non_finite_logged_loss_stops_the_run():
    guard = StopOnNonFinite()
    state = type("State", (), {"global_step": 7})()
    guard.on_log(None, state, None, logs={"loss": 0.5})
    for loss in (float("nan"), float("inf")):
        with pytest.raises(NonFiniteTraining, match=f"loss at step 7 is {loss}"):
            guard.on_log(None, state, None, logs={"loss": loss})
