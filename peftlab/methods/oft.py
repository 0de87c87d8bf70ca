"""OFT: an orthogonal rotation of each adapted weight's input space, learned in blocks, via peft."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from peftlab.methods.base import BuildContext, Method, build_peft_tuner, check_size_and_dropout, register


@dataclass
class OftSettings:
    """Qiu et al. 2023 (Liu et al. 2024's BOFT paper for the block form); peft 0.21's OFTConfig defaults."""

    block_size: int = 32  # rows of each orthogonal block; in_features must be a multiple of it
    coft: bool = False  # constrained OFT: keep the rotation within eps of the identity
    eps: float = 6e-5  # COFT's radius
    module_dropout: float = 0.0  # chance of dropping a whole block in training
    target: str = "qv"  # qv | all-linear | comma-separated module names

    def check(self) -> None:
        check_size_and_dropout("oft", self.block_size, self.module_dropout, "block_size", "module_dropout")


def build_oft(model: Any, settings: OftSettings, context: BuildContext) -> Any:
    return build_peft_tuner(model, context, "oft", "OFTConfig", settings.target, r=0, oft_block_size=settings.block_size,
                            coft=settings.coft, eps=settings.eps, module_dropout=settings.module_dropout)


register(Method("oft", "An orthogonal rotation of each weight's inputs, learned in blocks (Qiu et al. 2023)", OftSettings, build_oft,
                peft_type="OFT", mergeable=True))
