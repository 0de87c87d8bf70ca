"""Check every peftlab command on an NVIDIA GPU: train (LoRA, QLoRA; the default model and a random ~1B Llama), eval,
compare, serve, export and check, against the GPU's own bf16 limit and TRL's SFTTrainer, measured in the same run.

    python benchmarks/gpu_check.py [--data TRAIN.jsonl] [--test-data TEST.jsonl] [--rows 64] [--steps 20] [--quick]

- **limit**: the GPU's bf16 matmul rate (an 8192^3 product, best of five) measured first; each training run's share
  of it is its real tokens/s times its FLOPs per real token (benchmarks/train_speed.py's count for LoRA on a frozen
  base) over that rate.
- **train**: `peftlab train --device cuda` in its own process for lora and qlora (4-bit NF4 through bitsandbytes'
  CUDA kernels) on the default model (SmolLM2-135M) and on a random-weight Llama of about 1.1B parameters built here
  from a config (TinyLlama's shape; no download): tokens/s, peak GPU memory (torch.cuda.max_memory_allocated), the
  share of the limit, whether the loss falls; plus the same LoRA recipe through TRL's SFTTrainer (bf16 autocast) on
  the default model (benchmarks/train_speed.py's runner; needs DialogSum and `trl`).
- **eval**: the LoRA adapter and the base on the test rows, batched generation, summaries/s.
- **compare**: base, lora and ia3 with a small step budget.
- **serve**: benchmarks/serving.py's closed loop with 32 clients (continuous and static batching, identical answers).
- **export and check**: merge, GGUF f16, the vLLM folder, `peftlab check` (the adapter, the merged model).
- **vLLM** (when `import vllm` works): serve.sh from the export started, `peftlab check --server` against it.

Every step runs as the user would run it (the CLI in a subprocess); a failed step is recorded with its last line
and the script exits 1. Writes benchmarks/results/gpu_check.json with the machine. Without a CUDA GPU it says so in
one line and exits 2.
"""

from __future__ import annotations

import argparse
import json
import os
import shlex
import signal
import subprocess
import sys
import time
import urllib.request
from pathlib import Path

from machine import write_results  # benchmarks/machine.py: the results file names its machine

ROOT = Path(__file__).resolve().parents[1]
DIALOGSUM = ROOT.parent / "shared" / "data" / "dialogsum"
DEMO = ROOT / "peftlab" / "demo" / "data"
# TinyLlama-1.1B's shape with the default model's vocabulary (its tokenizer is reused): about 1.1B parameters
BIG_LLAMA = {"hidden_size": 2048, "intermediate_size": 5632, "num_hidden_layers": 22, "num_attention_heads": 32,
             "num_key_value_heads": 4, "max_position_embeddings": 2048}


def peftlab(*args: str, timeout: int = 3600) -> tuple[bool, str, float]:
    """Run `python -m peftlab ARGS`: (succeeded, its output's last line, seconds)."""
    start = time.perf_counter()
    done = subprocess.run([sys.executable, "-m", "peftlab", *args], capture_output=True, text=True, timeout=timeout, cwd=ROOT)
    lines = (done.stdout if done.returncode == 0 else done.stdout + done.stderr).strip().splitlines() or [""]
    return done.returncode == 0, lines[-1], time.perf_counter() - start


def bf16_limit(size: int = 8192, repeats: int = 5) -> float:
    """bf16 matmul FLOP/s of this GPU, best of `repeats` after a warm-up."""
    import torch

    a = torch.randn(size, size, dtype=torch.bfloat16, device="cuda")
    b = torch.randn(size, size, dtype=torch.bfloat16, device="cuda")
    torch.matmul(a, b)
    torch.cuda.synchronize()
    best = float("inf")
    for _ in range(repeats):
        start = time.perf_counter()
        torch.matmul(a, b)
        torch.cuda.synchronize()
        best = min(best, time.perf_counter() - start)
    return 2 * size ** 3 / best


