"""Render the results tables that README.md and docs/ quote from the benchmark results files, so a figure cannot go stale.

A page marks a rendered table with <!-- results:NAME --> ... <!-- /results:NAME -->; NAME is a
renderer below, reading benchmarks/results/NAME.json (which names the machine it ran on).

Run: python scripts/render_results.py          (rewrites the marked tables)
     python scripts/render_results.py --check  (exit 1 when a marked table differs from its results file)
"""

from __future__ import annotations

import argparse
import json
import re
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
RESULTS = ROOT / "benchmarks" / "results"
PAGES = [ROOT / "README.md", *sorted((ROOT / "docs").rglob("*.md"))]
MARKED = re.compile(r"(<!-- results:(?P<name>[a-z_]+) -->\n)(?P<body>.*?)(<!-- /results:(?P=name) -->)", re.S)
TRAIN_ROWS = {"classic": "classic notebook recipe", "trl": "TRL SFTTrainer, no packing", "peftlab": "**peftlab**",
              "peftlab-all": "**peftlab**, one epoch", "peftlab-all-unbounded": "peftlab, `train.max_batch_tokens=0`"}


def machine_line(machine: dict) -> str:
    flags = ", ".join(machine.get("cpu_flags") or []) or "no AVX2"
    bf16 = "native bf16" if machine.get("native_bf16") else "no native bf16"
    gpu = f", GPU {machine['gpu']}" if machine.get("gpu") else ""
    libraries = ", ".join(f"{k} {v}" for k, v in (machine.get("libraries") or {}).items())
    return f"Machine: {machine.get('cpu')}, {machine.get('cores')} cores ({flags}; {bf16}){gpu}; {libraries}."


def train_speed(result: dict) -> str:
    limit = result["limit"]
    lines = ["| recipe | rows | real tok/s | of fp32 limit | peak GiB | final loss |", "|---|---|---|---|---|---|"]
    for key, label in TRAIN_ROWS.items():
        if key in result:
            r = result[key]
            lines.append(f"| {label} | {r['rows'] or 'all 500'} | {r['real_tokens_per_second']:.1f} | {100 * r['share_of_limit']:.1f}% | "
                         f"{r['peak_memory_bytes'] / 2**30:.2f} | {r['final_loss']:.3f} |")
    lines.append("")
    lines.append(f"Source: `benchmarks/results/train_speed.json` (`python benchmarks/train_speed.py --rows 64 --all-rows`); "
                 f"fp32 limit {limit['limit_tokens_per_second']['fp32']:.0f} tokens/s from the same run's matmul rate. "
                 + machine_line(result.get("machine", {})))
    return "\n".join(lines) + "\n"


def topic_accuracy(result: dict) -> str:
    summary = result["summary"]
    lines = ["| run | accuracy | 95% interval | answers that are a class name |", "|---|---|---|---|"]
    for name, run in summary["runs"].items():
        low, high = run["interval_95"]
        lines.append(f"| {name} | {100 * run['accuracy']:.1f} | {100 * low:.1f} - {100 * high:.1f} | {100 * run['answers_that_are_a_class']:.0f}% |")
    lines.append(f"| always `everyday` (the majority class) | {100 * summary['majority_class_rate']:.1f} | - | 100% |")
    lines.append("")
    lines.append(f"Source: `benchmarks/results/topic_accuracy.json` (`python benchmarks/topic_accuracy.py`: {len(result['labels'])} topic "
                 f"classes, trained {result['steps']} steps x {result['batch_size']} rows, {result['test_rows']} test rows); quality "
                 "figures from a loaded machine (speed not judged). "
                 + machine_line(result.get("machine", {})))
    return "\n".join(lines) + "\n"


def judge_pairwise(result: dict) -> str:
    summary = result["summary"]
    low, high = summary["win_rate_interval_95"]
    lines = ["| judged | LoRA's win rate over the base | 95% interval | the two orders agree | ROUGE-L base / LoRA |", "|---|---|---|---|---|",
             f"| {summary['rows']} DialogSum test rows | {100 * summary['win_rate']:.1f} | {100 * low:.1f} - {100 * high:.1f} | "
             f"{100 * summary['order_agreement']:.0f}% | {100 * summary['rouge_l']['base']:.1f} / {100 * summary['rouge_l']['lora']:.1f} |", ""]
    lines.append(f"Source: `benchmarks/results/judge_pairwise.json` (`python benchmarks/judge_pairwise.py`: the judge is {result['judge']}; "
                 f"LoRA trained {result['steps']} steps x {result['batch_size']} rows); quality figures from a loaded machine (speed not "
                 "judged). " + machine_line(result.get("machine", {})))
    return "\n".join(lines) + "\n"


def lora_conversion(result: dict) -> str:
    lines = ["| method | LoRA rank | logit difference, converted vs trained | same top token | identical answers: converted (torch) | "
             "llama.cpp (base GGUF + LoRA file) | base without adapter |", "|---|---|---|---|---|---|---|"]
    for method, r in result["methods"].items():
        logits, identical = r["logits_converted_vs_trained"], r["identical_to_trained"]
        llama = next(key for key in identical if key.startswith("llama.cpp"))
        same = [identical["converted LoRA (torch)"], identical[llama], identical["base (no adapter)"]]
        lines.append(f"| {method} | {r['conversion']['lora_rank']} | {logits['relative_logit_difference']:.2e} | "
                     f"{100 * logits['same_top_token']:.2f}% | " + " | ".join(f"{n}/{r['prompts']}" for n in same) + " |")
    lines.append("")
    lines.append(f"Source: `benchmarks/results/lora_conversion.json` (`python benchmarks/lora_conversion.py`: each method trained "
                 f"{result['steps']} steps x {result['batch_size']} rows on DialogSum, `--rank {result['rank']}`, the demo's test "
                 f"prompts, greedy, {result['max_new_tokens']} new tokens; identical = the trained adapter's answer token for token). "
                 + machine_line(result.get("machine", {})))
    return "\n".join(lines) + "\n"


RENDERERS = {"train_speed": train_speed, "topic_accuracy": topic_accuracy, "judge_pairwise": judge_pairwise,
             "lora_conversion": lora_conversion}


def render(text: str) -> str:
    def replace(match: re.Match) -> str:
        name = match.group("name")
        result = json.loads((RESULTS / f"{name}.json").read_text(encoding="utf-8"))
        return match.group(1) + RENDERERS[name](result) + match.group(4)

    return MARKED.sub(replace, text)


def stale_pages() -> list[str]:
    return [str(page.relative_to(ROOT)) for page in PAGES if page.is_file()
            and render(page.read_text(encoding="utf-8")) != page.read_text(encoding="utf-8")]


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--check", action="store_true", help="compare instead of writing; exit 1 on a difference")
    args = parser.parse_args()
    if args.check:
        stale = stale_pages()
        if stale:
            print(f"stale results tables in {', '.join(stale)}; run python scripts/render_results.py", file=sys.stderr)
        return 1 if stale else 0
    for page in PAGES:
        if page.is_file():
            text = page.read_text(encoding="utf-8")
            page.write_text(render(text), encoding="utf-8")
    return 0


if __name__ == "__main__":
    sys.exit(main())
