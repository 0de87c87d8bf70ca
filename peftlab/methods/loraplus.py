"""LoRA+: LoRA whose B matrices learn faster than its A matrices, through peft's LoRA+ optimizer."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from peftlab.errors import PeftlabError
from peftlab.methods.base import BuildContext, Method, register
from peftlab.methods.lora import LORA_CAPABILITIES, LoraSettings, build_lora


@dataclass
class LoraplusSettings(LoraSettings):
    """Hayou et al. 2024: the rate of B is lr_ratio times that of A (the paper and peft's docs use 16)."""

    lr_ratio: float = 16.0

    def check(self) -> None:
        super().check()
        if self.lr_ratio < 1:
            raise PeftlabError(f"loraplus.lr_ratio must be at least 1 (B learns faster than A), got {self.lr_ratio}")


def build_loraplus(model: Any, settings: LoraplusSettings, context: BuildContext) -> Any:
    model = build_lora(model, settings, context, "loraplus")
    model.peftlab_lr_ratio = settings.lr_ratio  # read by the optimizer, which the Trainer asks for after building
    return model


def loraplus_optimizer(model: Any, lr: float, weight_decay: float) -> Any:
    """AdamW with A at `lr` and B at `lr * lr_ratio` (train.lr is the rate of A)."""
    import torch
    from peft.optimizers import create_loraplus_optimizer

    return create_loraplus_optimizer(model, torch.optim.AdamW, lr=lr, loraplus_lr_ratio=model.peftlab_lr_ratio,
                                     loraplus_weight_decay=weight_decay)


# peft's docs advise a rate about half of plain LoRA's (whose default here is 1e-3)
register(Method("loraplus", "LoRA whose B matrices train at lr_ratio times the rate of A (Hayou et al. 2024)", LoraplusSettings,
                build_loraplus, optimizer=loraplus_optimizer, lr=5e-4, mixable=True, vllm=True, **LORA_CAPABILITIES))
