"""Render the results tables that README.md and docs/ quote from the benchmark results files, so a figure cannot go stale.

A page marks a rendered table with <!-- results:NAME --> ... <!-- /results:NAME -->, filled from
benchmarks/results/NAME.json (which names the machine it ran on): by a renderer below when NAME has
one (NAME.VIEW: another renderer of the same file), else from the file's own
"table": {"header": [...], "rows": [[...], ...]}, with its "command".

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
MARKED = re.compile(r"^(?P<indent> *)(?P<open><!-- results:(?P<name>[a-z0-9_]+(?:\.[a-z0-9_]+)?) -->\n)(?P<body>.*?)(?P<close>(?P=indent)<!-- /results:(?P=name) -->)",
                    re.S | re.M)  # an indented marker (inside a list item) gets its table indented alike
TRAIN_ROWS = {"classic": "classic notebook recipe", "trl": "TRL SFTTrainer, no packing", "peftlab": "**peftlab**",
              "peftlab-all": "**peftlab**, one epoch", "peftlab-all-unbounded": "peftlab, `train.max_batch_tokens=0`"}


def machine_line(machine: dict | str) -> str:
    if isinstance(machine, str):  # a transcribed result: what was recorded about the machine, in words
        return f"Machine: {machine.rstrip('.')}."
    if "cpu" not in machine:  # written before write_results: only what that run recorded
        return "Machine, as recorded: " + ", ".join(f"{key} {value}" for key, value in machine.items()) + "."
    flags = ", ".join(machine.get("cpu_flags") or []) or "no AVX2"
    bf16 = "native bf16" if machine.get("native_bf16") else "no native bf16"
    gpu = f", GPU {machine['gpu']}" if machine.get("gpu") else ""
    libraries = ", ".join(f"{k} {v}" for k, v in (machine.get("libraries") or {}).items())
    return f"Machine: {machine.get('cpu')}, {machine.get('cores')} cores ({flags}; {bf16}){gpu}; {libraries}."


def train_speed(result: dict, steps: bool = False) -> str:
    """The README's table; with steps (train_speed.steps), also the first step's seconds and the steady rate after it."""
    limit = result["limit"]
    step_header, step_rule = (" 1st step s | steady tok/s |", "---|---|") if steps else ("", "")
    lines = [f"| recipe | rows | real tok/s | of fp32 limit |{step_header} peak GiB | final loss |", f"|---|---|---|---|{step_rule}---|---|"]
    for key, label in TRAIN_ROWS.items():
        if key in result:
            r = result[key]
            step_cells = f" {r['first_step_seconds']:.1f} | {r['steady_tokens_per_second']:.1f} |" if steps else ""
            lines.append(f"| {label} | {r['rows'] or 'all 500'} | {r['real_tokens_per_second']:.1f} | {100 * r['share_of_limit']:.1f}% |"
                         f"{step_cells} {r['peak_memory_bytes'] / 2**30:.2f} | {r['final_loss']:.3f} |")
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


def data_prep(result: dict) -> str:
    ceiling = any("ceiling_rows_per_second" in r["tokenizer"] for r in result["results"])  # older files lack it
    lines = ["| rows | preparation rows/s | tokenizer alone rows/s | " + ("tokenizer ceiling rows/s | " if ceiling else "")
             + "share | peftlab's own CPU s per 1k rows | peak RSS GiB | first step s, empty cache | first step s, cache filled |",
             "|---|---|---|---|---|---|---|---|" + ("---|" if ceiling else "")]
    for r in result["results"]:
        limit = f"{r['tokenizer']['ceiling_rows_per_second']:,.0f} | " if ceiling else ""
        lines.append(f"| {r['rows']:,} | {r['cold']['rows_per_second']:,.0f} | {r['tokenizer']['rows_per_second']:,.0f} | {limit}"
                     f"{100 * r['peftlab_share_of_tokenizer_limit']:.0f}% | {r['peftlab_own_work']['cpu_seconds_per_1k_rows']:.3f} | "
                     f"{r['cold']['peak_rss_bytes'] / 2**30:.2f} | "
                     f"{r['cold']['time_to_first_step_seconds']:.1f} | {r['warm']['time_to_first_step_seconds']:.1f} |")
    lines.append("")
    lines.append("Source: `benchmarks/results/data_prep.json` (`python benchmarks/data_prep.py`). "
                 + (f"{result['note']} " if result.get("note") else "") + machine_line(result.get("machine", {})))
    return "\n".join(lines) + "\n"


def formats(result: dict) -> str:
    def cell(step: dict) -> str:
        if step["exit_code"]:
            return f"exit {step['exit_code']}"
        metric = step.get("metric", {})
        figure = f"{metric['value']:.3f}" if "value" in metric else f"base {metric['base']:.3f}, lora {metric['lora']:.3f}"
        return f"ok, {step['seconds']:.0f} s, {metric.get('metric', '')} {figure}"

    lines = ["| format | train --max-steps 3 | eval, 4 rows | compare base,lora |", "|---|---|---|---|"]
    for r in result["results"]:
        lines.append(f"| `{r['format']}` | {cell(r['train'])} | {cell(r['eval'])} | {cell(r['compare'])} |")
    lines.append("")
    lines.append(f"Source: `benchmarks/results/formats.json` (`python benchmarks/formats.py`), {result['train_rows']} training "
                 f"rows, {result['wall_seconds']:.0f} s in all. " + (f"{result['note']} " if result.get("note") else "")
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
    """benchmarks/lora_conversion.py: per method, what `peftlab check` reported for the converted LoRA and its llama.cpp file."""
    lines = ["| method | LoRA rank | converted LoRA (torch): identical answers | logit difference | same top token | "
             "llama.cpp (base GGUF + LoRA file): identical answers | logit difference | same top token |", "|---|---|---|---|---|---|---|---|"]
    for method, r in result["methods"].items():
        cells = [method, str(r["conversion"]["lora_rank"])]
        for prefix in ("LoRA ", "llama.cpp "):
            figures = next(value for name, value in r["runtimes"].items() if name.startswith(prefix))
            logits = figures["logits"]
            cells += [f"{figures['identical']}/{r['prompts']}", f"{logits['relative_difference']:.2e}" if logits else "-",
                      f"{100 * logits['same_top_token']:.2f}%" if logits else "-"]
        lines.append("| " + " | ".join(cells) + " |")
    prompts = ", ".join(sorted({str(r["prompts"]) for r in result["methods"].values()}))
    lines.append("")
    lines.append(f"Source: `benchmarks/results/lora_conversion.json` (`python benchmarks/lora_conversion.py --rows {prompts} "
                 f"--max-new-tokens {result['max_new_tokens']}`: each method trained "
                 f"{result['steps']} steps x {result['batch_size']} rows on DialogSum, exported with `--rank {result['rank']}`, then "
                 f"`peftlab check ADAPTER --lora LORA --gguf-lora FILE` on {prompts} of the demo's test prompts, greedy, "
                 f"{result['max_new_tokens']} new tokens; identical = the trained adapter's answer token for token; logits at the "
                 "trained adapter's token choices: the largest relative difference over the prompts, and the share of choices "
                 "with the same top token). " + machine_line(result.get("machine", {})))
    return "\n".join(lines) + "\n"


def demo(result: dict) -> str:
    minutes, seconds = divmod(round(result["seconds"]), 60)
    conversion = ", the model's first conversion (in the base evaluation) included" if result.get("first_conversion_included") else ""
    stages = ", ".join(f"{name} {value:.0f} s" for name, value in result["stages"].items())
    return (f"Measured: **{minutes} min {seconds:02d} s**{conversion}, the install not ({stages}); "
            f"ROUGE-L {result['base']:.1f} for the base, {result['tuned']:.1f} tuned, on {result['test_rows']} test rows after "
            f"{result['training_steps']} training steps. Source: `benchmarks/results/demo.json` (`python benchmarks/demo_time.py`, "
            f"load average {result['load_average_at_start'][0]:.2f} at the start). {machine_line(result.get('machine', {}))}\n")



SERVING_MODES = {"continuous": "continuous", "static": "static", "one-at-a-time": "one at a time"}


def serving(result: dict) -> str:
    """benchmarks/serving.py's runs: per load (closed loops of N clients, Poisson arrivals), the three modes."""
    lines = ["| load | mode | req/s | out tok/s | TTFT p50 | TTFT p95 | ITL p50 | ITL p95 |", "| --- | --- | --- | --- | --- | --- | --- | --- |"]
    seconds = lambda value: f"{value:.2f}" if value < 10 else f"{value:.1f}"  # noqa: E731 - three significant digits, as read
    for load in result["runs"]["continuous"]:
        label = load.replace("closed 1 clients", "1 client").replace("closed ", "").replace("open ", "Poisson ")
        for mode, mode_label in SERVING_MODES.items():
            r = result["runs"][mode][load]
            lines.append(f"| {label} | {mode_label} | {r['requests_per_second']:.2f} | {r['output_tokens_per_second']:.1f} | "
                         f"{seconds(r['ttft_p50'])} | {seconds(r['ttft_p95'])} | {r['itl_p50']:.3f} | {r['itl_p95']:.3f} |".replace("|  |", "| |"))
            label = ""
    lines += ["", "Source: `benchmarks/results/serving.json` (`python benchmarks/serving.py`). " + machine_line(result["machine"])]
    return "\n".join(lines) + "\n"


