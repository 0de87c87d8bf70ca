"""vLLM's runtime adapter routes: /v1/load_lora_adapter and /v1/unload_lora_adapter, with vLLM's bodies."""

from __future__ import annotations

import json

from tests.serve.conftest import API_KEY, exchange, post_raw

CHAT = {"messages": [{"role": "user", "content": "Hello, how are you today?"}], "max_tokens": 8}


def answer_of(port: int, model: str) -> tuple[int, dict]:
    status, _, body, _ = post_raw(port, "/v1/chat/completions", json.dumps({**CHAT, "model": model}).encode())
    return status, json.loads(body)


def models(port: int) -> list[str]:
    status, _, body, _ = exchange(port, f"GET /v1/models HTTP/1.1\r\nHost: t\r\nAuthorization: Bearer {API_KEY}\r\n\r\n".encode())
    return [card["id"] for card in json.loads(body)["data"]]


def test_load_then_unload_an_adapter_at_runtime(base_server, lora_b, tmp_path):
    port = base_server.port
    status, before = answer_of(port, "tiny")
    assert status == 200 and answer_of(port, "support")[0] == 404

    status, _, body, _ = post_raw(port, "/v1/load_lora_adapter", json.dumps({"lora_name": "support", "lora_path": lora_b}).encode())
    assert status == 200 and b"support" in body, body
    assert models(port) == ["tiny", "support"]
    status, tuned = answer_of(port, "support")
    assert status == 200 and tuned["model"] == "support"
    assert tuned["choices"][0]["message"]["content"] != before["choices"][0]["message"]["content"]
    assert answer_of(port, "tiny")[1]["choices"] == before["choices"]  # the base answers as before, now in a mixed batch

    again = post_raw(port, "/v1/load_lora_adapter", json.dumps({"lora_name": "support", "lora_path": lora_b}).encode())
    assert again[0] == 400 and "already taken" in json.loads(again[2])["error"]["message"]
    missing = post_raw(port, "/v1/load_lora_adapter", json.dumps({"lora_name": "x", "lora_path": str(tmp_path / "gone")}).encode())
    assert missing[0] == 400 and "does not exist" in json.loads(missing[2])["error"]["message"]
    no_path = post_raw(port, "/v1/load_lora_adapter", json.dumps({"lora_name": "x"}).encode())
    assert no_path[0] == 400 and json.loads(no_path[2])["error"]["param"] == "lora_path"

    status, _, body, _ = post_raw(port, "/v1/unload_lora_adapter", json.dumps({"lora_name": "support"}).encode())
    assert status == 200 and b"support" in body, body
    assert models(port) == ["tiny"]
    assert answer_of(port, "support")[0] == 404
    assert answer_of(port, "tiny")[1]["choices"] == before["choices"]
    unknown = post_raw(port, "/v1/unload_lora_adapter", json.dumps({"lora_name": "support"}).encode())
    assert unknown[0] == 404 and json.loads(unknown[2])["error"]["code"] == "model_not_found"
    base = post_raw(port, "/v1/unload_lora_adapter", json.dumps({"lora_name": "tiny"}).encode())
    assert base[0] == 400 and "base model" in json.loads(base[2])["error"]["message"]
