"""A label task compared by accuracy: DialogSum's topics grouped into seven classes, base vs trained methods.

Writes the label files (benchmarks/topic_labels.py), runs `peftlab compare --metric accuracy,exact` on them (resumable:
rerun the same command and finished runs are kept), prints its table and records it with the machine.

    python benchmarks/topic_accuracy.py [--data ../shared/data/dialogsum] [--methods base,lora] [--steps 30] [--rows 64]
"""

from __future__ import annotations

import argparse
import json
import subprocess
import sys
import time
from pathlib import Path

from machine import write_results  # benchmarks/machine.py: the results file names its machine
from topic_labels import DIALOGSUM, LABELS

ROOT = Path(__file__).resolve().parents[1]
TEMPLATE = ("Which topic is this conversation about: work, shopping, travel, food, health, school or everyday?\n\n{prompt}\n\n"
            "Answer with the topic only.")  # every class of topic_labels.LABELS, named


def summarize(out: Path, rows: int) -> dict:
    """What the comparison's own table leaves out for one seed: each run's 95% bootstrap interval over the test rows, the
    paired difference against the base, the majority-class rate, and how often an answer names the right class inside
    a sentence (`accuracy` wants the class name alone)."""
    import numpy as np

    sys.path.insert(0, str(ROOT))
    from peftlab.compare.statistics import interval, paired_difference
    from peftlab.evaluate.metrics.normalize import normalize_answer

    truth = [json.loads(line)["label"] for line in (out.parent / "data" / "test.jsonl").open()][:rows]
    runs = {path.parent.name: json.loads(path.read_text()) for path in sorted((out / "runs").glob("*/result.json"))}
    correct = {name: np.array([normalize_answer(p) == t for p, t in zip(r["predictions"], truth)], dtype=float) for name, r in runs.items()}
    summary = {"majority_class_rate": max(truth.count(label) for label in LABELS) / len(truth), "runs": {}}
    for name, r in runs.items():
        named = [[label for label in LABELS if label in normalize_answer(p).split()] for p in r["predictions"]]
        summary["runs"][name] = {
            "accuracy": float(correct[name].mean()), "interval_95": interval(correct[name]),
            "names_the_right_class_in_a_sentence": sum(n == [t] for n, t in zip(named, truth)) / len(truth),
            "answers_that_are_a_class": sum(normalize_answer(p) in LABELS for p in r["predictions"]) / len(truth),
            "against_base": paired_difference(correct[name], correct["base"]) if name != "base" else None,
            "first_answers": r["predictions"][:6], "confusion": r.get("confusion")}
    return summary


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--data", default=str(DIALOGSUM), help="the DialogSum folder (train.jsonl, test.jsonl)")
    parser.add_argument("--methods", default="base,lora")
    parser.add_argument("--steps", type=int, default=30, help="optimizer steps per trained run")
    parser.add_argument("--batch-size", type=int, default=4)
    parser.add_argument("--rows", type=int, default=64, help="test rows scored")
    parser.add_argument("--work", default=str(ROOT / "runs" / "topics"), help="label files and the comparison (runs/ is not tracked)")
    parser.add_argument("--json", default=str(ROOT / "benchmarks" / "results" / "topic_accuracy.json"))
    args = parser.parse_args()
    labels = Path(args.work) / "data"
    made = subprocess.run([sys.executable, str(Path(__file__).with_name("topic_labels.py")), "--data", args.data, "--output", str(labels)],
                          capture_output=True, text=True, check=True)
    print(made.stdout, end="")
    if made.stdout.startswith("skipped"):
        return 0
    compare = [sys.executable, "-m", "peftlab", "compare", "--data", str(labels / "train.jsonl"), "--eval-data", str(labels / "test.jsonl"),
               "--columns", "prompt=dialogue,response=label", "--template", TEMPLATE, "--metric", "accuracy,exact",
               "--methods", args.methods, "--budget-steps", str(args.steps), "--batch-size", str(args.batch_size),
               "--eval-samples", str(args.rows), "--max-new-tokens", "4", "--gen-batch-size", "16", "--output", str(Path(args.work) / "compare")]
    start = time.perf_counter()
    subprocess.run(compare, check=True)
    seconds = time.perf_counter() - start
    out = Path(args.work) / "compare"
    summary = summarize(out, args.rows)
    print(f"majority class rate {summary['majority_class_rate']:.3f}")
    for name, run in summary["runs"].items():
        low, high = run["interval_95"]
        print(f"{name}: accuracy {run['accuracy']:.3f} [{low:.3f}, {high:.3f}], answers that are a class {run['answers_that_are_a_class']:.3f}, "
              f"right class named in a sentence {run['names_the_right_class_in_a_sentence']:.3f}")
    records = json.loads((out / "results.json").read_text())
    keep = ("method", "primary", "scores", "score_interval", "score_labels", "confusion", "train_seconds", "trainable_share")
    write_results(args.json, {"command": " ".join(compare[2:]), "labels": list(LABELS), "steps": args.steps, "batch_size": args.batch_size,
                              "test_rows": args.rows, "wall_seconds_this_call": seconds,
                              "table": (out / "results.md").read_text(), "runs": [{k: r.get(k) for k in keep} for r in records],
                              "summary": summary})
    print(f"wrote {args.json}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
