"""Model specs: local folders, missing paths, offline hub ids, the embedded GGUF default."""

import os

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
def test_embedded_default_converts_to_a_cached_safetensors_folder(monkeypatch):
    from pathlib import Path

    from peftlab.models import gguf_cache

    label, folder = resolve_source(None)  # converts on first use, then reuses the cache
    monkeypatch.setattr(gguf_cache, "_convert", lambda *args: pytest.fail("the cached conversion was not reused"))
    assert resolve_source(None)[1] == folder
    assert (Path(folder) / "model.safetensors").is_file() and "SmolLM2" in label


def test_conversion_cache_is_keyed_by_content_and_code_versions(tmp_path, monkeypatch):
    from peftlab.models import gguf_cache

    conversions = []

    def fake_convert(gguf_path, out):
        conversions.append(gguf_path.read_bytes())
        (out / "config.json").write_text("{}")

    monkeypatch.setenv("PEFTLAB_CACHE", str(tmp_path / "cache"))
    monkeypatch.setattr(gguf_cache, "_convert", fake_convert)
    model = tmp_path / "model.gguf"
    model.write_bytes(b"GGUF one")
    first = gguf_cache.converted_folder(model)
    assert gguf_cache.converted_folder(model) == first and conversions == [b"GGUF one"]

    model.write_bytes(b"GGUF two")  # same name and size, other content
    os.utime(model, ns=(1, 1))  # a distinct time stamp even within one clock tick
    second = gguf_cache.converted_folder(model)
    assert second != first and conversions[-1] == b"GGUF two"

    monkeypatch.setattr(gguf_cache, "conversion_code_versions", lambda: "transformers=99.0|gguf=99.0")
    upgraded = gguf_cache.converted_folder(model)
    assert upgraded not in (first, second) and len(conversions) == 3


def test_attention_is_what_the_model_supports_and_what_the_run_recorded(tmp_path, toy_data):
    """Gemma 2 has no sdpa in transformers 5.24: "auto" loads it (eager); a run trained with eager is merged,
    served and checked with eager, as its run.yaml records."""
    from peftlab.export.merge import merged_model
    from peftlab.generation import load_for_generation
    from peftlab.serve.launch import load_engine
    from tests.tiny_models import save_tiny_any, train_tiny

    gemma2 = str(save_tiny_any("gemma2", tmp_path / "gemma2"))
    assert load_model(gemma2, "fp32").model.config._attn_implementation == "eager"
    llama = str(save_tiny_any("llama", tmp_path / "llama"))
    assert load_model(llama, "fp32").model.config._attn_implementation == "sdpa"
    train_tiny(llama, toy_data, tmp_path / "run", "model.attn_implementation=eager", "train.max_steps=1")
    adapter = str(tmp_path / "run" / "adapter")
    assert load_for_generation(llama, "fp32", adapter).model.config._attn_implementation == "eager"
    assert merged_model(adapter)[0].config._attn_implementation == "eager"
    engine = load_engine(None, [("tuned", adapter)], "fp32")
    assert engine.loaded.model.config._attn_implementation == "eager"
