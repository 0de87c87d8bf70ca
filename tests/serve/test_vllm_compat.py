"""Adapters saved by peftlab against vLLM's LoRA rules (read in vLLM 0.33's vllm/lora/peft_helper.py): which methods vLLM can serve."""

from __future__ import annotations

import json
import shutil

import pytest

from peftlab.methods import get_method
from peftlab.serve import vllm_compat
from tests.serve.conftest import train_adapter


def test_peftlab_lora_adapter_passes_vllms_documented_rules(lora_a):
    """vLLM is not run here (CUDA only): the adapter is checked against its rules: no modules_to_save, no DoRA,
    bias "none", rank within --max-lora-rank, lora_A/lora_B tensors only (vllm/lora/peft_helper.py, vLLM 0.33)."""
    assert vllm_compat.problems(lora_a) == []
    assert vllm_compat.required_max_lora_rank(lora_a) == 8  # r=4: the smallest rank vLLM offers that holds it
    assert vllm_compat.check(lora_a) == "vLLM: yes"


@pytest.mark.parametrize("method, settings, reason", [
    ("rslora", ["rslora.r=4"], None),
    ("dora", ["dora.r=4"], "use_dora"),
    ("ia3", [], "LoRA adapters only"),
])
def test_methods_vllm_flag_matches_the_rules(method, settings, reason, tiny_llama, tmp_path):
    adapter = train_adapter(tiny_llama, tmp_path, f"method={method}", "train.max_steps=1", *settings)
    found = vllm_compat.problems(adapter)
    assert (found == []) == get_method(method).vllm
    assert reason is None or any(reason in problem for problem in found), found


def test_seq2seq_lora_is_refused(tiny_t5, tmp_path):
    adapter = train_adapter(tiny_t5, tmp_path, "train.max_steps=1")
    assert any("decoder-only" in problem for problem in vllm_compat.problems(adapter))


def test_modules_to_save_bias_and_extra_tensors_are_refused(lora_a, tmp_path):
    import torch
    from safetensors.torch import load_file, save_file

    copy = tmp_path / "adapter"
    shutil.copytree(lora_a, copy)
    config = json.loads((copy / "adapter_config.json").read_text())
    config.update(modules_to_save=["lm_head"], bias="lora_only", r=1024)
    (copy / "adapter_config.json").write_text(json.dumps(config))
    tensors = load_file(copy / "adapter_model.safetensors")
    tensors["base_model.model.lm_head.modules_to_save.weight"] = torch.zeros(2, 2)
    save_file(tensors, copy / "adapter_model.safetensors")
    text = " | ".join(vllm_compat.problems(copy))
    for expected in ("modules_to_save", "bias", "other than lora_A/lora_B", "rank 1024"):
        assert expected in text, text
