"""4-bit NF4 and 8-bit base models through bitsandbytes, on the offline path of its CPU backend."""

from __future__ import annotations

import importlib.util
import logging
import sys
from typing import Any

from peftlab.errors import PeftlabError

QUANTIZATIONS = ("4bit", "8bit")


def offline_bitsandbytes() -> None:
    """Keep bitsandbytes off the network and quiet.

    On CPUs with AVX512-BF16, importing bitsandbytes (which importing peft does) tries
    `kernels.get_kernel("kernels-community/quantization-bitsandbytes")`, a hub download, and logs a
    warning when that fails. Its built-in CPU ops are the fallback and work (bitsandbytes 0.50.2:
    NF4 and int8 bases train with LoRA, losses within about 1e-3 of fp32), so we import it once
    with the `kernels` package hidden and silence that warning.
    """
    logging.getLogger("bitsandbytes.backends.cpu.ops").setLevel(logging.ERROR)
    if "bitsandbytes" in sys.modules or importlib.util.find_spec("bitsandbytes") is None:
        return
    if importlib.util.find_spec("kernels") is None:
        return  # nothing could reach the hub
    saved = sys.modules.get("kernels")
    sys.modules["kernels"] = None  # `from kernels import get_kernel` now raises ImportError
    try:
        import bitsandbytes  # noqa: F401
    finally:
        if saved is None:
            del sys.modules["kernels"]
        else:
            sys.modules["kernels"] = saved


def bitsandbytes_config(kind: str, compute_dtype: Any) -> Any:
    """QLoRA's 4-bit recipe (NF4, double quantization, bf16 compute) or LLM.int8()."""
    from transformers import BitsAndBytesConfig

    if kind not in QUANTIZATIONS:
        raise PeftlabError(f"quantization '{kind}' is not one of {', '.join(QUANTIZATIONS)}")
    if importlib.util.find_spec("bitsandbytes") is None:
        raise PeftlabError(f"{kind} loading needs bitsandbytes; install it with `pip install bitsandbytes` (CPU works)")
    offline_bitsandbytes()
    if kind == "4bit":
        # 4-bit values stored in the compute dtype's storage (same bytes as uint8): FSDP can only
        # shard floating-point tensors, so FSDP-QLoRA needs it; it changes nothing elsewhere
        return BitsAndBytesConfig(load_in_4bit=True, bnb_4bit_quant_type="nf4", bnb_4bit_use_double_quant=True,
                                  bnb_4bit_compute_dtype=compute_dtype, bnb_4bit_quant_storage=compute_dtype)
    return BitsAndBytesConfig(load_in_8bit=True)


def keep_trainable_layout(model: Any) -> Any:
    """Turn off bitsandbytes' packed CPU inference layout for 4-bit layers.

    On AVX512-BF16 CPUs a Linear4bit repacks its weight at the first forward in eval mode; the
    packed path (gemv_4bit) carries no gradient to the layers below if training resumes after an
    evaluation, and it fails for layers narrower than the 64-value quantization block.
    """
    for module in model.modules():
        if hasattr(module, "support_avx512bf16_for_cpu"):
            module.support_avx512bf16_for_cpu = False
    return model
