"""Training throughput and memory: peftlab against the classic notebook recipe and TRL, on the same rows of
DialogSum, beside this machine's own limit.

- **classic**: what tutorials do: transformers Trainer, every example padded to 512 tokens, fp32, batch 8.
- **TRL**: `SFTTrainer` with a peft LoRA config, prompt-completion rows (loss on the completion only), no
  packing, batch 8, fp32 (needs the `bench` extra: `pip install -e '.[bench]'`); causal LMs only.
- **peftlab**: its default recipe (length-grouped batches under `train.max_batch_tokens`, answer-only logits,
  mask-free causal attention), dtype `auto`.
All three train LoRA r=32, alpha 32, dropout 0.05 on the query and value projections, learning rate 1e-3,
one epoch over the rows. Each runs in its own process, so its peak memory (RSS) is its own.

**The limit.** The same run measures this machine's matrix-multiply rate in fp32 and bf16 (a 2048^3 matmul,
best of five, all threads; bf16 at 512^3 where a probe shows it emulated, as on AVX2 CPUs) and counts the model's training FLOPs per real token from its config:
- every linear layer of every decoder block (q, k, v, o, gate, up, down: P parameters in all) costs 2P
  multiply-adds forward and 2P backward for the input gradient (frozen weights take no weight gradient;
  LoRA's own is under 1% at r=32 and left out);
- attention scores and their use, causal: 2 s d forward and 4 s d backward per layer, s the rows' mean length;
- the vocabulary projection 4 d V, on answer tokens only (peftlab's minimum; the others compute it everywhere).
The limit is the dtype's rate divided by that count (tokens/s); a recipe's share is its real tokens/s over it.
The count is a floor, not a measurement of any recipe's work: the classic recipe also computes padding.

    python benchmarks/train_speed.py [--rows 64] [--all-rows] [--model MODEL] [--json out.json]

`--all-rows` adds peftlab's epoch over every row (500) with and without the token budget: its peak memory and
final loss.
"""

from __future__ import annotations

import argparse
import json
import subprocess
import sys
import tempfile
import time
from pathlib import Path

from machine import write_results  # benchmarks/machine.py: the results file names its machine

DATA = Path(__file__).resolve().parents[2] / "shared" / "data" / "dialogsum" / "train.jsonl"
LORA = {"r": 32, "lora_alpha": 32, "lora_dropout": 0.05}
BATCH, LR = 8, 1e-3


def peak_rss_bytes() -> int:
    import resource

    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * 1024


def matmul_rate(dtype_name: str, size: int = 2048, repeats: int = 5) -> float:
    """FLOP/s of one size^3 matrix product in this dtype, best of `repeats` after a warm-up."""
    import torch

    dtype = {"fp32": torch.float32, "bf16": torch.bfloat16}[dtype_name]
    a, b = torch.randn(size, size, dtype=dtype), torch.randn(size, size, dtype=dtype)
    torch.matmul(a, b)
    best = float("inf")
    for _ in range(repeats):
        start = time.perf_counter()
        torch.matmul(a, b)
        best = min(best, time.perf_counter() - start)
    return 2 * size ** 3 / best


def bf16_rate(budget_seconds: float = 10.0) -> float:
    """bf16 matmul FLOP/s, time-boxed: where bf16 is emulated (AVX2 CPUs) one 2048^3 product takes minutes,
    so a 512^3 probe decides whether the full-size measurement fits in `budget_seconds`; if not, the probe's rate is the figure."""
    probe = matmul_rate("bf16", size=512, repeats=1)
    if 2 * 2048 ** 3 / probe * 6 > budget_seconds:  # six products at full size: the warm-up and five repeats
        return probe
    return matmul_rate("bf16")


def flops_per_token(model_config, mean_length: float, answer_share: float) -> float:
    """Training FLOPs per real token of a LoRA step on a frozen base: see the module's doc."""
    c = model_config
    d, layers = c.hidden_size, c.num_hidden_layers
    heads, kv_heads = c.num_attention_heads, getattr(c, "num_key_value_heads", None) or c.num_attention_heads
    head_dim = getattr(c, "head_dim", None) or d // heads
    ff = c.intermediate_size
    linear = d * heads * head_dim * 2 + 2 * d * kv_heads * head_dim + 3 * d * ff  # q and o, k and v, gate/up/down
    attention = 6 * mean_length * heads * head_dim  # 2 s d forward + 4 s d backward, causal
    vocabulary = 4 * d * c.vocab_size * answer_share
    return layers * (4 * linear + attention) + vocabulary


