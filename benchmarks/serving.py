"""Serving under load: continuous batching vs static batching vs one request at a time, on one loaded model, in one run.

The base and four adapters are served (two LoRA, one IA3, one DoRA; random weights, so each
answers differently); requests spread over the five names, half of them streaming, greedy.
Prompts are DialogSum test dialogues in the training template; each request's max_tokens is the
token length of that dialogue's first reference summary. Closed loop: N clients each send their
next request when the last is answered. Open loop: requests arrive at Poisson times at a fixed
rate, whether or not earlier ones are done. For every mode and load: requests/s, output tokens/s,
time to first token and inter-token latency (p50, p95; from the streamed requests), and how many
answers equal the one-at-a-time answer to the same request (solo generation).
Run: python benchmarks/serving.py [--clients 1,8,32,64] [--rates 0.5,1] [--open-requests 24] [--rows 40]
"""

from __future__ import annotations

import argparse
import http.client
import json
import os
import platform
import random
import statistics
import sys
import tempfile
import threading
import time
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from pathlib import Path

from machine import write_results  # benchmarks/machine.py: the results file names its machine

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))
DIALOGSUM = ROOT.parent / "shared" / "data" / "dialogsum" / "test.jsonl"
MODES = ("continuous", "static", "one-at-a-time")


@dataclass
class Request:
    model: str
    row: int
    prompt: str
    max_tokens: int
    stream: bool

    @property
    def key(self) -> str:
        return f"{self.model}|{self.row}|{self.max_tokens}"


@dataclass
class Result:
    request: Request
    seconds: float = 0.0
    first_token_seconds: float | None = None
    gaps: list[float] = field(default_factory=list)  # between streamed content chunks
    text: str = ""
    tokens: int = 0
    status: int = 200


def save_adapters(engine, folder: Path) -> list[tuple[str, str]]:
    """Two random LoRA adapters, a random IA3 and a random DoRA adapter on the engine's base, saved as peft saves them."""
    import torch
    from peft import IA3Config, LoraConfig, get_peft_model

    from peftlab.serve.adapters import shared_weights_copy

    configs = {"support": LoraConfig(r=8, lora_alpha=16, target_modules=["q_proj", "v_proj"], init_lora_weights=False),
               "legal": LoraConfig(r=16, lora_alpha=16, target_modules=["q_proj", "k_proj", "v_proj", "o_proj"], init_lora_weights=False),
               "ia3": IA3Config(target_modules=["k_proj", "v_proj", "down_proj"], feedforward_modules=["down_proj"]),
               "dora": LoraConfig(r=8, lora_alpha=16, target_modules=["q_proj", "v_proj"], use_dora=True, init_lora_weights=False)}
    saved = []
    for seed, (name, config) in enumerate(configs.items()):
        torch.manual_seed(seed)
        model = get_peft_model(shared_weights_copy(engine.loaded.model), config)
        if name == "ia3":  # IA3 starts at the identity: scale its vectors so that it answers differently
            with torch.no_grad():
                for parameter_name, parameter in model.named_parameters():
                    if "ia3_l" in parameter_name:
                        parameter.copy_(1 + 0.5 * torch.randn_like(parameter))
        model.save_pretrained(folder / name)
        saved.append((name, str(folder / name)))
    return saved


def workload(rows: list[dict], tokenizer, models: list[str], count: int, seed: int) -> list[Request]:
    from peftlab.config import DEFAULT_TEMPLATE

    chooser = random.Random(seed)
    requests = []
    for i in range(count):
        index = chooser.randrange(len(rows))
        answer_tokens = len(tokenizer(rows[index]["summary1"])["input_ids"])
        requests.append(Request(models[i % len(models)], index, DEFAULT_TEMPLATE.format(prompt=rows[index]["dialogue"]),
                                max(4, min(answer_tokens, 96)), stream=i % 2 == 1))
    return requests


