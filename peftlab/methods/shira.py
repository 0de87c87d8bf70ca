"""SHiRA: a sparse high-rank adapter, a fixed random 1-2% of each weight's entries trained, via peft."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from peftlab.errors import PeftlabError
from peftlab.methods.base import BuildContext, Method, build_peft_tuner, register


@dataclass
class ShiraSettings:
    """Bhardwaj et al. 2024; peft 0.21's ShiraConfig defaults: r 32 sets the count, r * (in + out) entries per weight, chosen at random."""

    r: int = 32  # as many trained entries as a rank-r LoRA has parameters
    seed: int = 42  # the random mask's seed (it is saved with the adapter)
    target: str = "qv"  # qv | all-linear | comma-separated module names

    def check(self) -> None:
        if self.r < 1:
            raise PeftlabError(f"shira.r must be at least 1, got {self.r}")


def build_shira(model: Any, settings: ShiraSettings, context: BuildContext) -> Any:
    return build_peft_tuner(model, context, "shira", "ShiraConfig", settings.target, r=settings.r, random_seed=settings.seed)


register(Method("shira", "A fixed random sparse set of each weight's entries trains, as many as rank-r LoRA has (Bhardwaj et al. 2024)",
                ShiraSettings, build_shira, peft_type="SHIRA", mergeable=True, lora_conversion=True))
