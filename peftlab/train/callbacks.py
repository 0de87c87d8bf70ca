"""Trainer callbacks: one progress bar with loss and tokens/s, the step clock, and the per-step loss log."""

from __future__ import annotations

import json
import os
import time
from pathlib import Path
from typing import Any, Callable

from transformers import TrainerCallback

from peftlab import atomic
from peftlab.data.collator import TokenCount


class ProgressBar(TrainerCallback):
    """A tqdm bar on the main process showing loss and real tokens/s, and one line with the expected training time.

    The estimate is printed once, after the first steady step: the first step pays one-off costs (see StepClock),
    so the rate of the second step alone predicts the rest better than the average of the first two.
    """

    def __init__(self, count: TokenCount):
        self.count = count
        self.bar = None
        self.loss: float | None = None
        self.estimate_from: tuple[int, float] | None = None  # (step, time) when the first step ended

    def on_train_begin(self, args, state, control, **kwargs):
        if state.is_world_process_zero:
            from tqdm.auto import tqdm

            self.bar = tqdm(total=state.max_steps, initial=state.global_step, desc="train", unit="step", dynamic_ncols=True)
            self.start, self.start_tokens = time.perf_counter(), self.count.real

    def on_step_end(self, args, state, control, **kwargs):
        if self.bar is not None:
            rate = (self.count.real - self.start_tokens) / max(time.perf_counter() - self.start, 1e-9)
            postfix = {"tok/s": f"{rate:.0f}"}
            if self.loss is not None:
                postfix["loss"] = f"{self.loss:.4f}"
            self.bar.set_postfix(postfix, refresh=False)
            self.bar.update(state.global_step - self.bar.n)
            self._estimate(state.global_step, state.max_steps)

    def _estimate(self, step: int, total: int) -> None:
        now = time.perf_counter()
        if self.estimate_from is None:
            self.estimate_from = (step, now)
        elif self.estimate_from[0] == step - 1 and step < total:
            per_step = now - self.estimate_from[1]
            left = per_step * (total - step)
            self.bar.write(f"train: {per_step:.1f} s per step; about {_duration(left)} left for {total - step} more "
                           f"steps ({_duration(now - self.start + left)} in all)")

    def on_log(self, args, state, control, logs=None, **kwargs):
        if logs and "loss" in logs:
            self.loss = logs["loss"]
        if self.bar is not None and logs and "eval_loss" in logs:
            self.bar.write(f"step {state.global_step}: eval loss {logs['eval_loss']:.4f}")

    def on_train_end(self, args, state, control, **kwargs):
        self.close()

    def close(self) -> None:
        if self.bar is not None:
            self.bar.close()
            self.bar = None


def _duration(seconds: float) -> str:
    minutes, rest = divmod(round(seconds), 60)
    return f"{minutes} min {rest} s" if minutes else f"{rest} s"


class StepClock(TrainerCallback):
    """The optimizer steps this run took, their tokens, and the steady time after the first step.

    The first step pays one-off costs (thread pools, kernel choice, the allocator growing; compilation where
    there is any), so a rate over a short run understates a long one's: both are reported, the warm-up as the
    run's seconds outside the steady steps. Tokens are those of the batches the steps used: the DataLoader
    (accelerate's) makes one batch ahead, so the collator's running count holds a batch no step used when a
    run stops at max_steps. Time spent evaluating (`paused_seconds`, a running total) is not training time.
    """

    def __init__(self, count: TokenCount, accumulation: int, paused_seconds: Callable[[], float] = lambda: 0.0):
        self.count, self.accumulation, self.paused_seconds = count, accumulation, paused_seconds
        self.steps = 0
        self.first_end: tuple[float, float] | None = None  # (time, paused seconds) when the first step ended
        self.steady_seconds: float | None = None  # from the first step's end to the last's, pauses left out
        # when the first step began, in Unix seconds: another process (a benchmark that started this one) reads its time
        # to the first step against its own clock, so everything before it counts: imports, model, data
        self.first_step_started_at: float | None = None

    def on_train_begin(self, args, state, control, **kwargs):
        self.start_step = state.global_step

    def on_step_begin(self, args, state, control, **kwargs):
        if self.first_step_started_at is None:
            self.first_step_started_at = time.time()

    def on_step_end(self, args, state, control, **kwargs):
        now = time.perf_counter(), self.paused_seconds()
        self.steps = state.global_step - self.start_step
        if self.first_end is None:
            self.first_end = now
        else:
            self.steady_seconds = (now[0] - self.first_end[0]) - (now[1] - self.first_end[1])

    def warm_up_split(self, run_seconds: float, real_tokens: int, first_step_tokens: int) -> dict[str, float | None]:
        """`first_step_seconds`: the run's training seconds outside the steady steps (the first step with everything
        before it); `steady_tokens_per_second`: the tokens after the first step over the steady time. None for a
        one-step run. The token counts are passed in, so that a caller can sum them over processes first."""
        if not self.steady_seconds:
            return {"first_step_seconds": None, "steady_tokens_per_second": None}
        return {"first_step_seconds": run_seconds - self.steady_seconds,
                "steady_tokens_per_second": (real_tokens - first_step_tokens) / self.steady_seconds}

    def tokens(self) -> tuple[int, int]:
        """Real and total tokens of all the steps taken (a step's last accumulation at an epoch's end may be short)."""
        return self.count.first(self.steps * self.accumulation)

    def first_step_tokens(self) -> int:
        return self.count.first(min(self.steps, 1) * self.accumulation)[0]


class LossLog(TrainerCallback):
    """Appends one JSON line per logged step, flushed to disk as it goes.

    A resumed run keeps the lines up to its checkpoint, drops the rest and a torn last line (a
    kill or a full disk mid-write), and records where it resumed: {"step": N, "resumed": true}.
    """

    KEYS = ("loss", "eval_loss", "learning_rate", "grad_norm", "epoch")

    def __init__(self, path: Path):
        self.path = path

    def on_train_begin(self, args, state, control, **kwargs):
        if not state.is_world_process_zero:
            return
        kept = [record for record in read_log(self.path) if record["step"] <= state.global_step]
        if state.global_step > 0:
            kept.append({"step": state.global_step, "resumed": True})
        if kept or self.path.exists():
            atomic.write_text(self.path, "".join(json.dumps(record) + "\n" for record in kept))

    def on_log(self, args, state, control, logs=None, **kwargs):
        if not state.is_world_process_zero or not logs:
            return
        record = {"step": state.global_step, **{k: logs[k] for k in self.KEYS if k in logs}}
        if "loss" in record or "eval_loss" in record:
            with self.path.open("a", encoding="utf-8") as handle:
                handle.write(json.dumps(record) + "\n")
                handle.flush()
                os.fsync(handle.fileno())


def read_log(path: Path) -> list[dict]:
    """The step log's records, skipping lines that are not a whole record (a torn write)."""
    if not path.exists():
        return []
    records = []
    for line in path.read_text(encoding="utf-8", errors="replace").splitlines():
        try:
            record = json.loads(line)
        except ValueError:
            continue
        if isinstance(record, dict) and isinstance(record.get("step"), int):
            records.append(record)
    return records
