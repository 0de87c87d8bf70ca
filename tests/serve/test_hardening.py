"""Each hole a public server must close, tried over real sockets: the answer is the right 4xx (never a 500) and the server keeps serving."""

from __future__ import annotations

import json
import socket
import threading
import time

import pytest

from peftlab.serve.jobs import Job
from tests.serve.conftest import API_KEY, exchange, post_raw, wait_for

PROMPT = {"model": "tiny", "prompt": "Hello, how are you", "max_tokens": 4}


def error_of(status: int, body: bytes, expected_status: int, code: str, param: str | None = None) -> str:
    """The error's message, once the status, the OpenAI error object, its code and param are checked."""
    assert status == expected_status, body[:500]
    error = json.loads(body)["error"]
    assert set(error) == {"message", "type", "param", "code"} and error["code"] == code, error
    assert param is None or error["param"] == param, error
    return error["message"]


def still_serving(port: int) -> None:
    status, headers, body, _ = post_raw(port, "/v1/completions", json.dumps(PROMPT).encode())
    assert status == 200 and json.loads(body)["choices"][0]["finish_reason"] in ("stop", "length"), body
    assert "server" not in headers


def test_idle_connections_are_closed_after_the_timeout_and_hold_no_threads(base_server):
    threads = threading.active_count()
    idle = [socket.create_connection(("127.0.0.1", base_server.port), timeout=10) for _ in range(150)]
    for sock in idle[:50]:  # half a request head, then silence: bytes must not reset the deadline
        sock.sendall(b"GET /health HTTP/1.1\r\nHost: test\r\n")
    opened = time.monotonic()
    time.sleep(0.3)
    assert threading.active_count() <= threads, "idle connections took threads"
    try:
        assert all(sock.recv(1) == b"" for sock in idle)  # closed by the server (a timeout here raises)
        waited = time.monotonic() - opened
        assert 0.5 < waited < 5, f"closed after {waited:.1f} s, the idle timeout is 1 s"
    finally:
        for sock in idle:
            sock.close()
    still_serving(base_server.port)


def test_a_keep_alive_connection_is_closed_after_its_answer_and_the_timeout(base_server):
    with socket.create_connection(("127.0.0.1", base_server.port), timeout=10) as sock:
        sock.sendall(f"GET /health HTTP/1.1\r\nHost: test\r\nAuthorization: Bearer {API_KEY}\r\n\r\n".encode())
        asked, answer = time.monotonic(), b""
        while chunk := sock.recv(4096):  # until the server closes
            answer += chunk
        assert answer.startswith(b"HTTP/1.1 200") and answer.endswith(b'{"status": "ok"}')
        assert 0.5 < time.monotonic() - asked < 5


def test_a_wrong_key_with_a_huge_declared_body_is_refused_before_the_body_is_sent(base_server):
    head = (b"POST /v1/completions HTTP/1.1\r\nHost: test\r\nAuthorization: Bearer wrong\r\nContent-Type: application/json\r\n"
            b"Content-Length: 1000000\r\n\r\n")  # and not one byte of the body
    status, headers, body, closed = exchange(base_server.port, head, timeout=5)
    error_of(status, body, 401, "invalid_api_key")
    assert closed and "server" not in headers
    still_serving(base_server.port)


def test_a_declared_body_over_the_limit_gets_413_before_it_is_sent(base_server):
    head = (f"POST /v1/completions HTTP/1.1\r\nHost: test\r\nAuthorization: Bearer {API_KEY}\r\n"
            f"Content-Length: {(1 << 20) + 1}\r\n\r\n").encode()
    status, _, body, closed = exchange(base_server.port, head, timeout=5)
    assert "--max-body-bytes" in error_of(status, body, 413, "request_too_large") and closed
    still_serving(base_server.port)


