"""HiRA: a high-rank update, the base weight multiplied entry-wise by a low-rank product, via peft."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from peftlab.methods.base import BuildContext, Method, build_peft_tuner, check_size_and_dropout, register


@dataclass
class HiraSettings:
    """Huang et al. 2025 (ICLR); peft 0.21's HiraConfig defaults (r 32)."""

    r: int = 32  # rank of the product B A that multiplies W entry-wise (the update W * BA is high-rank)
    dropout: float = 0.0
    target: str = "qv"  # qv | all-linear | comma-separated module names

    def check(self) -> None:
        check_size_and_dropout("hira", self.r, self.dropout)


def build_hira(model: Any, settings: HiraSettings, context: BuildContext) -> Any:
    return build_peft_tuner(model, context, "hira", "HiraConfig", settings.target, r=settings.r, hira_dropout=settings.dropout)


register(Method("hira", "The weight times a low-rank product, entry-wise: a high-rank update (Huang et al. 2025)", HiraSettings,
                build_hira, peft_type="HIRA", mergeable=True))
