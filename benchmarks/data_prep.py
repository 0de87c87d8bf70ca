"""Data preparation at scale: synthetic prompt/completion rows made from DialogSum, 10k / 100k / 1M rows.

Each size is a JSONL file of rows `{"prompt": DIALOGUE + " [i]", "completion": SUMMARY}` cycling over DialogSum's
training rows (the index makes every row distinct). For each size, in fresh processes (so peak memory is their own):
- **prepare**: the embedded default model's tokenizer, `peftlab.data.prepare.prepared_set` into an empty cache:
  rows/s and peak RSS;
- **first step**: a whole `peftlab train --max-steps 1` with an empty data cache (model load, data preparation,
  one optimizer step, the adapter saved): its seconds are an upper bound on the time to the first step;
- **second run**: the same command again, the data cache now warm; and, apart, the preparation call alone again
  (hashing the file and mapping the cached Arrow file).

    python benchmarks/data_prep.py [--rows 10000 100000 1000000] [--json benchmarks/results/data_prep.json] [--dialogsum PATH]
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import subprocess
import sys
import tempfile
import time
from pathlib import Path

DIALOGSUM = Path(__file__).resolve().parents[2] / "shared" / "data" / "dialogsum" / "train.jsonl"
ROOT = Path(__file__).resolve().parents[1]


def write_rows(path: Path, count: int, dialogsum: Path) -> None:
    source = [json.loads(line) for line in dialogsum.read_text().splitlines() if line.strip()]
    with path.open("w", encoding="utf-8") as out:
        for i in range(count):
            row = source[i % len(source)]
            out.write(json.dumps({"prompt": f"{row['dialogue']} [{i}]", "completion": row["summary"]}) + "\n")


PREPARE = """
import json, resource, sys, time
from peftlab.config import DataConfig
from peftlab.data import prepare
from peftlab.data.tokenize import uses_chat_template
from peftlab.models.loading import load_tokenizer, resolve_source
label, path = resolve_source(None)
tokenizer = load_tokenizer(path, label)
start = time.perf_counter()
result = prepare.prepared_set(sys.argv[1], DataConfig(), tokenizer, False, uses_chat_template(tokenizer, "auto", False))
seconds = time.perf_counter() - start
print(json.dumps({"rows": result.rows, "seconds": seconds, "peak_rss_bytes": resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * 1024}))
"""


def run_prepare(data: Path, cache: Path) -> dict:
    env = {**os.environ, "PEFTLAB_CACHE": str(cache), "PYTHONPATH": str(ROOT)}
    out = subprocess.run([sys.executable, "-c", PREPARE, str(data)], env=env, capture_output=True, text=True, check=True)
    return json.loads(out.stdout.strip().splitlines()[-1])


def run_first_step(data: Path, cache: Path, out: Path) -> float:
    """Seconds of a whole `train --max-steps 1` (model load, data preparation, one step, the adapter saved)."""
    env = {**os.environ, "PEFTLAB_CACHE": str(cache), "PYTHONPATH": str(ROOT)}
    command = [sys.executable, "-m", "peftlab", "train", "--data", str(data), "--max-steps", "1", "--batch-size", "8",
               "--output", str(out), "--overwrite"]
    start = time.perf_counter()
    done = subprocess.run(command, env=env, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True)
    if done.returncode:
        raise SystemExit(f"train failed: {done.stderr.strip().splitlines()[-1]}")
    return time.perf_counter() - start


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--rows", type=int, nargs="+", default=[10_000, 100_000, 1_000_000])
    parser.add_argument("--json", default=None)
    parser.add_argument("--dialogsum", type=Path, default=DIALOGSUM, help="DialogSum's train.jsonl")
    args = parser.parse_args()
    if not args.dialogsum.is_file():
        raise SystemExit(f"DialogSum not found at {args.dialogsum}; pass --dialogsum PATH")
    results = []
    with tempfile.TemporaryDirectory() as folder:
        work = Path(folder)
        models = Path(os.environ.get("PEFTLAB_CACHE", Path.home() / ".cache" / "peftlab"))
        for count in args.rows:
            data = work / f"rows-{count}.jsonl"
            write_rows(data, count, args.dialogsum)
            cache = work / f"cache-{count}"
            cache.mkdir()
            (cache / "models").symlink_to(models / "models", target_is_directory=True)  # the converted model, not the data
            prepared = run_prepare(data, cache)
            cached = run_prepare(data, cache)  # the same inputs again: hashing the file and mapping the cached Arrow file
            for leftover in (cache / "data").glob("*"):
                leftover.unlink()  # the first step's run prepares afresh
            first = run_first_step(data, cache, work / f"run-{count}")
            second = run_first_step(data, cache, work / f"run-{count}")
            results.append({"rows": count, "file_bytes": data.stat().st_size, "prepare_seconds": prepared["seconds"],
                            "rows_per_second": count / prepared["seconds"], "prepare_peak_rss_bytes": prepared["peak_rss_bytes"],
                            "prepare_cached_seconds": cached["seconds"],
                            "first_run_seconds": first, "second_run_seconds": second})
            data.unlink()
    print(f"{'rows':>9} {'prepare s':>10} {'rows/s':>9} {'peak GiB':>9} {'cached s':>9} {'1-step run s':>13} {'again s':>8}")
    for r in results:
        print(f"{r['rows']:>9,} {r['prepare_seconds']:>10.1f} {r['rows_per_second']:>9,.0f} {r['prepare_peak_rss_bytes'] / 2**30:>9.2f} "
              f"{r['prepare_cached_seconds']:>9.2f} {r['first_run_seconds']:>13.1f} {r['second_run_seconds']:>8.1f}")
    report = {"machine": {"processor": platform.processor() or platform.machine(), "cpus": os.cpu_count(),
                          "platform": platform.platform(), "load_average": os.getloadavg()}, "results": results}
    if args.json:
        Path(args.json).parent.mkdir(parents=True, exist_ok=True)
        Path(args.json).write_text(json.dumps(report, indent=2) + "\n")


if __name__ == "__main__":
    main()
