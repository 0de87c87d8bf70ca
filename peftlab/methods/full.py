"""Full fine-tuning: every weight trains (in fp32), the baseline the other methods are measured against.

It saves a complete transformers model (`save_pretrained`), which replaces the base on reload.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Any

from peftlab.methods.base import BuildContext, Method, in_fp32, register
from peftlab.methods.saved_tensors import whole_model_tensors


@dataclass
class FullSettings:
    """Every weight trained (fp32); the baseline the other methods are measured against."""


def build_full(model: Any, settings: FullSettings, context: BuildContext) -> Any:
    model = in_fp32(model)  # small updates to bf16 weights round away
    for parameter in model.parameters():
        parameter.requires_grad = True
    return model


def save_full(model: Any, folder: Path) -> None:
    model.save_pretrained(folder)


def load_full(base_model: Any, folder: Path) -> Any:
    """The saved model replaces the base: same class, the saved dtype. A weight of another shape than config.json gives
    is left at its initial value here, and named by the check every load passes (`load_trained`)."""
    model = type(base_model).from_pretrained(str(folder), dtype="auto", ignore_mismatched_sizes=True)
    return model.to(base_model.device)  # where --device put the base


register(Method("full", "Full fine-tuning of every weight in fp32 (the baseline)", FullSettings, build_full,
                save=save_full, load=load_full, saved_tensors=whole_model_tensors, lr=5e-5, trains_in_fp32=True,
                not_mergeable_because="it is not a PEFT adapter (its trained weights are saved whole)"))
