"""Fixtures for serving tests: tiny adapters of several methods on the tiny Llama, and a running server on loopback."""

from __future__ import annotations

import pytest

from tests.conftest import TOY_ROWS, write_jsonl
from tests.tiny_models import train_tiny

API_KEY = "test-key"


def train_adapter(model: str | None, folder, *settings: str) -> str:
    data = write_jsonl(folder / "toy.jsonl", TOY_ROWS * 2)
    train_tiny(model, data, folder / "run", "train.max_steps=4", "train.lr=0.03", *settings)
    return str(folder / "run" / "adapter")


@pytest.fixture(scope="session")
def lora_a(tiny_llama, tmp_path_factory) -> str:
    return train_adapter(tiny_llama, tmp_path_factory.mktemp("lora-a"))


@pytest.fixture(scope="session")
def lora_b(tiny_llama, tmp_path_factory) -> str:
    return train_adapter(tiny_llama, tmp_path_factory.mktemp("lora-b"), "train.seed=7", "lora.r=8", "train.lr=0.05")


@pytest.fixture(scope="session")
def ia3_c(tiny_llama, tmp_path_factory) -> str:
    # IA3's vectors start at 1: a larger rate makes its answers clearly its own
    return train_adapter(tiny_llama, tmp_path_factory.mktemp("ia3-c"), "method=ia3", "train.lr=0.3")


@pytest.fixture(scope="session")
def served(tiny_llama, lora_a, lora_b, ia3_c):
    """A server on 127.0.0.1 (free port) with the base 'tiny', LoRA 'a' and 'b', IA3 'c'; yields (base_url, server)."""
    from peftlab.serve.http import start, stop
    from peftlab.serve.launch import load_engine
    from peftlab.serve.limits import Limits

    engine = load_engine(tiny_llama, [("a", lora_a), ("b", lora_b), ("c", ia3_c)], "fp32", "tiny")
    server = start(engine, "127.0.0.1", 0, API_KEY, Limits(max_body_bytes=64 * 1024, max_tokens=64), max_batch_size=32)
    yield f"http://127.0.0.1:{server.port}", server
    stop(server)


def alone(model_path: str, adapter: str | None, prompts: list[list[int]], max_tokens: int) -> list[str]:
    """What base (+ adapter) answers to each prompt on its own: a fresh model, greedy, one prompt at a time, no server."""
    import torch

    from peftlab.inference import load_for_generation

    loaded = load_for_generation(model_path, "fp32", adapter)
    answers = []
    for ids in prompts:
        with torch.inference_mode():
            out = loaded.model.generate(input_ids=torch.tensor([ids]), max_new_tokens=max_tokens, do_sample=False,
                                        pad_token_id=loaded.tokenizer.pad_token_id)
        answers.append(loaded.tokenizer.decode(out[0, len(ids):], skip_special_tokens=True))
    return answers
