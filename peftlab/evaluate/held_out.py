"""Held-out loss and perplexity: how eval and compare score text rows, which have no reference to generate against."""

from __future__ import annotations

import math
import time
from typing import Any

from peftlab.config import DataConfig
from peftlab.data.chat import IGNORE
from peftlab.data.examples import TEXT, Example
from peftlab.data.tokenize import tokenize
from peftlab.errors import PeftlabError
from peftlab.evaluate.metrics import Metric

NOTE = ("text rows have no reference to generate against: scored by the held-out loss per token (the loss on every "
        "token, as training puts it) and its perplexity, exp(loss); lower is better")
BATCH_ROWS = 8


def _generates_nothing(predictions: list[str], references: list[list[str]], context: Any) -> list[dict[str, float]]:
    raise PeftlabError("the held-out perplexity scores text rows by their loss, not generated answers")


# compare ranks every run by a primary key in [0, 1], higher better: for text rows that is each row's exp(-loss), the
# model's geometric-mean probability per token (1/perplexity of the row); the pooled loss and perplexity sit beside it
HELD_OUT = Metric(
    name="perplexity", keys=("inverse_perplexity",), primary="inverse_perplexity", label="1/perplexity",
    score=_generates_nothing,
    description="text rows: each row's exp(-mean loss per token) under the model (1/perplexity, higher is better), "
                "averaged over the rows; the pooled held-out loss and perplexity are recorded beside it")


def is_text(examples: list[Any]) -> bool:
    return bool(examples) and getattr(examples[0], "text", None) is not None


def score_text(loaded: Any, examples: list[Any], data: DataConfig) -> tuple[list[dict[str, float]], dict[str, float]]:
    """Per row {loss, inverse_perplexity}, and the pooled figures: loss per token, perplexity, tokens, seconds."""
    rows = [Example("", example.text, example.where, TEXT) for example in examples]
    tokenized = tokenize(rows, loaded.tokenizer, data.max_length, loaded.is_seq2seq, chat=False, answer_only=data.answer_only)
    if len(tokenized.features) != len(rows):
        raise PeftlabError(f"{tokenized.first_dropped}: data.max_length={data.max_length} leaves this text row no token to "
                           "score; raise --set data.max_length")
    start = time.perf_counter()
    sums_and_counts = row_losses(loaded.model, tokenized.features, loaded.is_seq2seq, loaded.tokenizer.pad_token_id or 0)
    per_row = [{"loss": total / count, "inverse_perplexity": math.exp(-total / count)} for total, count in sums_and_counts]
    tokens = sum(count for _, count in sums_and_counts)
    loss = sum(total for total, _ in sums_and_counts) / tokens
    return per_row, {"loss": loss, "perplexity": math.exp(loss), "inverse_perplexity": sum(r["inverse_perplexity"] for r in per_row) / len(per_row),
                     "tokens": tokens, "seconds": time.perf_counter() - start}


def row_losses(model: Any, features: list[dict[str, list[int]]], is_seq2seq: bool, pad_id: int) -> list[tuple[float, int]]:
    """(summed next-token loss, scored tokens) of each row, a padded batch at a time."""
    import torch

    model.eval()
    result = []
    for start in range(0, len(features), BATCH_ROWS):
        batch = features[start:start + BATCH_ROWS]
        ids, mask = _padded([f["input_ids"] for f in batch], pad_id)
        labels, _ = _padded([f["labels"] for f in batch], IGNORE)
        device = model.device
        with torch.inference_mode():
            if is_seq2seq:
                logits = model(input_ids=ids.to(device), attention_mask=mask.to(device), labels=labels.to(device)).logits
                targets = labels
            else:
                logits = model(input_ids=ids.to(device), attention_mask=mask.to(device), use_cache=False).logits
                logits = logits[:, -ids.shape[1]:][:, :-1]  # a prompt-learning adapter's virtual tokens come first
                targets = labels[:, 1:]
        losses = torch.nn.functional.cross_entropy(logits.float().transpose(1, 2), targets.to(device), ignore_index=IGNORE,
                                                   reduction="none")
        counts = (targets != IGNORE).sum(1)
        result += [(float(total), int(count)) for total, count in zip(losses.sum(1), counts)]
    return result


def _padded(rows: list[list[int]], fill: int) -> tuple[Any, Any]:
    import torch

    width = max(len(row) for row in rows)
    values = torch.full((len(rows), width), fill, dtype=torch.long)
    mask = torch.zeros((len(rows), width), dtype=torch.long)
    for i, row in enumerate(rows):
        values[i, :len(row)] = torch.tensor(row, dtype=torch.long)
        mask[i, :len(row)] = 1
    return values, mask


def evaluate_text(loaded: Any, examples: list[Any], data: DataConfig, adapter: str | None, include_base: bool,
                  load_base: Any) -> dict[str, tuple[list[dict[str, float]], dict[str, float]]]:
    """The held-out figures of the base (adapter disabled, or `load_base()` for a result that changed weights) and the tuned model."""
    runs = {}
    if adapter and include_base:
        if hasattr(loaded.model, "disable_adapter"):
            with loaded.model.disable_adapter():
                runs["base"] = score_text(loaded, examples, data)
        else:
            runs["base"] = score_text(load_base(), examples, data)
    runs["tuned" if adapter else "base"] = score_text(loaded, examples, data)
    return runs
