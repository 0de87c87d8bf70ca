"""Every method for a few steps on the default model: trainable share, step time, peak memory; QLoRA's 4-bit base vs bf16.

    python benchmarks/methods.py [--data ../shared/data/dialogsum/train.jsonl] [--steps 3] [--json methods.json]

Each method trains in its own `peftlab train` process (so peak memory is its own); the base-model
memory comparison loads the model in a fresh process per precision.
"""

from __future__ import annotations

import argparse
import json
import subprocess
import sys
from pathlib import Path

from machine import write_results  # benchmarks/machine.py: the results file names its machine

EXTRA = {"bitfit": ["--set", "bitfit.add_missing_biases=true"]}  # Llama has no biases of its own

MEASURE_BASE = """
import gc, json, os, resource, sys, time
from peftlab.models import load_model

def rss_bytes():
    with open("/proc/self/statm") as f:
        return int(f.read().split()[1]) * os.sysconf("SC_PAGE_SIZE")

import torch, transformers  # imported before the baseline so that only the model counts
before = rss_bytes()
start = time.perf_counter()
loaded = load_model(None, "bf16", quantization=sys.argv[1] or None)
seconds = time.perf_counter() - start
gc.collect()
print(json.dumps({"weights_bytes": loaded.model.get_memory_footprint(), "load_seconds": seconds,
                  "rss_growth_bytes": rss_bytes() - before,
                  "peak_rss_bytes": resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * 1024}))
"""


def train(method: str, data: str, steps: int, folder: Path) -> dict:
    command = [sys.executable, "-m", "peftlab", "train", "--method", method, "--data", data, "--max-samples", "64",
               "--max-steps", str(steps), "--output", str(folder / method), "--overwrite", *EXTRA.get(method, [])]
    done = subprocess.run(command, capture_output=True, text=True)
    if done.returncode:
        return {"method": method, "error": (done.stderr.strip().splitlines() or ["?"])[-1]}
    summary = json.loads((folder / method / "summary.json").read_text())
    return {"method": method, "trainable_parameters": summary["trainable_parameters"],
            "trainable_percent": summary["trainable_percent"], "steps": summary["steps"],
            "seconds_per_step": summary["train_seconds"] / summary["steps"], "peak_memory_bytes": summary["peak_memory_bytes"],
            "real_tokens_per_second": summary["real_tokens_per_second"]}


def base_memory(quantization: str) -> dict:
    done = subprocess.run([sys.executable, "-c", MEASURE_BASE, quantization], capture_output=True, text=True, check=True)
    return {"base": quantization or "bf16", **json.loads(done.stdout.strip().splitlines()[-1])}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--data", default=str(Path(__file__).resolve().parents[2] / "shared" / "data" / "dialogsum" / "train.jsonl"))
    parser.add_argument("--steps", type=int, default=3)
    parser.add_argument("--methods", help="comma-separated subset (default: all)")
    parser.add_argument("--runs", default="/tmp/peftlab-methods-benchmark", help="folder for the runs' outputs")
    parser.add_argument("--json", default="methods-benchmark.json", help="where to write the results")
    args = parser.parse_args()

    from peftlab.methods import method_names

    names = args.methods.split(",") if args.methods else method_names()
    rows = []
    print(f"{'method':<14} {'trainable':>12} {'share %':>9} {'s/step':>7} {'peak GiB':>9}", flush=True)
    for name in names:
        row = train(name, args.data, args.steps, Path(args.runs))
        rows.append(row)
        if "error" in row:
            print(f"{name:<14} error: {row['error']}", flush=True)
        else:
            print(f"{name:<14} {row['trainable_parameters']:>12,} {row['trainable_percent']:>9.4f} {row['seconds_per_step']:>7.2f} "
                  f"{row['peak_memory_bytes'] / 2**30:>9.2f}", flush=True)
    bases = [base_memory(""), base_memory("4bit")]
    print(f"\n{'base model':<10} {'weights MiB':>12} {'RSS growth MiB':>15} {'peak RSS MiB':>13} {'load s':>7}")
    for base in bases:
        print(f"{base['base']:<10} {base['weights_bytes'] / 2**20:>12.1f} {base['rss_growth_bytes'] / 2**20:>15.0f} "
              f"{base['peak_rss_bytes'] / 2**20:>13.0f} {base['load_seconds']:>7.1f}")
    write_results(args.json, {"methods": rows, "base_memory": bases})
    print(f"\nwritten: {args.json}")


if __name__ == "__main__":
    main()
