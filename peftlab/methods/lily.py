"""Lily: low-rank adapters whose down-projections are shared by neighbouring layers and whose up-projections are a
routed mixture shared by all layers, via peft."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from peftlab.errors import PeftlabError
from peftlab.methods.base import BuildContext, Method, build_peft_tuner, register


@dataclass
class LilySettings:
    """Zhong et al. 2024 (Low-rank interconnected adaptation across layers); peft 0.21's LilyConfig defaults."""

    r: int = 32  # peft advises 2-4 times the LoRA rank one would use
    stride_a: int = 1  # neighbouring layers sharing one A (1: each layer its own)
    num_b: int = 2  # B matrices shared by all layers, mixed by a router (at least 2)
    scaling: float = 1.0
    target: str = "qv"  # qv | all-linear | comma-separated module names

    def check(self) -> None:
        if self.r < 1 or self.stride_a < 1:
            raise PeftlabError(f"lily.r and lily.stride_a must be at least 1, got {self.r} and {self.stride_a}")
        if self.num_b < 2:
            raise PeftlabError(f"lily.num_b must be at least 2 (the router mixes them), got {self.num_b}")


def build_lily(model: Any, settings: LilySettings, context: BuildContext) -> Any:
    return build_peft_tuner(model, context, "lily", "LilyConfig", settings.target, r=settings.r, stride_A=settings.stride_a,
                            num_B=settings.num_b, scaling=settings.scaling)


register(Method("lily", "Low-rank adapters with A shared by neighbouring layers and a routed mix of B shared by all (Zhong et al. 2024)",
                LilySettings, build_lily, peft_type="LILY",
                not_mergeable_because="peft 0.21's Lily has no merge (each layer's B is a mix routed from its input)"))
