import pytest

from tests.serve.conftest import train_adapter


@pytest.fixture(scope="session")
def adapter(tiny_llama, tmp_path_factory) -> str:
    """A LoRA adapter of the tiny Llama (q and v projections, r=4)."""
    return train_adapter(tiny_llama, tmp_path_factory.mktemp("export-lora"))
