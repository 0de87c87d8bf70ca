"""Serving speed: requests/s and p50/p95 latency for 1, 8 and 32 concurrent clients, batched vs one at a time, in one run.

One base model and two LoRA adapters in memory (random, untrained LoRA weights unless --adapter
is given, so each adapter answers differently); clients on 127.0.0.1 send chat requests that
cycle through base and adapters, all greedy. The same engine is served twice: with the batching
scheduler (--max-batch-size) and with batches of one. The script checks both give the same
answers, prints a table and writes JSON.
Run: python benchmarks/serving.py [--model MODEL] [--clients 1,8,32] [--requests-per-client 1] [--max-tokens 16]
"""

from __future__ import annotations

import argparse
import http.client
import json
import os
import platform
import statistics
import sys
import tempfile
import threading
import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))
PROMPTS_FILE = ROOT / "peftlab" / "demo" / "data" / "test.jsonl"


def random_lora(model_path: str, folder: Path, seed: int) -> str:
    """A LoRA adapter with random A and B (peft's init_lora_weights=False): it changes the answers without training."""
    import torch
    from peft import LoraConfig, get_peft_model
    from transformers import AutoModelForCausalLM

    torch.manual_seed(seed)
    model = AutoModelForCausalLM.from_pretrained(model_path, dtype=torch.float32)
    peft_model = get_peft_model(model, LoraConfig(r=8, lora_alpha=8, target_modules=["q_proj", "v_proj"], init_lora_weights=False))
    peft_model.save_pretrained(folder)
    return str(folder)


def ask(port: int, model: str, prompt: str, max_tokens: int, stream: bool) -> tuple[float, str, int]:
    """One chat request; returns (seconds, answer, completion tokens)."""
    body = {"model": model, "messages": [{"role": "user", "content": prompt}], "max_tokens": max_tokens, "stream": stream,
            "stream_options": {"include_usage": True} if stream else None}
    start = time.perf_counter()
    connection = http.client.HTTPConnection("127.0.0.1", port, timeout=600)
    try:
        connection.request("POST", "/v1/chat/completions", json.dumps(body), {"Content-Type": "application/json"})
        answer = connection.getresponse()
        raw = answer.read().decode()
        if answer.status != 200:
            raise RuntimeError(f"HTTP {answer.status}: {raw[:200]}")
    finally:
        connection.close()
    if not stream:
        data = json.loads(raw)
        return time.perf_counter() - start, data["choices"][0]["message"]["content"], data["usage"]["completion_tokens"]
    events = [json.loads(line[6:]) for line in raw.splitlines() if line.startswith("data: ") and line != "data: [DONE]"]
    text = "".join(e["choices"][0]["delta"].get("content") or "" for e in events if e["choices"])
    return time.perf_counter() - start, text, events[-1]["usage"]["completion_tokens"]


