"""`peftlab export --format gguf` on a tiny Llama: the file reloads through transformers' own GGUF reader to the
merged model's logits and tokens, holds the requested tensor types, and carries a GGUF base's tokenizer fields."""

from __future__ import annotations

from pathlib import Path

import pytest

from peftlab.cli import main
from peftlab.errors import PeftlabError
from peftlab.export.merge import relative_difference

PROMPT = "#Person1#: Hello, how are you today? #Person2#: Fine. Summary:"


@pytest.mark.parametrize("tensor_type, limit", [("f32", 1e-5), ("f16", 2e-2), ("q8_0", None)])
def test_the_file_reloads_through_transformers_to_the_merged_models_logits_and_tokens(tensor_type, limit, tiny_llama, adapter, tmp_path):
    import gguf
    import torch
    from transformers import AutoModelForCausalLM, AutoTokenizer

    from peftlab.generation import load_for_generation

    out = tmp_path / f"model-{tensor_type}.gguf"
    assert main(["export", adapter, "--type", tensor_type, "--output", str(out)]) == 0
    reader = gguf.GGUFReader(out)
    assert reader.fields["general.architecture"].contents() == "llama"
    weights = {t.tensor_type.name for t in reader.tensors if len(t.shape) == 2}
    assert weights == {tensor_type.upper()}  # every matrix in the requested type (the tiny rows fill whole blocks)
    assert {t.tensor_type.name for t in reader.tensors if len(t.shape) == 1} == {"F32"}  # norms stay exact
    original = AutoTokenizer.from_pretrained(tiny_llama)
    reloaded_tokenizer = AutoTokenizer.from_pretrained(tmp_path, gguf_file=out.name)
    ids = original(PROMPT, return_tensors="pt")["input_ids"]
    assert reloaded_tokenizer(PROMPT, return_tensors="pt")["input_ids"].tolist() == ids.tolist()
    reference = load_for_generation(tiny_llama, "fp32", adapter).model  # base + adapter, not merged by the export
    reloaded = AutoModelForCausalLM.from_pretrained(tmp_path, gguf_file=out.name, dtype=torch.float32)
    with torch.inference_mode():
        difference = relative_difference(reloaded(input_ids=ids).logits, reference(input_ids=ids).logits)
    if limit is not None:
        assert difference <= limit
    else:  # q8_0 rounds each weight to 8 bits: close, not equal
        assert 0 < difference < 0.5


def test_a_base_from_a_gguf_file_keeps_its_tokenizer_fields(tiny_llama, adapter, tmp_path):
    import gguf

    from peftlab.export.gguf import write_gguf
    from peftlab.export.merge import merged_model

    source = tmp_path / "base.gguf"  # stands for the GGUF file a base came from
    assert main(["export", adapter, "--type", "f32", "--output", str(source)]) == 0
    merged, _, _ = merged_model(adapter, dtype="fp32")
    write_gguf(merged, None, tmp_path / "copy.gguf", "f32", "copy", base_gguf=source)  # no transformers tokenizer at all

    def tokenizer_fields(path: Path) -> dict:
        fields = gguf.GGUFReader(path).fields
        return {key: fields[key].contents() for key in fields if key.startswith("tokenizer.")}

    copied, original = tokenizer_fields(tmp_path / "copy.gguf"), tokenizer_fields(source)
    assert {"tokenizer.ggml.tokens", "tokenizer.ggml.merges", "tokenizer.ggml.eos_token_id"} <= set(original)
    assert copied == original


def test_a_model_llama_cpp_cannot_run_is_refused_before_anything_is_written(tiny_t5):
    from transformers import AutoConfig

    from peftlab.export.gguf import check_exportable

    with pytest.raises(PeftlabError, match="supports llama, mistral, .* not t5"):
        check_exportable(AutoConfig.from_pretrained(tiny_t5))


