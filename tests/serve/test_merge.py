"""`peftlab merge`: the saved model reloads to the logits of base + adapter; methods that cannot merge are refused."""

from __future__ import annotations

import pytest

from peftlab.cli import main
from tests.serve.conftest import train_adapter

# relative logit difference (max |diff| / (1 + max |logit|)) allowed between the reloaded merged model and base + adapter, fp32
TOLERANCE = 1e-4


def _relative_difference(tiny_llama: str, adapter: str, merged: str) -> float:
    import torch

    from peftlab.export.merge import relative_difference
    from peftlab.models import load_model
    from peftlab.generation import load_for_generation

    ids = torch.tensor([[5, 17, 42, 99, 7, 3, 250, 11]])
    reference = load_for_generation(tiny_llama, "fp32", adapter).model
    reloaded = load_model(merged, "fp32").model
    with torch.inference_mode():
        expected, got = reference(input_ids=ids).logits, reloaded(input_ids=ids).logits
    return relative_difference(got, expected)


@pytest.mark.parametrize("method", ["lora", "ia3"])
def test_merged_model_reloads_to_base_plus_adapter_logits(method, tiny_llama, lora_a, ia3_c, tmp_path):
    adapter = lora_a if method == "lora" else ia3_c
    assert main(["merge", "--adapter", adapter, "--output", str(tmp_path / "merged")]) == 0
    assert not (tmp_path / "merged" / "adapter_config.json").exists()  # a plain transformers model
    assert _relative_difference(tiny_llama, adapter, str(tmp_path / "merged")) < TOLERANCE


def test_qlora_merges_into_the_dequantized_base(tiny_llama, tmp_path):
    import json

    adapter = train_adapter(tiny_llama, tmp_path, "method=qlora", "qlora.r=4", "train.max_steps=2")
    assert main(["merge", "--adapter", adapter, "--output", str(tmp_path / "merged"), "--dtype", "fp32"]) == 0
    config = json.loads((tmp_path / "merged" / "config.json").read_text())
    assert "quantization_config" not in config and config["dtype"] == "float32"  # never merged into 4-bit weights
    info = json.loads((tmp_path / "merged" / "peftlab-merge.json").read_text())
    assert info["dequantized_from"] == "4bit" and info["relative_logit_difference"] < TOLERANCE


def test_prompt_tuning_cannot_merge(tiny_llama, tmp_path, capsys):
    adapter = train_adapter(tiny_llama, tmp_path, "method=prompt-tuning", "train.max_steps=1")
    capsys.readouterr()  # training's progress bar
    assert main(["merge", "--adapter", adapter, "--output", str(tmp_path / "merged")]) == 2
    error = capsys.readouterr().err
    assert "prompt-tuning cannot be merged" in error and "serve it as an adapter" in error and len(error.strip().splitlines()) == 1
    assert not (tmp_path / "merged").exists()


def test_adapter_for_another_base_is_refused_in_one_line(lora_a, tiny_t5, tmp_path, capsys):
    assert main(["merge", "--model", tiny_t5, "--adapter", lora_a, "--output", str(tmp_path / "merged")]) == 2
    error = capsys.readouterr().err
    assert "was trained on" in error and tiny_t5 in error and len(error.strip().splitlines()) == 1
