"""Trainer callbacks: one progress bar with loss and tokens/s, and the per-step loss log."""

from __future__ import annotations

import json
import time
from pathlib import Path
from typing import Any

from transformers import TrainerCallback

from peftlab.data.collator import TokenCount


class ProgressBar(TrainerCallback):
    """A tqdm bar on the main process showing loss and real tokens/s."""

    def __init__(self, count: TokenCount):
        self.count = count
        self.bar = None
        self.loss: float | None = None

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

    def on_log(self, args, state, control, logs=None, **kwargs):
        if logs and "loss" in logs:
            self.loss = logs["loss"]
        if self.bar is not None and logs and "eval_loss" in logs:
            self.bar.write(f"step {state.global_step}: eval loss {logs['eval_loss']:.4f}")

    def on_train_end(self, args, state, control, **kwargs):
        if self.bar is not None:
            self.bar.close()
            self.bar = None


class LossLog(TrainerCallback):
    """Appends one JSON line per logged step; a resumed run drops lines past its checkpoint."""

    KEYS = ("loss", "eval_loss", "learning_rate", "grad_norm", "epoch")

    def __init__(self, path: Path):
        self.path = path

    def on_train_begin(self, args, state, control, **kwargs):
        if not state.is_world_process_zero or not self.path.exists():
            return
        kept = [line for line in self.path.read_text(encoding="utf-8").splitlines()
                if line.strip() and json.loads(line)["step"] <= state.global_step]
        self.path.write_text("".join(line + "\n" for line in kept), encoding="utf-8")

    def on_log(self, args, state, control, logs=None, **kwargs):
        if not state.is_world_process_zero or not logs:
            return
        record = {"step": state.global_step, **{k: logs[k] for k in self.KEYS if k in logs}}
        if "loss" in record or "eval_loss" in record:
            with self.path.open("a", encoding="utf-8") as handle:
                handle.write(json.dumps(record) + "\n")
