"""Fixtures for evaluation tests: a small trained adapter on the tiny Llama, and a second, differently sized base."""

from __future__ import annotations

import pytest

from peftlab import config as cfg
from tests.tiny_models import tiny_tokenizer


@pytest.fixture(scope="session")
def tiny_adapter(tiny_llama, tmp_path_factory) -> str:
    """A LoRA adapter trained for a few steps on the tiny Llama with a custom template."""
    from peftlab.train.recipe import run
    from tests.conftest import TOY_ROWS, write_jsonl

    folder = tmp_path_factory.mktemp("tiny-adapter")
    data = write_jsonl(folder / "toy.jsonl", TOY_ROWS * 2)
    config = cfg.load(None, [
        f"model.name={tiny_llama}", "model.dtype=fp32", f"data.train={data}", f"output={folder / 'run'}",
        "data.template=Summary of {prompt} ->", "train.batch_size=2", "train.max_steps=3", "lora.r=4",
    ])
    run(config)
    return str(folder / "run" / "adapter")


@pytest.fixture(scope="session")
def wider_llama(tmp_path_factory) -> str:
    """A tiny Llama with another hidden size: an adapter of `tiny_llama` cannot fit it."""
    import torch
    from transformers import LlamaConfig, LlamaForCausalLM

    folder = tmp_path_factory.mktemp("wider-llama")
    tokenizer = tiny_tokenizer()
    torch.manual_seed(1)
    config = LlamaConfig(vocab_size=len(tokenizer), hidden_size=48, intermediate_size=64, num_hidden_layers=2,
                         num_attention_heads=4, num_key_value_heads=2, max_position_embeddings=512,
                         bos_token_id=tokenizer.bos_token_id, eos_token_id=tokenizer.eos_token_id, pad_token_id=tokenizer.pad_token_id)
    LlamaForCausalLM(config).save_pretrained(folder)
    tokenizer.save_pretrained(folder)
    return str(folder)
