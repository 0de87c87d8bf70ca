"""A soak of adapter isolation on loopback: three startup adapters and the base answer clients while other adapters are
loaded and unloaded, under reserved names (refused) and ordinary ones; zero 5xx, and every answer equals what that
adapter answers alone. PEFTLAB_ISOLATION_SOAK_SECONDS sets the length (20 s in the suite; the issue's run is 600)."""

from __future__ import annotations

import json
import os
import random
import threading
import time

from tests.serve.conftest import alone, post_raw

SOAK_SECONDS = float(os.environ.get("PEFTLAB_ISOLATION_SOAK_SECONDS", "20"))
TEXTS = ["Hello, how are you today?", "The quick brown fox", "#Person1#: Can I book a table for two?"]
MAX_TOKENS = 6
CLIENTS = 4


def test_adapters_come_and_go_under_reserved_and_ordinary_names_and_no_answer_changes(tiny_llama, lora_a, lora_b, ia3_c):
    from peftlab.serve.adapters import reserved_adapter_names
    from peftlab.serve.http import start, stop
    from peftlab.serve.launch import load_engine
    from peftlab.serve.limits import Limits

    adapters = {"a": lora_a, "b": lora_b, "c": ia3_c}
    server = start(load_engine(tiny_llama, list(adapters.items()), "fp32", "tiny"), "127.0.0.1", 0,
                   "test-key", Limits(max_tokens=64))
    prompts = [server.engine.prompt_ids(text) for text in TEXTS]
    expected = {(model, text): answer for model, folder in {"tiny": None, **adapters}.items()
                for text, answer in zip(TEXTS, alone(tiny_llama, folder, prompts, MAX_TOKENS))}
    guest_expected = dict(zip(TEXTS, alone(tiny_llama, ia3_c, prompts, MAX_TOKENS)))
    reserved = sorted(reserved_adapter_names())
    findings: list[str] = []
    counts = {"answers": 0, "loads": 0, "refused": 0, "unloads": 0}
    stop_at = time.monotonic() + SOAK_SECONDS

    def post(path: str, body: dict) -> tuple[int, dict | str]:
        status, _, raw, _ = post_raw(server.port, path, json.dumps(body).encode(), "test-key")
        try:
            return status, json.loads(raw)
        except ValueError:
            return status, raw.decode(errors="replace")

    def client(seed: int) -> None:
        rng = random.Random(seed)
        while time.monotonic() < stop_at:
            model, text = rng.choice(["tiny", *adapters]), rng.choice(TEXTS)
            status, body = post("/v1/completions", {"model": model, "prompt": text, "max_tokens": MAX_TOKENS})
            if status != 200 or body["choices"][0]["text"] != expected[model, text]:
                findings.append(f"{model} {text!r}: {status} {str(body)[:200]}")
            counts["answers"] += 1

    def churn() -> None:
        rng, serial = random.Random(99), 0
        while time.monotonic() < stop_at:
            name = rng.choice(["lora_A", "lora_B", "lora_dropout", rng.choice(reserved)])
            status, body = post("/v1/load_lora_adapter", {"lora_name": name, "lora_path": rng.choice([lora_a, ia3_c])})
            counts["refused"] += status == 400
            if status != 400:
                findings.append(f"load {name}: {status} {str(body)[:200]}")
            serial += 1
            guest = f"guest-{serial}"
            status, body = post("/v1/load_lora_adapter", {"lora_name": guest, "lora_path": ia3_c})
            if status != 200:
                findings.append(f"load {guest}: {status} {str(body)[:200]}")
                continue
            counts["loads"] += 1
            text = rng.choice(TEXTS)
            status, body = post("/v1/completions", {"model": guest, "prompt": text, "max_tokens": MAX_TOKENS})
            if status != 200 or body["choices"][0]["text"] != guest_expected[text]:
                findings.append(f"{guest}: {status} {str(body)[:200]}")
            status, body = post("/v1/unload_lora_adapter", {"lora_name": guest})
            counts["unloads"] += status == 200
            if status != 200:
                findings.append(f"unload {guest}: {status} {str(body)[:200]}")

    threads = [threading.Thread(target=client, args=(seed,)) for seed in range(CLIENTS)] + [threading.Thread(target=churn)]
    try:
        for thread in threads:
            thread.start()
        for thread in threads:
            thread.join(timeout=SOAK_SECONDS + 300)
        assert not any(thread.is_alive() for thread in threads), "a client hung"
    finally:
        stop(server)
    print(f"isolation soak {SOAK_SECONDS:.0f} s: {counts}")
    assert not findings, findings[:10]
    assert counts["answers"] > 0 and counts["loads"] > 0 and counts["refused"] > 0
