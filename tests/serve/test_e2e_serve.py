"""The official openai client against `peftlab serve` on the embedded default model with two peftlab adapters."""

from __future__ import annotations

import pytest

from tests.serve.conftest import API_KEY, alone, openai_client, train_adapter

openai = pytest.importorskip("openai")
pytestmark = pytest.mark.e2e

QUESTION = "Summarize the following conversation.\n\n#Person1#: Can I book a table for two at seven?\n#Person2#: Sure, under what name?\n\nSummary: "


def test_openai_client_gets_base_and_both_adapters_streaming_and_not(tmp_path_factory):
    from peftlab.serve.http import start, stop
    from peftlab.serve.launch import load_engine

    settings = ["model.dtype=fp32", "data.max_length=128", "train.max_steps=2", "train.lr=0.01"]
    lora = train_adapter(None, tmp_path_factory.mktemp("e2e-lora"), *settings)
    ia3 = train_adapter(None, tmp_path_factory.mktemp("e2e-ia3"), *settings, "method=ia3")
    engine = load_engine(None, [("summaries", lora), ("ia3-summaries", ia3)], "fp32")
    server = start(engine, "127.0.0.1", 0, API_KEY)
    try:
        client = openai_client(f"http://127.0.0.1:{server.port}/v1", timeout=300)
        assert [m.id for m in client.models.list().data] == ["SmolLM2-135M-Instruct", "summaries", "ia3-summaries"]
        messages = [{"role": "user", "content": QUESTION}]
        ids = engine.prompt_ids("", messages)
        for name, adapter in [("SmolLM2-135M-Instruct", None), ("summaries", lora), ("ia3-summaries", ia3)]:
            plain = client.chat.completions.create(model=name, messages=messages, max_tokens=16).choices[0].message.content
            chunks = client.chat.completions.create(model=name, messages=messages, max_tokens=16, stream=True)
            assert "".join(c.choices[0].delta.content or "" for c in chunks if c.choices) == plain
            assert plain == alone(None, adapter, [ids], 16)[0], name
    finally:
        stop(server)
