"""Batched generation gives the same greedy (and beam) outputs as one prompt at a time, in the prompts' order."""

import pytest

from peftlab.inference import GenerationSettings, generate, source_ids
from peftlab.models import load_model

PROMPTS = [
    "Summarize: #Person1#: Hello, how are you today?",
    "Hi",
    "#Person1#: Can I book a table for two at seven? #Person2#: Sure, under what name? #Person1#: Fox.",
    "The quick brown fox",
    "#Person2#: I am fine, thank you. And you?",
]


@pytest.mark.parametrize("beams", [1, 2])
def test_batched_equals_one_at_a_time(tiny_model, beams):
    loaded = load_model(tiny_model, "fp32")
    prompts = [source_ids(loaded.tokenizer, p, chat=False, is_seq2seq=loaded.is_seq2seq) for p in PROMPTS]
    single = [generate(loaded.model, loaded.tokenizer, [ids], loaded.is_seq2seq, GenerationSettings(12, beams, 1))[0] for ids in prompts]
    batched = generate(loaded.model, loaded.tokenizer, prompts, loaded.is_seq2seq, GenerationSettings(12, beams, 3))
    assert batched == single
    assert len(set(single)) > 2  # real, distinct outputs, not all empty


def test_causal_prompt_matches_training_prompt(tiny_llama):
    from peftlab.data.tokenize import prompt_ids

    loaded = load_model(tiny_llama, "fp32")
    assert source_ids(loaded.tokenizer, "Hi there", chat=False, is_seq2seq=False) == prompt_ids(loaded.tokenizer, "Hi there", False)


def test_bad_settings_are_refused(tiny_llama):
    from peftlab.errors import PeftlabError

    loaded = load_model(tiny_llama, "fp32")
    with pytest.raises(PeftlabError, match="--batch-size must be at least 1"):
        generate(loaded.model, loaded.tokenizer, [[5, 6]], False, GenerationSettings(4, 1, 0))
