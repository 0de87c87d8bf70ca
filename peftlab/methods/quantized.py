"""LoRA on a quantized base model: QLoRA (4-bit NF4) and LoRA on an 8-bit (LLM.int8()) base."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from peftlab.errors import PeftlabError
from peftlab.methods.lora import LoraSettings, build_lora
from peftlab.methods.base import BuildContext, Method, register


@dataclass
class QloraSettings(LoraSettings):
    """Dettmers et al. 2023: r=64, alpha=16, dropout 0.1, LoRA on every linear layer."""

    r: int = 64
    alpha: float = 16
    dropout: float = 0.1
    target: str = "all-linear"
    gradient_checkpointing: bool = True  # the paper's memory saver; costs about a third more compute


@dataclass
class Lora8bitSettings(LoraSettings):
    gradient_checkpointing: bool = True


def build_quantized_lora(model: Any, settings: Any, context: BuildContext, method: str, bits: int) -> Any:
    from peft import prepare_model_for_kbit_training

    if not getattr(model, f"is_loaded_in_{bits}bit", False):
        raise PeftlabError(f"{method} needs the base model loaded in {bits}-bit; load it with load_model(..., quantization='{bits}bit') "
                           "(peftlab train does this for you)")
    # freezes the base, casts norms/embeddings to fp32 for stable training, optionally checkpoints activations
    model = prepare_model_for_kbit_training(model, use_gradient_checkpointing=settings.gradient_checkpointing)
    return build_lora(model, settings, context, method)


register(Method("qlora", "LoRA on a 4-bit NF4 base (double quantization, bf16 compute; Dettmers et al. 2023)", QloraSettings,
                lambda model, s, context: build_quantized_lora(model, s, context, "qlora", 4), quantization="4bit",
                mergeable=True, mixable=True, vllm=True))
register(Method("lora-8bit", "LoRA on an 8-bit LLM.int8() base (Dettmers et al. 2022)", Lora8bitSettings,
                lambda model, s, context: build_quantized_lora(model, s, context, "lora-8bit", 8), quantization="8bit",
                mergeable=True, mixable=True, vllm=True))
