"""GGUF for every family llama.cpp and the gguf package know: Llama, Mistral, Qwen2, Qwen3, Gemma 2, Gemma 3 (one
sliding and one full layer), Phi-3, GPT-2 and GPT-NeoX. For each, a tiny random model with a LoRA of random non-zero B
on every projection is exported merged and as a LoRA file; llama.cpp (llama-cpp-python, a runtime we did not write)
loads them and answers greedily as the merged model does, on prompts longer than Gemma's 8-token window."""

from __future__ import annotations

import copy
from types import SimpleNamespace

import pytest

from peftlab.cli import main
from peftlab.errors import PeftlabError
from tests.conftest import TOY_ROWS

FAMILIES = ["llama", "mistral", "qwen2", "qwen3", "gemma2", "gemma3_text", "phi3", "gpt2", "gpt_neox"]
NEW_TOKENS = 8
# a greedy step whose two best logits are closer than this is a tie that rounding may break either way (llama.cpp
# computes GELU from an f16 table: a Gemma 2 step was seen with its best two 5e-5 apart); the comparison stops there
NEAR_TIE = 0.05


def greedy_with_margins(model, prompt: list[int], end: int) -> tuple[list[int], list[float]]:
    """The merged model's greedy answer, one uncached forward pass per token (the plainest reference), and at each
    step the gap between its two best logits."""
    import torch

    ids, answer, margins = list(prompt), [], []
    with torch.no_grad():
        for _ in range(NEW_TOKENS):
            top = model(input_ids=torch.tensor([ids])).logits[0, -1].topk(2)
            token = int(top.indices[0])
            if token == end:
                break
            answer.append(token)
            margins.append(float(top.values[0] - top.values[1]))
            ids.append(token)
    return answer, margins


def clear_prefix(answer: list[int], margins: list[float]) -> list[int]:
    return answer[:next((i for i, m in enumerate(margins) if m < NEAR_TIE), len(answer))]


@pytest.fixture(scope="module", params=FAMILIES)
def exported(request, tmp_path_factory):
    """A tiny model of the family, LoRA on every projection with random B, merged; the merged model, the base and
    the LoRA file written as GGUF files."""
    import torch
    from peft import LoraConfig, get_peft_model
    from transformers import AutoModelForCausalLM, AutoTokenizer

    from peftlab.export.gguf import write_gguf, write_gguf_lora
    from tests.tiny_models import save_tiny_family

    folder = tmp_path_factory.mktemp(request.param)
    save_tiny_family(request.param, folder / "model")
    tokenizer = AutoTokenizer.from_pretrained(folder / "model")
    base = AutoModelForCausalLM.from_pretrained(folder / "model", dtype=torch.float32, attn_implementation="eager").eval()
    torch.manual_seed(1)
    adapted = get_peft_model(copy.deepcopy(base), LoraConfig(r=4, lora_alpha=8, target_modules="all-linear", init_lora_weights=False))
    merged = copy.deepcopy(adapted).merge_and_unload().eval()
    write_gguf(merged, tokenizer, folder / "merged.gguf", "f32", "merged", None)
    write_gguf(base, tokenizer, folder / "base.gguf", "f32", "base", None)
    write_gguf_lora(adapted, folder / "lora.gguf", "f32", "lora")
    prompts = [tokenizer(row["dialogue"])["input_ids"] for row in TOY_ROWS[:3]]
    return SimpleNamespace(name=request.param, folder=folder, tokenizer=tokenizer, base=base, merged=merged, prompts=prompts)


def test_llama_cpp_answers_as_the_merged_model_from_the_merged_file_and_from_base_plus_lora_file(exported):
    pytest.importorskip("llama_cpp", reason="llama-cpp-python is not installed: pip install -c constraints.txt -e '.[test]' builds it")
    from peftlab.export.llama_cpp_runtime import llama_cpp_answers

    end = exported.tokenizer.eos_token_id
    assert all(len(prompt) > 8 for prompt in exported.prompts)  # past Gemma's window
    references = [greedy_with_margins(exported.merged, prompt, end) for prompt in exported.prompts]
    merged_file = llama_cpp_answers(str(exported.folder / "merged.gguf"), exported.prompts, NEW_TOKENS)
    with_lora = llama_cpp_answers(str(exported.folder / "base.gguf"), exported.prompts, NEW_TOKENS, lora=str(exported.folder / "lora.gguf"))
    compared = 0
    for (answer, margins), from_merged, from_lora in zip(references, merged_file, with_lora):
        clear = clear_prefix(answer, margins)
        assert from_merged[:len(clear)] == clear and from_lora[:len(clear)] == clear
        compared += len(clear)
    assert compared >= NEW_TOKENS // 2  # the comparison is not emptied by ties
    base_alone = [greedy_with_margins(exported.base, prompt, end)[0] for prompt in exported.prompts]
    assert base_alone != [answer for answer, _ in references]  # the LoRA changes the answers: its file is what applies it