def test_a_chunked_body_is_counted_while_it_arrives(base_server):
    head = (f"POST /v1/completions HTTP/1.1\r\nHost: test\r\nAuthorization: Bearer {API_KEY}\r\n"
            "Transfer-Encoding: chunked\r\n\r\n").encode()
    chunk = b"x" * 65536
    chunks = b"".join(b"%x\r\n%s\r\n" % (len(chunk), chunk) for _ in range(17))  # 1.06 MB, no last chunk: the server must not wait for it
    status, _, body, closed = exchange(base_server.port, head + chunks, timeout=10)
    error_of(status, body, 413, "request_too_large")
    still_serving(base_server.port)


def test_four_stop_strings_of_250000_characters_are_refused(base_server):
    status, _, body, _ = post_raw(base_server.port, "/v1/completions", json.dumps({**PROMPT, "stop": ["x" * 250_000] * 4}).encode())
    assert "--max-stop-chars" in error_of(status, body, 400, "invalid_value", "stop[0]")
    status, _, body, _ = post_raw(base_server.port, "/v1/completions", json.dumps({**PROMPT, "stop": ["a", "b", "c", "d", "e"]}).encode())
    error_of(status, body, 400, "invalid_value", "stop")
    still_serving(base_server.port)


@pytest.mark.parametrize("path, body, param", [
    ("/v1/completions", {**PROMPT, "prompt": "Hello \ud800"}, "prompt[0]"),
    ("/v1/chat/completions", {"model": "tiny", "messages": [{"role": "user", "content": "Hi \udfff"}]}, "messages[0].content"),
    ("/v1/completions", {**PROMPT, "stop": ["\ud800"]}, "stop[0]"),
])
def test_a_lone_surrogate_is_refused_naming_the_field(base_server, path, body, param):
    raw = json.dumps(body).encode()  # json.dumps writes the surrogate as a \ud800 escape, as a client's JSON would
    assert b"\\ud" in raw
    status, _, answer, _ = post_raw(base_server.port, path, raw)
    assert "surrogate" in error_of(status, answer, 400, "invalid_text", param)
    still_serving(base_server.port)


@pytest.mark.parametrize("raw", [
    b'{"model": "tiny", "prompt": "Hi", "max_tokens": ' + b"9" * 5000 + b"}",
    b"[" * 100_000,
    b'{"model": "tiny", "prompt": ' + b"[" * 100_000,
    b'{"model": "tiny", "prompt": "Hi", "max_tokens": 4',
    b'\xff\xfe{"model": "tiny"}',
    b"",
])
def test_malformed_json_is_a_400(base_server, raw):
    status, _, body, _ = post_raw(base_server.port, "/v1/completions", raw)
    error_of(status, body, 400, "invalid_json")
    still_serving(base_server.port)


@pytest.mark.parametrize("change, param, code", [
    ({"prompt": 5}, "prompt", "invalid_type"),
    ({"prompt": []}, "prompt", "invalid_value"),
    ({"max_tokens": "4"}, "max_tokens", "invalid_type"),
    ({"max_tokens": True}, "max_tokens", "invalid_type"),
    ({"temperature": float("nan")}, "temperature", "invalid_value"),
    ({"top_p": 0}, "top_p", "invalid_value"),
    ({"stream": "yes"}, "stream", "invalid_type"),
    ({"stream_options": {"include_usage": 1}}, "stream_options.include_usage", "invalid_type"),
    ({"logprobs": 2}, "logprobs", "unsupported_parameter"),
    ({"echo": True}, "echo", "unsupported_parameter"),
    ({"suffix": "x"}, "suffix", "unsupported_parameter"),
    ({"seed": 1 << 70}, "seed", "invalid_value"),
    ({"seed": "7"}, "seed", "invalid_type"),
])
def test_wrong_types_and_values_are_400s_naming_the_field(base_server, change, param, code):
    status, _, body, _ = post_raw(base_server.port, "/v1/completions", json.dumps({**PROMPT, **change}).encode())
    error_of(status, body, 400, code, param)


