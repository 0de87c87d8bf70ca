"""A bounded soak on loopback: minutes of mixed traffic (streams, disconnects, malformed and oversized requests, adapters
loaded and unloaded, the official openai client); zero 5xx, and threads and memory return to their baseline."""

from __future__ import annotations

import gc
import json
import os
import random
import shutil
import socket
import threading
import time

import pytest

from tests.serve.conftest import API_KEY, exchange, openai_client, post_raw
from tests.serve.test_load import rss_bytes

openai = pytest.importorskip("openai")

SOAK_SECONDS = float(os.environ.get("PEFTLAB_SOAK_SECONDS", "150"))
CLIENTS = 10
TEXTS = ["Hello, how are you today?", "#Person1#: Can I book a table for two? #Person2#: Sure, under what name?",
         "The quick brown fox", "Summarize the following conversation. Summary:"]


def chat(model: str, stream: bool, max_tokens: int, text: str) -> bytes:
    return json.dumps({"model": model, "messages": [{"role": "user", "content": text}], "max_tokens": max_tokens,
                       "stream": stream}).encode()


def walk_away(port: int, body: bytes, after_bytes: int) -> None:
    """Send a request and close the connection after reading `after_bytes` of the answer (0: at once)."""
    with socket.create_connection(("127.0.0.1", port), timeout=30) as sock:
        sock.sendall(f"POST /v1/chat/completions HTTP/1.1\r\nHost: t\r\nAuthorization: Bearer {API_KEY}\r\n"
                     f"Content-Length: {len(body)}\r\n\r\n".encode() + body)
        if after_bytes:
            sock.recv(after_bytes)


class Traffic:
    """One client's mix of requests; every HTTP status it sees is counted."""

    def __init__(self, port: int, seed: int, stop_at: float, statuses: list[int], errors: list[str], extra: str):
        self.port, self.random, self.stop_at, self.extra = port, random.Random(seed), stop_at, extra
        self.statuses, self.errors = statuses, errors
        self.client = openai_client(f"http://127.0.0.1:{port}/v1", timeout=120)

    def run(self) -> None:
        actions = [self.normal, self.normal, self.normal, self.with_openai, self.streamed_then_gone, self.gone_at_once,
                   self.malformed, self.oversized, self.wrong_key, self.on_demand, self.load_and_unload]
        while time.monotonic() < self.stop_at:
            try:
                self.random.choice(actions)()
            except Exception as error:  # a client-side failure is a finding too
                self.errors.append(f"{type(error).__name__}: {error}")

    def post(self, path: str, body: bytes, key: str = API_KEY) -> None:
        self.statuses.append(post_raw(self.port, path, body, key)[0])

    def normal(self) -> None:
        model = self.random.choice(["tiny", "a", "b", "c"])
        self.post("/v1/chat/completions", chat(model, self.random.random() < 0.5, self.random.randint(1, 24), self.random.choice(TEXTS)))

    def with_openai(self) -> None:
        answer = self.client.completions.create(model=self.random.choice(["tiny", "a"]), prompt=self.random.choice(TEXTS),
                                                max_tokens=8, stop=["\n"])
        self.statuses.append(200 if answer.choices else 0)

    def streamed_then_gone(self) -> None:
        walk_away(self.port, chat("b", True, 200, TEXTS[1]), after_bytes=200)

    def gone_at_once(self) -> None:
        walk_away(self.port, chat("c", False, 200, TEXTS[0]), after_bytes=0)

    def malformed(self) -> None:
        body = self.random.choice([b"{not json", b"[" * 100_000, b'{"model": "tiny", "prompt": "\\ud800"}',
                                   b'{"model": "tiny", "prompt": "x", "max_tokens": ' + b"9" * 5000 + b"}",
                                   b'{"model": "tiny", "prompt": "x", "stop": ["' + b"s" * 250_000 + b'"]}',
                                   json.dumps({"model": "tiny", "prompt": ["x"] * 1100}).encode()])
        self.post("/v1/completions", body)

    def oversized(self) -> None:
        self.post("/v1/completions", json.dumps({"model": "tiny", "prompt": "x" * 70_000}).encode())

    def wrong_key(self) -> None:
        self.post("/v1/completions", chat("tiny", False, 4, "hi"), key="wrong")

    def on_demand(self) -> None:  # loaded from --adapter-dir on first use, evicted when others need the room
        self.post("/v1/chat/completions", chat(self.random.choice(["spare-1", "spare-2"]), False, 6, TEXTS[2]))

    def load_and_unload(self) -> None:
        name = f"extra-{self.random.randint(0, 1)}"
        self.post("/v1/load_lora_adapter", json.dumps({"lora_name": name, "lora_path": self.extra}).encode())
        self.post("/v1/unload_lora_adapter", json.dumps({"lora_name": name}).encode())


