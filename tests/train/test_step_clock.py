"""Tokens per step and the warm-up: counted from the batches the steps used, the first step timed apart."""

import math
import time
from types import SimpleNamespace

import pytest
from transformers import TrainerCallback

from peftlab.data.collator import TokenCount
from peftlab.train import callbacks
from peftlab.train.callbacks import StepClock
from peftlab.train.recipe import run
from tests.conftest import TOY_ROWS, write_jsonl
from tests.tiny_models import tiny_run_config, train_tiny


def test_a_batch_made_ahead_is_not_counted_and_pauses_are_not_steady_time(monkeypatch):
    count = TokenCount()
    for real in (10, 20, 30):  # the DataLoader made a third batch that no step used
        count.add(real, real + 2)
    now, paused = [100.0], [0.0]
    monkeypatch.setattr(callbacks.time, "perf_counter", lambda: now[0])
    clock = StepClock(count, accumulation=1, paused_seconds=lambda: paused[0])
    clock.on_train_begin(None, SimpleNamespace(global_step=0), None)
    for step, (seconds, evaluating) in enumerate([(7.0, 0.0), (2.0, 0.0), (5.0, 3.0)], start=1):
        now[0] += seconds
        paused[0] += evaluating
        clock.on_step_end(None, SimpleNamespace(global_step=step), None)
    count.add(40, 42)
    assert clock.tokens() == (60, 66)  # steps 1-3 used batches 1-3 only
    assert clock.first_step_tokens() == 10
    assert clock.steady_seconds == pytest.approx(2.0 + 5.0 - 3.0)


def test_a_resumed_run_counts_its_own_steps_only():
    count = TokenCount()
    count.add(8, 8)
    clock = StepClock(count, accumulation=2)
    clock.on_train_begin(None, SimpleNamespace(global_step=40), None)
    clock.on_step_end(None, SimpleNamespace(global_step=41), None)
    assert clock.steps == 1 and clock.steady_seconds is None


def test_the_summary_counts_the_tokens_the_model_trained_on(tiny_llama, tmp_path):
    """Rows of one length, so a batch's tokens are input_ids.numel(); the model's own training forwards are counted."""
    row = {"dialogue": "#Person1#: Hello there. #Person2#: Hi.", "summary": "A greeting."}
    data = write_jsonl(tmp_path / "same.jsonl", [row] * 12)
    forwards = []

    class CountForwards(TrainerCallback):
        def on_train_begin(self, args, state, control, model=None, **kwargs):
            def count(module, positional, keyword):
                if module.training:
                    forwards.append(keyword["input_ids"].numel())
            model.register_forward_pre_hook(count, with_kwargs=True)

    summary = run(tiny_run_config(tiny_llama, data, tmp_path / "out", "train.max_steps=3"), callbacks=(CountForwards(),))
    assert len(forwards) == 3
    assert summary["real_tokens"] == sum(forwards)  # not the fourth batch the DataLoader made ahead
    steady_seconds = summary["train_seconds"] - summary["first_step_seconds"]
    assert summary["first_step_seconds"] > 0 and steady_seconds > 0
    assert math.isclose(summary["steady_tokens_per_second"] * steady_seconds, sum(forwards[1:]), rel_tol=1e-9)


def test_one_step_has_no_steady_figure(tiny_llama, toy_data, tmp_path):
    started = time.time()
    summary = train_tiny(tiny_llama, toy_data, tmp_path / "out", "train.max_steps=1")
    assert summary["steps"] == 1 and summary["steady_tokens_per_second"] is None and summary["first_step_seconds"] is None
    # when the first step began, on the wall clock another process reads: after the data was prepared
    assert started + summary["data_seconds"] < summary["first_step_started_at"] < time.time()
    assert summary["data_rows"] == len(TOY_ROWS * 2)


def test_the_progress_bar_prints_the_expected_time_once_from_the_first_steady_step(monkeypatch, capsys):
    now = [0.0]
    monkeypatch.setattr(callbacks.time, "perf_counter", lambda: now[0])
    bar = callbacks.ProgressBar(TokenCount())
    state = SimpleNamespace(global_step=0, max_steps=10, is_world_process_zero=True)
    bar.on_train_begin(None, state, None)
    for step, seconds in enumerate([9.0, 3.0, 3.0, 3.0], start=1):  # the first step pays the warm-up
        now[0] += seconds
        state.global_step = step
        bar.on_step_end(None, state, None)
    bar.close()
    printed = capsys.readouterr()
    lines = [line for line in (printed.out + printed.err).splitlines() if " per step; " in line]
    assert lines == ["train: 3.0 s per step; about 24 s left for 8 more steps (36 s in all)"]
