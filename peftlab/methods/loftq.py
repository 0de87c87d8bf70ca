"""LoftQ: QLoRA whose LoRA weights start where they cancel the 4-bit quantization error of each weight, via peft."""

from __future__ import annotations

import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from peftlab.errors import PeftlabError
from peftlab.methods.base import BuildContext, Method, register
from peftlab.methods.quantized import QloraSettings, build_quantized_lora


@dataclass
class LoftqSettings(QloraSettings):
    """Li et al. 2024 (LoftQ); QLoRA's r=64 alpha=16 on every linear layer, NF4 base. peft's
    replace_lora_weights_loftq takes one alternating step (its documented use on a loaded 4-bit model)."""


def original_weights_file(model: Any) -> Path:
    """The full-precision safetensors the 4-bit base was quantized from: LoftQ fits B A to W - Q(W) and needs W."""
    folder = Path(getattr(model.config, "_name_or_path", "") or "")
    if not (folder / "model.safetensors").is_file() and not (folder / "model.safetensors.index.json").is_file():
        raise PeftlabError(f"loftq reads the unquantized weights from the base model's model.safetensors, and {folder or 'the base'} "
                           "has none; use a local transformers folder (or hub model) in safetensors, or choose qlora")
    return folder


def fit_quantization_error(model: Any, folder: Path) -> None:
    """Set each 4-bit layer's B A * scaling to the best rank-r approximation of W - dequantize(Q(W)).

    Written here because peft 0.21.2's replace_lora_weights_loftq moves every weight to "cuda" (or "xpu")
    unconditionally, so it fails on a CPU; and it ignores the LoRA scaling (B A equals the error only when
    alpha = r). The steps are its own, with its safetensors reader and its SVD split.
    """
    import bitsandbytes as bnb
    import torch
    from peft.tuners.lora.bnb import Linear4bit
    from peft.utils.loftq_utils import _low_rank_decomposition, _SafetensorLoader

    weights = _SafetensorLoader(model, str(folder))
    prefix = "base_model.model."
    with torch.no_grad():
        for name, module in model.named_modules():
            if not isinstance(module, Linear4bit):
                continue
            original = weights.get_tensor(name[len(prefix):] + ".weight").to(torch.float32)
            quantized = module.get_base_layer().weight
            shape = (module.out_features, module.in_features)
            if tuple(original.shape) != shape and tuple(original.T.shape) == shape:
                original = original.T  # GPT-2's Conv1D stores (in, out); its 4-bit layer is (out, in)
            error = original.to(quantized.device) - bnb.functional.dequantize_4bit(quantized.data, quantized.quant_state).to(torch.float32)
            split = _low_rank_decomposition(error, reduced_rank=module.r["default"])
            lora_a, lora_b = module.lora_A["default"].weight, module.lora_B["default"].weight
            lora_a.data = split["R"].to(lora_a.dtype)
            lora_b.data = (split["L"] / module.scaling["default"]).to(lora_b.dtype)


def build_loftq(model: Any, settings: LoftqSettings, context: BuildContext) -> Any:
    folder = original_weights_file(model)
    model = build_quantized_lora(model, settings, context, "loftq", 4)
    start = time.perf_counter()
    fit_quantization_error(model, folder)
    context.say(f"loftq: LoRA weights fitted to the quantization error in {time.perf_counter() - start:.1f} s")
    return model


# its B A is fitted to Q(W): `peftlab serve` and vLLM put adapters on the unquantized W, where it would add the
# quantization error a second time; `peftlab merge` folds it into the dequantized Q(W), which is right
register(Method("loftq", "QLoRA whose LoRA starts at the 4-bit quantization error of each weight (Li et al. 2024)", LoftqSettings,
                build_loftq, quantization="4bit", peft_type="LORA", mergeable=True, servable=False))
