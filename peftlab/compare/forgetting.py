"""Forgetting: how much a tuned model's loss on general text (not the task) rose over the base's."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

GENERAL_TEXT = Path(__file__).with_name("general_text.jsonl")  # 32 short general-knowledge passages


def general_texts() -> list[str]:
    return [json.loads(line)["text"] for line in GENERAL_TEXT.read_text(encoding="utf-8").splitlines() if line.strip()]


def general_text_loss(model: Any, tokenizer: Any, is_seq2seq: bool, texts: list[str] | None = None) -> float:
    """Mean next-token loss per predicted token over the reference passages.

    Causal LMs predict each passage from its start; seq2seq models read the first half of each
    passage and predict the second. The same texts and the same scoring for every run, so the
    difference to the base model is the forgetting.
    """
    import torch

    model.eval()
    total_loss, total_tokens = 0.0, 0
    for text in texts or general_texts():
        if is_seq2seq:
            words = text.split()
            source, target = " ".join(words[: len(words) // 2]), " ".join(words[len(words) // 2:])
            inputs = {"input_ids": torch.tensor([tokenizer(source)["input_ids"]]),
                      "labels": torch.tensor([tokenizer(target)["input_ids"]])}
            count = inputs["labels"].shape[1]
        else:
            ids = tokenizer(text)["input_ids"]
            inputs = {"input_ids": torch.tensor([ids]), "labels": torch.tensor([ids])}
            count = len(ids) - 1
        inputs = {k: v.to(model.device) for k, v in inputs.items()}
        with torch.inference_mode():
            loss = model(**inputs, use_cache=False).loss
        total_loss += float(loss) * count
        total_tokens += count
    return total_loss / total_tokens
