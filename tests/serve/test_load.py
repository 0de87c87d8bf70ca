"""A bounded load test on loopback: 32 concurrent clients mixing base, LoRA and IA3 models, streaming and not."""

from __future__ import annotations

import gc
import http.client
import json
import threading
from concurrent.futures import ThreadPoolExecutor
from urllib.parse import urlparse

from tests.serve.conftest import API_KEY, alone

CLIENTS = 32
MAX_TOKENS = 16
PROMPTS = ["Hello, how are you today?", "The quick brown fox jumps", "#Person1#: Can I book a table for two?",
           "Summarize the following conversation.", "#Person2#: Sure, under what name?", "0123456789 !?",
           "I am fine, thank you. And you?", "Person1 and Person2 talk about the weather."]
MODELS = ["tiny", "a", "b", "c"]


def rss_bytes() -> int:
    with open("/proc/self/status", encoding="ascii") as status:
        return next(int(line.split()[1]) * 1024 for line in status if line.startswith("VmRSS:"))


def ask(url: str, model: str, prompt: str, stream: bool) -> tuple[int, str]:
    """One chat request over its own connection; returns (HTTP status, answer text)."""
    body = {"model": model, "messages": [{"role": "user", "content": prompt}], "max_tokens": MAX_TOKENS, "stream": stream}
    parts = urlparse(url)
    connection = http.client.HTTPConnection(parts.hostname, parts.port, timeout=120)
    try:
        connection.request("POST", "/v1/chat/completions", json.dumps(body),
                           {"Authorization": f"Bearer {API_KEY}", "Content-Type": "application/json"})
        answer = connection.getresponse()
        if answer.status != 200:
            return answer.status, answer.read().decode()
        if not stream:
            return 200, json.loads(answer.read())["choices"][0]["message"]["content"]
        events = [line[6:] for line in answer.read().decode().splitlines() if line.startswith("data: ")]
        assert events[-1] == "[DONE]"
        return 200, "".join(json.loads(e)["choices"][0]["delta"].get("content") or "" for e in events[:-1])
    finally:
        connection.close()


def workload(round_: int) -> list[tuple[str, str, bool]]:
    """CLIENTS requests: every model, every prompt, half of them streaming."""
    return [(MODELS[(i + round_) % 4], PROMPTS[i % len(PROMPTS)], (i // 4) % 2 == 0) for i in range(CLIENTS)]


def test_32_concurrent_clients_get_what_each_request_gets_alone(served, tiny_llama, lora_a, lora_b, ia3_c):
    url, server = served
    engine = server.engine
    ids = {p: engine.prompt_ids("", [{"role": "user", "content": p}]) for p in PROMPTS}
    adapters = {"tiny": None, "a": lora_a, "b": lora_b, "c": ia3_c}
    expected = {(m, p): text for m in MODELS for p, text in zip(PROMPTS, alone(tiny_llama, adapters[m], [ids[p] for p in PROMPTS], MAX_TOKENS))}

    def run_round(round_: int) -> list[tuple[int, str, tuple]]:
        start = threading.Barrier(CLIENTS)

        def client(request):
            start.wait(timeout=60)  # all clients send at once
            return (*ask(url, *request), request)

        with ThreadPoolExecutor(CLIENTS) as pool:
            return [future.result(timeout=300) for future in [pool.submit(client, r) for r in workload(round_)]]

    run_round(0)  # warm-up: allocator pools and thread stacks reach their working size
    gc.collect()
    before, largest_before = rss_bytes(), server.scheduler.largest_batch
    server.scheduler.largest_batch = 0
    results = [result for round_ in (1, 2) for result in run_round(round_)]
    gc.collect()
    after = rss_bytes()

    assert [status for status, _, _ in results] == [200] * len(results)  # zero 5xx, zero 4xx
    wrong = [(request, text, expected[request[:2]]) for _, text, request in results if text != expected[request[:2]]]
    assert not wrong, wrong[:3]
    assert server.scheduler.largest_batch >= 8, f"at most {server.scheduler.largest_batch} rows decoded together: requests were not batched"
    assert after - before < 64 * 2**20, f"memory grew by {(after - before) / 2**20:.0f} MiB under load"