def build_big_llama(folder: Path) -> str:
    """A random-weight Llama of about 1.1B parameters in bf16 with the default model's tokenizer, saved to `folder`."""
    import torch
    from transformers import LlamaConfig, LlamaForCausalLM

    from peftlab.models.loading import load_tokenizer, resolve_source

    if (folder / "config.json").is_file():
        return str(folder)
    tokenizer = load_tokenizer(resolve_source(None)[1])
    config = LlamaConfig(vocab_size=len(tokenizer), bos_token_id=tokenizer.bos_token_id, eos_token_id=tokenizer.eos_token_id,
                         pad_token_id=tokenizer.pad_token_id, tie_word_embeddings=False, **BIG_LLAMA)
    torch.manual_seed(0)
    with torch.device("cuda"):
        model = LlamaForCausalLM(config).to(torch.bfloat16)
    model.save_pretrained(folder)
    tokenizer.save_pretrained(folder)
    del model
    torch.cuda.empty_cache()
    return str(folder)


def flops_per_token(model: str | None, data: str, rows: int) -> float:
    """train_speed.py's FLOPs per real token for LoRA on a frozen base, from the rows' mean length and answer share."""
    from train_speed import flops_per_token as count
    from transformers import AutoConfig

    from peftlab.config import RunConfig
    from peftlab.data.tokenize import uses_chat_template
    from peftlab.models.loading import load_tokenizer, resolve_source
    from peftlab.train.recipe import load_tokenized

    path = resolve_source(model)[1]
    tokenizer = load_tokenizer(path)
    config = RunConfig()
    config.data.max_samples = rows
    features = load_tokenized(data, config, tokenizer, False, uses_chat_template(tokenizer, "auto", False)).features
    lengths = [len(f["input_ids"]) for f in features]
    answers = sum(sum(1 for label in f["labels"] if label != -100) for f in features)
    return count(AutoConfig.from_pretrained(path), sum(lengths) / len(lengths), answers / sum(lengths))


def train(name: str, model: str | None, method: str, args: argparse.Namespace, out: Path, limit: float) -> dict:
    folder = out / name
    settings = ["--set", "qlora.r=16"] if method == "qlora" else []
    ok, last, _ = peftlab("train", "--method", method, "--device", "cuda", "--data", args.data, "--max-samples", str(args.rows),
                                "--max-steps", str(args.steps), "--output", str(folder), "--overwrite",
                                *(["--model", model] if model else []), *settings)
    if not ok:
        return {"run": name, "ok": False, "error": last}
    summary = json.loads((folder / "summary.json").read_text())
    losses = [json.loads(line)["loss"] for line in (folder / "log.jsonl").read_text().splitlines() if '"loss"' in line]
    per_token = flops_per_token(model, args.data, args.rows)
    return {"run": name, "ok": sum(losses[-3:]) < sum(losses[:3]), "dtype": summary["dtype"],
            "real_tokens_per_second": summary["real_tokens_per_second"],
            "steady_tokens_per_second": summary.get("steady_tokens_per_second"), "peak_memory_bytes": summary["peak_memory_bytes"],
            "share_of_bf16_limit": (summary.get("steady_tokens_per_second") or summary["real_tokens_per_second"]) * per_token / limit,
            "first_losses": losses[:3], "last_losses": losses[-3:]}


def trl(args: argparse.Namespace, limit: float) -> dict:
    """The same LoRA recipe through TRL's SFTTrainer (train_speed.py's runner) on the GPU, in its own process."""
    if not (DIALOGSUM / "train.jsonl").is_file():
        return {"run": "TRL SFTTrainer", "ok": None, "skipped": f"DialogSum not found at {DIALOGSUM}"}
    done = subprocess.run([sys.executable, str(ROOT / "benchmarks" / "train_speed.py"), "--role", "trl-gpu", "--rows", str(args.rows)],
                          capture_output=True, text=True, cwd=ROOT / "benchmarks")
    if "RESULT " not in done.stdout:
        return {"run": "TRL SFTTrainer", "ok": False, "error": ((done.stdout + done.stderr).strip().splitlines() or ["?"])[-1]}
    result = json.loads(done.stdout.split("RESULT ", 1)[1])
    per_token = flops_per_token(None, str(DIALOGSUM / "train.jsonl"), args.rows)
    return {"run": "TRL SFTTrainer (lora, default model)", "ok": True, **result,
            "share_of_bf16_limit": result["real_tokens_per_second"] * per_token / limit}


