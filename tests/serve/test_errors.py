"""Bad requests get 4xx answers with OpenAI-style error objects, and the server keeps serving."""

from __future__ import annotations

import http.client
import json
from urllib.parse import urlparse

import pytest

from tests.serve.conftest import API_KEY

AUTH = {"Authorization": f"Bearer {API_KEY}"}
CHAT = {"model": "a", "messages": [{"role": "user", "content": "Hello"}], "max_tokens": 4}


def call(url: str, method: str, path: str, body: bytes | None = None, headers: dict | None = None) -> tuple[int, dict]:
    parts = urlparse(url)
    connection = http.client.HTTPConnection(parts.hostname, parts.port, timeout=60)
    try:
        connection.request(method, path, body=body, headers={"Content-Type": "application/json", **(headers or {})})
        answer = connection.getresponse()
        return answer.status, json.loads(answer.read() or b"{}")
    finally:
        connection.close()


def post(url: str, body: object, headers: dict | None = None) -> tuple[int, dict]:
    return call(url, "POST", "/v1/chat/completions", json.dumps(body).encode(), {**AUTH, **(headers or {})})


def assert_error(status: int, body: dict, expected_status: int, code: str) -> None:
    assert status == expected_status, body
    assert set(body["error"]) == {"message", "type", "param", "code"} and body["error"]["code"] == code, body
    assert body["error"]["message"]


@pytest.mark.parametrize("body, param", [
    ({"messages": CHAT["messages"]}, "model"),
    ({"model": "a"}, "messages"),
    ({"model": "a", "messages": []}, "messages"),
    ({"model": "a", "messages": [{"content": "no role"}]}, "messages[0].role"),
    ({**CHAT, "max_tokens": 0}, "max_tokens"),
    ({**CHAT, "max_tokens": 10_000}, "max_tokens"),
    ({**CHAT, "temperature": "hot"}, "temperature"),
    ({**CHAT, "n": 2}, "n"),
])
def test_bad_fields_name_the_field(served, body, param):
    status, answer = post(served[0], body)
    assert status == 400 and answer["error"]["param"] == param, answer


def test_each_bad_request_is_a_4xx_and_the_server_keeps_serving(served):
    url = served[0]
    assert_error(*call(url, "POST", "/v1/chat/completions", b"{not json", AUTH), 400, "invalid_json")
    assert_error(*post(url, {"messages": CHAT["messages"]}), 400, "missing_required_parameter")
    assert_error(*post(url, {**CHAT, "model": "nope"}), 404, "model_not_found")
    too_long = " ".join(["Hello, how are you today?"] * 200)  # far beyond the tiny model's 512 positions
    assert_error(*post(url, {**CHAT, "messages": [{"role": "user", "content": too_long}]}), 400, "context_length_exceeded")
    assert_error(*call(url, "POST", "/v1/completions", json.dumps({"model": "a", "prompt": too_long}).encode(), AUTH),
                 400, "context_length_exceeded")
    oversized = json.dumps({**CHAT, "messages": [{"role": "user", "content": "x" * 100_000}]}).encode()
    assert_error(*call(url, "POST", "/v1/chat/completions", oversized, AUTH), 413, "request_too_large")
    assert_error(*call(url, "GET", "/v1/nothing", None, AUTH), 404, "not_found")
    status, answer = post(url, CHAT)
    assert status == 200 and answer["choices"][0]["message"]["content"] is not None
    assert call(url, "GET", "/health", None, AUTH)[0] == 200


@pytest.mark.parametrize("method, path", [("GET", "/health"), ("GET", "/v1/models"), ("POST", "/v1/chat/completions"),
                                          ("POST", "/v1/completions")])
@pytest.mark.parametrize("headers", [{}, {"Authorization": "Bearer wrong"}, {"Authorization": API_KEY}])
def test_api_key_is_checked_on_every_route(served, method, path, headers):
    body = json.dumps(CHAT).encode() if method == "POST" else None
    assert_error(*call(served[0], method, path, body, headers), 401, "invalid_api_key")
