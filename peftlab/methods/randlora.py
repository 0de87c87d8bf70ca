"""RandLoRA: full-rank updates as a learned mix of frozen random low-rank bases shared by all layers, via peft."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from peftlab.methods.base import BuildContext, Method, build_peft_tuner, check_size_and_dropout, register


@dataclass
class RandloraSettings:
    """Albert et al. 2025; peft 0.21's RandLoraConfig defaults (r 32, alpha 20 r = 640)."""

    r: int = 32  # rank of each random basis; fewer trained parameters as r grows (min(in, out) / r bases)
    alpha: int = 640  # peft: typically 20 times r (an int in its config); lower it (or the rate) if training is unstable
    dropout: float = 0.0
    target: str = "qv"  # qv | all-linear | comma-separated module names

    def check(self) -> None:
        check_size_and_dropout("randlora", self.r, self.dropout)


def build_randlora(model: Any, settings: RandloraSettings, context: BuildContext) -> Any:
    # save_projection: the random bases go into the adapter file, so it reloads the same on any machine
    return build_peft_tuner(model, context, "randlora", "RandLoraConfig", settings.target, r=settings.r,
                            randlora_alpha=settings.alpha, randlora_dropout=settings.dropout, save_projection=True)


register(Method("randlora", "A learned mix of frozen random low-rank bases shared by all layers: full-rank updates (Albert et al. 2025)",
                RandloraSettings, build_randlora, peft_type="RANDLORA", mergeable=True, lora_conversion=True))
