"""Data preparation at scale, inside real training runs: 10k / 100k / 1M synthetic prompt/completion rows.

Each size is a JSONL file of rows `{"prompt": DIALOGUE + " [i]", "completion": SUMMARY}` cycling over DialogSum's
training rows (the index makes every row distinct). For each size:
- **cold run**: `peftlab train --max-steps 1` on the default model with an empty data cache. Read from that run:
  the time to its first optimizer step (from launching the command to the step's start, which the run writes in
  summary.json as `first_step_started_at`), its data preparation (`data_seconds`: reading, tokenizing, writing
  the Arrow file and mapping it) as rows/s, and the process's peak RSS (`wait4`, the process's own);
- **warm run**: the same command again, the data cache now filled: its time to the first step;
- **the tokenizer's limit**, measured in this script between the runs: the fast tokenizer's own `encode_batch`
  over exactly the texts peftlab tokenizes (each prompt in its chat wrap, each completion), in batches of the
  size peftlab uses, on the first `--limit-rows` rows; peftlab's share is its rows/s over this one. Beside it the
  tokenizer's **ceiling** on this machine: its rate on one core (a child process held to one tokenizer thread with
  RAYON_NUM_THREADS=1, in rows per CPU second, which other work on a loaded machine does not lower much) times the
  cores: no way of spreading the tokenizer over the cores (its own threads, `datasets.map(num_proc=...)`) beats it;
- **peftlab's own work**: the CPU seconds of `prepared_set` on those rows with the tokenizer's answers recorded
  beforehand and replayed, so the tokenizer's work is left out (reading, the chat wrap, labels, Arrow, the cache).

    python benchmarks/data_prep.py [--rows 10000 100000 1000000] [--json benchmarks/results/data_prep.json]
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

from machine import write_results  # benchmarks/machine.py: the results file names its machine

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))
DIALOGSUM = ROOT.parent / "shared" / "data" / "dialogsum" / "train.jsonl"


def write_rows(path: Path, count: int, dialogsum: Path) -> None:
    source = [json.loads(line) for line in dialogsum.read_text().splitlines() if line.strip()]
    with path.open("w", encoding="utf-8") as out:
        for i in range(count):
            row = source[i % len(source)]
            out.write(json.dumps({"prompt": f"{row['dialogue']} [{i}]", "completion": row["summary"]}) + "\n")


def train_once(data: Path, cache: Path, out: Path) -> dict:
    """One `peftlab train --max-steps 1`: its time to the first step, data preparation and peak RSS."""
    env = {**os.environ, "PEFTLAB_CACHE": str(cache), "PYTHONPATH": str(ROOT)}
    command = [sys.executable, "-m", "peftlab", "train", "--data", str(data), "--max-steps", "1", "--batch-size", "8",
               "--output", str(out), "--overwrite"]
    with tempfile.TemporaryFile("w+") as said, tempfile.TemporaryFile("w+") as errors:
        launched = time.time()
        process = subprocess.Popen(command, env=env, stdout=said, stderr=errors)
        _, status, usage = os.wait4(process.pid, 0)  # the rusage of this process alone (ru_maxrss in KiB on Linux)
        process.returncode = os.waitstatus_to_exitcode(status)
        run_seconds = time.time() - launched
        if process.returncode:
            errors.seek(0)
            raise SystemExit(f"train failed: {(errors.read().strip().splitlines() or ['?'])[-1]}")
        said.seek(0)
        from_cache = "from the cache" in said.read()
    summary = json.loads((out / "summary.json").read_text())
    return {"time_to_first_step_seconds": summary["first_step_started_at"] - launched, "run_seconds": run_seconds,
            "data_from_cache": from_cache, "data_seconds": summary["data_seconds"],
            "rows_per_second": None if from_cache else summary["data_rows"] / summary["data_seconds"],
            "peak_rss_bytes": usage.ru_maxrss * 1024}


def tokenizer_limit(data: Path, rows: int) -> dict:
    """Rows/s of the fast tokenizer's own encode_batch over the texts peftlab tokenizes for the first `rows` rows, on
    every core; and its ceiling: one core's rate (measured alone, in a process held to one tokenizer thread, in CPU
    seconds so that other work on the machine does not count) times the cores."""
    count, seconds, cpu_seconds = encode_texts(data, rows)
    one_core = json.loads(subprocess.run(
        [sys.executable, __file__, "--one-core-rate", str(data), str(rows)], check=True, capture_output=True, text=True,
        env={**os.environ, "RAYON_NUM_THREADS": "1", "PYTHONPATH": str(ROOT)}).stdout.strip().splitlines()[-1])
    cores = os.cpu_count()
    return {"rows": count, "seconds": seconds, "rows_per_second": count / seconds, "cpu_seconds": cpu_seconds,
            "threads": os.environ.get("RAYON_NUM_THREADS", f"all ({cores} cores)"),
            "one_core_rows_per_cpu_second": one_core["rows_per_cpu_second"],
            "ceiling_rows_per_second": one_core["rows_per_cpu_second"] * cores}


def encode_texts(data: Path, rows: int) -> tuple[int, float, float]:
    """(rows, wall seconds, process CPU seconds) of encode_batch over the first `rows` rows' prompts (in their chat
    wrap) and completions, in batches of the size peftlab uses; the wrap is peftlab's work and is not timed."""
    from peftlab.data import prepare
    from peftlab.data.tokenize import chat_prompt_texts, uses_chat_template
    from peftlab.models.loading import load_tokenizer, resolve_source

    label, path = resolve_source(None)
    tokenizer = load_tokenizer(path, label)
    chat = uses_chat_template(tokenizer, "auto", False)
    with data.open(encoding="utf-8") as lines:
        pairs = [json.loads(line) for _, line in zip(range(rows), lines)]
    backend, seconds, cpu_seconds = tokenizer.backend_tokenizer, 0.0, 0.0
    for start in range(0, len(pairs), prepare.BATCH_ROWS):
        batch = pairs[start:start + prepare.BATCH_ROWS]
        prompts = [pair["prompt"] for pair in batch]
        prompts = chat_prompt_texts(tokenizer, prompts) if chat else prompts
        completions = [pair["completion"] for pair in batch]
        began, began_cpu = time.perf_counter(), time.process_time()
        backend.encode_batch(prompts, add_special_tokens=not chat)
        backend.encode_batch(completions, add_special_tokens=False)
        seconds += time.perf_counter() - began
        cpu_seconds += time.process_time() - began_cpu
    return len(pairs), seconds, cpu_seconds


