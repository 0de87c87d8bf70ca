"""A tuned comparison on DialogSum with the protocol of the six-method table, recorded with its machine.

Runs `peftlab compare` (resumable: rerun the same command and finished trials and runs are kept; extra
`--worker` processes on the same study may share the work, see docs/concepts/comparison.md), then records
each method's score with its interval, what tuning chose, the verdict and the paired differences.

    python benchmarks/compare_tuned.py [--methods base,lora,pissa,eva,loraplus,oft,vera,miss,shira] [--trials 3] [--seeds 2]
    python benchmarks/compare_tuned.py --output runs/compare-newmethods --record-only   # record a finished run
"""

from __future__ import annotations

import argparse
import json
import subprocess
import sys
import time
from pathlib import Path

from machine import write_results  # benchmarks/machine.py: the results file names its machine

ROOT = Path(__file__).resolve().parents[1]
DIALOGSUM = ROOT.parent / "shared" / "data" / "dialogsum"
NEW_METHODS = "base,lora,pissa,eva,loraplus,oft,vera,miss,shira"


def command(args: argparse.Namespace) -> list[str]:
    """The six-method table's protocol: 468 training rows (32 carved for validation), 10 steps of batch 4, the first 64
    test rows, 64 new tokens."""
    return [sys.executable, "-m", "peftlab", "compare", "--data", str(Path(args.data) / "train.jsonl"),
            "--eval-data", str(Path(args.data) / "test.jsonl"), "--methods", args.methods, "--eval-samples", "64",
            "--budget-steps", "10", "--batch-size", "4", "--val-share", "0.064", "--gen-batch-size", "16",
            "--set", "train.save_steps=2", "--trials", str(args.trials), "--seeds", str(args.seeds), "--output", args.output]


def _chosen(record: dict) -> tuple[str, str, str]:
    """The finished trial tuning kept (lowest validation loss), its configuration, and the default's loss beside it."""
    tuning = record.get("tuning") or {}
    complete = [h for h in tuning.get("history", []) if h["state"] == "complete" and h["validation_loss"] is not None]
    if not complete:
        return "-", "-", "-"
    best = min(complete, key=lambda h: h["validation_loss"])
    knobs = ", ".join(f"{k} {v}" for k, v in best["params"].items() if k != "lr")
    config = f"{best['params']['lr']:.2g}" + (f" ({knobs})" if knobs else "")
    default = tuning.get("default_validation_loss")
    losses = f"{default:.3f} -> {best['validation_loss']:.3f}" if default is not None else f"{best['validation_loss']:.3f}"
    return best.get("start") or "TPE", config, losses


def table(records: list[dict]) -> dict:
    header = ["run", "ROUGE-L", "95% interval", "tuning kept", "lr (capacity)", "validation loss: default -> kept",
              "peak GiB", "trainable %", "stored MB", "forgetting"]
    rows = []
    for r in records:
        primary = r["primary"]
        low, high = r["score_interval"][primary] if r.get("score_interval", {}).get(primary) else (None, None)
        kept, config, losses = _chosen(r)
        rows.append([r["name"], f"{r['scores'][primary]:.2f}", f"{low:.1f}-{high:.1f}" if low is not None else "-", kept, config,
                     losses, f"{r['peak_memory_bytes'] / 2**30:.2f}" if r.get("peak_memory_bytes") else "-",
                     f"{r['trainable_percent']:.3g}", f"{r['stored_bytes'] / 1e6:.3g}",
                     f"{r['forgetting']:+.3f}" if r.get("forgetting") is not None else "-"])
    return {"header": header, "rows": rows}


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--data", default=str(DIALOGSUM), help="the DialogSum folder (train.jsonl, test.jsonl)")
    parser.add_argument("--methods", default=NEW_METHODS)
    parser.add_argument("--trials", type=int, default=3)
    parser.add_argument("--seeds", type=int, default=2)
    parser.add_argument("--output", default=str(ROOT / "runs" / "compare-newmethods"), help="the comparison (runs/ is not tracked)")
    parser.add_argument("--record-only", action="store_true", help="record a comparison that has finished, run nothing")
    parser.add_argument("--note", default="", help="conditions to record beside the figures (load, sittings, workers)")
    parser.add_argument("--json", default=str(ROOT / "benchmarks" / "results" / "compare_new_methods.json"))
    args = parser.parse_args()
    if not (Path(args.data) / "train.jsonl").exists():
        print(f"skipped: DialogSum is not at {args.data} (see ../shared/data/dialogsum/README)")
        return 0
    seconds = None
    if not args.record_only:
        start = time.perf_counter()
        subprocess.run(command(args), check=True, cwd=ROOT)
        seconds = time.perf_counter() - start
    out = Path(args.output)
    records = json.loads((out / "results.json").read_text())
    verdict = json.loads((out / "verdict.json").read_text())
    result = {"what": f"peftlab compare: {args.methods}, each tuned ({args.trials} trials, {args.seeds} seeds), 10 steps, DialogSum",
              "command": " ".join(["peftlab", *command(args)[3:]]).replace(str(ROOT) + "/", ""),
              "table": table(records), "verdict": verdict["verdict"], "comparisons": verdict["comparisons"],
              "tuning": {r["name"]: r.get("tuning") for r in records if r.get("tuning")},
              "wall_seconds_this_sitting": seconds, "conditions": args.note}
    write_results(args.json, result)
    print("\n".join("| " + " | ".join(row) + " |" for row in [result["table"]["header"], *result["table"]["rows"]]))
    print("\n".join(verdict["verdict"]))
    return 0


if __name__ == "__main__":
    sys.exit(main())
