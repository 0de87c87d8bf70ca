"""A pairwise-judge comparison end to end: `peftlab serve` of a model on loopback as the judge, `peftlab compare
--methods base,lora --metric judge-pairwise` on DialogSum, the server stopped after; prints and records the win rate.

    python benchmarks/judge_pairwise.py [--data ../shared/data/dialogsum] [--rows 24] [--steps 10] [--output /work/runs/judge]

The judge is the embedded default model unless --judge-model-path names another (a bigger one is what a real
comparison needs: a 135M judge proves the pipeline, its verdicts mean little). Verdicts are cached by peftlab in
$PEFTLAB_CACHE/judge.sqlite, so a rerun asks the judge nothing new.
"""

from __future__ import annotations

import argparse
import json
import os
import socket
import subprocess
import sys
import time
import urllib.request
from pathlib import Path

from machine import write_results  # benchmarks/machine.py: the results file names its machine

ROOT = Path(__file__).resolve().parents[1]
DIALOGSUM = ROOT.parent / "shared" / "data" / "dialogsum"
PEFTLAB = [sys.executable, "-m", "peftlab"]


def free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return probe.getsockname()[1]


def wait_until_listed(port: int, server: subprocess.Popen, seconds: float = 600) -> str:
    """The name the judge serves, once its /v1/models answers (the model loads first)."""
    deadline = time.monotonic() + seconds
    while time.monotonic() < deadline:
        if server.poll() is not None:
            raise SystemExit(f"the judge server exited with {server.returncode} before answering")
        try:
            with urllib.request.urlopen(f"http://127.0.0.1:{port}/v1/models", timeout=5) as answer:
                return json.loads(answer.read())["data"][0]["id"]
        except OSError:
            time.sleep(2)
    raise SystemExit(f"the judge server did not answer on port {port} within {seconds:.0f} s")


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--data", default=str(DIALOGSUM), help="the DialogSum folder (train.jsonl, test.jsonl)")
    parser.add_argument("--rows", type=int, default=24, help="test rows judged")
    parser.add_argument("--steps", type=int, default=10, help="LoRA's training budget (optimizer steps)")
    parser.add_argument("--batch-size", type=int, default=4)
    parser.add_argument("--judge-model-path", default=None, help="the judge's model (default: the embedded SmolLM2-135M-Instruct)")
    parser.add_argument("--output", default="/work/runs/judge", help="the comparison folder (outside the repository)")
    parser.add_argument("--json", default=str(ROOT / "benchmarks" / "results" / "judge_pairwise.json"))
    args = parser.parse_args()
    data = Path(args.data)
    if not (data / "train.jsonl").is_file() or not (data / "test.jsonl").is_file():
        print(f"skipped: DialogSum not found at {data} (it lives in ../shared/data/dialogsum beside the repository)")
        return 0
    port = free_port()
    serve = [*PEFTLAB, "serve", "--port", str(port), "--dtype", "fp32", *(["--model", args.judge_model_path] if args.judge_model_path else [])]
    compare = [*PEFTLAB, "compare", "--data", str(data / "train.jsonl"), "--eval-data", str(data / "test.jsonl"),
               "--methods", "base,lora", "--budget-steps", str(args.steps), "--batch-size", str(args.batch_size),
               "--eval-samples", str(args.rows), "--max-new-tokens", "64", "--metric", "judge-pairwise,rouge",
               "--judge-url", f"http://127.0.0.1:{port}/v1", "--output", args.output]
    start = time.perf_counter()
    server = subprocess.Popen(serve, start_new_session=True)
    try:
        judge = wait_until_listed(port, server)
        compare += ["--judge-model", judge]
        print("running:", " ".join(compare), flush=True)
        done = subprocess.run(compare)
    finally:
        server.terminate()  # our own server, by its process id
        server.wait(timeout=60)
    seconds = time.perf_counter() - start
    if done.returncode != 0:
        print(f"compare failed (exit {done.returncode})")
        return done.returncode
    records = json.loads((Path(args.output) / "results.json").read_text())
    keep = ("method", "primary", "scores", "score_interval", "score_labels", "train_seconds", "trainable_share")
    result = {"command": " ".join(compare[2:]), "judge": args.judge_model_path or "embedded SmolLM2-135M-Instruct (peftlab serve, fp32)",
              "wall_seconds": seconds, "table": (Path(args.output) / "results.md").read_text(),
              "runs": [{k: r.get(k) for k in keep} for r in records]}
    write_results(args.json, result)
    print(result["table"])
    print(f"wrote {args.json}; wall time {seconds:.0f} s")
    return 0


if __name__ == "__main__":
    sys.exit(main())
