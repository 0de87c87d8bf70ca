"""Eval and generate on conversations: the prompt is the conversation before the scored assistant turn, rendered as serve
renders /v1/chat/completions, so a served chat adapter answers a held-out conversation token for token as eval decodes."""

import http.client
import json

import pytest

from peftlab import config as cfg
from peftlab.evaluate.evaluation import evaluate
from peftlab.evaluate.generate import run_generate
from peftlab.evaluate.settings import eval_config
from peftlab.generation import GenerationSettings
from tests.conftest import write_jsonl
from tests.data.chat_templates import save_tiny_chat_llama
from tests.tiny_models import train_tiny

API_KEY = "test-key"
TRAIN = [{"messages": [
    {"role": "system", "content": "You summarize."},
    {"role": "user", "content": f"#Person1#: Can I book a table for {n}? #Person2#: Sure."},
    {"role": "assistant", "content": f"A table for {n} is booked."},
    {"role": "user", "content": "And the weather?"},
    {"role": "assistant", "content": "They talk about the weather."},
]} for n in ("two", "four", "six", "eight")]
HELD_OUT = {"messages": [
    {"role": "system", "content": "You summarize."},
    {"role": "user", "content": "#Person1#: The quick brown fox? #Person2#: Over the lazy dog."},
    {"role": "assistant", "content": "A fox jumps over a dog."},
    {"role": "user", "content": "And the colours?"},
    {"role": "assistant", "content": "The fox is brown."},
]}


@pytest.fixture(scope="module")
def chat_adapter(tmp_path_factory) -> tuple[str, str]:
    folder = tmp_path_factory.mktemp("chat-adapter")
    model = save_tiny_chat_llama(folder / "model")
    train_tiny(model, write_jsonl(folder / "train.jsonl", TRAIN), folder / "run", "train.max_steps=6", "train.lr=0.03")
    return model, str(folder / "run" / "adapter")


def served_answer(model: str, adapter: str, messages: list[dict], max_tokens: int) -> str:
    from peftlab.serve.http import start, stop
    from peftlab.serve.launch import load_engine

    server = start(load_engine(model, [("chat", adapter)], "fp32", "tiny"), "127.0.0.1", 0, API_KEY)
    try:
        connection = http.client.HTTPConnection("127.0.0.1", server.port, timeout=120)
        body = {"model": "chat", "messages": messages, "max_tokens": max_tokens, "temperature": 0}
        connection.request("POST", "/v1/chat/completions", json.dumps(body),
                           {"Content-Type": "application/json", "Authorization": f"Bearer {API_KEY}"})
        answer = json.loads(connection.getresponse().read())
        connection.close()
    finally:
        stop(server)
    return answer["choices"][0]["message"]["content"]


def test_eval_scores_the_last_assistant_turn_and_serve_answers_the_same(chat_adapter, tmp_path):
    model, adapter = chat_adapter
    config = cfg.load(None, [f"model.name={model}", "model.dtype=fp32"])
    data = write_jsonl(tmp_path / "test.jsonl", [HELD_OUT])
    result = evaluate(config, str(data), None, adapter, GenerationSettings(max_new_tokens=8), include_base=False)
    [record] = result["records"]
    assert record["input"] == HELD_OUT["messages"][:4] and record["references"] == ["The fox is brown."]
    assert record["predictions"]["tuned"].strip()  # the trained adapter writes something to compare
    assert served_answer(model, adapter, HELD_OUT["messages"][:4], 8) == record["predictions"]["tuned"]


def test_generate_answers_a_conversation_file(chat_adapter, tmp_path):
    model, adapter = chat_adapter
    config = cfg.load(None, [f"model.name={model}", "model.dtype=fp32"])
    open_ended = {"messages": HELD_OUT["messages"][:4]}  # ends on the user: the whole conversation is the prompt
    data = write_jsonl(tmp_path / "prompts.jsonl", [HELD_OUT, open_ended])
    records = run_generate(config, adapter, None, str(data), None, GenerationSettings(max_new_tokens=8))
    assert [r["input"] for r in records] == [HELD_OUT["messages"][:4]] * 2
    assert records[0]["output"] == records[1]["output"]