def evaluate(adapter: Path, args: argparse.Namespace, out: Path) -> dict:
    ok, last, seconds = peftlab("eval", "--adapter", str(adapter), "--data", args.test_data, "--max-samples", "64",
                                "--max-new-tokens", "64", "--batch-size", "32", "--device", "cuda", "--output", str(out / "eval"),
                                "--overwrite", "--samples", "0")
    if not ok:
        return {"step": "eval", "ok": False, "error": last}
    metrics = json.loads((out / "eval" / "metrics.json").read_text())
    tuned = metrics.get("tuned", metrics)
    return {"step": "eval", "ok": True, "seconds": seconds,
            "summaries_per_second": {name: row.get("summaries_per_second") for name, row in metrics.items() if isinstance(row, dict)},
            "tuned": {k: v for k, v in tuned.items() if isinstance(v, (int, float))} if isinstance(tuned, dict) else None}


def compare(args: argparse.Namespace, out: Path) -> dict:
    ok, last, seconds = peftlab("compare", "--methods", "base,lora,ia3", "--data", args.data, "--eval-data", args.test_data,
                                "--max-samples", str(args.rows), "--budget-steps", str(args.steps), "--eval-samples", "32",
                                "--device", "cuda", "--output", str(out / "compare"), "--overwrite")
    return {"step": "compare (base, lora, ia3)", "ok": ok and (out / "compare" / "results.json").is_file(), "seconds": seconds,
            **({} if ok else {"error": last})}


def serve(args: argparse.Namespace, out: Path) -> dict:
    """benchmarks/serving.py with 32 clients (the base and its random adapters, continuous and static batching)."""
    done = subprocess.run([sys.executable, str(ROOT / "benchmarks" / "serving.py"), "--clients", "32", "--rates", "",
                           "--data", args.test_data, "--json", str(out / "serving.json")], capture_output=True, text=True,
                          cwd=ROOT / "benchmarks")
    record = {"step": "serve, 32 clients", "ok": done.returncode == 0 and (out / "serving.json").is_file(),
              "table": done.stdout.strip().splitlines()[-8:]}
    if not record["ok"]:
        record["error"] = ((done.stdout + done.stderr).strip().splitlines() or ["?"])[-1]
    return record


def export_and_check(adapter: Path, args: argparse.Namespace, out: Path) -> list[dict]:
    steps = [("merge", ["merge", "--adapter", str(adapter), "--output", str(out / "merged"), "--device", "cuda", "--overwrite"]),
             ("export gguf f16", ["export", str(adapter), "--type", "f16", "--output", str(out / "model-f16.gguf"), "--device", "cuda",
                                  "--overwrite"]),
             ("export vllm", ["export", f"summaries={adapter}", "--format", "vllm", "--output", str(out / "vllm"), "--overwrite"]),
             ("check", ["check", str(adapter), "--data", args.test_data, "--max-samples", "24", "--device", "cuda"])]
    records = []
    for name, command in steps:
        ok, last, seconds = peftlab(*command)
        records.append({"step": name, "ok": ok, "seconds": seconds, "last_line": last})
    return records


