"""Model specs: local folders, missing paths, offline hub ids, the embedded GGUF default."""

import pytest

from peftlab.errors import PeftlabError
from peftlab.models import load_model, resolve_source


def test_tiny_folders_load_as_causal_and_seq2seq(tiny_llama, tiny_t5):
    assert not load_model(tiny_llama, "fp32").is_seq2seq
    loaded = load_model(tiny_t5, "bf16")
    assert loaded.is_seq2seq and loaded.dtype == "bf16"
    assert next(loaded.model.parameters()).dtype.__repr__() == "torch.bfloat16"


@pytest.mark.parametrize("name, message", [
    ("./no/such/folder", "does not exist"),
    ("/tmp/nothing-here.gguf", "does not exist"),
    ("not a valid id!", "neither an existing folder"),
])
def test_bad_model_paths(name, message):
    with pytest.raises(PeftlabError, match=message):
        resolve_source(name)


def test_folder_without_config(tmp_path):
    with pytest.raises(PeftlabError, match="has no config.json"):
        resolve_source(str(tmp_path))


def test_hub_id_offline_is_one_clear_error():
    with pytest.raises(PeftlabError, match="cannot load model 'someone/some-model' from the Hugging Face Hub"):
        load_model("someone/some-model")


@pytest.mark.e2e
def test_embedded_default_converts_to_a_cached_safetensors_folder():
    import time
    from pathlib import Path

    label, folder = resolve_source(None)  # converts on first use, then reuses the cache
    start = time.perf_counter()
    assert resolve_source(None)[1] == folder
    assert time.perf_counter() - start < 1.0
    assert (Path(folder) / "model.safetensors").is_file() and "SmolLM2" in label