def level(port: int, clients: int, per_client: int, models: list[str], prompts: list[str], max_tokens: int) -> dict:
    """`clients` concurrent clients, each sending `per_client` requests back to back."""
    def client(c: int) -> list[tuple]:
        out = []
        for r in range(per_client):
            i = c * per_client + r
            request = (models[i % len(models)], prompts[i % len(prompts)])
            out.append((request, *ask(port, *request, max_tokens, stream=i % 2 == 1)))
        return out

    start = time.perf_counter()
    with ThreadPoolExecutor(clients) as pool:
        results = [item for future in [pool.submit(client, c) for c in range(clients)] for item in future.result()]
    wall = time.perf_counter() - start
    latencies = sorted(seconds for _, seconds, _, _ in results)
    return {"clients": clients, "requests": len(results), "seconds": wall, "requests_per_second": len(results) / wall,
            "completion_tokens_per_second": sum(n for *_, n in results) / wall,
            "p50_seconds": statistics.median(latencies), "p95_seconds": latencies[min(len(latencies) - 1, int(0.95 * len(latencies)))],
            "answers": {f"{m}|{p}": text for (m, p), _, text, _ in results}}


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--model", help="default: the embedded SmolLM2-135M-Instruct")
    parser.add_argument("--adapter", action="append", default=[], metavar="NAME=DIR", help="default: two random LoRA adapters")
    parser.add_argument("--dtype", default="fp32", choices=["fp32", "bf16"], help="fp32: batched and single answers agree exactly")
    parser.add_argument("--clients", default="1,8,32")
    parser.add_argument("--requests-per-client", type=int, default=1)
    parser.add_argument("--min-requests", type=int, default=4, help="per level: a single client sends this many back to back")
    parser.add_argument("--max-tokens", type=int, default=16)
    parser.add_argument("--max-batch-size", type=int, default=32)
    parser.add_argument("--json", default=str(ROOT / "benchmarks" / "results" / "serving.json"))
    args = parser.parse_args()

    import torch

    from peftlab import atomic
    from peftlab.config import DEFAULT_TEMPLATE
    from peftlab.serve.http import start, stop
    from peftlab.serve.launch import load_engine, parse_adapters

    rows = [json.loads(line) for line in PROMPTS_FILE.read_text(encoding="utf-8").splitlines()]
    prompts = [DEFAULT_TEMPLATE.format(prompt=row["dialogue"]) for row in rows]
    with tempfile.TemporaryDirectory() as tmp:
        adapters = parse_adapters(args.adapter)
        if not adapters:
            from peftlab.models import resolve_source

            path = resolve_source(args.model)[1]
            adapters = [(name, random_lora(path, Path(tmp) / name, seed)) for seed, name in enumerate(["support", "legal"])]
        engine = load_engine(args.model, adapters, args.dtype)
    models = list(engine.models)
    levels = [int(n) for n in args.clients.split(",")]
    runs: dict[str, list[dict]] = {}
    for mode, batch_size in (("batched", args.max_batch_size), ("one-at-a-time", 1)):
        server = start(engine, "127.0.0.1", 0, max_batch_size=batch_size)
        port = server.port
        ask(port, models[0], prompts[0], 4, False)  # warm-up
        runs[mode] = []
        for clients in levels:
            per_client = max(args.requests_per_client, -(-args.min_requests // clients))
            result = level(port, clients, per_client, models, prompts, args.max_tokens)
            result["mean_batch_size"] = server.scheduler.batched_jobs / max(1, server.scheduler.batches)
            runs[mode].append(result)
            print(f"  {mode:<14} {clients:>3} clients: {result['requests_per_second']:.2f} requests/s", flush=True)
        stop(server)

    pairs = [(answer, single["answers"].get(key)) for batched, single in zip(runs["batched"], runs["one-at-a-time"])
             for key, answer in batched["answers"].items()]
    same, total = sum(a == b for a, b in pairs), len(pairs)
    print(f"\nmodel: {engine.loaded.spec} ({args.dtype}); served names: {', '.join(models)}; {args.max_tokens} new tokens per request; "
          f"{torch.get_num_threads()} torch threads on {os.cpu_count()} cores")
    print(f"{'clients':>7} | {'mode':<14} | {'requests/s':>10} | {'tokens/s':>8} | {'p50 s':>6} | {'p95 s':>6} | {'speed-up':>8}")
    print("-" * 78)
    for i, clients in enumerate(levels):
        for mode in runs:
            r = runs[mode][i]
            ratio = r["requests_per_second"] / runs["one-at-a-time"][i]["requests_per_second"]
            print(f"{clients:>7} | {mode:<14} | {r['requests_per_second']:>10.2f} | {r['completion_tokens_per_second']:>8.1f} | "
                  f"{r['p50_seconds']:>6.2f} | {r['p95_seconds']:>6.2f} | {ratio:>7.2f}x")
    print(f"identical answers batched vs one at a time: {same}/{total}")
    for mode in runs:
        for r in runs[mode]:
            r.pop("answers")
    result = {"model": engine.loaded.spec, "dtype": args.dtype, "max_tokens": args.max_tokens, "models": models,
              "requests_per_client": args.requests_per_client, "identical_answers": same, "answers_compared": total,
              "machine": {"cpus": os.cpu_count(), "torch_threads": torch.get_num_threads(), "platform": platform.platform(),
                          "torch": torch.__version__},
              "runs": runs}
    atomic.write_text(args.json, json.dumps(result, indent=2) + "\n")
    print(f"written: {args.json}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
