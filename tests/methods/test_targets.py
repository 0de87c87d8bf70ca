"""Targets by role in every family: LoRA (and DoRA), IA3 and the bottleneck adapter find the query/value, key,
output and feed-forward projections of GPT-2 (Conv1D), Phi-3 (fused qkv), GPT-NeoX, OPT, Qwen, Gemma and Mistral
through one table, train a fused projection whole where "q and v only" cannot be separated, and say so once."""

from __future__ import annotations

import logging

import pytest
import torch

from peftlab.errors import PeftlabError
from peftlab.methods import BuildContext, count_parameters, get_method
from peftlab.methods.targets import model_family, target_modules

CAUSAL = ["llama", "mistral", "qwen2", "qwen3", "gemma2", "gemma3_text", "phi3", "gpt2", "gpt_neox", "opt"]
# what the query/value targets must be in each family (written from each model's own source, not read back from the table)
QUERY_VALUE = {"llama": ["q_proj", "v_proj"], "mistral": ["q_proj", "v_proj"], "qwen2": ["q_proj", "v_proj"],
               "qwen3": ["q_proj", "v_proj"], "gemma2": ["q_proj", "v_proj"], "gemma3_text": ["q_proj", "v_proj"],
               "phi3": ["qkv_proj"], "gpt2": ["attn.c_attn"], "gpt_neox": ["query_key_value"], "opt": ["q_proj", "v_proj"]}
# the sublayer outputs a houlsby adapter follows: self-attention output and feed-forward output
OUTPUTS = {"llama": ("self_attn.o_proj", "mlp.down_proj"), "mistral": ("self_attn.o_proj", "mlp.down_proj"),
           "qwen2": ("self_attn.o_proj", "mlp.down_proj"), "qwen3": ("self_attn.o_proj", "mlp.down_proj"),
           "gemma2": ("self_attn.o_proj", "mlp.down_proj"), "gemma3_text": ("self_attn.o_proj", "mlp.down_proj"),
           "phi3": ("self_attn.o_proj", "mlp.down_proj"), "gpt2": ("attn.c_proj", "mlp.c_proj"),
           "gpt_neox": ("attention.dense", "mlp.dense_4h_to_h"), "opt": ("self_attn.out_proj", "fc2")}


def tiny(model_type: str):
    """A 2-layer random model of the family, built in memory (tests/tiny_models.py's sizes)."""
    from transformers import AutoConfig, AutoModelForCausalLM

    from tests.tiny_models import FAMILY_CONFIGS

    torch.manual_seed(0)
    settings = dict(vocab_size=128, hidden_size=64, intermediate_size=128, num_hidden_layers=2, num_attention_heads=4,
                    max_position_embeddings=128, pad_token_id=0, bos_token_id=1, eos_token_id=2)
    config = AutoConfig.for_model(model_type, **{**settings, **FAMILY_CONFIGS[model_type]})
    return AutoModelForCausalLM.from_config(config, attn_implementation="eager").eval()  # no dropout


def build(method: str, model, **settings):
    chosen = get_method(method)
    return chosen.build(model, chosen.parse_settings(settings), BuildContext(False, 10))


def trained_modules(model, part: str) -> set[str]:
    return {name.split(f".{part}")[0] for name, p in model.named_parameters() if p.requires_grad and f".{part}" in name}


def ends(names: set[str], suffixes) -> bool:
    return bool(names) and all(any(name.endswith("." + s) for s in suffixes) for name in names)


@pytest.mark.parametrize("model_type", CAUSAL)
def test_lora_and_dora_find_the_query_and_value_projections_by_role(model_type):
    model = tiny(model_type)
    assert target_modules(model, "qv") == QUERY_VALUE[model_type]
    adapted = build("lora", model, r=4, dropout=0)
    assert ends(trained_modules(adapted, "lora_A"), QUERY_VALUE[model_type])
    assert len(trained_modules(adapted, "lora_A")) == 2 * len(QUERY_VALUE[model_type])  # every layer, both blocks
    build("dora", tiny(model_type), r=4, dropout=0)  # DoRA reads the same table (Conv1D and fused layers included)


