"""Trainable and total parameter counts, the same for every caller and every base (fp32, bf16, 4-bit, 8-bit)."""

from __future__ import annotations

import math
from typing import Any


def parameter_values(parameter: Any) -> int:
    """How many values a parameter holds, as the unquantized model would count them.

    A 4-bit weight is stored packed (two values per byte, and in the compute dtype's storage,
    e.g. four per bf16 element, for FSDP-QLoRA), so its element count understates it; its
    quantization state keeps the original shape. 8-bit weights hold one value per element.
    """
    quant_state = getattr(parameter, "quant_state", None)
    if quant_state is not None and getattr(quant_state, "shape", None) is not None:
        return math.prod(quant_state.shape)
    return parameter.numel()


def count_parameters(model: Any) -> tuple[int, int]:
    """(trainable, total) parameters of a model, each shared tensor counted once."""
    trainable = total = 0
    for parameter in model.parameters():
        count = parameter_values(parameter)
        total += count
        if parameter.requires_grad:
            trainable += count
    return trainable, total