def test_the_file_is_laid_out_as_llama_cpp_reads_it(exported):
    import gguf
    import numpy as np

    from peftlab.export.gguf_families import FAMILIES as GGUF_FAMILIES

    reader = gguf.GGUFReader(exported.folder / "merged.gguf")
    family = GGUF_FAMILIES[exported.name]
    assert reader.fields["general.architecture"].contents() == gguf.MODEL_ARCH_NAMES[gguf.MODEL_ARCH[family.arch]]
    tensors = {t.name: np.asarray(t.data, dtype=np.float32) for t in reader.tensors}
    state = exported.merged.state_dict()
    norm_key = next(key for key in state if key.endswith(("input_layernorm.weight", "ln_1.weight")) and ".0." in key)
    norm_name = "blk.0.attn_norm.weight"
    assert np.allclose(tensors[norm_name], state[norm_key].numpy() + family.norm_offset)  # Gemma stores w, runs 1 + w
    if exported.name in ("gemma2", "gemma3_text"):
        arch = reader.fields["general.architecture"].contents()
        assert reader.fields[f"{arch}.attention.sliding_window"].contents() == 8
        assert reader.fields[f"{arch}.attention.sliding_window_pattern"].contents() == [
            kind == "sliding_attention" for kind in exported.merged.config.layer_types]
    if exported.name == "gpt2":  # Conv1D (inputs x outputs) stored as llama.cpp's outputs x inputs
        assert np.array_equal(tensors["blk.0.attn_qkv.weight"], state["transformer.h.0.attn.c_attn.weight"].numpy().T)


def test_transformers_reads_the_file_back_where_its_reader_recovers_the_model(exported):
    from peftlab.export.exporting import reload_difference, transformers_misreads

    misread = transformers_misreads(exported.merged.config, exported.folder / "merged.gguf")
    # what transformers 5.24's reader drops (real Qwen3 and Gemma checkpoints have the defaults it assumes)
    lost = {"gpt_neox": "reads no gptneox", "qwen3": "head_dim", "gemma2": "query_pre_attn_scalar", "gemma3_text": "layer_types",
            "gpt2": "max_position_embeddings"}
    if exported.name in lost:
        assert lost[exported.name] in misread
    else:
        assert misread is None
        assert reload_difference(exported.merged, exported.tokenizer, exported.folder / "merged.gguf") < 1e-4


@pytest.mark.parametrize("model_type, target", [("gpt2", "c_attn"), ("phi3", "all-linear"), ("gpt_neox", "all-linear")])
def test_peftlab_export_writes_a_trained_adapter_merged_and_as_a_lora_file(model_type, target, tmp_path, capsys):
    """The command itself, from a `peftlab train` run: GPT-2's Conv1D c_attn named as a target, fused q/k/v and
    gate/up (Phi-3), per-head fused q/k/v (GPT-NeoX, which transformers cannot read back)."""
    from tests.conftest import write_jsonl
    from tests.tiny_models import save_tiny_family, train_tiny

    model = save_tiny_family(model_type, tmp_path / "model")
    data = write_jsonl(tmp_path / "toy.jsonl", TOY_ROWS)
    train_tiny(str(model), data, tmp_path / "run", "train.max_steps=2", "train.lr=0.05", f"lora.target={target}")
    assert main(["export", str(tmp_path / "run" / "adapter"), "--type", "f32", "--output", str(tmp_path / "merged.gguf")]) == 0
    assert main(["export", str(tmp_path / "run" / "adapter"), "--format", "gguf-lora", "--output", str(tmp_path / "lora.gguf")]) == 0
    assert (tmp_path / "merged.gguf").is_file() and (tmp_path / "lora.gguf").is_file()
    out = capsys.readouterr().out
    assert ("not reloaded (transformers reads no gptneox GGUF file)" in out) == (model_type == "gpt_neox")


@pytest.mark.parametrize("model_type, why", [("opt", "llama.cpp has no OPT architecture"), ("t5", "decoder-only")])
def test_a_family_llama_cpp_cannot_run_is_refused_with_a_route_that_exists(model_type, why, tiny_t5, tmp_path):
    from transformers import AutoConfig

    from peftlab.export.gguf import check_exportable

    config = AutoConfig.from_pretrained(tiny_t5) if model_type == "t5" else AutoConfig.for_model("opt")
    with pytest.raises(PeftlabError, match=why) as refused:
        check_exportable(config)
    assert "peftlab serve" in str(refused.value) and "peftlab merge" in str(refused.value)
    assert "convert_hf_to_gguf" not in str(refused.value)  # no package installs it


def test_what_llama_cpp_would_run_otherwise_is_refused_or_said():
    from transformers import AutoConfig

    from peftlab.export.gguf import check_exportable

    with pytest.raises(PeftlabError, match="query_pre_attn_scalar 256 differs from the head width 16"):
        check_exportable(AutoConfig.for_model("gemma3_text", head_dim=16, query_pre_attn_scalar=256))
    said = []
    check_exportable(AutoConfig.for_model("mistral", sliding_window=64, max_position_embeddings=512), said.append)
    assert said and "without the sliding window of 64 tokens" in said[0]


def test_a_sentencepiece_style_tokenizer_is_refused_rather_than_written_as_byte_level(tmp_path):
    """A BPE with a Metaspace pre-tokenizer (Llama 2, Mistral v0.1, Gemma) written as llama.cpp's 'gpt2' tokenizer would
    tokenize every text differently in llama.cpp: refused, with what to do instead."""
    import gguf
    from tokenizers import Tokenizer, decoders, models, pre_tokenizers, trainers
    from transformers import PreTrainedTokenizerFast

    from peftlab.export.gguf_tokenizer import tokenizer_fields

    backend = Tokenizer(models.BPE(unk_token="<unk>", byte_fallback=True))
    backend.pre_tokenizer = pre_tokenizers.Metaspace()
    backend.decoder = decoders.Metaspace()
    backend.train_from_iterator([row["dialogue"] for row in TOY_ROWS], trainers.BpeTrainer(vocab_size=120, special_tokens=["<unk>"]))
    tokenizer = PreTrainedTokenizerFast(tokenizer_object=backend, unk_token="<unk>")
    with pytest.raises(PeftlabError, match="byte-level BPE .*peftlab serve"):
        tokenizer_fields(gguf.GGUFWriter(tmp_path / "never.gguf", "llama"), tokenizer)
