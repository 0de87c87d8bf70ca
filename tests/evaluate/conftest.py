"""Fixtures for evaluation tests: a small trained adapter on the tiny Llama, and a second, differently sized base."""

from __future__ import annotations

import pytest

from tests.tiny_models import save_tiny_llama, train_tiny


@pytest.fixture(scope="session")
def tiny_adapter(tiny_llama, tmp_path_factory) -> str:
    """A LoRA adapter trained for a few steps on the tiny Llama with a custom template."""
    from tests.conftest import TOY_ROWS, write_jsonl

    folder = tmp_path_factory.mktemp("tiny-adapter")
    data = write_jsonl(folder / "toy.jsonl", TOY_ROWS * 2)
    train_tiny(tiny_llama, data, folder / "run", "data.template=Summary of {prompt} ->")
    return str(folder / "run" / "adapter")


@pytest.fixture(scope="session")
def wider_llama(tmp_path_factory) -> str:
    """A tiny Llama with another hidden size: an adapter of `tiny_llama` cannot fit it."""
    return str(save_tiny_llama(tmp_path_factory.mktemp("wider-llama"), seed=1, hidden_size=48))