class ReplayedBackend:
    """A tokenizer backend whose encode_batch first records its encodings, then answers from them: timing peftlab's
    preparation with recorded answers leaves the tokenizer's own work out (what remains is peftlab's)."""

    def __init__(self, real: object):
        object.__setattr__(self, "real", real)
        object.__setattr__(self, "memo", {})
        object.__setattr__(self, "replaying", False)

    def __getattr__(self, name: str) -> object:
        return getattr(self.real, name)

    def __setattr__(self, name: str, value: object) -> None:
        setattr(self.real, name, value)

    def encode_batch(self, texts: list[str], add_special_tokens: bool = True, is_pretokenized: bool = False) -> list:
        if self.replaying:
            return [self.memo[(text, add_special_tokens)] for text in texts]
        encodings = self.real.encode_batch(texts, add_special_tokens=add_special_tokens, is_pretokenized=is_pretokenized)
        self.memo.update(((text, add_special_tokens), encoding) for text, encoding in zip(texts, encodings))
        return encodings


def own_cpu_seconds(data: Path, rows: int, work: Path) -> dict:
    """CPU seconds of prepared_set on the first `rows` rows with the tokenizer's answers replayed (best of 3)."""
    import shutil

    import datasets  # noqa: F401 - imported once before timing, as a training run has it imported

    from peftlab.config import DataConfig
    from peftlab.data import prepare
    from peftlab.data.tokenize import uses_chat_template
    from peftlab.models.loading import load_tokenizer, resolve_source

    subset = work / f"first-{rows}.jsonl"
    with data.open(encoding="utf-8") as lines, subset.open("w", encoding="utf-8") as out:
        out.writelines(line for _, line in zip(range(rows), lines))
    tokenizer = load_tokenizer(*reversed(resolve_source(None)))
    replay = tokenizer._tokenizer = ReplayedBackend(tokenizer._tokenizer)  # transformers 5.24 keeps the backend here
    chat, before = uses_chat_template(tokenizer, "auto", False), os.environ.get("PEFTLAB_CACHE")
    os.environ["PEFTLAB_CACHE"] = str(work / "replay-cache")
    try:
        prepare.prepared_set(str(subset), DataConfig(), tokenizer, False, chat)  # records the encodings
        object.__setattr__(replay, "replaying", True)
        timings = []
        for _ in range(3):
            shutil.rmtree(prepare.cache_root(), ignore_errors=True)
            began = time.process_time()
            prepare.prepared_set(str(subset), DataConfig(), tokenizer, False, chat)
            timings.append(time.process_time() - began)
    finally:
        os.environ.pop("PEFTLAB_CACHE") if before is None else os.environ.update(PEFTLAB_CACHE=before)
        shutil.rmtree(work / "replay-cache", ignore_errors=True)
        subset.unlink()
    return {"rows": rows, "cpu_seconds": min(timings), "cpu_seconds_per_1k_rows": 1000 * min(timings) / rows}


