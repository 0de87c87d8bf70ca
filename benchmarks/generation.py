"""Generation speed: DialogSum summaries one at a time (the classic recipe) vs batched, in one run.

Both use the same model, prompts (the training template through the chat template) and greedy
settings; the script checks the outputs are identical, prints summaries/s of both and the ratio,
and writes JSON. Run: python benchmarks/generation.py [--rows 64] [--dtype fp32] [--batch-size 64]
"""

from __future__ import annotations

import argparse
import os
import platform
import sys
import time
from pathlib import Path

from machine import write_results  # benchmarks/machine.py: the results file names its machine

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))
DIALOGSUM_TEST = ROOT.parent / "shared" / "data" / "dialogsum" / "test.jsonl"


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--model", help="default: the embedded SmolLM2-135M-Instruct")
    parser.add_argument("--data", default=str(DIALOGSUM_TEST))
    parser.add_argument("--rows", type=int, default=64)
    parser.add_argument("--dtype", default="fp32", choices=["fp32", "bf16"], help="fp32: batched and single outputs agree exactly")
    parser.add_argument("--batch-size", type=int, default=16, help="rows decoding together (eval's default)")
    parser.add_argument("--max-new-tokens", type=int, default=64)
    parser.add_argument("--json", default=str(ROOT / "benchmarks" / "results" / "generation.json"))
    args = parser.parse_args()
    if not Path(args.data).is_file():
        print(f"skipped: {args.data} not found (DialogSum lives in ../shared/data/dialogsum beside the repository)")
        return 0

    import torch

    from peftlab.config import DataConfig
    from peftlab.data.readers import read_rows
    from peftlab.data.tokenize import uses_chat_template
    from peftlab.generation import GenerationSettings, generate, source_ids
    from peftlab.evaluate.references import eval_examples
    from peftlab.models import load_model

    loaded = load_model(args.model, args.dtype)
    examples = eval_examples(read_rows(args.data), DataConfig(max_samples=args.rows))
    chat = uses_chat_template(loaded.tokenizer, "auto", loaded.is_seq2seq)
    prompts = [source_ids(loaded.tokenizer, e.prompt, chat, loaded.is_seq2seq) for e in examples]

    def timed(batch_size: int, continuous: bool) -> tuple[list[str], float]:
        start = time.perf_counter()
        texts = generate(loaded.model, loaded.tokenizer, prompts, loaded.is_seq2seq,
                         GenerationSettings(args.max_new_tokens, 1, batch_size, continuous))
        return texts, time.perf_counter() - start

    generate(loaded.model, loaded.tokenizer, prompts[:2], loaded.is_seq2seq, GenerationSettings(4, 1, 2))  # warm-up
    runs = {"continuous": timed(args.batch_size, True), "static": timed(args.batch_size, False), "one at a time": timed(1, False)}
    single = runs["one at a time"][0]
    differing = {mode: [i for i, (a, b) in enumerate(zip(single, texts)) if a != b] for mode, (texts, _) in runs.items()}
    result = {
        "model": loaded.spec, "dtype": loaded.dtype, "rows": len(prompts), "max_new_tokens": args.max_new_tokens,
        "prompt_tokens_mean": sum(map(len, prompts)) / len(prompts), "batch_size": args.batch_size,
        "seconds": {mode: seconds for mode, (_, seconds) in runs.items()},
        "summaries_per_second": {mode: len(prompts) / seconds for mode, (_, seconds) in runs.items()},
        "identical_to_one_at_a_time": {mode: len(prompts) - len(rows) for mode, rows in differing.items()},
        "differing_rows": differing,
        "torch_threads": torch.get_num_threads(), "cpu_count": os.cpu_count(), "platform": platform.platform(),
    }
    print(f"{'mode':<14}{'seconds':>10}{'summaries/s':>14}{'vs one at a time':>18}{'identical':>11}")
    for mode, (_, seconds) in runs.items():
        print(f"{mode:<14}{seconds:>10.1f}{len(prompts) / seconds:>14.3f}{runs['one at a time'][1] / seconds:>17.2f}x"
              f"{result['identical_to_one_at_a_time'][mode]:>8}/{len(prompts)}")
    print(f"continuous vs static: {runs['static'][1] / runs['continuous'][1]:.2f}x ({loaded.dtype}, batch size {args.batch_size})")
    write_results(args.json, result)
    print(f"written: {args.json}")
    return 0 if not any(differing.values()) else 1


if __name__ == "__main__":
    sys.exit(main())
