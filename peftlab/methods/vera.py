"""VeRA: one pair of frozen random matrices shared by all layers, and two small scaling vectors learned per layer, via peft."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from peftlab.methods.base import BuildContext, Method, build_peft_tuner, check_size_and_dropout, register


@dataclass
class VeraSettings:
    """Kopiczko et al. 2024; peft 0.21's VeraConfig defaults (r 256, d initialised to 0.1)."""

    r: int = 256  # rank of the shared random matrices (the trained vectors have r and out_features entries)
    d_initial: float = 0.1  # starting value of the vector that scales the rank dimension
    dropout: float = 0.0
    target: str = "qv"  # qv | all-linear | comma-separated module names

    def check(self) -> None:
        check_size_and_dropout("vera", self.r, self.dropout)


def build_vera(model: Any, settings: VeraSettings, context: BuildContext) -> Any:
    # save_projection: the random matrices go into the adapter file, so it reloads the same on any machine
    return build_peft_tuner(model, context, "vera", "VeraConfig", settings.target, r=settings.r, d_initial=settings.d_initial,
                            vera_dropout=settings.dropout, save_projection=True)


# VeRA trains vectors, not matrices: the paper's rates are about ten times LoRA's
register(Method("vera", "Two scaling vectors per layer around frozen random matrices shared by all layers (Kopiczko et al. 2024)",
                VeraSettings, build_vera, lr=1e-2, peft_type="VERA", mergeable=True, lora_conversion=True))
