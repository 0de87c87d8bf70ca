"""FourierFT: each weight update is the inverse Fourier transform of a few learned spectral coefficients, via peft."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from peftlab.errors import PeftlabError
from peftlab.methods.base import BuildContext, Method, build_peft_tuner, register


@dataclass
class FourierftSettings:
    """Gao et al. 2024; peft's FourierFTConfig: n_frequency 1000, scaling 300 for LLaMA instruction tuning (its docs)."""

    n_frequency: int = 1000  # learned coefficients per weight, at fixed random frequencies (at most in * out)
    scaling: float = 300.0
    seed: int = 777  # peft's random_loc_seed: which frequencies
    target: str = "qv"  # qv | all-linear | comma-separated module names

    def check(self) -> None:
        if self.n_frequency < 1:
            raise PeftlabError(f"fourierft.n_frequency must be at least 1, got {self.n_frequency}")


def build_fourierft(model: Any, settings: FourierftSettings, context: BuildContext) -> Any:
    return build_peft_tuner(model, context, "fourierft", "FourierFTConfig", settings.target, n_frequency=settings.n_frequency,
                            scaling=settings.scaling, random_loc_seed=settings.seed)


register(Method("fourierft", "Each update is the inverse 2-D Fourier transform of n learned spectral coefficients (Gao et al. 2024)",
                FourierftSettings, build_fourierft, peft_type="FOURIERFT", mergeable=True, lora_conversion=True))