def test_a_fused_projection_is_trained_whole_and_said_once(caplog, monkeypatch):
    from peftlab.methods import targets

    monkeypatch.setattr(targets, "_SAID", set())  # as in a fresh process
    caplog.set_level(logging.INFO, logger="peftlab.methods.targets")
    for _ in range(2):
        assert target_modules(tiny("gpt2"), "qv", "lora.target") == ["attn.c_attn"]
    notes = [r.getMessage() for r in caplog.records if "c_attn" in r.getMessage()]
    assert len(notes) == 1 and "q, k, v" in notes[0] and "k included" in notes[0]
    target_modules(tiny("gpt2"), "k", "ia3.target")  # another method, other roles of the same fused projection
    assert len([r for r in caplog.records if "c_attn" in r.getMessage()]) == 1


def test_gpt2_takes_c_attn_and_roles_as_targets():
    model = tiny("gpt2")
    assert target_modules(model, "c_attn") == ["c_attn"]  # a Conv1D module, by its own name
    assert target_modules(model, "o,down") == ["attn.c_proj", "mlp.c_proj"]  # roles: the two c_proj told apart
    adapted = build("lora", model, r=4, dropout=0, target="c_attn")
    assert ends(trained_modules(adapted, "lora_A"), ["attn.c_attn"])
    with pytest.raises(PeftlabError, match="gpt-2 family .* has no gate projection"):
        target_modules(tiny("gpt2"), "gate")


@pytest.mark.parametrize("model_type", CAUSAL)
def test_ia3_default_targets_come_from_the_table_in_every_family(model_type):
    adapted = build("ia3", tiny(model_type))
    scaled = trained_modules(adapted, "ia3_l")
    family = model_family(tiny(model_type)).roles()
    assert ends(scaled, [family["k"], family["v"], family["down"]])
    assert any(name.endswith("." + family["down"]) for name in scaled)


def test_ia3_on_phi3_scales_the_fused_qkv_and_the_down_projection_inputs():
    adapted = build("ia3", tiny("phi3"))  # peft 0.21 has no IA3 default for phi3
    layer = adapted.base_model.model.model.layers[0]
    assert layer.self_attn.qkv_proj.is_feedforward is False and layer.mlp.down_proj.is_feedforward is True


@pytest.mark.parametrize("model_type", CAUSAL)
def test_bottleneck_adapters_follow_the_attention_and_feedforward_outputs_in_every_family(model_type):
    model = tiny(model_type)
    ids = torch.tensor([[5, 6, 7, 8, 9]])
    with torch.no_grad():
        before = model(input_ids=ids).logits
    adapted = build("adapter", model, reduction_factor=4)
    assert ends(trained_modules(adapted, "bottleneck_adapter"), OUTPUTS[model_type])
    assert len(trained_modules(adapted, "bottleneck_adapter")) == 4  # two outputs in each of two layers
    with torch.no_grad():
        assert torch.equal(adapted(input_ids=ids).logits, before)  # the up-projection starts at zero
    adapted(input_ids=ids, labels=ids).loss.backward()
    trainable, _ = count_parameters(adapted)
    assert trainable > 0


def test_peftlab_methods_shows_the_roles_and_applies_every_default_on_gpt2(tmp_path, capsys):
    from peftlab.cli import main
    from tests.tiny_models import save_tiny_family

    folder = save_tiny_family("gpt2", tmp_path / "gpt2")
    assert main(["methods", "--model", str(folder)]) == 0
    out = capsys.readouterr().out
    assert "family gpt-2" in out and "q,k,v: attn.c_attn (fused)" in out
    lines = out.splitlines()
    for method in ("lora", "dora", "ia3", "adapter"):
        start = next(i for i, line in enumerate(lines) if line.startswith(f"{method} "))
        assert "parameters trainable" in lines[start + 3], lines[start:start + 4]  # applies, with its defaults
