"""Training stops at the first non-finite loss or trainable weight, and nothing of the run is kept.

A step with a NaN or infinite loss (an overflowing learning rate, a bad batch) turns the weights into NaN at the
optimizer step, and every answer after it is garbage. transformers' Trainer hides it by default
(`logging_nan_inf_filter` logs the average of the finite losses instead; a run that is all NaN logs 0.0), and saves
the NaN weights as checkpoints and as the result. The recipe turns that filter off, and this callback stops the run
before the step's log is followed by a save.
"""

from __future__ import annotations

import math
import shutil
from typing import Any

from transformers import TrainerCallback

from peftlab.artifacts import RunFolder
from peftlab.errors import PeftlabError

FIX = "lower train.lr (or keep train.max_grad_norm on), then train again"


class NonFiniteTraining(PeftlabError):
    """The run diverged: nothing of it may be saved."""


class StopOnNonFinite(TrainerCallback):
    """Raises NonFiniteTraining after an optimizer step that left a trainable weight NaN or infinite, and on a logged
    training loss that is. The Trainer calls on_step_end, then logs (on_log), then saves: both come before the save."""

    def __init__(self) -> None:
        self.trainable: list[tuple[str, Any]] = []

    def on_train_begin(self, args, state, control, model=None, **kwargs):
        self.trainable = [(name, parameter) for name, parameter in model.named_parameters() if parameter.requires_grad]

    def on_step_end(self, args, state, control, **kwargs):
        import torch

        if not self.trainable:
            return
        finite = torch.stack([torch.isfinite(parameter).all() for _, parameter in self.trainable])
        if not bool(finite.all()):  # one device sync per step; the names only once it failed
            first = self.trainable[int((~finite).nonzero()[0])][0]
            raise NonFiniteTraining(f"training diverged: after step {state.global_step} trainable weights are NaN or "
                                    f"infinite (first: {first}); nothing was saved; {FIX}")

    def on_log(self, args, state, control, logs=None, **kwargs):
        loss = (logs or {}).get("loss")
        if loss is not None and not math.isfinite(loss):
            raise NonFiniteTraining(f"training diverged: the training loss at step {state.global_step} is {loss}; "
                                    f"nothing was saved; {FIX}")


def discard_run(folder: RunFolder, existed: bool) -> None:
    """Leave the output as it was before a diverged run: its replacement (a staging folder) or its new folder goes, a
    folder that was there empty is left empty. A resumed run keeps the checkpoints it resumed from (and any this run
    saved, all finite)."""
    if folder.continue_work:
        return
    if folder.replaces or not existed:
        shutil.rmtree(folder.work, ignore_errors=True)
        return
    for entry in folder.work.iterdir():  # empty before this run: everything in it is this run's
        if entry.is_dir():
            shutil.rmtree(entry)
        else:
            entry.unlink()