def results_table(name: str, result: dict) -> str:
    """The file's own table, as stored: header, rows, then its source, command and machine."""
    table = result["table"]
    lines = ["| " + " | ".join(map(str, table["header"])) + " |", "|" + "---|" * len(table["header"])]
    lines += ["| " + " | ".join(map(str, row)) + " |" for row in table["rows"]]
    command = f" (`{result['command']}`)" if result.get("command") else ""
    transcribed = f" Transcribed {result['transcribed']}." if result.get("transcribed") else ""
    lines += ["", f"Source: `benchmarks/results/{name}.json`{command}. {machine_line(result.get('machine', {}))}{transcribed}"]
    return "\n".join(lines) + "\n"


RENDERERS = {"demo": demo, "serving": serving, "train_speed": train_speed, "data_prep": data_prep, "formats": formats,
             "train_speed.steps": lambda result: train_speed(result, steps=True), "topic_accuracy": topic_accuracy,
             "judge_pairwise": judge_pairwise, "lora_conversion": lora_conversion}


def render(text: str) -> str:
    def replace(match: re.Match) -> str:
        name = match.group("name")  # NAME, or NAME.VIEW for another table from the same file
        result = json.loads((RESULTS / f"{name.split('.')[0]}.json").read_text(encoding="utf-8"))
        text = RENDERERS[name](result) if name in RENDERERS else results_table(name, result)
        indented = "".join(match.group("indent") + line if line.strip() else line for line in text.splitlines(keepends=True))
        return match.group("indent") + match.group("open") + indented + match.group("close")

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
