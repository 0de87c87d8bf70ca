"""GGUF parity in llama.cpp: the exported files answer as peftlab's merged model does, and how much q8_0 costs.

For one adapter: export the merged model as f16 and q8_0 GGUF and the adapter as a llama.cpp LoRA file; answer the
test prompts greedily with peftlab's merged model (the reference) and with llama.cpp (llama-cpp-python) on each
file, and on the base's own GGUF file with the LoRA file applied; print agreement with the reference and ROUGE-L,
and write JSON. Run: python benchmarks/gguf_parity.py --adapter runs/demo/train/adapter [--rows 24]
"""

from __future__ import annotations

import argparse
import platform
import sys
import tempfile
import time
from pathlib import Path

from machine import write_results  # benchmarks/machine.py: the results file names its machine

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))
DEMO_TEST = ROOT / "peftlab" / "demo" / "data" / "test.jsonl"


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--adapter", required=True, help="a LoRA adapter of a Llama-family model (e.g. the demo's runs/demo/train/adapter)")
    parser.add_argument("--data", default=str(DEMO_TEST), help="test rows with references (default: the demo's 24)")
    parser.add_argument("--rows", type=int, default=24)
    parser.add_argument("--max-new-tokens", type=int, default=64)
    parser.add_argument("--json", default=str(ROOT / "benchmarks" / "results" / "gguf_parity.json"))
    args = parser.parse_args()
    try:
        import llama_cpp  # noqa: F401
    except ImportError:
        print("skipped: llama-cpp-python is not installed (pip install llama-cpp-python; it compiles llama.cpp)")
        return 0

    from peftlab.data.readers import read_rows
    from peftlab.evaluate.references import eval_examples
    from peftlab.evaluate.metrics import mean_scores
    from peftlab.evaluate.metrics.rouge import example_scores
    from peftlab.evaluate.settings import generate_config
    from peftlab.export.exporting import export_gguf, export_gguf_lora
    from peftlab.models.gguf_cache import base_gguf_file
    from peftlab.export.gguf import write_gguf
    from peftlab.export.merge import merged_model
    from peftlab.export.llama_cpp_runtime import llama_cpp_answers
    from peftlab.export.parity import first_difference, until_end
    from peftlab.generation import GenerationSettings, encode_prompts, eos_ids, generate_ids
    from peftlab.models import load_model

    config = generate_config(args.adapter, [], {}, args.rows)
    examples = eval_examples(read_rows(args.data), config.data)
    merged, loaded, info = merged_model(args.adapter, config.model.name, "fp32")
    prompts, _ = encode_prompts(loaded, [e.prompt for e in examples], config.data.chat_template)
    ends = eos_ids(merged, loaded.tokenizer)
    settings = GenerationSettings(args.max_new_tokens, 1, 16)
    start = time.perf_counter()
    reference = [until_end(t, ends) for t in generate_ids(merged, loaded.tokenizer, prompts, False, settings)]
    runs = {"peftlab merged (fp32, torch)": (reference, time.perf_counter() - start, None)}
    work = Path(tempfile.mkdtemp(prefix="gguf-parity-"))
    files = {}
    for kind in ("f16", "q8_0"):
        files[kind] = export_gguf(args.adapter, str(work / f"model-{kind}.gguf"), kind)
    lora = export_gguf_lora(args.adapter, str(work / "adapter-lora.gguf"))
    base = base_gguf_file(info.get("base_model"))
    base_f16 = work / "base-f16.gguf"  # the base's weights as the merged f16 file holds them: only the LoRA path differs
    unmerged = load_model(config.model.name, "fp32")
    write_gguf(unmerged.model, unmerged.tokenizer, base_f16, "f16", "base", base)
    del unmerged
    for label, model_path, lora_path in [("llama.cpp f16 file", files["f16"]["file"], None), ("llama.cpp q8_0 file", files["q8_0"]["file"], None),
                                         *([(f"llama.cpp {base.name} + LoRA file", str(base), lora["file"])] if base else []),
                                         ("llama.cpp base as f16 + LoRA file", str(base_f16), lora["file"])]:
        start = time.perf_counter()
        answers = llama_cpp_answers(model_path, prompts, args.max_new_tokens, lora_path)
        runs[label] = (answers, time.perf_counter() - start, Path(model_path).stat().st_size)
    references = [e.references for e in examples]
    rows = []
    for label, (answers, seconds, size) in runs.items():
        texts = [loaded.tokenizer.decode(a, skip_special_tokens=True).strip() for a in answers]
        rouge = mean_scores(example_scores(texts, references))["rougeL"]
        same = sum(a == b for a, b in zip(answers, reference))
        parts = {i: first_difference(b, a) for i, (a, b) in enumerate(zip(answers, reference)) if a != b}  # prompt -> token
        rows.append({"run": label, "identical_to_reference": same, "prompts": len(prompts), "rougeL": rouge, "seconds": seconds,
                     "file_bytes": size, "first_difference": parts})
    print(f"{'run':<52} {'identical':>10} {'ROUGE-L':>8} {'seconds':>8} {'file MB':>8}  first difference")
    for row in rows:
        size = f"{row['file_bytes'] / 1e6:.1f}" if row["file_bytes"] else "-"
        parts = ", ".join(f"#{i + 1} at token {p}" for i, p in row["first_difference"].items()) or "-"
        print(f"{row['run']:<52} {row['identical_to_reference']:>4}/{row['prompts']:<5} {100 * row['rougeL']:>8.2f} "
              f"{row['seconds']:>8.1f} {size:>8}  {parts}")
    result = {"adapter": args.adapter, "data": args.data, "max_new_tokens": args.max_new_tokens, "machine": platform.processor() or platform.machine(),
              "llama_cpp_python": llama_cpp.__version__, "rows": rows}
    write_results(args.json, result)
    print(f"wrote {args.json}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
