"""Serving isolates adapters, over real sockets: reserved names are refused, loading or unloading one adapter never
changes another's answers, startup adapters are pinned, --max-adapters holds, and every refusal is a 4xx (busy 429,
unloaded-while-queued 404, a chat template's refusal 400, a soft prompt past the context 400)."""

from __future__ import annotations

import json
import shutil
import threading
from pathlib import Path

import pytest

from tests.serve.conftest import API_KEY, post_raw, train_adapter, wait_for
from tests.serve.test_hardening import error_of, submitted

PROMPTS = ["Hello, how are you", "The quick brown fox"]


@pytest.fixture(scope="module")
def q_only(tiny_llama, tmp_path_factory) -> str:
    """A LoRA adapter on q_proj only: the case where a poisoned table kept answering 200 with other text."""
    return train_adapter(tiny_llama, tmp_path_factory.mktemp("q-only"), "lora.target=q_proj", "train.seed=3")


def start_server(tiny_llama, adapters, **options):
    from peftlab.serve.http import start
    from peftlab.serve.launch import load_engine
    from peftlab.serve.limits import Limits

    limits = options.pop("limits", Limits(max_tokens=64))
    return start(load_engine(tiny_llama, adapters, "fp32", "tiny"), "127.0.0.1", 0, API_KEY, limits, **options)


@pytest.fixture(scope="module")
def isolated(tiny_llama, lora_a, q_only, ia3_c):
    from peftlab.serve.http import stop

    server = start_server(tiny_llama, [("a", lora_a), ("q", q_only), ("c", ia3_c)])
    yield server
    stop(server)


def complete(port: int, model: str, prompt: str, max_tokens: int = 8, **extra) -> tuple[int, dict]:
    status, _, body, _ = post_raw(port, "/v1/completions", json.dumps({"model": model, "prompt": prompt, "max_tokens": max_tokens,
                                                                      **extra}).encode())
    return status, json.loads(body)


def answers(port: int, models=("tiny", "a", "q", "c")) -> dict[tuple[str, str], str]:
    found = {}
    for model in models:
        for prompt in PROMPTS:
            status, body = complete(port, model, prompt)
            assert status == 200, body
            found[model, prompt] = body["choices"][0]["text"]
    return found


def load(port: int, name: str, path: str) -> tuple[int, bytes]:
    status, _, body, _ = post_raw(port, "/v1/load_lora_adapter", json.dumps({"lora_name": name, "lora_path": path}).encode())
    return status, body


def unload(port: int, name: str) -> tuple[int, bytes]:
    status, _, body, _ = post_raw(port, "/v1/unload_lora_adapter", json.dumps({"lora_name": name}).encode())
    return status, body


def test_reserved_names_are_refused_and_no_answer_changes(isolated, q_only):
    before = answers(isolated.port)
    assert len(set(before.values())) > 2  # the adapters answer differently: a swapped table would show
    for name in ("lora_A", "lora_B", "lora_dropout", "scaling", "base_layer", "hada_w1_a", "keys", "__base__", "my.name"):
        status, body = load(isolated.port, name, q_only)
        assert "reserved" in error_of(status, body, 400, "invalid_adapter", "lora_name"), name
    assert answers(isolated.port) == before
    from peftlab.serve.adapters import reserved_adapter_names

    assert {"lora_A", "lora_embedding_B", "ia3_l", "r", "lora_alpha", "base_layer"} <= reserved_adapter_names()


def test_loading_and_unloading_one_adapter_never_changes_anothers_answers(isolated, lora_b):
    before = answers(isolated.port)
    assert load(isolated.port, "extra", lora_b)[0] == 200
    assert answers(isolated.port) == before
    assert answers(isolated.port, ["extra"]) != {key: text for key, text in before.items() if key[0] == "a"}
    assert unload(isolated.port, "extra")[0] == 200
    assert answers(isolated.port) == before


def test_startup_adapters_are_pinned_and_max_adapters_holds_one(tiny_llama, lora_a, lora_b, ia3_c, tmp_path, slow_tokens):
    from peftlab.serve.http import stop

    for name, folder in (("x", lora_b), ("y", ia3_c)):
        shutil.copytree(folder, tmp_path / name)
    server = start_server(tiny_llama, [("a", lora_a)], adapter_dir=str(tmp_path), max_adapters=1)
    jobs = []
    try:
        first = answers(server.port, ["a"])
        for model in ("x", "y", "x", "y"):  # each on-demand load evicts the other, never the startup adapter
            assert complete(server.port, model, PROMPTS[0], 2)[0] == 200
            assert [name for name in server.engine.models if name not in ("tiny", "a")] == [model]
        assert answers(server.port, ["a"]) == first
        jobs = submitted(server, pytest.MonkeyPatch())
        holder = threading.Thread(target=complete, args=(server.port, "y", PROMPTS[0], 60))
        holder.start()  # y is busy for 60 slow tokens: its place cannot be taken
        wait_for(lambda: jobs and jobs[0].completion_tokens >= 1)
        status, _, body, _ = post_raw(server.port, "/v1/completions", json.dumps({"model": "x", "prompt": "Hi", "max_tokens": 2}).encode())
        assert "--max-adapters" in error_of(status, body, 429, "rate_limit_exceeded")
        assert [name for name in server.engine.models if name not in ("tiny", "a")] == ["y"]
    finally:
        for job in jobs:
            job.cancelled = True
        stop(server)


