"""Experiment trackers for a run: transformers' own integrations (`report_to`), checked before anything slow.
TensorBoard writes into the run folder, so its curves travel with the result and work offline."""

from __future__ import annotations

from pathlib import Path
from typing import Any

from peftlab.artifacts import TENSORBOARD_DIR
from peftlab.errors import PeftlabError

PACKAGES = {"tensorboard": "tensorboard", "mlflow": "mlflow", "trackio": "trackio", "wandb": "wandb"}


def check_installed(names: list[str]) -> None:
    from transformers import integrations

    for name in names:
        if not getattr(integrations, f"is_{name}_available")():
            raise PeftlabError(f"train.report_to {name}: the {PACKAGES[name]} package is not installed; "
                               f"pip install {PACKAGES[name]}, or drop it from train.report_to")


def callbacks(names: list[str], out: Path) -> list[Any]:
    """TensorBoard's callback, pointed at the run folder (transformers would use the checkpoints folder)."""
    if "tensorboard" not in names:
        return []
    from transformers.integrations import TensorBoardCallback

    callback = TensorBoardCallback()
    callback.logging_dir = str(out / TENSORBOARD_DIR)  # read when the writer is made, on the main process only
    return [callback]


def locations(names: list[str], final: Path) -> dict[str, str]:
    """Where each tracker keeps this run, for summary.json and the comparison's records."""
    found = {}
    for name in names:
        if name == "tensorboard":
            found[name] = str(final / TENSORBOARD_DIR)
        elif name == "mlflow":
            import mlflow

            found[name] = mlflow.get_tracking_uri()
        else:
            found[name] = f"{name}: its own project settings (environment variables)"
    return found
