"""Loss masks on real chat templates: the loss falls on exactly each assistant turn's text and its end-of-turn token."""

import pytest

from peftlab.config import DataConfig
from peftlab.data.chat import IGNORE, chat_prompt_ids
from peftlab.data.examples import build_examples
from peftlab.data.readers import Row
from peftlab.data.tokenize import tokenize
from peftlab.errors import PeftlabError
from tests.data.chat_templates import MISTRAL_V3, TEMPLATES, chat_tokenizer

ANSWERS = ["The fox jumps over the lazy dog.", "Person1 and Person2 talk about the weather."]


def conversation(system: bool) -> list[dict]:
    return ([{"role": "system", "content": "You summarize."}] if system else []) + [
        {"role": "user", "content": "#Person1#: Hello, how are you today?"},
        {"role": "assistant", "content": ANSWERS[0]},
        {"role": "user", "content": "#Person1#: Can I book a table for two at seven?"},
        {"role": "assistant", "content": ANSWERS[1]},
    ]


def features(tokenizer, messages: list[dict], train_on: str = "assistant") -> dict:
    examples = build_examples([Row({"messages": messages}, "chat.jsonl line 1")], DataConfig(train_on=train_on))
    tokenized = tokenize(examples, tokenizer, 4096, is_seq2seq=False, chat=True, train_on=train_on)
    return tokenized.features[0]


def labelled_spans(feature: dict) -> list[tuple[int, list[int]]]:
    """(start, ids) of each run of positions the loss falls on."""
    spans, start = [], None
    for i, label in enumerate([*feature["labels"], IGNORE]):
        if label != IGNORE and start is None:
            start = i
        elif label == IGNORE and start is not None:
            spans.append((start, feature["labels"][start:i]))
            start = None
    return spans


@pytest.mark.parametrize("name", list(TEMPLATES))
def test_the_loss_falls_on_each_answer_and_its_end_of_turn_token(name):
    template, specials, end_of_turn, takes_system = TEMPLATES[name]
    tokenizer = chat_tokenizer(template, specials)
    messages = conversation(takes_system)
    feature = features(tokenizer, messages)
    spans = labelled_spans(feature)
    assert [tokenizer.decode(ids) for _, ids in spans] == [answer + end_of_turn for answer in ANSWERS]
    assert all(feature["labels"][i] == feature["input_ids"][i] for i in range(len(feature["labels"])) if feature["labels"][i] != IGNORE)
    # what precedes each answer is, token for token, the prompt serve builds for the conversation up to it
    turns = [i for i, m in enumerate(messages) if m["role"] == "assistant"]
    for (start, _), turn in zip(spans, turns):
        assert feature["input_ids"][:start] == chat_prompt_ids(tokenizer, messages[:turn])
    # the whole sequence is the tokenized rendering of the whole conversation
    rendered = tokenizer.apply_chat_template(messages, tokenize=False)
    assert tokenizer.decode(feature["input_ids"]) == rendered


@pytest.mark.parametrize("name", ["smollm2", "llama3"])
def test_train_on_last_and_all(name):
    template, specials, end_of_turn, _ = TEMPLATES[name]
    tokenizer = chat_tokenizer(template, specials)
    last = features(tokenizer, conversation(True), "last")
    assert [tokenizer.decode(ids) for _, ids in labelled_spans(last)] == [ANSWERS[1] + end_of_turn]
    everything = features(tokenizer, conversation(True), "all")
    assert everything["labels"] == everything["input_ids"]


def test_a_tool_call_turn_is_trained_and_the_tool_answer_is_not():
    template, specials, _, _ = TEMPLATES["qwen"]
    tokenizer = chat_tokenizer(template, specials)
    call = {"type": "function", "function": {"name": "weather", "arguments": {"city": "Paris"}}}
    messages = [{"role": "user", "content": "Weather in Paris?"}, {"role": "assistant", "content": "", "tool_calls": [call]},
                {"role": "tool", "content": "sunny, 21 C"}, {"role": "assistant", "content": "It is sunny."}]
    spans = [tokenizer.decode(ids) for _, ids in labelled_spans(features(tokenizer, messages))]
    assert spans == ['<tool_call>\n{"name": "weather", "arguments": {"city": "Paris"}}\n</tool_call><|im_end|>',
                     "It is sunny.<|im_end|>"]


def test_a_template_that_moves_earlier_turns_is_refused_with_the_fix():
    """Mistral v0.3 puts the system prompt into the last user turn, and drops it once an answer follows: the text
    before an answer is not what serve sends for it, so no answer can carry the loss alone."""
    tokenizer = chat_tokenizer(MISTRAL_V3, [])
    with pytest.raises(PeftlabError, match=r"chat.jsonl line 1: the model's chat template renders .* data.train_on=last .* "
                                           r"data.train_on=all"):
        features(tokenizer, conversation(True))
    with pytest.raises(PeftlabError, match=r"message 5 differently .*; set data.train_on=all \(the loss on every token\)"):
        features(tokenizer, conversation(True), "last")
    everything = features(tokenizer, conversation(True), "all")
    assert everything["labels"] == everything["input_ids"]
    # without a system message the template keeps its prefixes, and each answer is masked alone
    spans = labelled_spans(features(tokenizer, conversation(False)))
    assert [tokenizer.decode(ids) for _, ids in spans] == [f" {answer}</s>" for answer in ANSWERS]


def test_a_template_that_refuses_the_conversation_names_the_row():
    template, specials, _, _ = TEMPLATES["gemma"]
    with pytest.raises(PeftlabError, match=r"chat.jsonl line 1: the model's chat template refuses this conversation \(System role"):
        features(chat_tokenizer(template, specials), conversation(True))


def test_a_model_without_a_chat_template_is_told_so(tiny_llama):
    from peftlab.models import load_tokenizer

    with pytest.raises(PeftlabError, match=r"chat.jsonl line 1: conversations are rendered with the model's chat template, "
                                           r"and this model has none"):
        features(load_tokenizer(tiny_llama), conversation(True))