def test_requests_queued_for_an_adapter_that_is_unloaded_get_404(tiny_llama, lora_b, slow_tokens, monkeypatch):
    from peftlab.serve.http import stop

    server = start_server(tiny_llama, [], max_batch_size=1)
    jobs = submitted(server, monkeypatch)
    results: list[tuple[int, dict]] = []
    try:
        assert load(server.port, "extra", lora_b)[0] == 200
        threading.Thread(target=lambda: results.append(complete(server.port, "tiny", PROMPTS[0], 40)), daemon=True).start()
        wait_for(lambda: jobs and jobs[0].completion_tokens >= 1)  # the one row is taken: the next request waits in the queue
        threading.Thread(target=lambda: results.append(complete(server.port, "extra", PROMPTS[1], 4)), daemon=True).start()
        wait_for(lambda: len(jobs) == 2)
        assert unload(server.port, "extra")[0] == 200
        wait_for(lambda: len(results) == 2, seconds=60)
        status, body = next(result for result in results if "error" in result[1] or result[1]["model"] == "extra")
        assert status == 404 and body["error"]["code"] == "model_not_found" and "unloaded" in body["error"]["message"], body
    finally:
        for job in jobs:
            job.cancelled = True
        stop(server)


REFUSING_TEMPLATE = ("{% for m in messages %}{% if loop.index0 > 0 and m['role'] == messages[loop.index0 - 1]['role'] %}"
                     "{{ raise_exception('Conversation roles must alternate user/assistant/user/assistant/...') }}{% endif %}"
                     "{% if loop.first and m['role'] != 'system' %}{{ raise_exception('a system message must come first') }}{% endif %}"
                     "{{ m['content'] }}\n{% endfor %}")


@pytest.mark.parametrize("messages, said", [
    ([{"role": "user", "content": "Hi"}], "a system message must come first"),
    ([{"role": "system", "content": "Be brief"}, {"role": "user", "content": "Hi"}, {"role": "user", "content": "Hi again"}],
     "roles must alternate"),
])
def test_a_chat_template_that_refuses_the_conversation_is_a_400(base_server, monkeypatch, messages, said):
    monkeypatch.setattr(base_server.engine.loaded.tokenizer, "chat_template", REFUSING_TEMPLATE, raising=False)
    status, _, body, _ = post_raw(base_server.port, "/v1/chat/completions", json.dumps({"model": "tiny", "messages": messages}).encode())
    assert said in error_of(status, body, 400, "invalid_value", "messages")
    ok = [{"role": "system", "content": "Be brief"}, {"role": "user", "content": "Hi"}]
    assert post_raw(base_server.port, "/v1/chat/completions", json.dumps({"model": "tiny", "messages": ok, "max_tokens": 2}).encode())[0] == 200


def test_a_soft_prompt_counts_in_the_context(tiny_llama, tmp_path):
    from peftlab.serve.http import stop
    from peftlab.serve.limits import Limits

    adapter = train_adapter(tiny_llama, tmp_path, "method=prompt-tuning", "train.lr=0.3")
    server = start_server(tiny_llama, [("soft", adapter)], limits=Limits(max_tokens=512))
    try:
        virtual = json.loads((Path(adapter) / "adapter_config.json").read_text())["num_virtual_tokens"]
        assert virtual > 0
        prompt_tokens = len(server.engine.prompt_ids(PROMPTS[0]))
        fits_without_it = 512 - prompt_tokens  # prompt + max_tokens = the context: passed the old check
        status, _, body, _ = post_raw(server.port, "/v1/completions",
                                      json.dumps({"model": "soft", "prompt": PROMPTS[0], "max_tokens": fits_without_it}).encode())
        message = error_of(status, body, 400, "context_length_exceeded", "prompt")
        assert f"{virtual} for the adapter's soft prompt" in message and str(512 + virtual) in message
        fits = 512 - prompt_tokens - virtual
        status, body = complete(server.port, "soft", PROMPTS[0], min(fits, 4))
        assert status == 200, body
    finally:
        stop(server)


@pytest.mark.parametrize("field, value", [
    ("response_format", {"type": "json_object"}), ("tool_choice", "auto"), ("functions", [{"name": "f"}]),
    ("function_call", "auto"), ("logprobs", 0), ("logprobs", True),
])
def test_unsupported_fields_are_refused_not_ignored(base_server, field, value):
    status, _, body, _ = post_raw(base_server.port, "/v1/completions",
                                  json.dumps({"model": "tiny", "prompt": "Hi", "max_tokens": 2, field: value}).encode())
    error_of(status, body, 400, "unsupported_parameter", field)


def test_a_seed_gives_the_same_sampled_answer_whatever_runs_beside_it(base_server):
    def sampled(seed: int, prompt: str = PROMPTS[0]) -> str:
        status, body = complete(base_server.port, "tiny", prompt, 16, temperature=1.0, seed=seed)
        assert status == 200, body
        return body["choices"][0]["text"]

    first = sampled(7)
    beside: list[str] = []
    others = [threading.Thread(target=lambda: beside.append(sampled(100 + i, PROMPTS[1]))) for i in range(3)]
    for thread in others:
        thread.start()
    again = sampled(7)  # while three other sampled requests share its steps
    for thread in others:
        thread.join()
    assert again == first
    assert len({sampled(seed) for seed in (1, 2, 3, 4)}) > 1  # the seed matters: the sampling is real