def test_the_adapter_records_its_format_and_a_typed_prompt_is_a_user_turn(chat_adapter):
    from peftlab.evaluate.settings import generate_config

    model, adapter = chat_adapter
    config = generate_config(adapter, ["model.dtype=fp32"], {}, reads_rows=False)
    assert config.data.format == "messages"
    [record] = run_generate(config, adapter, "And the colours?", None, None, GenerationSettings(max_new_tokens=8))
    assert record["input"] == [{"role": "user", "content": "And the colours?"}]
    assert record["output"] == served_answer(model, adapter, record["input"], 8)


def test_check_answers_each_conversation_up_to_the_turn_eval_scores(chat_adapter, tmp_path, capsys):
    from peftlab.cli import main
    from peftlab.data.examples import scored_prompts
    from peftlab.data.readers import read_rows
    from peftlab.export.parity import check_parity

    model, adapter = chat_adapter
    data = write_jsonl(tmp_path / "test.jsonl", [HELD_OUT])
    assert main(["check", adapter, "--data", str(data), "--max-new-tokens", "8"]) == 0
    assert "check passed" in capsys.readouterr().out
    config = cfg.load(None, [f"model.name={model}", "model.dtype=fp32"])
    [prompt] = scored_prompts(read_rows(str(data)), config.data)  # what the command checked
    [record] = evaluate(config, str(data), None, adapter, GenerationSettings(max_new_tokens=8), include_base=False)["records"]
    assert prompt == record["input"] == HELD_OUT["messages"][:4]
    parity = check_parity(config, adapter, [prompt], GenerationSettings(max_new_tokens=8), None)
    assert parity.texts["adapter"] == [record["predictions"]["tuned"]]  # the same answer as eval's


def test_a_chat_adapter_is_scored_on_prompt_completion_rows_as_on_the_same_conversation(chat_adapter, tmp_path):
    """The adapter records `messages`, yet a test file is read in its own format: a prompt/completion row is wrapped in
    the same chat template as the one-turn conversation it equals, so both get the same answer."""
    model, adapter = chat_adapter
    config = eval_config(adapter, ["model.dtype=fp32"], {})
    user, answer = HELD_OUT["messages"][1]["content"], HELD_OUT["messages"][2]["content"]
    pairs = write_jsonl(tmp_path / "pairs.jsonl", [{"prompt": user, "completion": answer}])
    chat = write_jsonl(tmp_path / "chat.jsonl", [{"messages": [{"role": "user", "content": user}, {"role": "assistant", "content": answer}]}])
    settings = GenerationSettings(max_new_tokens=8)
    [from_pairs] = evaluate(config, str(pairs), None, adapter, settings, include_base=False)["records"]
    [from_chat] = evaluate(config, str(chat), None, adapter, settings, include_base=False)["records"]
    assert from_pairs["references"] == [answer] and from_pairs["predictions"] == from_chat["predictions"]


def test_a_plain_text_adapter_answers_prompt_completion_rows_without_the_chat_template(tmp_path):
    """An adapter tuned on `text` rows never saw the chat template: eval on prompt/completion rows keeps prompts bare."""
    model = save_tiny_chat_llama(tmp_path / "model")
    train_tiny(model, write_jsonl(tmp_path / "text.jsonl", [{"text": "Hello there, how are you?"}] * 4), tmp_path / "run",
               "train.max_steps=1")
    adapter = str(tmp_path / "run" / "adapter")
    config = eval_config(adapter, ["model.dtype=fp32"], {})
    pairs = write_jsonl(tmp_path / "pairs.jsonl", [{"prompt": "Hello there,", "completion": "how are you?"}])
    result = evaluate(config, str(pairs), None, adapter, GenerationSettings(max_new_tokens=2), include_base=False)
    assert result["chat_template"] is False and result["records"][0]["input"] == "Hello there,"
