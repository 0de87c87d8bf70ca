"""Every method generates what its forward pass says: peftlab's generation equals a greedy decode of full forward passes, token for token."""

from __future__ import annotations

import pytest
import torch

from peftlab.generation import GenerationSettings, generate_ids, source_ids
from tests.reference_decoding import reference_greedy
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
PROMPTS = [  # different lengths, so a batch is padded
    "#Person1#: Can I book a table for two at seven? #Person2#: Sure, under what name?",
    "Hello, how are you today?",
    "The quick brown fox",
]


def perturbed_model(method_name: str, path: str):
    """The method on the tiny model with random, non-zero trainable weights: an untrained adapter (LoRA's B = 0) changes nothing."""
    method = get_method(method_name)
    loaded = load_model(path, "fp32", quantization=method.quantization)
    torch.manual_seed(0)
    settings = method.parse_settings(SETTINGS.get(method_name, {}))
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


@pytest.mark.parametrize("method_name", catalog_methods())
def test_generation_equals_uncached_forward_passes(tiny_model, method_name, int8_without_outliers):
    loaded, model = perturbed_model(method_name, tiny_model)
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
