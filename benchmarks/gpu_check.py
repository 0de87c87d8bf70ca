"""Check peftlab's CUDA paths on an NVIDIA GPU: LoRA and QLoRA training in bf16, reload, batched generation.

    python benchmarks/gpu_check.py [--model MODEL] [--data TRAIN.jsonl] [--rows 64] [--steps 20] [--device cuda|cpu]

For each of lora and qlora (4-bit NF4, double quant, through bitsandbytes): `peftlab train` in its
own process (bf16, the given rows and steps) must lower the loss; the saved adapter reloaded by
peftlab and by plain peft must give identical logits; then the LoRA adapter generates summaries
batched and one at a time on the device. Prints a table (real tokens/s, peak GPU memory, checks)
and writes benchmarks/results/gpu_check.json; exits 1 when a check fails. `--device cpu` runs the
same checks without a GPU (slow on the default model: use a small --model to try the script).
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import time
from pathlib import Path

from machine import write_results  # benchmarks/machine.py: the results file names its machine

ROOT = Path(__file__).resolve().parents[1]
DIALOGSUM = ROOT.parent / "shared" / "data" / "dialogsum" / "train.jsonl"
METHODS = {"lora": [], "qlora": ["--set", "qlora.r=16"]}


def train(method: str, args: argparse.Namespace, out: Path, env: dict[str, str]) -> dict:
    command = [sys.executable, "-m", "peftlab", "train", "--method", method, "--dtype", "bf16", "--data", args.data,
               "--max-samples", str(args.rows), "--max-steps", str(args.steps), "--output", str(out / method), "--overwrite",
               *(["--model", args.model] if args.model else []), *METHODS[method]]
    done = subprocess.run(command, capture_output=True, text=True, env=env)
    if done.returncode:
        return {"method": method, "error": (done.stderr.strip().splitlines() or ["?"])[-1]}
    summary = json.loads((out / method / "summary.json").read_text())
    losses = [json.loads(line)["loss"] for line in (out / method / "log.jsonl").read_text().splitlines() if '"loss"' in line]
    return {"method": method, "real_tokens_per_second": summary["real_tokens_per_second"],
            "peak_memory_bytes": summary["peak_memory_bytes"], "first_losses": losses[:3], "last_losses": losses[-3:],
            "loss_falls": sum(losses[-3:]) < sum(losses[:3])}


def reload_matches_plain_peft(method: str, args: argparse.Namespace, adapter: Path, device: str) -> bool:
    """peftlab's reload and plain peft's give the same logits on the device."""
    import torch
    from peft import PeftModel

    from peftlab.methods import get_method, load_trained
    from peftlab.models import load_model

    quantization = get_method(method).quantization
    fresh = lambda: load_model(args.model, "bf16", quantization=quantization)  # noqa: E731
    loaded = fresh()
    ours = load_trained(loaded.model, adapter)
    plain = PeftModel.from_pretrained(fresh().model, str(adapter))
    ids = loaded.tokenizer("#Person1#: Where is the station? #Person2#: Two blocks north.", return_tensors="pt")["input_ids"]
    if not quantization:  # bitsandbytes places 4-bit weights on the GPU as it loads them
        ours, plain = ours.to(device), plain.to(device)
    with torch.inference_mode():
        return bool(torch.equal(ours(input_ids=ids.to(device)).logits, plain(input_ids=ids.to(device)).logits))


def generation(args: argparse.Namespace, adapter: Path, device: str) -> dict:
    """The LoRA adapter writes summaries batched and one at a time on the device: summaries/s and agreement."""
    import torch

    from peftlab.generation import GenerationSettings, generate, source_ids
    from peftlab.methods import load_trained
    from peftlab.models import load_model

    loaded = load_model(args.model, "bf16")
    model = load_trained(loaded.model, adapter).to(device)
    rows = [json.loads(line) for line in Path(args.data).read_text().splitlines()[:16]]
    prompts = [source_ids(loaded.tokenizer, f"Summarize the following conversation.\n\n{row['dialogue']}\n\nSummary: ",
                          chat=bool(loaded.tokenizer.chat_template), is_seq2seq=loaded.is_seq2seq) for row in rows]
    settings = GenerationSettings(max_new_tokens=64, batch_size=16)
    start = time.perf_counter()
    batched = generate(model, loaded.tokenizer, prompts, loaded.is_seq2seq, settings)
    batched_seconds = time.perf_counter() - start
    start = time.perf_counter()
    single = [generate(model, loaded.tokenizer, [ids], loaded.is_seq2seq, GenerationSettings(64, 1, 1))[0] for ids in prompts]
    single_seconds = time.perf_counter() - start
    return {"device": str(next(model.parameters()).device), "batched_per_second": len(prompts) / batched_seconds,
            "single_per_second": len(prompts) / single_seconds, "identical": sum(a == b for a, b in zip(batched, single)),
            "of": len(prompts), "non_empty": sum(bool(text) for text in batched),
            "peak_memory_bytes": torch.cuda.max_memory_allocated() if device == "cuda" else None}


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--model", default=None, help="hub id, folder or .gguf (default: the embedded SmolLM2-135M-Instruct)")
    parser.add_argument("--data", default=str(DIALOGSUM if DIALOGSUM.is_file() else ROOT / "peftlab" / "demo" / "data" / "train.jsonl"))
    parser.add_argument("--rows", type=int, default=64)
    parser.add_argument("--steps", type=int, default=20)
    parser.add_argument("--device", choices=["cuda", "cpu"], default="cuda")
    parser.add_argument("--output", default=str(ROOT / "runs" / "gpu_check"))
    args = parser.parse_args()

    import torch

    if args.device == "cuda" and not torch.cuda.is_available():
        print("gpu_check: no CUDA device is visible to torch; run it on a machine with an NVIDIA GPU (or --device cpu to try it)")
        return 2
    env = {**os.environ, **({"CUDA_VISIBLE_DEVICES": ""} if args.device == "cpu" else {})}
    out = Path(args.output)
    results = {"device": torch.cuda.get_device_name() if args.device == "cuda" else "cpu", "torch": torch.__version__, "runs": []}
    for method in METHODS:
        run = train(method, args, out, env)
        if "error" not in run:
            run["reload_identical"] = reload_matches_plain_peft(method, args, out / method / "adapter", args.device)
        results["runs"].append(run)
        print(json.dumps(run))
    lora = out / "lora" / "adapter"
    results["generation"] = generation(args, lora, args.device) if lora.is_dir() else {"error": "lora did not train"}

    print(f"\n{results['device']} (torch {results['torch']})")
    print(f"{'method':8} {'real tok/s':>10} {'peak GiB':>9} {'loss falls':>10} {'reload same':>11}")
    for run in results["runs"]:
        if "error" in run:
            print(f"{run['method']:8} error: {run['error']}")
            continue
        peak = run["peak_memory_bytes"] / 2**30
        print(f"{run['method']:8} {run['real_tokens_per_second']:10.1f} {peak:9.2f} {str(run['loss_falls']):>10} {str(run['reload_identical']):>11}")
    g = results["generation"]
    if "error" not in g:
        print(f"generation on {g['device']}: batched {g['batched_per_second']:.2f} summaries/s, one at a time "
              f"{g['single_per_second']:.2f}; {g['identical']}/{g['of']} identical (bf16 padding may change a few), "
              f"{g['non_empty']}/{g['of']} non-empty")
    (ROOT / "benchmarks" / "results").mkdir(parents=True, exist_ok=True)
    write_results(ROOT / "benchmarks" / "results" / "gpu_check.json", results)
    passed = all(r.get("loss_falls") and r.get("reload_identical") for r in results["runs"]) and g.get("non_empty", 0) > 0
    print("all checks passed" if passed else "SOME CHECKS FAILED")
    return 0 if passed else 1


if __name__ == "__main__":
    sys.exit(main())
