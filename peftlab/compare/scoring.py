"""Score one model on the comparison's test rows: batched generation, ROUGE, general-text loss."""

from __future__ import annotations

import dataclasses
import gc
from dataclasses import dataclass
from pathlib import Path

from peftlab.compare.forgetting import general_text_loss
from peftlab.config import RunConfig
from peftlab.data.readers import read_rows
from peftlab.evaluate.predictions import score_generations
from peftlab.evaluate.references import EvalExample, eval_examples
from peftlab.evaluate.metrics.rouge import ROUGE_TYPES
from peftlab.generation import GenerationSettings, encode_prompts, load_for_generation

WEIGHT_SUFFIXES = (".safetensors", ".bin", ".pt")


@dataclass
class Scored:
    predictions: list[str]
    example_rouge: list[dict[str, float]]
    rouge: dict[str, float]
    general_loss: float
    eval_seconds: float


def test_examples(config: RunConfig, data: str, max_rows: int | None) -> list[EvalExample]:
    """The test rows every run is scored on (the first `max_rows`; the training sub-sampling does not apply)."""
    return eval_examples(read_rows(data), dataclasses.replace(config.data, max_samples=max_rows, every=1))


def score(config: RunConfig, examples: list[EvalExample], settings: GenerationSettings, trained: str | None = None,
          forgetting: bool = True) -> Scored:
    """Load the base (with the trained result in `trained` applied), generate, score, free the model.
    Without `forgetting` the general-text loss is not measured (nan): validation scoring needs ROUGE alone."""
    model = config.model
    loaded = load_for_generation(model.name, model.dtype, trained, model.attn_implementation)
    prompts, _ = encode_prompts(loaded, [e.prompt for e in examples], config.data.chat_template)
    texts, per_example, summary = score_generations(trained or "base", loaded, prompts, examples, settings, lambda text: None)
    general = general_text_loss(loaded.model, loaded.tokenizer, loaded.is_seq2seq) if forgetting else float("nan")
    del loaded
    gc.collect()
    return Scored(texts, per_example, {k: summary[k] for k in ROUGE_TYPES}, general, summary["seconds"])


def stored_bytes(folder: Path) -> int:
    """What must be kept to use the result: its weight files (the whole model for full fine-tuning)."""
    return sum(p.stat().st_size for p in folder.rglob("*") if p.is_file() and p.name.endswith(WEIGHT_SUFFIXES))


def base_bytes(model_path: str) -> int | None:
    folder = Path(model_path)
    return stored_bytes(folder) if folder.is_dir() else None
