"""Every data format end to end on the default model: train, eval and compare on five files made from DialogSum.

Writes five small files of each split from DialogSum's train.jsonl (training rows) and test.jsonl (test rows, the
first reference `summary1`):
- `messages`: system + the dialogue (user) + its summary (assistant) + a follow-up question (user) + its answer
  (assistant: how many turns the dialogue has, counted from its lines);
- `text`: the Llama-2 `<s>[INST] ... [/INST] ... </s>` style of the guanaco-llama2 tutorial data;
- `prompt`/`completion`; ShareGPT `conversations`; Alpaca `instruction`/`input`/`output`.

For each, on the embedded default model: `peftlab train --max-steps 3`, `peftlab eval` of that adapter on 4 test
rows, `peftlab compare --methods base,lora` with tiny budgets. Records each command's exit code, seconds and metric
in the JSON with the machine. The budgets only show that every format runs end to end: the metrics of 3 steps are
not a quality result.

    python benchmarks/formats.py [--json benchmarks/results/formats.json] [--train-rows 16] [--dialogsum FOLDER]
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path

from machine import machine, write_results  # benchmarks/machine.py: the results file names its machine

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT / "scripts"))
import render_results  # noqa: E402 - scripts/render_results.py: the same table the docs render from the JSON
DIALOGSUM = ROOT.parent / "shared" / "data" / "dialogsum"
INSTRUCTION = "Summarize this dialogue."
SYSTEM = "You summarize dialogues and answer questions about them."
FOLLOW_UP = "How many turns does the dialogue have?"


def row_in(name: str, dialogue: str, summary: str) -> dict:
    """One DialogSum row in format `name`."""
    if name == "messages":
        turns = len([line for line in dialogue.splitlines() if line.strip()])
        return {"messages": [{"role": "system", "content": SYSTEM}, {"role": "user", "content": dialogue},
                             {"role": "assistant", "content": summary}, {"role": "user", "content": FOLLOW_UP},
                             {"role": "assistant", "content": f"{turns} turns."}]}
    if name == "text":
        return {"text": f"<s>[INST] {INSTRUCTION}\n{dialogue} [/INST] {summary} </s>"}
    if name == "prompt-completion":
        return {"prompt": f"{INSTRUCTION}\n{dialogue}", "completion": summary}
    if name == "sharegpt":
        return {"conversations": [{"from": "human", "value": f"{INSTRUCTION}\n{dialogue}"}, {"from": "gpt", "value": summary}]}
    return {"instruction": INSTRUCTION, "input": dialogue, "output": summary}  # alpaca


FORMATS = ("messages", "text", "prompt-completion", "sharegpt", "alpaca")


def write_files(folder: Path, source: Path, train_rows: int, test_rows: int) -> dict[str, tuple[Path, Path]]:
    def read(path: Path, count: int) -> list[dict]:
        with path.open(encoding="utf-8") as lines:
            return [json.loads(line) for _, line in zip(range(count), lines)]

    train, test = read(source / "train.jsonl", train_rows), read(source / "test.jsonl", test_rows)
    files = {}
    for name in FORMATS:
        pair = (folder / f"train.{name}.jsonl", folder / f"test.{name}.jsonl")
        for path, rows, column in ((pair[0], train, "summary"), (pair[1], test, "summary1")):
            path.write_text("".join(json.dumps(row_in(name, r["dialogue"], r[column])) + "\n" for r in rows), encoding="utf-8")
        files[name] = pair
    return files


def run(command: list[str]) -> dict:
    """One peftlab command: its exit code, seconds, and its last error line when it failed."""
    env = {**os.environ, "PYTHONPATH": str(ROOT)}
    start = time.perf_counter()
    done = subprocess.run([sys.executable, "-m", "peftlab", *command], env=env, capture_output=True, text=True)
    result = {"command": "peftlab " + " ".join(command), "exit_code": done.returncode, "seconds": time.perf_counter() - start}
    if done.returncode:
        result["error"] = (done.stderr.strip().splitlines() or ["?"])[-1]
    return result


def eval_metric(folder: Path) -> dict:
    metrics = json.loads((folder / "metrics.json").read_text())
    tuned = metrics["results"]["tuned"]
    if metrics["primary"] == "loss":
        return {"metric": "held-out loss", "value": tuned["loss"], "perplexity": tuned["perplexity"]}
    return {"metric": metrics["primary"], "value": tuned[metrics["primary"]]}


def compare_metric(folder: Path) -> dict:
    records = {r["name"]: r for r in json.loads((folder / "results.json").read_text())}
    primary = records["base"]["primary"]
    return {"metric": records["base"]["score_labels"][primary], "base": records["base"]["scores"][primary],
            "lora": records["lora"]["scores"][primary]}


def measure(name: str, train: Path, test: Path, work: Path) -> dict:
    shared = ["--dtype", "fp32", "--set", "data.max_length=384"]
    trained = run(["train", "--data", str(train), "--max-steps", "3", "--batch-size", "2", "--output", str(work / "run"),
                   "--overwrite", *shared])
    if not trained["exit_code"]:
        trained["metric"] = {"metric": "train loss", "value": json.loads((work / "run" / "summary.json").read_text())["train_loss"]}
    evaluated = run(["eval", "--adapter", str(work / "run" / "adapter"), "--data", str(test), "--max-samples", "4", "--skip-base",
                     "--max-new-tokens", "24", "--output", str(work / "eval"), "--overwrite", "--dtype", "fp32"])
    if not evaluated["exit_code"]:
        evaluated["metric"] = eval_metric(work / "eval")
    compared = run(["compare", "--data", str(train), "--eval-data", str(test), "--methods", "base,lora", "--budget-steps", "2",
                    "--batch-size", "2", "--eval-samples", "2", "--max-new-tokens", "16", "--output", str(work / "compare"),
                    "--overwrite", *shared])
    if not compared["exit_code"]:
        compared["metric"] = compare_metric(work / "compare")
    return {"format": name, "train": trained, "eval": evaluated, "compare": compared}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--json", default=None)
    parser.add_argument("--note", help="a sentence kept in the JSON and under the docs' table (e.g. the machine was not quiet)")
    parser.add_argument("--train-rows", type=int, default=16)
    parser.add_argument("--dialogsum", type=Path, default=DIALOGSUM, help="folder with DialogSum's train.jsonl and test.jsonl")
    parser.add_argument("--formats", nargs="+", default=list(FORMATS), choices=FORMATS)
    args = parser.parse_args()
    if not (args.dialogsum / "train.jsonl").is_file():
        raise SystemExit(f"DialogSum not found in {args.dialogsum}; pass --dialogsum FOLDER")
    started = time.perf_counter()
    with tempfile.TemporaryDirectory() as folder:
        files = write_files(Path(folder), args.dialogsum, args.train_rows, 4)
        results = []
        for name in args.formats:
            (Path(folder) / name).mkdir()
            results.append(measure(name, *files[name], Path(folder) / name))
            print(f"{name}: exit codes " + ", ".join(f"{step} {results[-1][step]['exit_code']}" for step in ("train", "eval", "compare")),
                  flush=True)
    report = {"benchmark": "formats", "note": args.note, "train_rows": args.train_rows, "test_rows": 4,
              "wall_seconds": time.perf_counter() - started, "load_average_at_end": os.getloadavg(), "results": results,
              "machine": machine()}
    print(render_results.formats(report))  # the table docs/how-to/data.md quotes
    if args.json:
        write_results(args.json, report)


if __name__ == "__main__":
    main()
