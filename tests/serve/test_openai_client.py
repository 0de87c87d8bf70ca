"""The official openai client against `peftlab serve`: base and adapters chosen by the request's model field."""

from __future__ import annotations

import pytest

from tests.serve.conftest import API_KEY, alone, openai_client

openai = pytest.importorskip("openai")

QUESTION = "#Person1#: Can I book a table for two? #Person2#: Sure, under what name?"
MAX_TOKENS = 12


@pytest.fixture(scope="module")
def client(served):
    url, _ = served
    return openai_client(f"{url}/v1", timeout=60)


def _chat(client, model: str, stream: bool) -> str:
    messages = [{"role": "user", "content": QUESTION}]
    if not stream:
        answer = client.chat.completions.create(model=model, messages=messages, max_tokens=MAX_TOKENS)
        assert answer.object == "chat.completion" and answer.model == model
        assert answer.choices[0].message.role == "assistant" and answer.choices[0].finish_reason in ("stop", "length")
        assert answer.usage.completion_tokens <= MAX_TOKENS
        return answer.choices[0].message.content
    chunks = list(client.chat.completions.create(model=model, messages=messages, max_tokens=MAX_TOKENS, stream=True))
    assert all(chunk.object == "chat.completion.chunk" for chunk in chunks)
    assert chunks[-1].choices[0].finish_reason in ("stop", "length")
    return "".join(chunk.choices[0].delta.content or "" for chunk in chunks)


def test_models_lists_base_and_adapters(client):
    assert [model.id for model in client.models.list().data] == ["tiny", "a", "b", "c"]


def test_chat_from_base_and_each_adapter_streaming_and_not(client, served, tiny_llama, lora_a, lora_b, ia3_c):
    engine = served[1].engine
    ids = engine.prompt_ids("", [{"role": "user", "content": QUESTION}])
    answers = {}
    for model, adapter in [("tiny", None), ("a", lora_a), ("b", lora_b), ("c", ia3_c)]:
        plain, streamed = _chat(client, model, stream=False), _chat(client, model, stream=True)
        assert plain == streamed, model
        # the server answered with the adapter the request named: the same as that adapter loaded alone
        assert plain == alone(tiny_llama, adapter, [ids], MAX_TOKENS)[0], model
        answers[model] = plain
    assert len(set(answers.values())) == 4, answers  # four models, four different answers


def test_completions_with_several_prompts_and_a_stop_string(client):
    full = client.completions.create(model="a", prompt="Hello, how are you", max_tokens=MAX_TOKENS).choices[0].text
    answer = client.completions.create(model="a", prompt=["Hello, how are you", "The quick brown fox"], max_tokens=MAX_TOKENS)
    assert [choice.index for choice in answer.choices] == [0, 1] and answer.choices[0].text == full
    stop = full[3:5]
    cut = client.completions.create(model="a", prompt="Hello, how are you", max_tokens=MAX_TOKENS, stop=[stop])
    assert cut.choices[0].text == full[:full.index(stop)] and cut.choices[0].finish_reason == "stop"
    streamed = client.completions.create(model="a", prompt="Hello, how are you", max_tokens=MAX_TOKENS, stop=[stop], stream=True)
    assert "".join(chunk.choices[0].text for chunk in streamed) == cut.choices[0].text


def test_a_stream_ends_with_a_usage_chunk_when_asked(client):
    messages = [{"role": "user", "content": QUESTION}]
    plain = client.chat.completions.create(model="b", messages=messages, max_tokens=MAX_TOKENS)
    chunks = list(client.chat.completions.create(model="b", messages=messages, max_tokens=MAX_TOKENS, stream=True,
                                                 stream_options={"include_usage": True}))
    assert chunks[0].choices[0].delta.role == "assistant"
    assert chunks[-1].choices == [] and chunks[-1].usage == plain.usage
    assert all(chunk.usage is None for chunk in chunks[:-1])
    text = list(client.completions.create(model="b", prompt="Hello", max_tokens=4, stream=True, stream_options={"include_usage": True}))
    assert text[-1].choices == [] and text[-1].usage.total_tokens == text[-1].usage.prompt_tokens + text[-1].usage.completion_tokens
