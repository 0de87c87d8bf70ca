"""Every method generates what its forward pass says: peftlab's generation equals a greedy decode of full forward passes, token for token."""

from __future__ import annotations

import pytest
import torch

from peftlab.generation import GenerationSettings, generate_ids, selfcheck, source_ids
from tests.reference_decoding import reference_greedy
from tests.tiny_models import FAMILIES, save_tiny_any
from peftlab.methods import get_method
from peftlab.models import load_model
from tests.methods import catalog_methods
from tests.tiny_models import toy_context

NEW_TOKENS = 10
# Llama and T5 have no biases of their own; the tiny models' layers (32 wide) are narrower than some defaults allow
SETTINGS = {
    "bitfit": {"add_missing_biases": True},
    "eva": {"r": 4, "init_rows": 4},
    "corda": {"r": 4},
    "lora-ga": {"r": 4},
    "miss": {"r": 4},
    "shira": {"r": 2},
    "fourierft": {"n_frequency": 16},
    "trainable-tokens": {"tokens": ",".join(map(str, range(200)))},  # the tiny Llama sees its added tokens only last
}
# every catalog method, and LoRA with trainable token rows (lora.trainable_tokens)
PARITY_CASES = [(name, SETTINGS.get(name, {})) for name in catalog_methods()] + [("lora", {"trainable_tokens": "5,17,42,99,250"})]
PARITY_IDS = [name for name, _ in PARITY_CASES[:-1]] + ["lora-tokens"]
PROMPTS = [  # different lengths, so a batch is padded
    "#Person1#: Can I book a table for two at seven? #Person2#: Sure, under what name?",
    "Hello, how are you today?",
    "The quick brown fox",
]


def perturbed_model(method_name: str, path: str, settings: dict | None = None):
    """The method on the tiny model with random, non-zero trainable weights: an untrained adapter (LoRA's B = 0) changes nothing."""
    method = get_method(method_name)
    loaded = load_model(path, "fp32", quantization=method.quantization)
    torch.manual_seed(0)
    settings = method.parse_settings(SETTINGS.get(method_name, {}) if settings is None else settings)
    model = method.build(loaded.model, settings, toy_context(loaded, total_steps=10))
    with torch.no_grad():
        for parameter in model.parameters():
            if parameter.requires_grad:
                parameter.add_(torch.randn_like(parameter))
    return loaded, model.eval()


def until_eos(tokens: list[int], eos: int) -> list[int]:
    return tokens[:tokens.index(eos) + 1] if eos in tokens else tokens


@pytest.fixture
def int8_without_outliers(monkeypatch):
    """LLM.int8() without its outlier decomposition.

    The decomposition picks outlier columns over all tokens of one forward pass, so a token's
    output depends on which tokens share the pass, and a cached step (one token) cannot equal a
    full pass. Without it the int8 arithmetic is per token and exact, and parity is testable.
    """
    from transformers import BitsAndBytesConfig

    from peftlab.models import quantization

    plain = quantization.bitsandbytes_config
    monkeypatch.setattr(quantization, "bitsandbytes_config", lambda kind, dtype: BitsAndBytesConfig(
        load_in_8bit=True, llm_int8_threshold=0.0) if kind == "8bit" else plain(kind, dtype))


@pytest.mark.parametrize("method_name, settings", PARITY_CASES, ids=PARITY_IDS)
def test_generation_equals_uncached_forward_passes(tiny_model, method_name, settings, int8_without_outliers):
    loaded, model = perturbed_model(method_name, tiny_model, settings)
    tokenizer, is_seq2seq = loaded.tokenizer, loaded.is_seq2seq
    prompts = [source_ids(tokenizer, text, chat=False, is_seq2seq=is_seq2seq) for text in PROMPTS]
    want = [until_eos(reference_greedy(model, ids, NEW_TOKENS, is_seq2seq), tokenizer.eos_token_id) for ids in prompts]
    base = load_model(tiny_model, "fp32").model.eval()
    assert want != [until_eos(reference_greedy(base, ids, NEW_TOKENS, is_seq2seq), tokenizer.eos_token_id) for ids in prompts], \
        "the perturbed method answers like the bare base: the test would prove nothing"

    single = generate_ids(model, tokenizer, prompts[:1], is_seq2seq, GenerationSettings(NEW_TOKENS, 1, 1))
    batched = generate_ids(model, tokenizer, prompts, is_seq2seq, GenerationSettings(NEW_TOKENS, 1, len(prompts)))

    assert [until_eos(single[0], tokenizer.eos_token_id)] == want[:1]
    assert [until_eos(row, tokenizer.eos_token_id) for row in batched] == want


LONG_PROMPT = "#Person1#: Hello, how are you today? #Person2#: I am fine, thank you. And you? " * 2  # far past a window of 8


@pytest.fixture(scope="module", params=FAMILIES)
def family_model(request, tmp_path_factory) -> tuple[str, str]:
    """Each family's tiny random model, with a sliding window of 8 tokens where the family has one."""
    return request.param, str(save_tiny_any(request.param, tmp_path_factory.mktemp(request.param)))