def load_rows(rows: int | None, model_name: str | None):
    from peftlab.config import RunConfig
    from peftlab.data.tokenize import uses_chat_template
    from peftlab.models import load_model
    from peftlab.train.recipe import load_tokenized

    loaded = load_model(model_name, "fp32")
    config = RunConfig()
    config.data.max_samples = rows
    chat = uses_chat_template(loaded.tokenizer, "auto", loaded.is_seq2seq)
    features = load_tokenized(str(DATA), config, loaded.tokenizer, loaded.is_seq2seq, chat).features
    return loaded, config, features


def lora_config(loaded):
    from peft import LoraConfig

    targets = ["q", "v"] if loaded.is_seq2seq else ["q_proj", "v_proj"]
    return LoraConfig(**LORA, target_modules=targets, task_type="SEQ_2_SEQ_LM" if loaded.is_seq2seq else "CAUSAL_LM")


def clocked(trainer, collate, seq2seq: bool):
    """Count each batch `collate` makes and time the first step apart (peftlab's StepClock, for the other recipes)."""
    from peftlab.data.collator import TokenCount
    from peftlab.data.tokenize import IGNORE
    from peftlab.train.callbacks import StepClock

    count = TokenCount()

    def counting(features):
        batch = collate(features)
        real, total = int(batch["attention_mask"].sum()), batch["input_ids"].numel()
        if seq2seq:
            real, total = real + int((batch["labels"] != IGNORE).sum()), total + batch["labels"].numel()
        count.add(real, total)
        return batch

    trainer.data_collator = counting
    clock = StepClock(count, accumulation=1)
    trainer.add_callback(clock)
    return clock


def run_classic(rows: int | None, model_name: str | None) -> dict:
    import torch
    from peft import get_peft_model
    from transformers import Trainer, TrainingArguments

    from peftlab.data.tokenize import IGNORE

    loaded, _, features = load_rows(rows, model_name)
    tokenizer = loaded.tokenizer

    def pad(values, value):  # padding="max_length", max_length=512, truncation=True
        return values[:512] + [value] * (512 - len(values[:512]))

    padded = []
    for f in features:
        item = {"input_ids": pad(f["input_ids"], tokenizer.pad_token_id), "attention_mask": pad([1] * len(f["input_ids"]), 0)}
        item["labels"] = pad(f["labels"], IGNORE)
        padded.append(item)
    real_tokens = sum(min(len(f["input_ids"]), 512) + (min(len(f["labels"]), 512) if loaded.is_seq2seq else 0) for f in features)
    computed = 512 * len(features) * (2 if loaded.is_seq2seq else 1)
    model = get_peft_model(loaded.model, lora_config(loaded))
    collate = lambda batch: {k: torch.tensor([b[k] for b in batch]) for k in batch[0]}  # noqa: E731
    with tempfile.TemporaryDirectory() as out:
        args = TrainingArguments(output_dir=out, per_device_train_batch_size=BATCH, learning_rate=LR, num_train_epochs=1,
                                 logging_steps=1, save_strategy="no", report_to="none", disable_tqdm=True, use_cpu=True)
        trainer = Trainer(model=model, args=args, train_dataset=padded, data_collator=collate)
        clock = clocked(trainer, collate, loaded.is_seq2seq)
        start = time.perf_counter()
        trainer.train()
        seconds = time.perf_counter() - start
    return {"recipe": "classic notebook (pad 512, fp32)", "dtype": "fp32", "rows": len(features), "seconds": seconds,
            "real_tokens": real_tokens, "real_tokens_per_second": real_tokens / seconds, "real_token_share": real_tokens / computed,
            **clock.warm_up_split(seconds, clock.tokens()[0], clock.first_step_tokens()), "peak_memory_bytes": peak_rss_bytes(),
            "final_loss": trainer.state.log_history[-2].get("loss")}


