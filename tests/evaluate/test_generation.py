"""Batched generation gives the same greedy (and beam) outputs as one prompt at a time, in the prompts' order."""

import pytest

from peftlab.generation import GenerationSettings, generate, source_ids
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


CHAT_TEMPLATE = "{% for m in messages %}<|{{ m.role }}|>{{ m.content }}</s>{% endfor %}{% if add_generation_prompt %}<|assistant|>{% endif %}"


@pytest.mark.parametrize("arch, chat", [("llama", False), ("llama", True), ("t5", False)])  # chat templates: causal only
def test_generation_sees_exactly_the_prompt_training_saw(arch, chat, tiny_llama, tiny_t5):
    """The ids generation starts from are the training example's tokens before its first label, nothing more or less."""
    from peftlab.data.examples import Example
    from peftlab.data.tokenize import IGNORE, tokenize

    loaded = load_model(tiny_llama if arch == "llama" else tiny_t5, "fp32")
    tokenizer = loaded.tokenizer
    tokenizer.chat_template = CHAT_TEMPLATE if chat else None
    example = Example(prompt="Summarize: #Person1#: Hello there.", response="A greeting.", where="row 1")
    [feature] = tokenize([example], tokenizer, 512, loaded.is_seq2seq, chat).features
    generation = source_ids(tokenizer, example.prompt, chat=chat, is_seq2seq=loaded.is_seq2seq)
    if loaded.is_seq2seq:
        assert generation == feature["input_ids"]
    else:
        answer_start = next(i for i, label in enumerate(feature["labels"]) if label != IGNORE)
        assert generation == feature["input_ids"][:answer_start]
        assert tokenizer.decode(feature["input_ids"][answer_start:], skip_special_tokens=True) == "A greeting."
    text = tokenizer.decode(generation)
    assert text.endswith("<|assistant|>") if chat else "<|assistant|>" not in text


def test_bad_settings_are_refused(tiny_llama):
    from peftlab.errors import PeftlabError

    loaded = load_model(tiny_llama, "fp32")
    with pytest.raises(PeftlabError, match="--batch-size must be at least 1"):
        generate(loaded.model, loaded.tokenizer, [[5, 6]], False, GenerationSettings(4, 1, 0))
