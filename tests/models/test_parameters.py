"""One parameter count for every base: a 4-bit or 8-bit base counts as the unquantized model would."""

from __future__ import annotations

import pytest

from peftlab.methods import BuildContext, get_method
from peftlab.models import load_model
from peftlab.models.parameters import count_parameters


@pytest.mark.parametrize("quantized, plain", [("qlora", "lora"), ("lora-8bit", "lora")])
def test_quantized_share_matches_the_unquantized_model(quantized, plain, tiny_llama):
    settings = {"r": 4, "target": "all-linear"}
    counts = {}
    for name in (quantized, plain):
        method = get_method(name)
        loaded = load_model(tiny_llama, "fp32", quantization=method.quantization)
        base_total = count_parameters(loaded.model)[1]
        model = method.build(loaded.model, method.parse_settings(settings), BuildContext(False, 4))
        counts[name] = (base_total, *count_parameters(model))
    unquantized_total = count_parameters(load_model(tiny_llama, "fp32").model)[1]
    assert counts[quantized][0] == unquantized_total  # the quantized base alone
    assert counts[quantized] == counts[plain]  # same trainable share as LoRA on the unquantized base
    trainable, total = counts[quantized][1:]
    assert total == unquantized_total + trainable
