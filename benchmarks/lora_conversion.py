"""Non-LoRA adapters converted to LoRA and run in llama.cpp: how far the converted adapter is from the trained one.

For each method (default LoHa and VeRA) on the default model: train it briefly on DialogSum (`peftlab train`),
convert it (`peftlab export --format lora --rank R`), write the llama.cpp LoRA file (`--format gguf-lora`), then on the
demo's 24 test prompts, greedy: the trained adapter's answers (the reference), the converted adapter's (torch) and
llama.cpp's (the base's own GGUF file with the LoRA file); the base's answers show how much the adapter changes.
Logit agreement: the relative difference (norm of the difference / norm of the trained logits) and the share of
positions with the same top token, over every prompt position. Prints a table and writes JSON.

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


def logit_agreement(reference_model, other_model, prompts: list[list[int]]) -> dict:
    import torch

    squared_difference = squared_reference = 0.0
    same_top = positions = 0
    with torch.inference_mode():
        for ids in prompts:
            batch = torch.tensor([ids])
            ours, theirs = reference_model(input_ids=batch).logits[0].float(), other_model(input_ids=batch).logits[0].float()
            squared_difference += (theirs - ours).pow(2).sum().item()
            squared_reference += ours.pow(2).sum().item()
            same_top += (theirs.argmax(-1) == ours.argmax(-1)).sum().item()
            positions += len(ids)
    return {"relative_logit_difference": (squared_difference / squared_reference) ** 0.5, "same_top_token": same_top / positions,
            "positions": positions}


def measure(prepared: dict, rows: int, max_new_tokens: int) -> dict:
    from peftlab.data.readers import read_rows
    from peftlab.evaluate.references import eval_examples
    from peftlab.evaluate.settings import generate_config
    from peftlab.export.exporting import base_gguf_file
    from peftlab.export.parity import llama_cpp_answers, until_end
    from peftlab.generation import GenerationSettings, encode_prompts, eos_ids, generate_ids, load_for_generation

    config = generate_config(prepared["adapter"], [], {}, rows)
    examples = eval_examples(read_rows(str(DEMO_TEST)), config.data)
    trained = load_for_generation(config.model.name, "fp32", prepared["adapter"])
    converted = load_for_generation(config.model.name, "fp32", prepared["lora"])
    prompts, _ = encode_prompts(trained, [e.prompt for e in examples], config.data.chat_template)
    ends = eos_ids(trained.model, trained.tokenizer)
    settings = GenerationSettings(max_new_tokens, 1, 8)
    answer = lambda model: [until_end(t, ends) for t in generate_ids(model, trained.tokenizer, prompts, False, settings)]  # noqa: E731
    reference = answer(trained.model)
    answers = {"converted LoRA (torch)": answer(converted.model)}
    with trained.model.disable_adapter():
        answers["base (no adapter)"] = answer(trained.model)
    base_gguf = base_gguf_file(None)
    start = time.perf_counter()
    answers[f"llama.cpp {base_gguf.name} + LoRA file"] = llama_cpp_answers(str(base_gguf), prompts, max_new_tokens, prepared["gguf"])
    llama_seconds = time.perf_counter() - start
    logits = logit_agreement(trained.model, converted.model, prompts)
    return {"prompts": len(prompts), "identical_to_trained": {k: sum(a == b for a, b in zip(v, reference)) for k, v in answers.items()},
            "logits_converted_vs_trained": logits, "llama_cpp_seconds": llama_seconds,
            "samples": [{"trained": trained.tokenizer.decode(reference[i], skip_special_tokens=True),
                         **{k: trained.tokenizer.decode(v[i], skip_special_tokens=True) for k, v in answers.items()}} for i in range(2)]}


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
        print(json.dumps({k: results[method][k] for k in ("conversion", "identical_to_trained", "logits_converted_vs_trained")}, indent=1), flush=True)
    print(f"\n{'method':<6} {'rank':>5} {'probe diff':>10} {'logit diff':>10} {'same top':>8}  identical answers of {args.rows} (converted, llama.cpp, base)")
    for method, r in results.items():
        same = list(r["identical_to_trained"].values())
        print(f"{method:<6} {r['conversion']['lora_rank']:>5} {r['conversion']['relative_logit_difference']:>10.2e} "
              f"{r['logits_converted_vs_trained']['relative_logit_difference']:>10.2e} {r['logits_converted_vs_trained']['same_top_token']:>8.4f}  "
              + ", ".join(map(str, same)))
    write_results(args.json, {"steps": args.steps, "batch_size": args.batch_size, "rank": args.rank, "max_new_tokens": args.max_new_tokens,
                              "llama_cpp_python": llama_cpp.__version__, "methods": results})
    print(f"wrote {args.json}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