def test_rotary_row_order_pairs_each_heads_halves():
    import numpy as np

    from peftlab.export.gguf_families import rotary_row_order

    rows = np.arange(8).reshape(8, 1)  # two heads of four rows: halves (0 1 | 2 3) and (4 5 | 6 7)
    assert rotary_row_order(rows, 2).ravel().tolist() == [0, 2, 1, 3, 4, 6, 5, 7]


def test_a_lora_file_holds_each_layers_update_in_llamacpps_layout(tiny_llama, adapter, tmp_path):
    import gguf
    import numpy as np

    from peftlab.export.gguf_families import rotary_row_order
    from peftlab.export.merge import merged_model
    from peftlab.models import load_model

    out = tmp_path / "adapter-lora.gguf"
    assert main(["export", adapter, "--format", "gguf-lora", "--output", str(out)]) == 0
    reader = gguf.GGUFReader(out)
    assert [reader.fields[k].contents() for k in ("general.type", "adapter.type", "adapter.lora.alpha")] == ["adapter", "lora", 0.0]
    tensors = {t.name: t for t in reader.tensors}
    layers = {f"blk.{i}.attn_{m}.weight" for i in range(2) for m in ("q", "v")}  # the tiny run's LoRA targets
    assert set(tensors) == {f"{layer}.{part}" for layer in layers for part in ("lora_a", "lora_b")}
    base = load_model(tiny_llama, "fp32").model.state_dict()
    merged = merged_model(adapter, dtype="fp32")[0].state_dict()  # peft's own merge, independent of the file
    config = load_model(tiny_llama, "fp32").model.config
    for i in range(2):
        for module, heads in (("q", config.num_attention_heads), ("v", None)):
            a, b = tensors[f"blk.{i}.attn_{module}.weight.lora_a"], tensors[f"blk.{i}.attn_{module}.weight.lora_b"]
            rank = 4
            assert list(a.shape) == [config.hidden_size, rank] and list(b.shape)[0] == rank  # ne order, as llama.cpp checks
            key = f"model.layers.{i}.self_attn.{module}_proj.weight"
            update = (merged[key] - base[key]).numpy()
            if heads:
                update = rotary_row_order(update, heads)
            got = np.asarray(b.data, dtype=np.float32) @ np.asarray(a.data, dtype=np.float32)
            assert np.abs(got - update).max() <= 1e-5 * (1 + np.abs(update).max())


def test_an_adapter_of_a_gguf_base_converted_in_another_cache_still_applies(tiny_llama, tmp_path, monkeypatch):
    import shutil

    from peftlab.artifacts import adapter_folder, check_base
    from peftlab.export.gguf import write_gguf
    from peftlab.models import load_model
    from tests.conftest import TOY_ROWS, write_jsonl
    from tests.tiny_models import train_tiny

    base = load_model(tiny_llama, "fp32")
    for name, seed_shift in (("tiny.gguf", 0.0), ("other.gguf", 1.0)):
        model = base.model
        if seed_shift:
            model.model.norm.weight.data += seed_shift  # another model: another file, another cache folder
        write_gguf(model, base.tokenizer, tmp_path / name, "f32", name, None)
    monkeypatch.setenv("PEFTLAB_CACHE", str(tmp_path / "cache-a"))
    train_tiny(str(tmp_path / "tiny.gguf"), write_jsonl(tmp_path / "toy.jsonl", TOY_ROWS), tmp_path / "run", "train.max_steps=1")
    shutil.rmtree(tmp_path / "cache-a")  # the adapter travels to a machine (or a cache) that converted the file anew
    monkeypatch.setenv("PEFTLAB_CACHE", str(tmp_path / "cache-b"))
    folder = adapter_folder(tmp_path / "run")
    check_base(folder, str(tmp_path / "tiny.gguf"))  # the same file: accepted
    with pytest.raises(PeftlabError, match="was trained on"):
        check_base(folder, str(tmp_path / "other.gguf"))
