"""Batches without padding waste: length-grouped padding or packing, with a count of real tokens."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

from peftlab.data.tokenize import IGNORE


@dataclass
class TokenCount:
    real: int = 0  # tokens that carry text (inputs and, for seq2seq, targets)
    total: int = 0  # tokens computed on, padding included
    batches: list[tuple[int, int]] = field(default_factory=list)  # (real, total) of each batch, in the order made

    def add(self, real: int, total: int) -> None:
        self.real += real
        self.total += total
        self.batches.append((real, total))

    def first(self, batches: int) -> tuple[int, int]:
        """Real and total tokens of the first `batches` batches made."""
        made = self.batches[:batches]
        return sum(real for real, _ in made), sum(total for _, total in made)

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
        real, total = sum(len(f["input_ids"]) for f in features), batch["input_ids"].numel()
        if self.is_seq2seq:
            real += sum(len(f["labels"]) for f in features)
            total += batch["labels"].numel()
        self.count.add(real, total)
        return batch
