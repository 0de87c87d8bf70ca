"""Score one model on the comparison's test rows: batched generation, ROUGE, general-text loss."""

from __future__ import annotations

import gc
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from peftlab.compare.forgetting import general_text_loss
from peftlab.config import RunConfig
from peftlab.data.readers import read_rows
from peftlab.data.tokenize import uses_chat_template
from peftlab.evaluate.generation import GenerationSettings, generate, source_ids
from peftlab.evaluate.references import EvalExample, eval_examples
from peftlab.evaluate.rouge import example_scores, mean_scores
from peftlab.models import load_model

WEIGHT_SUFFIXES = (".safetensors", ".bin", ".pt")


@dataclass
class Scored:
    predictions: list[str]
    example_rouge: list[dict[str, float]]
    rouge: dict[str, float]
    general_loss: float
    eval_seconds: float


def test_examples(config: RunConfig, data: str, max_rows: int | None) -> list[EvalExample]:
    data_config = config.data
    data_config.max_samples, data_config.every = max_rows, 1
    return eval_examples(read_rows(data), data_config)


def score(config: RunConfig, examples: list[EvalExample], settings: GenerationSettings, trained: str | None = None) -> Scored:
    """Load the base (with the trained result in `trained` applied), generate, score, free the model."""
    from peftlab.methods import load_trained, saved_method

    quantization = saved_method(trained).quantization if trained else None
    loaded = load_model(config.model.name, config.model.dtype, config.model.attn_implementation, quantization)
    model = load_trained(loaded.model, trained) if trained else loaded.model
    chat = uses_chat_template(loaded.tokenizer, config.data.chat_template, loaded.is_seq2seq)
    prompts = [source_ids(loaded.tokenizer, e.prompt, chat, loaded.is_seq2seq) for e in examples]
    start = time.perf_counter()
    texts = generate(model, loaded.tokenizer, prompts, loaded.is_seq2seq, settings)
    seconds = time.perf_counter() - start
    per_example = example_scores(texts, [e.references for e in examples])
    general = general_text_loss(model, loaded.tokenizer, loaded.is_seq2seq)
    del model, loaded
    gc.collect()
    return Scored(texts, per_example, mean_scores(per_example), general, seconds)


def stored_bytes(folder: Path) -> int:
    """What must be kept to use the result: its weight files (the whole model for full fine-tuning)."""
    return sum(p.stat().st_size for p in folder.rglob("*") if p.is_file() and p.name.endswith(WEIGHT_SUFFIXES))


def base_bytes(model_path: str) -> int | None:
    folder = Path(model_path)
    return stored_bytes(folder) if folder.is_dir() else None
