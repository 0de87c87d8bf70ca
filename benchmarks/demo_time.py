"""The README's main command, timed as a new user meets it: `peftlab demo` with an empty cache.

The cache (PEFTLAB_CACHE) starts empty, so the time includes the one-off conversion of the embedded GGUF model to
safetensors; the install is not included. Each line the demo prints is time-stamped, so the stages (conversion, base
evaluation, training, tuned evaluation) are timed from the same run. The load average at the start is recorded: a
figure measured beside other work is not a quiet one.

    python benchmarks/demo_time.py [--json benchmarks/results/demo.json] [--keep-cache]
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

sys.path.insert(0, str(Path(__file__).resolve().parent))
from machine import ROOT, write_results  # noqa: E402

# the stages as the demo announces them; the first conversion happens inside the base evaluation (its model load)
STAGES = (("base evaluation", "1/3 "), ("training", "2/3 "), ("tuned evaluation", "3/3 "), ("report", "page: "))


def run_demo(out: Path, cache: Path | None) -> tuple[float, list[tuple[float, str]], int]:
    env = {**os.environ, "PYTHONPATH": str(ROOT)}
    if cache is not None:
        env["PEFTLAB_CACHE"] = str(cache)
    start = time.perf_counter()
    process = subprocess.Popen([sys.executable, "-m", "peftlab", "demo", "--overwrite", "--output", str(out)], env=env,
                               stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True, bufsize=1)
    lines = []
    for line in process.stdout:
        for part in line.replace("\r", "\n").splitlines():
            if part.strip():
                lines.append((time.perf_counter() - start, part))
                print(part, flush=True)
    return time.perf_counter() - start, lines, process.wait()


def stage_seconds(lines: list[tuple[float, str]], total: float) -> dict[str, float]:
    """Seconds from each stage's first line to the next stage's (model loading counts with the stage that needs it)."""
    starts = {}
    for name, prefix in STAGES:
        hit = next((at for at, text in lines if text.startswith(prefix)), None)
        if hit is not None:
            starts[name] = hit
    ordered = sorted(starts.items(), key=lambda item: item[1])
    marks = [("start-up", 0.0), *ordered, ("end", total)]
    return {name: round(marks[i + 1][1] - at, 1) for i, (name, at) in enumerate(marks[:-1])}


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--json", default=str(ROOT / "benchmarks" / "results" / "demo.json"))
    parser.add_argument("--keep-cache", action="store_true", help="use the usual cache (the model already converted)")
    args = parser.parse_args()
    load = os.getloadavg()
    with tempfile.TemporaryDirectory() as tmp:
        cache = None if args.keep_cache else Path(tmp) / "cache"
        seconds, lines, code = run_demo(Path(tmp) / "demo", cache)
        if code != 0:
            print(f"the demo failed (exit {code})", file=sys.stderr)
            return 1
        demo = json.loads((Path(tmp) / "demo" / "demo.json").read_text())
    primary = "rougeL" if "rougeL" in demo["results"]["base"] else next(iter(demo["results"]["base"]))
    result = {
        "command": "peftlab demo --overwrite", "seconds": round(seconds, 1), "first_conversion_included": not args.keep_cache,
        "stages": stage_seconds(lines, seconds), "load_average_at_start": [round(value, 2) for value in load],
        "metric": primary, "base": round(100 * demo["results"]["base"][primary], 2),
        "tuned": round(100 * demo["results"]["tuned"][primary], 2),
        "training_steps": demo["train"]["steps"], "training_seconds": round(demo["train"]["train_seconds"], 1),
        "test_rows": demo["facts"]["test rows"],
    }
    write_results(args.json, result)
    print(f"demo: {seconds:.0f} s in all; {primary} base {result['base']} -> tuned {result['tuned']}; stages {result['stages']}; "
          f"load average at the start {load[0]:.2f}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
