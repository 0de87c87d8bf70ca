"""Tiny models for the method tests."""

from __future__ import annotations

import pytest


@pytest.fixture(scope="session")
def tiny_llama_wide(tiny_llama, tmp_path_factory) -> str:
    """The tiny Llama re-initialised with weights of std 0.2 instead of 0.02.

    At 0.02 the random output head spreads the logits only about 0.1 wide, so a method that
    leaves the head alone cannot lower the loss much whatever it learns; at 0.2 they can move.
    """
    import torch
    from transformers import AutoConfig, AutoTokenizer, LlamaForCausalLM

    folder = tmp_path_factory.mktemp("tiny-llama-wide")
    config = AutoConfig.from_pretrained(tiny_llama)
    config.initializer_range = 0.2
    torch.manual_seed(0)
    LlamaForCausalLM(config).save_pretrained(folder)
    AutoTokenizer.from_pretrained(tiny_llama).save_pretrained(folder)
    return str(folder)


@pytest.fixture(params=["llama", "t5"])
def method_model(request, tiny_llama_wide, tiny_t5) -> str:
    return tiny_llama_wide if request.param == "llama" else tiny_t5