def test_a_body_that_is_not_an_object_is_a_400(base_server):
    status, _, body, _ = post_raw(base_server.port, "/v1/chat/completions", b'["model", "tiny"]')
    error_of(status, body, 400, "invalid_body")


def test_temperature_1e_300_is_greedy_not_a_500(base_server):
    greedy = post_raw(base_server.port, "/v1/completions", json.dumps({**PROMPT, "temperature": 0}).encode())
    tiny = post_raw(base_server.port, "/v1/completions", json.dumps({**PROMPT, "temperature": 1e-300}).encode())
    assert greedy[0] == tiny[0] == 200, tiny[2]
    assert json.loads(tiny[2])["choices"][0]["text"] == json.loads(greedy[2])["choices"][0]["text"]


def test_1100_prompts_are_a_400_naming_the_limit_not_a_429(base_server):
    status, _, body, _ = post_raw(base_server.port, "/v1/completions", json.dumps({**PROMPT, "prompt": ["Hi"] * 1100}).encode())
    message = error_of(status, body, 400, "invalid_value", "prompt")
    assert "1100" in message and "64" in message and "--max-prompts" in message
    messages = [{"role": "user", "content": "Hi"}] * 300
    status, _, body, _ = post_raw(base_server.port, "/v1/chat/completions", json.dumps({"model": "tiny", "messages": messages}).encode())
    assert "--max-messages" in error_of(status, body, 400, "invalid_value", "messages")
    still_serving(base_server.port)


def test_an_oversized_request_head_is_refused_whole_or_in_pieces(base_server):
    head = f"GET /health HTTP/1.1\r\nHost: test\r\nAuthorization: Bearer {API_KEY}\r\nX-Big: {'x' * 20_000}\r\n\r\n".encode()
    status, _, body, closed = exchange(base_server.port, head, timeout=5)  # one read: h11's buffer limit never sees it
    assert "--max-header-bytes" in error_of(status, body, 431, "request_header_fields_too_large") and closed
    with socket.create_connection(("127.0.0.1", base_server.port), timeout=5) as sock:
        sock.sendall(head[:17_000])  # an incomplete head beyond 16 KiB: h11 refuses to buffer more
        answer = b""
        while chunk := sock.recv(4096):  # until the server closes
            answer += chunk
        assert answer.startswith(b"HTTP/1.1 400")
    still_serving(base_server.port)


def submitted(server, monkeypatch) -> list[Job]:
    jobs: list[Job] = []
    submit = server.scheduler.submit

    def recording_submit(new_jobs):
        submit(new_jobs)
        jobs.extend(new_jobs)

    monkeypatch.setattr(server.scheduler, "submit", recording_submit)
    return jobs


def test_a_non_streaming_client_that_leaves_gets_its_jobs_cancelled(base_server, slow_tokens, monkeypatch):
    jobs = submitted(base_server, monkeypatch)
    body = json.dumps({**PROMPT, "max_tokens": 200, "prompt": ["Hello, how are you", "The quick brown fox"]}).encode()
    sock = socket.create_connection(("127.0.0.1", base_server.port), timeout=10)
    sock.sendall(f"POST /v1/completions HTTP/1.1\r\nHost: test\r\nAuthorization: Bearer {API_KEY}\r\n"
                 f"Content-Length: {len(body)}\r\n\r\n".encode() + body)
    wait_for(lambda: len(jobs) == 2 and jobs[0].completion_tokens >= 2)
    sock.close()  # 200 tokens take 4 s; the client leaves after 2
    wait_for(lambda: all(job.done for job in jobs), seconds=3)
    assert all(job.cancelled for job in jobs)
    assert sorted(reason for job, reason in slow_tokens if job in jobs) == ["cancelled", "cancelled"]
    assert all(job.completion_tokens < 100 for job in jobs)
    still_serving(base_server.port)


