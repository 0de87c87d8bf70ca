"""Shared fixtures: tiny models, a small adapter trained on one, small data files, the real DialogSum data when present."""

from __future__ import annotations

import json
import os
from pathlib import Path

import pytest

from tests.tiny_models import save_tiny_llama, save_tiny_t5, train_tiny

DIALOGSUM = Path(__file__).resolve().parents[1].parent / "shared" / "data" / "dialogsum"

# Tests must never reach a hub: fail fast instead of waiting on the network.
os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("HF_DATASETS_OFFLINE", "1")


@pytest.fixture(scope="session")
def tiny_llama(tmp_path_factory) -> str:
    return str(save_tiny_llama(tmp_path_factory.mktemp("tiny-llama")))


@pytest.fixture(scope="session")
def tiny_t5(tmp_path_factory) -> str:
    return str(save_tiny_t5(tmp_path_factory.mktemp("tiny-t5")))


@pytest.fixture(params=["llama", "t5"])
def tiny_model(request, tiny_llama, tiny_t5) -> str:
    return tiny_llama if request.param == "llama" else tiny_t5


def write_jsonl(path: Path, rows: list[dict]) -> Path:
    path.write_text("".join(json.dumps(row) + "\n" for row in rows), encoding="utf-8")
    return path


# A memorizable task: short dialogues with fixed summaries.
TOY_ROWS = [
    {"dialogue": "#Person1#: Hello, how are you? #Person2#: Fine, thank you.", "summary": "They greet."},
    {"dialogue": "#Person1#: Can I book a table? #Person2#: Sure, for two?", "summary": "A table is booked."},
    {"dialogue": "#Person1#: The fox jumps. #Person2#: Over the dog?", "summary": "A fox and a dog."},
    {"dialogue": "#Person1#: Brown or lazy? #Person2#: Quick and brown.", "summary": "Colours of a fox."},
]


@pytest.fixture
def toy_data(tmp_path) -> str:
    return str(write_jsonl(tmp_path / "toy.jsonl", TOY_ROWS * 2))


@pytest.fixture(scope="session")
def dialogsum() -> Path:
    if not (DIALOGSUM / "train.jsonl").is_file():
        pytest.skip(f"DialogSum data not found at {DIALOGSUM} (it lives in ../shared/data/dialogsum beside the repository)")
    return DIALOGSUM


@pytest.fixture(scope="session")
def tiny_adapter(tiny_llama, tmp_path_factory) -> str:
    """A LoRA adapter trained for a few steps on the tiny Llama with a custom template (tests only read it)."""
    folder = tmp_path_factory.mktemp("tiny-adapter")
    data = write_jsonl(folder / "toy.jsonl", TOY_ROWS * 2)
    train_tiny(tiny_llama, data, folder / "run", "data.template=Summary of {prompt} ->")
    return str(folder / "run" / "adapter")