def test_soak_mixed_traffic_gives_no_5xx_and_returns_to_baseline(tiny_llama, lora_a, lora_b, ia3_c, tmp_path):
    from peftlab.serve.http import start, stop
    from peftlab.serve.launch import load_engine
    from peftlab.serve.limits import Limits

    for name, folder in (("spare-1", lora_b), ("spare-2", ia3_c)):
        shutil.copytree(folder, tmp_path / name)
    engine = load_engine(tiny_llama, [("a", lora_a), ("b", lora_b), ("c", ia3_c)], "fp32", "tiny")
    server = start(engine, "127.0.0.1", 0, API_KEY, Limits(max_body_bytes=64 * 1024, max_tokens=256, idle_timeout_seconds=2),
                   max_batch_size=16, adapter_dir=str(tmp_path), max_adapters=6)
    try:
        def soak(seconds: float) -> tuple[list[int], list[str]]:
            statuses: list[int] = []
            errors: list[str] = []
            stop_at = time.monotonic() + seconds
            clients = [threading.Thread(target=Traffic(server.port, seed, stop_at, statuses, errors, lora_a).run) for seed in range(CLIENTS)]
            for client in clients:
                client.start()
            for client in clients:
                client.join(timeout=seconds + 300)
            return statuses, errors

        soak(10)  # warm-up: pools, caches and thread stacks reach their working size
        settle(server)
        threads, memory = threading.active_count(), rss_bytes()
        statuses, errors = soak(SOAK_SECONDS)
        settle(server)
        assert statuses and not [s for s in statuses if s >= 500], sorted(set(statuses))
        assert {200, 400, 401, 413} <= set(statuses), sorted(set(statuses))
        assert not errors, errors[:5]
        wait_until(lambda: threading.active_count() <= threads, seconds=20, message="threads were left behind")
        assert rss_bytes() - memory < 64 * 2**20, f"memory grew by {(rss_bytes() - memory) / 2**20:.0f} MiB"
        assert exchange(server.port, f"GET /health HTTP/1.1\r\nHost: t\r\nAuthorization: Bearer {API_KEY}\r\n\r\n".encode())[0] == 200
    finally:
        stop(server)


def wait_until(condition, seconds: float, message: str) -> None:
    """Idle worker threads of a pool retire on their own schedule (anyio's after 10 s): allow them that long."""
    deadline = time.monotonic() + seconds
    while not condition():
        assert time.monotonic() < deadline, message
        time.sleep(0.1)


def settle(server) -> None:
    """Wait until the scheduler is idle and idle connections have timed out, then collect garbage."""
    deadline = time.monotonic() + 60
    scheduler = server.scheduler
    while scheduler.waiting or scheduler.prefills or scheduler.batches or scheduler.adapters.loading or scheduler.adapters.unloading:
        assert time.monotonic() < deadline, "the scheduler never went idle"
        time.sleep(0.05)
    time.sleep(3)  # past the 2 s idle timeout
    gc.collect()