def ask(port: int, request: Request) -> Result:
    body = {"model": request.model, "messages": [{"role": "user", "content": request.prompt}], "max_tokens": request.max_tokens,
            "stream": request.stream, **({"stream_options": {"include_usage": True}} if request.stream else {})}
    result = Result(request)
    start = time.perf_counter()
    connection = http.client.HTTPConnection("127.0.0.1", port, timeout=3600)
    try:
        connection.request("POST", "/v1/chat/completions", json.dumps(body), {"Content-Type": "application/json"})
        answer = connection.getresponse()
        result.status = answer.status
        if answer.status != 200:
            result.text = answer.read().decode()[:200]
        elif not request.stream:
            data = json.loads(answer.read())
            result.text, result.tokens = data["choices"][0]["message"]["content"], data["usage"]["completion_tokens"]
        else:
            last = None
            while line := answer.readline():
                line = line.decode().strip()
                if not line.startswith("data: ") or line == "data: [DONE]":
                    continue
                event = json.loads(line[6:])
                if event.get("usage"):
                    result.tokens = event["usage"]["completion_tokens"]
                content = event["choices"][0]["delta"].get("content") if event.get("choices") else None
                if content:
                    now = time.perf_counter()
                    if last is None:
                        result.first_token_seconds = now - start
                    else:
                        result.gaps.append(now - last)
                    last = now
                    result.text += content
    finally:
        connection.close()
    result.seconds = time.perf_counter() - start
    return result


def closed_loop(port: int, clients: int, requests: list[Request]) -> tuple[list[Result], float]:
    """`clients` clients, each sending its next request as soon as its last one is answered."""
    lanes = [requests[c::clients] for c in range(clients)]
    start = time.perf_counter()
    with ThreadPoolExecutor(clients) as pool:
        results = [r for lane in pool.map(lambda lane: [ask(port, q) for q in lane], lanes) for r in lane]
    return results, time.perf_counter() - start


def open_loop(port: int, rate: float, requests: list[Request], seed: int) -> tuple[list[Result], float]:
    """Requests sent at Poisson arrival times (`rate` per second), each on its own connection."""
    chooser = random.Random(seed)
    results: list[Result] = []
    threads = []
    start = time.perf_counter()
    arrival = 0.0
    for request in requests:
        time.sleep(max(0.0, start + arrival - time.perf_counter()))
        thread = threading.Thread(target=lambda q=request: results.append(ask(port, q)))
        thread.start()
        threads.append(thread)
        arrival += chooser.expovariate(rate)
    for thread in threads:
        thread.join()
    return results, time.perf_counter() - start


def percentile(values: list[float], fraction: float) -> float | None:
    if not values:
        return None
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, int(fraction * len(ordered)))]


def summary(results: list[Result], seconds: float) -> dict:
    first = [r.first_token_seconds for r in results if r.first_token_seconds is not None]
    gaps = [gap for r in results for gap in r.gaps]
    return {"requests": len(results), "failed": sum(r.status != 200 for r in results), "seconds": seconds,
            "requests_per_second": len(results) / seconds, "output_tokens_per_second": sum(r.tokens for r in results) / seconds,
            "ttft_p50": percentile(first, 0.5), "ttft_p95": percentile(first, 0.95),
            "itl_p50": percentile(gaps, 0.5), "itl_p95": percentile(gaps, 0.95)}


