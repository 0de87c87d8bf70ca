"""OLoRA: LoRA whose A and B start from a QR decomposition of the base weight, via peft."""

from __future__ import annotations

from typing import Any

from peftlab.methods.base import BuildContext, Method, get_peft_model_checked, register
from peftlab.methods.lora import LORA_CAPABILITIES, LoraSettings, lora_config, remember_initial_adapter, save_as_plain_lora


def build_olora(model: Any, settings: LoraSettings, context: BuildContext) -> Any:
    config = lora_config(model, settings, context, "olora", init_lora_weights="olora")
    return remember_initial_adapter(get_peft_model_checked(model, config, "olora"))


register(Method("olora", "LoRA started from an orthonormal (QR) basis of each weight (Büyükakyüz 2024)",
                LoraSettings, build_olora, save=save_as_plain_lora, mixable=True, vllm=True, **LORA_CAPABILITIES))