def run_trl(rows: int | None, model_name: str | None, on_gpu: bool = False) -> dict:
    """TRL's SFTTrainer on the rows; `on_gpu`: on the GPU in bf16 mixed precision (benchmarks/gpu_check.py), else the CPU in fp32."""
    import datasets
    from trl import SFTConfig, SFTTrainer

    from peftlab.data.examples import build_examples
    from peftlab.data.readers import read_rows

    loaded, config, features = load_rows(rows, model_name)
    if loaded.is_seq2seq:
        raise SystemExit("TRL's SFTTrainer trains causal LMs; no TRL row for a seq2seq model")
    examples = build_examples(read_rows(str(DATA)), config.data)[:len(features)]
    chat = bool(loaded.tokenizer.chat_template)
    if chat:  # conversational prompt-completion rows: TRL applies the chat template, as peftlab does
        rows_ = [{"prompt": [{"role": "user", "content": e.prompt}], "completion": [{"role": "assistant", "content": e.response}]}
                 for e in examples]
    else:
        rows_ = [{"prompt": e.prompt, "completion": e.response} for e in examples]
    with tempfile.TemporaryDirectory() as out:
        args = SFTConfig(output_dir=out, per_device_train_batch_size=BATCH, learning_rate=LR, num_train_epochs=1, logging_steps=1,
                         save_strategy="no", report_to="none", disable_tqdm=True, use_cpu=not on_gpu, packing=False,
                         completion_only_loss=True, max_length=1024, bf16=on_gpu)
        trainer = SFTTrainer(model=loaded.model, args=args, train_dataset=datasets.Dataset.from_list(rows_),
                             processing_class=loaded.tokenizer, peft_config=lora_config(loaded))
        real_tokens = sum(len(ids) for ids in trainer.train_dataset["input_ids"])
        clock = clocked(trainer, trainer.data_collator, False)
        start = time.perf_counter()
        trainer.train()
        seconds = time.perf_counter() - start
    return {"recipe": f"TRL SFTTrainer (no packing, {'bf16 autocast' if on_gpu else 'fp32'})", "dtype": "bf16" if on_gpu else "fp32", "rows": len(rows_), "seconds": seconds,
            "real_tokens": real_tokens, "real_tokens_per_second": real_tokens / seconds, "real_token_share": None,
            **clock.warm_up_split(seconds, clock.tokens()[0], clock.first_step_tokens()),
            "peak_memory_bytes": __import__("torch").cuda.max_memory_allocated() if on_gpu else peak_rss_bytes(),
            "final_loss": trainer.state.log_history[-2].get("loss")}


def run_peftlab(rows: int | None, model_name: str | None, *settings: str) -> dict:
    from peftlab import config as cfg
    from peftlab.train.recipe import run

    with tempfile.TemporaryDirectory() as out:
        flags = {"model.name": model_name, "data.train": str(DATA), "data.max_samples": rows, "output": out}
        # peftlab's LoRA defaults are the same: r=32, alpha 32, dropout 0.05, query and value, lr 1e-3, batch 8
        summary = run(cfg.load(None, list(settings), flags), overwrite=True)
    label = " ".join(settings) or "default"
    return {"recipe": f"peftlab ({summary['dtype']}, {label})", "dtype": summary["dtype"], "rows": rows,
            "seconds": summary["train_seconds"], "real_tokens": summary["real_tokens"],
            "real_tokens_per_second": summary["real_tokens_per_second"], "real_token_share": summary["real_token_share"],
            "first_step_seconds": summary["first_step_seconds"], "steady_tokens_per_second": summary["steady_tokens_per_second"],
            "peak_memory_bytes": peak_rss_bytes(), "final_loss": summary["train_loss"]}


def run_limit(rows: int | None, model_name: str | None) -> dict:
    loaded, _, features = load_rows(rows, model_name)
    lengths = [len(f["input_ids"]) for f in features]
    answers = sum(sum(1 for label in f["labels"] if label != -100) for f in features)
    per_token = flops_per_token(loaded.model.config, sum(lengths) / len(lengths), answers / sum(lengths))
    rates = {"fp32": matmul_rate("fp32"), "bf16": bf16_rate()}
    return {"flops_per_token": per_token, "matmul_flops": rates, "limit_tokens_per_second": {k: v / per_token for k, v in rates.items()}}


