"""Training throughput: peftlab against the classic notebook recipe, on the same rows of DialogSum.

The reference is what tutorials do: transformers Trainer, every example padded to 512 tokens,
fp32, batch 8, LoRA r=32/alpha=32/dropout 0.05 on the query and value projections, loss on the
summary only. peftlab runs its default recipe with the same LoRA settings. Each side runs in
its own process so that its peak memory (RSS) is its own.

    python benchmarks/train_speed.py [--rows 64] [--model MODEL] [--json out.json]
"""

from __future__ import annotations

import argparse
import json
import subprocess
import sys
import tempfile
import time
from pathlib import Path

DATA = Path(__file__).resolve().parents[2] / "shared" / "data" / "dialogsum" / "train.jsonl"


def peak_rss_bytes() -> int:
    import resource

    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * 1024


def run_reference(rows: int, model_name: str | None) -> dict:
    import torch
    from peft import LoraConfig, get_peft_model
    from transformers import Trainer, TrainingArguments

    from peftlab.config import RunConfig
    from peftlab.data.tokenize import IGNORE, uses_chat_template
    from peftlab.models import load_model
    from peftlab.train.recipe import load_tokenized

    loaded = load_model(model_name, "fp32")
    tokenizer = loaded.tokenizer
    config = RunConfig()
    config.data.max_samples = rows
    chat = uses_chat_template(tokenizer, "auto", loaded.is_seq2seq)
    features = load_tokenized(str(DATA), config, tokenizer, False, chat).features
    padded = []
    for f in features:  # padding="max_length", max_length=512, truncation=True
        ids, labels = f["input_ids"][:512], f["labels"][:512]
        pad = 512 - len(ids)
        padded.append({"input_ids": ids + [tokenizer.pad_token_id] * pad, "labels": labels + [IGNORE] * pad,
                       "attention_mask": [1] * len(ids) + [0] * pad})
    real_tokens = sum(min(len(f["input_ids"]), 512) for f in features)
    model = get_peft_model(loaded.model, LoraConfig(r=32, lora_alpha=32, lora_dropout=0.05, target_modules=["q_proj", "v_proj"], task_type="CAUSAL_LM"))
    collate = lambda batch: {k: torch.tensor([b[k] for b in batch]) for k in batch[0]}  # noqa: E731
    with tempfile.TemporaryDirectory() as out:
        args = TrainingArguments(output_dir=out, per_device_train_batch_size=8, learning_rate=1e-3, num_train_epochs=1,
                                 logging_steps=1, save_strategy="no", report_to="none", disable_tqdm=True)
        trainer = Trainer(model=model, args=args, train_dataset=padded, data_collator=collate)
        start = time.perf_counter()
        trainer.train()
        seconds = time.perf_counter() - start
    return {"recipe": "classic notebook (pad 512, fp32)", "rows": len(features), "seconds": seconds,
            "real_tokens": real_tokens, "real_tokens_per_second": real_tokens / seconds,
            "real_token_share": real_tokens / (512 * len(features)), "peak_memory_bytes": peak_rss_bytes()}


def run_peftlab(rows: int, model_name: str | None) -> dict:
    from peftlab import config as cfg
    from peftlab.train.recipe import run

    with tempfile.TemporaryDirectory() as out:
        flags = {"model.name": model_name, "data.train": str(DATA), "data.max_samples": rows, "output": out}
        summary = run(cfg.load(None, [], flags), overwrite=True)
    return {"recipe": f"peftlab ({summary['dtype']}, length-grouped)", "rows": rows, "seconds": summary["train_seconds"],
            "real_tokens": summary["real_tokens"], "real_tokens_per_second": summary["real_tokens_per_second"],
            "real_token_share": summary["real_token_share"], "peak_memory_bytes": peak_rss_bytes()}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--rows", type=int, default=64)
    parser.add_argument("--model", default=None, help="default: the embedded SmolLM2-135M-Instruct")
    parser.add_argument("--json", default="benchmarks/results/train_speed.json")
    parser.add_argument("--role", choices=["reference", "peftlab"], help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.role:
        result = (run_reference if args.role == "reference" else run_peftlab)(args.rows, args.model)
        print("RESULT " + json.dumps(result))
        return
    if not DATA.is_file():
        sys.exit(f"skipped: DialogSum not found at {DATA}")
    results = []
    for role in ("reference", "peftlab"):
        command = [sys.executable, __file__, "--role", role, "--rows", str(args.rows)] + (["--model", args.model] if args.model else [])
        output = subprocess.run(command, capture_output=True, text=True, check=True).stdout
        results.append(json.loads(output.split("RESULT ", 1)[1]))
    reference, ours = results
    print(f"{'recipe':<36} {'rows':>5} {'seconds':>8} {'real tok/s':>11} {'real share':>11} {'peak GiB':>9}")
    for r in results:
        print(f"{r['recipe']:<36} {r['rows']:>5} {r['seconds']:>8.1f} {r['real_tokens_per_second']:>11.1f} "
              f"{100 * r['real_token_share']:>10.1f}% {r['peak_memory_bytes'] / 2**30:>9.2f}")
    speedup = ours["real_tokens_per_second"] / reference["real_tokens_per_second"]
    memory = ours["peak_memory_bytes"] / reference["peak_memory_bytes"]
    print(f"speed-up: {speedup:.1f}x real tokens/s (target 5x); peak memory: {memory:.2f}x the reference's")
    Path(args.json).parent.mkdir(parents=True, exist_ok=True)
    Path(args.json).write_text(json.dumps({"reference": reference, "peftlab": ours, "speedup": speedup, "memory_ratio": memory}, indent=2))


if __name__ == "__main__":
    main()