def scheduler_for(mode: str, engine, max_batch_size: int, prefill_chunk_tokens: int):
    from peftlab.serve.scheduler import Scheduler
    from peftlab.serve.static import StaticScheduler

    if mode == "continuous":
        return Scheduler(engine, max_batch_size=max_batch_size, max_waiting=4096, prefill_chunk_tokens=prefill_chunk_tokens)
    return StaticScheduler(engine, max_batch_size=max_batch_size if mode == "static" else 1, max_waiting=4096)


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--clients", default="1,8,32,64", help="closed-loop levels")
    parser.add_argument("--rates", default="0.5,1", help="open-loop arrival rates, requests per second")
    parser.add_argument("--open-requests", type=int, default=24, help="requests per open-loop rate")
    parser.add_argument("--min-requests", type=int, default=8, help="closed loop: at least this many requests per level")
    parser.add_argument("--rows", type=int, default=40, help="DialogSum test rows the prompts are drawn from")
    parser.add_argument("--max-batch-size", type=int, default=32)
    parser.add_argument("--prefill-chunk-tokens", type=int, default=256, help="continuous batching's prefill budget per step")
    parser.add_argument("--modes", default=",".join(MODES))
    parser.add_argument("--json", default=str(ROOT / "benchmarks" / "results" / "serving.json"))
    parser.add_argument("--data", default=str(DIALOGSUM), help="rows with a dialogue and a summary (default: DialogSum's test set)")
    args = parser.parse_args()
    if not Path(args.data).is_file():
        print(f"test data not found at {args.data} (DialogSum lives in ../shared/data/dialogsum beside the repository)")
        return 2

    import torch

    from peftlab.serve.http import start, stop
    from peftlab.serve.launch import load_engine

    rows = [json.loads(line) for line in Path(args.data).read_text(encoding="utf-8").splitlines()][:args.rows]
    engine = load_engine(None, [], "fp32")
    with tempfile.TemporaryDirectory() as tmp:
        for name, folder in save_adapters(engine, Path(tmp)):
            engine.add_adapter(name, folder)
    models = list(engine.models)
    tokenizer = engine.loaded.tokenizer
    loads = [("closed", int(n)) for n in args.clients.split(",") if n] + [("open", float(r)) for r in args.rates.split(",") if r]
    plans = {load: workload(rows, tokenizer, models, max(args.min_requests, load[1]) if load[0] == "closed" else args.open_requests,
                            seed=i) for i, load in enumerate(loads)}
    modes = [mode for mode in MODES if mode in args.modes.split(",")]
    runs: dict[str, dict[str, dict]] = {mode: {} for mode in modes}
    answers: dict[str, dict[str, str]] = {mode: {} for mode in modes}
    for mode in modes:
        server = start(engine, "127.0.0.1", 0, scheduler=scheduler_for(mode, engine, args.max_batch_size, args.prefill_chunk_tokens))
        port = server.port
        ask(port, Request(models[0], 0, "Hello", 4, False))  # warm-up
        for load in loads:
            kind, amount = load
            if kind == "closed":
                results, seconds = closed_loop(port, int(amount), plans[load])
            else:
                results, seconds = open_loop(port, amount, plans[load], seed=7)
            label = f"{kind} {amount:g}{' clients' if kind == 'closed' else '/s'}"
            runs[mode][label] = summary(results, seconds)
            answers[mode].update({r.request.key: r.text for r in results if r.status == 200})
            print(f"  {mode:<14} {label:<12} {runs[mode][label]['output_tokens_per_second']:7.1f} tokens/s", flush=True)
        stop(server)

    solo = answers.get("one-at-a-time", {})
    same = {mode: sum(text == solo.get(key) for key, text in answers[mode].items()) for mode in modes}
    print(f"\nmodel: {engine.loaded.spec} (fp32), names: {', '.join(models)}; {torch.get_num_threads()} torch threads, "
          f"{os.cpu_count()} cores; prompts and answer lengths from {len(rows)} DialogSum test rows")
    header = f"{'load':<12} | {'mode':<14} | {'req/s':>6} | {'out tok/s':>9} | {'TTFT p50':>8} | {'TTFT p95':>8} | {'ITL p50':>7} | {'ITL p95':>7}"
    print(header)
    print("-" * len(header))

    def cell(value: float | None, digits: int = 2) -> str:
        return "-" if value is None else f"{value:.{digits}f}"

    for label in runs[modes[0]]:
        for mode in modes:
            r = runs[mode][label]
            print(f"{label:<12} | {mode:<14} | {r['requests_per_second']:>6.2f} | {r['output_tokens_per_second']:>9.1f} | "
                  f"{cell(r['ttft_p50']):>8} | {cell(r['ttft_p95']):>8} | {cell(r['itl_p50'], 3):>7} | {cell(r['itl_p95'], 3):>7}")
    for mode in modes:
        print(f"answers equal to solo generation, {mode}: {same[mode]}/{len(answers[mode])}")
    result = {"model": engine.loaded.spec, "dtype": "fp32", "models": models, "rows": len(rows), "max_batch_size": args.max_batch_size,
              "prefill_chunk_tokens": args.prefill_chunk_tokens,
              "answers_equal_to_solo": same, "answers": {mode: len(answers[mode]) for mode in modes},
              "machine": {"cpus": os.cpu_count(), "torch_threads": torch.get_num_threads(), "platform": platform.platform(),
                          "torch": torch.__version__},
              "runs": runs}
    write_results(args.json, result)
    print(f"written: {args.json}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