ROLES = {"limit": run_limit, "classic": run_classic, "trl": run_trl, "peftlab": run_peftlab,
         "trl-gpu": lambda rows, model: run_trl(rows, model, on_gpu=True),
         "peftlab-all": lambda rows, model: run_peftlab(None, model),
         "peftlab-all-unbounded": lambda rows, model: run_peftlab(None, model, "train.max_batch_tokens=0")}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--rows", type=int, default=64)
    parser.add_argument("--all-rows", action="store_true", help="add peftlab's epoch over every row, with and without the budget")
    parser.add_argument("--model", default=None, help="default: the embedded SmolLM2-135M-Instruct")
    parser.add_argument("--json", default="benchmarks/results/train_speed.json")
    parser.add_argument("--role", choices=list(ROLES), help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.role:
        print("RESULT " + json.dumps(ROLES[args.role](args.rows, args.model)))
        return
    if not DATA.is_file():
        sys.exit(f"skipped: DialogSum not found at {DATA}")
    roles = ["limit", "classic", "trl", "peftlab"] + (["peftlab-all", "peftlab-all-unbounded"] if args.all_rows else [])
    results = {}
    for role in roles:
        command = [sys.executable, __file__, "--role", role, "--rows", str(args.rows)] + (["--model", args.model] if args.model else [])
        done = subprocess.run(command, capture_output=True, text=True)
        if "RESULT " not in done.stdout:
            print(f"{role}: no result ({(done.stderr.strip().splitlines() or ['?'])[-1][:200]})")
            continue
        results[role] = json.loads(done.stdout.split("RESULT ", 1)[1])
    limit = results["limit"]
    rates = limit["matmul_flops"]
    print(f"this machine: fp32 matmul {rates['fp32'] / 1e9:.3g} GFLOP/s, bf16 {rates['bf16'] / 1e9:.3g} GFLOP/s; "
          f"{limit['flops_per_token'] / 1e9:.2f} GFLOP per real token -> limit "
          f"{limit['limit_tokens_per_second']['fp32']:.3g} tokens/s in fp32, {limit['limit_tokens_per_second']['bf16']:.3g} in bf16")
    print(f"{'recipe':<52} {'rows':>5} {'seconds':>8} {'real tok/s':>11} {'of limit':>9} {'1st step s':>11} "
          f"{'steady tok/s':>13} {'of limit':>9} {'peak GiB':>9} {'loss':>7}")
    for role, r in results.items():
        if role == "limit":
            continue
        rate = limit["limit_tokens_per_second"][r["dtype"]]
        r["share_of_limit"] = r["real_tokens_per_second"] / rate
        r["steady_share_of_limit"] = r["steady_tokens_per_second"] / rate if r.get("steady_tokens_per_second") else None
        loss = f"{r['final_loss']:.3f}" if r.get("final_loss") is not None else "-"
        first = f"{r['first_step_seconds']:.1f}" if r.get("first_step_seconds") else "-"
        steady = (f"{r['steady_tokens_per_second']:>13.1f} {100 * r['steady_share_of_limit']:>8.1f}%" if r["steady_share_of_limit"]
                  else f"{'-':>13} {'-':>9}")
        print(f"{r['recipe']:<52} {r['rows'] or 'all':>5} {r['seconds']:>8.1f} {r['real_tokens_per_second']:>11.1f} "
              f"{100 * r['share_of_limit']:>8.1f}% {first:>11} {steady} {r['peak_memory_bytes'] / 2**30:>9.2f} {loss:>7}")
    ours = results.get("peftlab")
    for other in ("classic", "trl"):
        if ours and other in results:
            theirs = results[other]
            steady = (f" ({ours['steady_tokens_per_second'] / theirs['steady_tokens_per_second']:.1f}x after the first step)"
                      if ours.get("steady_tokens_per_second") and theirs.get("steady_tokens_per_second") else "")
            print(f"peftlab against {theirs['recipe']}: {ours['real_tokens_per_second'] / theirs['real_tokens_per_second']:.1f}x "
                  f"the real tokens/s{steady} at {ours['peak_memory_bytes'] / theirs['peak_memory_bytes']:.2f}x the peak memory")
    Path(args.json).parent.mkdir(parents=True, exist_ok=True)
    write_results(args.json, results)


if __name__ == "__main__":
    main()