def test_every_family_generates_as_uncached_forward_passes(family_model):
    """Batched and continuous generation equal full forward passes on every family, prompts past the window included."""
    family, path = family_model
    loaded = load_model(path, "fp32")
    model, tokenizer, is_seq2seq = loaded.model.eval(), loaded.tokenizer, loaded.is_seq2seq
    window = getattr(model.config, "sliding_window", None)
    prompts = [source_ids(tokenizer, text, chat=False, is_seq2seq=is_seq2seq) for text in [LONG_PROMPT, *PROMPTS]]
    assert window is None or len(prompts[0]) > window + NEW_TOKENS, "the long prompt must reach past the window"
    want = [until_eos(reference_greedy(model, ids, NEW_TOKENS, is_seq2seq), tokenizer.eos_token_id) for ids in prompts]

    single = generate_ids(model, tokenizer, prompts[:1], is_seq2seq, GenerationSettings(NEW_TOKENS, 1, 1))
    batched = generate_ids(model, tokenizer, prompts, is_seq2seq, GenerationSettings(NEW_TOKENS, 1, len(prompts)))
    static = generate_ids(model, tokenizer, prompts, is_seq2seq, GenerationSettings(NEW_TOKENS, 1, 2, continuous=False))

    assert [until_eos(single[0], tokenizer.eos_token_id)] == want[:1]
    assert [until_eos(row, tokenizer.eos_token_id) for row in batched] == want
    assert [until_eos(row, tokenizer.eos_token_id) for row in static] == want


def test_a_cache_with_recurrent_state_generates_in_static_batches(tmp_path, caplog):
    """Falcon-H1 layers hold a state-space state beside their keys: rows cannot be stitched, so generate's static
    batches decode them, saying so once, and the answers still equal full forward passes."""
    import logging

    from transformers import AutoConfig, AutoModelForCausalLM

    from peftlab.generation import continuous
    from tests.tiny_models import tiny_tokenizer

    tokenizer = tiny_tokenizer()
    torch.manual_seed(0)
    config = AutoConfig.for_model("falcon_h1", vocab_size=len(tokenizer), hidden_size=64, intermediate_size=128,
                                  num_hidden_layers=2, num_attention_heads=4, num_key_value_heads=2, mamba_d_ssm=128,
                                  mamba_n_heads=8, mamba_d_state=16, mamba_chunk_size=16,  # small: its torch path is slow
                                  eos_token_id=tokenizer.eos_token_id, pad_token_id=tokenizer.pad_token_id)
    AutoModelForCausalLM.from_config(config).save_pretrained(tmp_path)
    tokenizer.save_pretrained(tmp_path)
    loaded = load_model(str(tmp_path), "fp32")
    model = loaded.model.eval()
    prompts = [source_ids(tokenizer, text, chat=False, is_seq2seq=False) for text in PROMPTS]
    with caplog.at_level(logging.INFO, logger=continuous.__name__):
        got = generate_ids(model, tokenizer, prompts, False, GenerationSettings(NEW_TOKENS, 1, len(prompts)))
        generate_ids(model, tokenizer, prompts[:1], False, GenerationSettings(NEW_TOKENS, 1, 1))
    said = [record.getMessage() for record in caplog.records if record.name == continuous.__name__]
    assert len(said) == 1 and "static batches" in said[0]
    want = [reference_greedy(model, ids, NEW_TOKENS, False) for ids in prompts]
    eos = tokenizer.eos_token_id
    assert [until_eos(row, eos) for row in got] == [until_eos(row, eos) for row in want]


@pytest.mark.parametrize("method_name", ["prefix-tuning", "prompt-tuning"])
def test_soft_prompts_longer_than_the_window_generate_as_uncached(method_name, tmp_path):
    """Gemma 3 (one sliding, one full layer, window 8) with 20 virtual tokens: peft builds prefix tuning's prefix in a
    windowed cache, which keeps only the window; continuous batching widens it and still equals full forward passes."""
    loaded, model = perturbed_model(method_name, str(save_tiny_any("gemma3_text", tmp_path)))
    assert model.active_peft_config.num_virtual_tokens > model.get_base_model().config.sliding_window
    tokenizer, eos = loaded.tokenizer, loaded.tokenizer.eos_token_id
    prompts = [source_ids(tokenizer, text, chat=False, is_seq2seq=False) for text in [LONG_PROMPT, *PROMPTS]]
    want = [until_eos(reference_greedy(model, ids, NEW_TOKENS, False), eos) for ids in prompts]
    got = generate_ids(model, tokenizer, prompts, False, GenerationSettings(NEW_TOKENS, 1, len(prompts)))
    assert [until_eos(row, eos) for row in got] == want
    assert list(selfcheck._verdicts[model].values()) == [True]  # decoded by continuous batching, not a fallback
