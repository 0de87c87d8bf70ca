"""Batches without padding waste: length-grouped padding or packing, with a count of real tokens."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from peftlab.data.tokenize import IGNORE


@dataclass
class TokenCount:
    real: int = 0  # tokens that carry text (inputs and, for seq2seq, targets)
    total: int = 0  # tokens computed on, padding included

    @property
    def real_share(self) -> float:
        return self.real / self.total if self.total else 1.0


class CountingCollator:
    """Pads (or packs) a list of features and counts real against computed tokens."""

    def __init__(self, tokenizer: Any, is_seq2seq: bool, packed: bool = False):
        from transformers import DataCollatorForSeq2Seq, DataCollatorWithFlattening

        if packed:
            self.inner = DataCollatorWithFlattening(return_position_ids=True, separator_id=IGNORE)
        else:
            self.inner = DataCollatorForSeq2Seq(tokenizer, padding=True, label_pad_token_id=IGNORE, return_tensors="pt")
        self.is_seq2seq = is_seq2seq
        self.count = TokenCount()

    def __call__(self, features: list[dict[str, Any]]) -> dict[str, Any]:
        features = [{"input_ids": f["input_ids"], "labels": f["labels"]} for f in features]
        batch = self.inner(features)
        self.count.real += sum(len(f["input_ids"]) for f in features)
        self.count.total += batch["input_ids"].numel()
        if self.is_seq2seq:
            self.count.real += sum(len(f["labels"]) for f in features)
            self.count.total += batch["labels"].numel()
        return batch
