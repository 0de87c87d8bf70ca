"""The generation self-check: it passes the fixed cache, catches a broken one, and then generation falls back to uncached steps."""

from __future__ import annotations

import logging
import weakref

import pytest

from peftlab.generation import GenerationSettings, generate_ids, selfcheck, source_ids
from tests.reference_decoding import reference_greedy
from tests.evaluate.test_generation_parity import NEW_TOKENS, PROMPTS, perturbed_model, until_eos


@pytest.fixture(autouse=True)
def fresh_process(monkeypatch):
    """Every test starts like a new process: no method checked yet."""
    monkeypatch.setattr(selfcheck, "_verdicts", weakref.WeakKeyDictionary())


def peft_cached_generate(model, ids, mask, config, is_seq2seq, **extra):
    """A broken cache: peft 0.21's own cached generate under transformers 5 (prompts re-injected at every step)."""
    out = model.generate(input_ids=ids, attention_mask=mask, generation_config=config, **extra)
    return out[:, 1:] if is_seq2seq else out[:, ids.shape[1]:]


def answers(model, loaded) -> tuple[list[list[int]], list[list[int]]]:
    """(generated, reference) new tokens for PROMPTS in one padded batch, each cut after eos."""
    tokenizer, is_seq2seq = loaded.tokenizer, loaded.is_seq2seq
    prompts = [source_ids(tokenizer, text, chat=False, is_seq2seq=is_seq2seq) for text in PROMPTS]
    got = generate_ids(model, tokenizer, prompts, is_seq2seq, GenerationSettings(NEW_TOKENS, 1, len(prompts)))
    want = [reference_greedy(model, ids, NEW_TOKENS, is_seq2seq) for ids in prompts]
    eos = tokenizer.eos_token_id
    return [until_eos(row, eos) for row in got], [until_eos(row, eos) for row in want]


@pytest.mark.parametrize("method_name", ["prompt-tuning", "prefix-tuning", "p-tuning", "lora"])
def test_the_fixed_cache_passes_the_self_check(tiny_llama, method_name, caplog):
    loaded, model = perturbed_model(method_name, tiny_llama)
    with caplog.at_level(logging.WARNING, logger=selfcheck.__name__):
        got, want = answers(model, loaded)
    assert got == want
    assert selfcheck._verdicts[model] == {f"continuous batching of {selfcheck.method_label(model)}": True}  # greedy, causal
    assert not caplog.records


# where peft's own cached generate goes wrong (T5 prompt tuning and P-tuning it gets right)
BROKEN = [("tiny_llama", "prompt-tuning"), ("tiny_llama", "prefix-tuning"), ("tiny_llama", "p-tuning"), ("tiny_t5", "prefix-tuning")]


def prefill_without_virtual_tokens(monkeypatch):
    """A broken continuous path: the soft prompt left out of the prefill, as a cache bug would lose it."""
    from peftlab.generation import continuous as decoding

    original = decoding.Prefill.__init__
    monkeypatch.setattr(decoding.Prefill, "__init__", lambda self, job, model, row_name, virtual, cache:
                        original(self, job, model, row_name, None, cache))


@pytest.mark.parametrize(("model_fixture", "method_name"), BROKEN)
def test_a_broken_cache_is_caught_and_generation_falls_back_to_uncached(request, model_fixture, method_name, monkeypatch, caplog):
    """Causal models: continuous batching is checked first, then the static path; both broken here, so uncached steps."""
    monkeypatch.setattr(selfcheck, "generate_with_virtual_tokens", peft_cached_generate)
    prefill_without_virtual_tokens(monkeypatch)
    tiny_model = request.getfixturevalue(model_fixture)
    loaded, model = perturbed_model(method_name, tiny_model)
    with caplog.at_level(logging.WARNING, logger=selfcheck.__name__):
        got, want = answers(model, loaded)
        answers(model, loaded)  # a second generation with the method: no second check, no second line
    assert got == want
    verdicts = selfcheck._verdicts[model]
    assert list(verdicts.values()) == [False] * (1 if loaded.is_seq2seq else 2)
    assert len(caplog.records) == len(verdicts) and "without a cache" in caplog.records[-1].getMessage()


def test_a_broken_continuous_path_falls_back_to_static_batches(tiny_llama, monkeypatch, caplog):
    prefill_without_virtual_tokens(monkeypatch)
    loaded, model = perturbed_model("prompt-tuning", tiny_llama)
    with caplog.at_level(logging.WARNING, logger=selfcheck.__name__):
        got, want = answers(model, loaded)
    assert got == want
    assert list(selfcheck._verdicts[model].values()) == [False, True]  # continuous refused, static generate checked and used
    assert len(caplog.records) == 1 and "static batches" in caplog.records[0].getMessage()


@pytest.mark.parametrize("method_name", ["prompt-tuning", "prefix-tuning"])
def test_a_disabled_soft_prompt_generates_like_the_base(tiny_llama, method_name):
    """eval scores the base of a PEFT result with its adapter disabled: no virtual tokens may slip in."""
    from peftlab.models import load_model

    loaded, model = perturbed_model(method_name, tiny_llama)
    base = load_model(tiny_llama, "fp32").model.eval()
    with model.disable_adapter():
        got, _ = answers(model, loaded)
    _, want = answers(base, loaded)
    assert got == want


def test_the_probe_reaches_past_the_sliding_window(tmp_path, monkeypatch, caplog):
    """A continuous path that ignores the window (right on prompts inside it) is caught from a prompt shorter than the
    window: the self-check probes one longer than the window. Generation then falls back to static batches."""
    from peftlab.generation import continuous
    from peftlab.models import load_model
    from tests.evaluate.test_generation_parity import LONG_PROMPT
    from tests.tiny_models import save_tiny_any

    plain_forward = continuous.forward

    def forward_without_window(model, *args, **kwargs):  # Mistral then masks its layers as full attention
        config = (model.get_base_model() if hasattr(model, "get_base_model") else model).config
        window, config.sliding_window = config.sliding_window, None
        try:
            return plain_forward(model, *args, **kwargs)
        finally:
            config.sliding_window = window

    monkeypatch.setattr(continuous, "forward", forward_without_window)
    loaded = load_model(str(save_tiny_any("mistral", tmp_path)), "fp32")
    model, tokenizer = loaded.model.eval(), loaded.tokenizer
    short, long = (source_ids(tokenizer, text, chat=False, is_seq2seq=False) for text in ["The quick", LONG_PROMPT])
    assert len(short) + selfcheck.PROBE_TOKENS <= model.config.sliding_window < len(long)
    with caplog.at_level(logging.WARNING, logger=selfcheck.__name__):
        got = generate_ids(model, tokenizer, [short, long], False, GenerationSettings(NEW_TOKENS, 1, 2))
    assert list(selfcheck._verdicts[model].values()) == [False, True]  # continuous refused, static generate used
    assert "static batches" in caplog.records[0].getMessage()
    assert until_eos(got[1], tokenizer.eos_token_id) == until_eos(reference_greedy(model, long, NEW_TOKENS, False),
                                                                  tokenizer.eos_token_id)
