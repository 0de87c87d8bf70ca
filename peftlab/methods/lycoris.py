"""LoHa and LoKr (the LyCORIS family): low-rank updates through Hadamard and Kronecker products, via peft."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from peftlab.errors import PeftlabError
from peftlab.methods.base import BuildContext, Method, get_peft_model_checked, peft_task_type, register
from peftlab.methods.targets import target_modules


@dataclass
class LohaSettings:
    """peft's LoHaConfig defaults (Hyeon-Woo et al. 2022)."""

    r: int = 8
    alpha: float = 8
    rank_dropout: float = 0.0
    module_dropout: float = 0.0
    target: str = "qv"  # qv | all-linear | comma-separated module names

    def check(self) -> None:
        if self.r < 1:
            raise PeftlabError(f"r must be at least 1, got {self.r}")
        for name in ("rank_dropout", "module_dropout"):
            if not 0 <= getattr(self, name) < 1:
                raise PeftlabError(f"{name} must be in [0, 1), got {getattr(self, name)}")


@dataclass
class LokrSettings(LohaSettings):
    """peft's LoKrConfig defaults (Edalati et al. 2022 / LyCORIS)."""

    decompose_both: bool = False  # also factor the left Kronecker matrix
    decompose_factor: int = -1  # -1: the most square factorisation


def build_loha(model: Any, settings: LohaSettings, context: BuildContext) -> Any:
    from peft import LoHaConfig

    config = LoHaConfig(
        task_type=peft_task_type(context.is_seq2seq), r=settings.r, alpha=settings.alpha,
        rank_dropout=settings.rank_dropout, module_dropout=settings.module_dropout,
        target_modules=target_modules(model, settings.target, "loha.target"),
    )
    return get_peft_model_checked(model, config, "loha")


def build_lokr(model: Any, settings: LokrSettings, context: BuildContext) -> Any:
    from peft import LoKrConfig

    config = LoKrConfig(
        task_type=peft_task_type(context.is_seq2seq), r=settings.r, alpha=settings.alpha,
        rank_dropout=settings.rank_dropout, module_dropout=settings.module_dropout,
        decompose_both=settings.decompose_both, decompose_factor=settings.decompose_factor,
        target_modules=target_modules(model, settings.target, "lokr.target"),
    )
    return get_peft_model_checked(model, config, "lokr")


register(Method("loha", "Low-rank Hadamard product of two LoRA pairs: higher rank for the same size (FedPara / LyCORIS)",
                LohaSettings, build_loha, peft_type="LOHA", mergeable=True, lora_conversion=True))
register(Method("lokr", "Low-rank Kronecker product update (LyCORIS LoKr)", LokrSettings, build_lokr,
                peft_type="LOKR", mergeable=True, lora_conversion=True))
