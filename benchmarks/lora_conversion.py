"""Non-LoRA adapters converted to LoRA and run in llama.cpp: how far the converted adapter is from the trained one,
as `peftlab check` reports it.

For each method (default LoHa and VeRA) on the default model: train it briefly on DialogSum (`peftlab train`),
convert it (`peftlab export --format lora --rank R`), write the llama.cpp LoRA file (`--format gguf-lora`), then
`peftlab check ADAPTER --lora LORA --gguf-lora FILE` (its own function, the same prompts and settings as the command)
on the demo's 24 test prompts, greedy: the trained adapter is the reference; the merged adapter, the converted LoRA
(torch) and the base's own GGUF file with the LoRA file (llama.cpp) answer the same prompts. For each: identical
answers, and where it gives logits, its logits at the trained adapter's token choices (the largest relative
difference over the prompts, and the share of choices with the same top token). Prints a table and writes JSON.

    python benchmarks/lora_conversion.py [--data ../shared/data/dialogsum] [--methods loha,vera] [--steps 10] [--rank 32]
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
sys.path.insert(0, str(ROOT))
DIALOGSUM = ROOT.parent / "shared" / "data" / "dialogsum"
DEMO_TEST = ROOT / "peftlab" / "demo" / "data" / "test.jsonl"
PEFTLAB = [sys.executable, "-m", "peftlab"]


def run(command: list[str]) -> float:
    print("running:", " ".join(command[2:]), flush=True)
    start = time.perf_counter()
    subprocess.run(command, check=True)
    return time.perf_counter() - start


def prepare(method: str, args: argparse.Namespace, work: Path) -> dict:
    """Train (unless done), convert to LoRA and to a llama.cpp LoRA file; the wall time of each step."""
    adapter, lora, gguf = work / method / "adapter", work / method / "as-lora", work / method / "as-lora.gguf"
    seconds = {}
    if not (adapter / "adapter_config.json").is_file():
        seconds["train"] = run([*PEFTLAB, "train", "--data", str(Path(args.data) / "train.jsonl"), "--method", method,
                                "--max-steps", str(args.steps), "--batch-size", str(args.batch_size), "--output", str(work / method), "--overwrite"])
    seconds["export_lora"] = run([*PEFTLAB, "export", str(adapter), "--format", "lora", "--rank", args.rank, "--output", str(lora), "--overwrite"])
    seconds["export_gguf_lora"] = run([*PEFTLAB, "export", str(lora), "--format", "gguf-lora", "--output", str(gguf), "--overwrite"])
    return {"adapter": str(adapter), "lora": str(lora), "gguf": str(gguf), "seconds": seconds,
            "conversion": json.loads((lora / "peftlab.json").read_text())}


def measure(prepared: dict, rows: int, max_new_tokens: int) -> dict:
    """`peftlab check ADAPTER --data DEMO_TEST --max-samples ROWS --max-new-tokens N --lora LORA --gguf-lora FILE`, as
    the command builds it (cli/commands.py command_check), its figures kept instead of printed."""
    from dataclasses import asdict

    from peftlab.data.examples import scored_prompts, subsample
    from peftlab.data.readers import read_rows
    from peftlab.evaluate.settings import generate_config
    from peftlab.export.parity import REFERENCE, check_parity
    from peftlab.generation import GenerationSettings

    config = generate_config(prepared["adapter"], [], {}, rows)
    texts = scored_prompts(subsample(read_rows(str(DEMO_TEST), config.data.max_row_bytes), 1, config.data.max_samples), config.data)
    settings = GenerationSettings(max_new_tokens, 1, 16)
    start = time.perf_counter()
    parity = check_parity(config, prepared["adapter"], texts, settings, None, say=print, lora=prepared["lora"], gguf_lora=prepared["gguf"])
    seconds = time.perf_counter() - start
    runtimes = {name: {"identical": parity.identical(name), "logits": asdict(parity.logits[name]) if parity.logits.get(name) else None}
                for name in parity.answers if name != REFERENCE}
    return {"prompts": len(texts), "runtimes": runtimes, "check_seconds": seconds, "setup_problems": parity.setup_problems,
            "samples": [{name: parity.texts[name][i] for name in parity.texts} for i in range(min(2, len(texts)))]}


def runtime(result: dict, prefix: str) -> dict:
    """The one runtime of a method's check whose label starts with `prefix` ("LoRA ", "llama.cpp ")."""
    return next(value for name, value in result["runtimes"].items() if name.startswith(prefix))


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--data", default=str(DIALOGSUM), help="the DialogSum folder (train.jsonl)")
    parser.add_argument("--methods", default="loha,vera")
    parser.add_argument("--steps", type=int, default=10, help="training budget per method (optimizer steps)")
    parser.add_argument("--batch-size", type=int, default=4)
    parser.add_argument("--rank", default="32", help="export --rank: a rank, or an energy share such as 0.95")
    parser.add_argument("--rows", type=int, default=24, help="demo test prompts compared")
    parser.add_argument("--max-new-tokens", type=int, default=48)
    parser.add_argument("--work", default=str(ROOT / "runs" / "lora-conversion"), help="where adapters and exports go (runs/ is not tracked)")
    parser.add_argument("--json", default=str(ROOT / "benchmarks" / "results" / "lora_conversion.json"))
    args = parser.parse_args()
    if not (Path(args.data) / "train.jsonl").is_file():
        print(f"skipped: DialogSum not found at {args.data} (it lives in ../shared/data/dialogsum beside the repository)")
        return 0
    try:
        import llama_cpp
    except ImportError:
        print("skipped: llama-cpp-python is not installed (pip install llama-cpp-python; it compiles llama.cpp)")
        return 0
    results = {}
    for method in args.methods.split(","):
        prepared = prepare(method, args, Path(args.work))
        results[method] = {**prepared, **measure(prepared, args.rows, args.max_new_tokens)}
        print(json.dumps({k: results[method][k] for k in ("conversion", "runtimes")}, indent=1), flush=True)
    print(f"\n{'method':<6} {'rank':>5} {'probe diff':>10}  converted LoRA: identical, logit diff, same top  |  llama.cpp: the same")
    for method, r in results.items():
        cells = []
        for prefix in ("LoRA ", "llama.cpp "):
            figures, logits = runtime(r, prefix), runtime(r, prefix)["logits"] or {}
            cells.append(f"{figures['identical']:>3}/{r['prompts']} {logits.get('relative_difference', float('nan')):>9.2e} "
                         f"{logits.get('same_top_token', float('nan')):>8.4f}")
        print(f"{method:<6} {r['conversion']['lora_rank']:>5} {r['conversion']['relative_logit_difference']:>10.2e}  " + "  |  ".join(cells))
    write_results(args.json, {"steps": args.steps, "batch_size": args.batch_size, "rank": args.rank, "max_new_tokens": args.max_new_tokens,
                              "llama_cpp_python": llama_cpp.__version__, "methods": results})
    print(f"wrote {args.json}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
