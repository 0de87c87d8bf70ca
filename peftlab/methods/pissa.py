"""PiSSA: LoRA whose A and B start from the base weight's principal singular vectors, via peft."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from peftlab.errors import PeftlabError
from peftlab.methods.base import BuildContext, Method, get_peft_model_checked, register
from peftlab.methods.lora import LORA_CAPABILITIES, LoraSettings, lora_config, remember_initial_adapter, save_as_plain_lora


@dataclass
class PissaSettings(LoraSettings):
    """Meng et al. 2024; peft's PiSSA example: lora_alpha = r and no dropout (the adapter starts as part of W)."""

    dropout: float = 0.0
    svd_iterations: int = 0  # 0: exact SVD; n: peft's fast randomized SVD with n subspace iterations (pissa_niter_n)

    def check(self) -> None:
        super().check()
        if self.svd_iterations < 0:
            raise PeftlabError(f"pissa.svd_iterations must be 0 (exact SVD) or more, got {self.svd_iterations}")


def build_pissa(model: Any, settings: PissaSettings, context: BuildContext) -> Any:
    init = f"pissa_niter_{settings.svd_iterations}" if settings.svd_iterations else "pissa"
    config = lora_config(model, settings, context, "pissa", init_lora_weights=init)
    return remember_initial_adapter(get_peft_model_checked(model, config, "pissa"))


register(Method("pissa", "LoRA started from the principal singular vectors of each weight; the rest stays frozen (Meng et al. 2024)",
                PissaSettings, build_pissa, save=save_as_plain_lora, mixable=True, vllm=True, **LORA_CAPABILITIES))
