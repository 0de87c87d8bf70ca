"""MiSS (formerly Bone): one trained shard shared across each weight's blocks, added to the weight, via peft."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from peftlab.methods.base import BuildContext, Method, build_peft_tuner, check_size_and_dropout, register


@dataclass
class MissSettings:
    """Kang and Yin 2024 (MiSS: Matrix Shard Sharing); peft 0.21's MissConfig defaults (r 64, the balanced form)."""

    r: int = 64  # the shard's size along in_features (peft advises an even number)
    dropout: float = 0.0
    target: str = "qv"  # qv | all-linear | comma-separated module names

    def check(self) -> None:
        check_size_and_dropout("miss", self.r, self.dropout)


def build_miss(model: Any, settings: MissSettings, context: BuildContext) -> Any:
    return build_peft_tuner(model, context, "miss", "MissConfig", settings.target, r=settings.r, miss_dropout=settings.dropout)


register(Method("miss", "One trained shard shared across the blocks of each weight (Kang and Yin 2024)", MissSettings, build_miss,
                peft_type="MISS", mergeable=True, lora_conversion=True))