def test_a_streaming_client_that_leaves_gets_its_jobs_cancelled(base_server, slow_tokens, monkeypatch):
    jobs = submitted(base_server, monkeypatch)
    body = json.dumps({**PROMPT, "max_tokens": 200, "stream": True}).encode()
    sock = socket.create_connection(("127.0.0.1", base_server.port), timeout=10)
    sock.sendall(f"POST /v1/completions HTTP/1.1\r\nHost: test\r\nAuthorization: Bearer {API_KEY}\r\n"
                 f"Content-Length: {len(body)}\r\n\r\n".encode() + body)
    assert sock.recv(4096).startswith(b"HTTP/1.1 200")
    wait_for(lambda: jobs and jobs[0].completion_tokens >= 2)
    sock.close()
    wait_for(lambda: jobs[0].done, seconds=3)
    assert [reason for job, reason in slow_tokens if job is jobs[0]] == ["cancelled"]


def test_a_full_queue_is_an_honest_429(tiny_llama, slow_tokens, monkeypatch):
    from peftlab.serve.http import start, stop
    from peftlab.serve.launch import load_engine
    from peftlab.serve.limits import Limits

    server = start(load_engine(tiny_llama, [], "fp32", "tiny"), "127.0.0.1", 0, API_KEY,
                   Limits(max_waiting=2, max_prompts=2), max_batch_size=1)
    jobs = submitted(server, monkeypatch)
    body = json.dumps({**PROMPT, "max_tokens": 100}).encode()
    clients = []
    try:
        for count in (1, 2, 3):  # the first generates (1 token per 20 ms), the next two wait
            clients.append(socket.create_connection(("127.0.0.1", server.port), timeout=10))
            clients[-1].sendall(f"POST /v1/completions HTTP/1.1\r\nHost: test\r\nAuthorization: Bearer {API_KEY}\r\n"
                                f"Content-Length: {len(body)}\r\n\r\n".encode() + body)
            wait_for(lambda: len(jobs) == count and jobs[0].completion_tokens >= 1)
        status, _, answer, _ = post_raw(server.port, "/v1/completions", body)
        message = error_of(status, answer, 429, "rate_limit_exceeded")
        assert "2 requests are waiting for a place (limit 2)" in message, message
    finally:
        for client in clients:
            client.close()
        stop(server)


def test_the_connection_limit_answers_503_and_frees_with_the_idle_timeout(tiny_llama):
    from peftlab.serve.http import start, stop
    from peftlab.serve.launch import load_engine
    from peftlab.serve.limits import Limits

    server = start(load_engine(tiny_llama, [], "fp32", "tiny"), "127.0.0.1", 0, API_KEY,
                   Limits(max_connections=4, idle_timeout_seconds=1.0))
    try:
        idle = [socket.create_connection(("127.0.0.1", server.port), timeout=10) for _ in range(4)]
        time.sleep(0.2)
        assert post_raw(server.port, "/v1/completions", json.dumps(PROMPT).encode())[0] == 503
        assert all(sock.recv(1) == b"" for sock in idle)  # the idle deadline frees them
        still_serving(server.port)
    finally:
        stop(server)


def test_a_bug_is_a_logged_500_with_an_error_object_and_the_connection_goes_on(base_server, monkeypatch, caplog):
    import http.client

    def broken(*args, **kwargs):
        raise RuntimeError("a bug")

    monkeypatch.setattr(base_server.engine, "prompt_ids", broken)
    connection = http.client.HTTPConnection("127.0.0.1", base_server.port, timeout=30)
    headers = {"Authorization": f"Bearer {API_KEY}", "Content-Type": "application/json"}
    connection.request("POST", "/v1/completions", json.dumps(PROMPT), headers)
    answer = connection.getresponse()
    assert "RuntimeError" in error_of(answer.status, answer.read(), 500, "internal_error")
    assert [r.levelname for r in caplog.records if "a bug" in str(r.exc_info)] == ["ERROR"]  # logged once, with its traceback
    connection.request("GET", "/v1/chat/completions", headers=headers)  # the same connection serves on
    answer = connection.getresponse()
    error_of(answer.status, answer.read(), 405, "method_not_allowed")
    connection.close()
