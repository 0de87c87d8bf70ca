"""Fixtures for evaluation tests: a second, differently sized base (the trained adapter is shared: tests/conftest.py)."""

from __future__ import annotations

import pytest

from tests.tiny_models import save_tiny_llama


@pytest.fixture(scope="session")
def wider_llama(tmp_path_factory) -> str:
    """A tiny Llama with another hidden size: an adapter of `tiny_llama` cannot fit it."""
    return str(save_tiny_llama(tmp_path_factory.mktemp("wider-llama"), seed=1, hidden_size=48))