def vllm_check(adapter: Path, args: argparse.Namespace, out: Path) -> dict:
    """Start the exported serve.sh (vLLM) on port 8011, then `peftlab check --server` against it."""
    try:
        import vllm  # noqa: F401
    except ImportError:
        return {"step": "vLLM", "ok": None, "skipped": "vllm is not installed"}
    script = out / "vllm" / "serve.sh"
    if not script.is_file():
        return {"step": "vLLM", "ok": False, "error": "the vllm export failed"}
    log = open(out / "vllm.log", "w")
    server = subprocess.Popen(["sh", str(script), "--port", "8011"], stdout=log, stderr=subprocess.STDOUT, start_new_session=True)
    try:
        deadline = time.monotonic() + 600
        while time.monotonic() < deadline and server.poll() is None:
            try:
                urllib.request.urlopen("http://127.0.0.1:8011/v1/models", timeout=5)
                break
            except OSError:
                time.sleep(5)
        ok, last, _ = peftlab("check", str(adapter), "--data", args.test_data, "--max-samples", "24", "--device", "cuda",
                              "--server", "http://127.0.0.1:8011", "--server-model", "summaries")
        return {"step": "vLLM: check --server", "ok": ok, "last_line": last, "command": shlex.join(["sh", str(script)])}
    finally:
        os.killpg(server.pid, signal.SIGTERM)
        server.wait(timeout=60)
        log.close()


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--data", default=str(DIALOGSUM / "train.jsonl" if (DIALOGSUM / "train.jsonl").is_file() else DEMO / "train.jsonl"))
    parser.add_argument("--test-data", default=str(DIALOGSUM / "test.jsonl" if (DIALOGSUM / "test.jsonl").is_file() else DEMO / "test.jsonl"))
    parser.add_argument("--rows", type=int, default=64)
    parser.add_argument("--steps", type=int, default=20)
    parser.add_argument("--quick", action="store_true", help="the default model only (no 1B model, no TRL, no vLLM)")
    parser.add_argument("--output", default=str(ROOT / "runs" / "gpu_check"))
    args = parser.parse_args()

    import torch

    if not torch.cuda.is_available():
        print("gpu_check: no CUDA GPU is visible to torch here; run it on a machine with an NVIDIA GPU and a CUDA build of torch")
        return 2
    out = Path(args.output)
    out.mkdir(parents=True, exist_ok=True)
    limit = bf16_limit()
    print(f"{torch.cuda.get_device_name()}: bf16 matmul {limit / 1e12:.1f} TFLOP/s (the limit each training run is measured against)",
          flush=True)
    results: dict = {"gpu": torch.cuda.get_device_name(), "bf16_matmul_flops": limit, "train": [], "steps": []}
    models = {"default": None} if args.quick else {"default": None, "llama-1.1b-random": build_big_llama(out / "llama-1.1b-random")}
    for label, model in models.items():
        for method in ("lora", "qlora"):
            results["train"].append(train(f"{method}-{label}", model, method, args, out, limit))
            print(json.dumps(results["train"][-1]), flush=True)
    if not args.quick:
        results["train"].append(trl(args, limit))
    adapter = out / "lora-default" / "adapter"
    results["steps"] += [evaluate(adapter, args, out), compare(args, out), serve(args, out), *export_and_check(adapter, args, out)]
    if not args.quick:
        results["steps"].append(vllm_check(adapter, args, out))
    report(results)
    (ROOT / "benchmarks" / "results").mkdir(parents=True, exist_ok=True)
    write_results(ROOT / "benchmarks" / "results" / "gpu_check.json", results)
    failed = [r.get("run") or r.get("step") for r in results["train"] + results["steps"] if r.get("ok") is False]
    print(f"FAILED: {', '.join(failed)}" if failed else "all checks passed")
    return 1 if failed else 0


def report(results: dict) -> None:
    print(f"\n{'training run':<38} {'real tok/s':>10} {'steady':>8} {'of bf16 limit':>13} {'peak GiB':>9} {'loss falls':>10}")
    for r in results["train"]:
        if "real_tokens_per_second" not in r:
            print(f"{r['run']:<38} {r.get('error') or r.get('skipped')}")
            continue
        steady = f"{r['steady_tokens_per_second']:.0f}" if r.get("steady_tokens_per_second") else "-"
        print(f"{r['run']:<38} {r['real_tokens_per_second']:>10.0f} {steady:>8} {100 * r['share_of_bf16_limit']:>12.1f}% "
              f"{r['peak_memory_bytes'] / 2**30:>9.2f} {str(r['ok']):>10}")
    for r in results["steps"]:
        detail = r.get("error") or r.get("skipped") or r.get("last_line") or ""
        print(f"{r['step']:<38} {'ok' if r['ok'] else 'skipped' if r['ok'] is None else 'FAILED'}  {detail[:100]}")
        if r.get("summaries_per_second"):
            print(f"{'':<38} summaries/s: {r['summaries_per_second']}")


if __name__ == "__main__":
    sys.exit(main())