def measure(count: int, work: Path, dialogsum: Path, limit_rows: int) -> dict:
    data = work / f"rows-{count}.jsonl"
    write_rows(data, count, dialogsum)
    cache = work / f"cache-{count}"
    cache.mkdir()
    models = Path(os.environ.get("PEFTLAB_CACHE", Path.home() / ".cache" / "peftlab")) / "models"
    (cache / "models").symlink_to(models, target_is_directory=True)  # the converted default model, not the data
    cold = train_once(data, cache, work / f"run-{count}")
    warm = train_once(data, cache, work / f"run-{count}")
    if cold["data_from_cache"] or not warm["data_from_cache"]:
        raise SystemExit(f"{count} rows: the first run must prepare the rows and the second read them from the cache")
    limit = tokenizer_limit(data, min(count, limit_rows))
    own = own_cpu_seconds(data, min(count, limit_rows), work)
    result = {"rows": count, "file_bytes": data.stat().st_size, "cold": cold, "warm": warm, "tokenizer": limit,
              "peftlab_own_work": own,
              "peftlab_share_of_tokenizer_limit": cold["rows_per_second"] / limit["rows_per_second"],
              "load_average_after": os.getloadavg()}
    data.unlink()
    return result


def print_table(results: list[dict]) -> None:
    print(f"{'rows':>9} {'prep rows/s':>11} {'tokenizer rows/s':>16} {'ceiling rows/s':>14} {'share':>6} {'own CPU s/1k':>12} "
          f"{'peak GiB':>9} {'1st step s (cold)':>17} {'1st step s (warm)':>17}")
    for r in results:
        print(f"{r['rows']:>9,} {r['cold']['rows_per_second']:>11,.0f} {r['tokenizer']['rows_per_second']:>16,.0f} "
              f"{r['tokenizer']['ceiling_rows_per_second']:>14,.0f} "
              f"{r['peftlab_share_of_tokenizer_limit']:>6.0%} {r['peftlab_own_work']['cpu_seconds_per_1k_rows']:>12.3f} "
              f"{r['cold']['peak_rss_bytes'] / 2**30:>9.2f} "
              f"{r['cold']['time_to_first_step_seconds']:>17.1f} {r['warm']['time_to_first_step_seconds']:>17.1f}")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--rows", type=int, nargs="+", default=[10_000, 100_000, 1_000_000])
    parser.add_argument("--limit-rows", type=int, default=100_000, help="rows the tokenizer's limit is measured on")
    parser.add_argument("--json", default=None)
    parser.add_argument("--note", help="a sentence kept in the JSON and under the docs' table (e.g. the machine was not quiet)")
    parser.add_argument("--dialogsum", type=Path, default=DIALOGSUM, help="DialogSum's train.jsonl")
    parser.add_argument("--one-core-rate", nargs=2, metavar=("DATA", "ROWS"), help=argparse.SUPPRESS)  # tokenizer_limit's child
    args = parser.parse_args()
    if args.one_core_rate:
        count, _, cpu_seconds = encode_texts(Path(args.one_core_rate[0]), int(args.one_core_rate[1]))
        print(json.dumps({"rows": count, "cpu_seconds": cpu_seconds, "rows_per_cpu_second": count / cpu_seconds}))
        return
    if not args.dialogsum.is_file():
        raise SystemExit(f"DialogSum not found at {args.dialogsum}; pass --dialogsum PATH")
    with tempfile.TemporaryDirectory() as folder:
        results = [measure(count, Path(folder), args.dialogsum, args.limit_rows) for count in args.rows]
    print_table(results)
    if args.json:
        write_results(args.json, {"benchmark": "data_prep", "note": args.note, "load_average_at_end": os.getloadavg(), "results": results})


if __name__ == "__main__":
    main()
