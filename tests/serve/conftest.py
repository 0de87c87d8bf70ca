"""Fixtures for serving tests: tiny adapters of several methods on the tiny Llama, and a running server on loopback."""

from __future__ import annotations

import time

import pytest

from peftlab.serve.jobs import Job

from tests.conftest import TOY_ROWS, write_jsonl
from tests.tiny_models import train_tiny

API_KEY = "test-key"


def openai_client(base_url: str, timeout: float, keepalive_seconds: float = 0.5):
    """The official openai client, its pooled connections dropped after `keepalive_seconds` idle. A client must drop them
    before the server's idle timeout does: otherwise the server's close can cross the client's next request on that
    connection (the soak test, with a 2 s server timeout and the client's default 5 s, saw one APIConnectionError so)."""
    import openai

    limits = type(openai.DEFAULT_CONNECTION_LIMITS)(max_connections=100, max_keepalive_connections=20, keepalive_expiry=keepalive_seconds)
    return openai.OpenAI(base_url=base_url, api_key=API_KEY, max_retries=0, timeout=timeout,
                         http_client=openai.DefaultHttpxClient(limits=limits))


def train_adapter(model: str | None, folder, *settings: str) -> str:
    data = write_jsonl(folder / "toy.jsonl", TOY_ROWS * 2)
    train_tiny(model, data, folder / "run", "train.max_steps=4", "train.lr=0.03", *settings)
    return str(folder / "run" / "adapter")


@pytest.fixture(scope="session")
def lora_a(tiny_llama, tmp_path_factory) -> str:
    return train_adapter(tiny_llama, tmp_path_factory.mktemp("lora-a"))


@pytest.fixture(scope="session")
def lora_b(tiny_llama, tmp_path_factory) -> str:
    return train_adapter(tiny_llama, tmp_path_factory.mktemp("lora-b"), "train.seed=7", "lora.r=8", "train.lr=0.05")


@pytest.fixture(scope="session")
def ia3_c(tiny_llama, tmp_path_factory) -> str:
    # IA3's vectors start at 1: a larger rate makes its answers clearly its own
    return train_adapter(tiny_llama, tmp_path_factory.mktemp("ia3-c"), "method=ia3", "train.lr=0.3")


@pytest.fixture(scope="session")
def served(tiny_llama, lora_a, lora_b, ia3_c):
    """A server on 127.0.0.1 (free port) with the base 'tiny', LoRA 'a' and 'b', IA3 'c'; yields (base_url, server)."""
    from peftlab.serve.http import start, stop
    from peftlab.serve.launch import load_engine
    from peftlab.serve.limits import Limits

    engine = load_engine(tiny_llama, [("a", lora_a), ("b", lora_b), ("c", ia3_c)], "fp32", "tiny")
    server = start(engine, "127.0.0.1", 0, API_KEY, Limits(max_body_bytes=64 * 1024, max_tokens=64), max_batch_size=32)
    yield f"http://127.0.0.1:{server.port}", server
    stop(server)


def alone(model_path: str, adapter: str | None, prompts: list[list[int]], max_tokens: int) -> list[str]:
    """What base (+ adapter) answers to each prompt on its own: a fresh model, greedy, one prompt at a time, no server."""
    import torch

    from peftlab.generation import load_for_generation

    loaded = load_for_generation(model_path, "fp32", adapter)
    answers = []
    for ids in prompts:
        with torch.inference_mode():
            out = loaded.model.generate(input_ids=torch.tensor([ids]), max_new_tokens=max_tokens, do_sample=False,
                                        pad_token_id=loaded.tokenizer.pad_token_id)
        answers.append(loaded.tokenizer.decode(out[0, len(ids):], skip_special_tokens=True))
    return answers


@pytest.fixture(scope="module")
def base_server(tiny_llama):
    """The base 'tiny' alone, default limits but a 1 s idle timeout and max_tokens 256; yields the server (server.port)."""
    from peftlab.serve.http import start, stop
    from peftlab.serve.launch import load_engine
    from peftlab.serve.limits import Limits

    server = start(load_engine(tiny_llama, [], "fp32", "tiny"), "127.0.0.1", 0, API_KEY, Limits(idle_timeout_seconds=1.0, max_tokens=256))
    yield server
    stop(server)


def exchange(port: int, raw: bytes, timeout: float = 30) -> tuple[int, dict[str, str], bytes, bool]:
    """Send raw bytes on a fresh connection; (status, headers, body, whether the server then closed the connection)."""
    import http.client
    import socket

    with socket.create_connection(("127.0.0.1", port), timeout=timeout) as sock:
        sock.sendall(raw)
        answer = http.client.HTTPResponse(sock)
        answer.begin()
        body = answer.read()
        sock.settimeout(0.5)  # closing follows the answer at once; base_server's idle deadline comes only after 1 s
        try:
            closed = sock.recv(1) == b""
        except (socket.timeout, ConnectionResetError):
            closed = False
        return answer.status, {name.lower(): value for name, value in answer.getheaders()}, body, closed


def post_raw(port: int, path: str, body: bytes, key: str = API_KEY, extra: str = "") -> tuple[int, dict[str, str], bytes, bool]:
    head = (f"POST {path} HTTP/1.1\r\nHost: test\r\nAuthorization: Bearer {key}\r\nContent-Type: application/json\r\n"
            f"Content-Length: {len(body)}\r\nConnection: close\r\n{extra}\r\n")
    return exchange(port, head.encode() + body)


@pytest.fixture
def slow_tokens(monkeypatch):
    """Every generated token takes 20 ms more, and each job's finish reason is recorded: (job, reason) pairs."""
    finished: list[tuple[Job, str]] = []
    on_token, finish = Job.on_token, Job.finish

    def slow_on_token(job, token_id, eos_ids):
        time.sleep(0.02)
        return on_token(job, token_id, eos_ids)

    def recorded_finish(job, reason):
        if not job.done:
            finished.append((job, reason))
        finish(job, reason)

    monkeypatch.setattr(Job, "on_token", slow_on_token)
    monkeypatch.setattr(Job, "finish", recorded_finish)
    return finished


def wait_for(condition, seconds: float = 30) -> None:
    deadline = time.monotonic() + seconds
    while not condition():
        assert time.monotonic() < deadline, "timed out"
        time.sleep(0.01)
