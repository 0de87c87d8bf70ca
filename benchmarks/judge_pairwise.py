"""A pairwise judge end to end: `peftlab serve` of a model on loopback as the judge of a LoRA adapter against its base
(`peftlab eval --adapter A --metric judge-pairwise`, both orders) on DialogSum; the server is stopped after.

    python benchmarks/judge_pairwise.py [--data ../shared/data/dialogsum] [--rows 24] [--steps 10] [--adapter DIR]

Trains the LoRA adapter first (`peftlab train`, --steps) unless --adapter names one. The judge is the embedded default
model unless --judge-model-path names another (a bigger one is what a real comparison needs: a 135M judge proves the
pipeline, its verdicts mean little). Its prompt is judge_prompts/pairwise_small.txt: peftlab's default pairwise prompt
made the 135M judge summarise the dialogue instead of answering on 3 of 12 probes. Verdicts are cached by peftlab in
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
SMALL_JUDGE_PROMPT = Path(__file__).with_name("judge_prompts") / "pairwise_small.txt"


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


def summarize(out: Path) -> dict:
    """The tuned model's win rate with a 95% bootstrap interval over the judged rows, the two orders' agreement, how many
    rows were won or lost in both orders, and ROUGE-L of both models."""
    import numpy as np

    sys.path.insert(0, str(ROOT))
    from peftlab.compare.statistics import interval

    records = [json.loads(line) for line in (out / "predictions.jsonl").open()]
    wins = np.array([r["scores"]["tuned"]["judge_win"] for r in records])
    # per row: 1 = the tuned answer won in both orders, 0.5 = the orders split or both tie, 0 = lost in both
    return {"rows": len(records), "win_rate": float(wins.mean()), "win_rate_interval_95": interval(wins),
            "order_agreement": float(np.mean([r["scores"]["tuned"]["judge_agreement"] for r in records])),
            "rows_won_in_both_orders": int((wins == 1).sum()), "rows_lost_in_both_orders": int((wins == 0).sum()),
            "rouge_l": {name: float(np.mean([r["scores"][key]["rougeL"] for r in records])) for name, key in (("base", "base"), ("lora", "tuned"))}}


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--data", default=str(DIALOGSUM), help="the DialogSum folder (train.jsonl, test.jsonl)")
    parser.add_argument("--rows", type=int, default=24, help="test rows judged")
    parser.add_argument("--steps", type=int, default=10, help="LoRA's training budget (optimizer steps)")
    parser.add_argument("--batch-size", type=int, default=4)
    parser.add_argument("--adapter", default=None, help="a LoRA adapter trained earlier (default: train one in --work)")
    parser.add_argument("--judge-model-path", default=None, help="the judge's model (default: the embedded SmolLM2-135M-Instruct)")
    parser.add_argument("--judge-prompt", default=str(SMALL_JUDGE_PROMPT), help="the pairwise prompt (default: one a 135M judge follows)")
    parser.add_argument("--work", default=str(ROOT / "runs" / "judge-eval"), help="the adapter and the evaluation (runs/ is not tracked)")
    parser.add_argument("--json", default=str(ROOT / "benchmarks" / "results" / "judge_pairwise.json"))
    args = parser.parse_args()
    data, work = Path(args.data), Path(args.work)
    if not (data / "train.jsonl").is_file() or not (data / "test.jsonl").is_file():
        print(f"skipped: DialogSum not found at {data} (it lives in ../shared/data/dialogsum beside the repository)")
        return 0
    start = time.perf_counter()
    adapter = args.adapter or str(work / "lora" / "adapter")
    if not Path(adapter, "adapter_config.json").is_file():
        subprocess.run([*PEFTLAB, "train", "--data", str(data / "train.jsonl"), "--max-steps", str(args.steps), "--batch-size",
                        str(args.batch_size), "--output", str(work / "lora"), "--overwrite"], check=True)
    port = free_port()
    serve = [*PEFTLAB, "serve", "--port", str(port), "--dtype", "fp32", *(["--model", args.judge_model_path] if args.judge_model_path else [])]
    evaluate = [*PEFTLAB, "eval", "--adapter", adapter, "--data", str(data / "test.jsonl"), "--max-samples", str(args.rows),
                "--max-new-tokens", "64", "--metric", "judge-pairwise,rouge", "--judge-url", f"http://127.0.0.1:{port}/v1",
                "--judge-prompt", args.judge_prompt, "--output", str(work / "eval"), "--overwrite"]
    server = subprocess.Popen(serve, start_new_session=True)
    try:
        evaluate += ["--judge-model", wait_until_listed(port, server)]
        print("running:", " ".join(evaluate[2:]), flush=True)
        done = subprocess.run(evaluate)
    finally:
        server.terminate()  # our own server, by its process id
        server.wait(timeout=60)
    seconds = time.perf_counter() - start
    if done.returncode != 0:
        print(f"eval failed (exit {done.returncode})")
        return done.returncode
    result = {"command": " ".join(evaluate[2:]), "judge": args.judge_model_path or "the embedded SmolLM2-135M-Instruct (peftlab serve, fp32)",
              "judge_prompt": Path(args.judge_prompt).read_text(), "wall_seconds": seconds, "steps": args.steps, "batch_size": args.batch_size,
              "summary": summarize(work / "eval")}
    write_results(args.json, result)
    print(json.dumps(result["summary"], indent=1))
    print(f"wrote {args.json}; wall time {seconds:.0f} s")
    return 0


if __name__ == "__main__":
    sys.exit(main())
