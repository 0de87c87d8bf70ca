"""What a generation is asked to do (GenerationSettings), and the transformers objects and padded tensors it becomes."""

from __future__ import annotations

import copy
from dataclasses import dataclass
from typing import Any

from peftlab.errors import PeftlabError


@dataclass
class GenerationSettings:
    max_new_tokens: int = 128
    num_beams: int = 1  # 1 = greedy
    batch_size: int = 16
    continuous: bool = True  # greedy causal LMs: a finished row's place goes to the next prompt at once (continuous.py)

    def check(self) -> None:
        for name in ("max_new_tokens", "num_beams", "batch_size"):
            if getattr(self, name) < 1:
                raise PeftlabError(f"--{name.replace('_', '-')} must be at least 1, got {getattr(self, name)}")


def generation_config(model: Any, tokenizer: Any, settings: GenerationSettings) -> Any:
    config = copy.deepcopy(model.generation_config)
    # greedy or beam search, deterministic: drop any sampling defaults the checkpoint ships with
    config.update(
        do_sample=False, temperature=None, top_p=None, top_k=None, use_cache=True,
        max_new_tokens=settings.max_new_tokens, max_length=None, num_beams=settings.num_beams,
        pad_token_id=tokenizer.pad_token_id,
    )
    if config.eos_token_id is None:
        config.eos_token_id = tokenizer.eos_token_id
    return config


def eos_ids(model: Any, tokenizer: Any) -> set[int]:
    """Every token that ends an answer: the generation config's eos (one or several) and the tokenizer's (if given)."""
    eos = model.generation_config.eos_token_id
    return {*(eos if isinstance(eos, list) else [eos] if eos is not None else []), getattr(tokenizer, "eos_token_id", None)} - {None}


def pad_batch(batch: list[list[int]], pad_id: int, left: bool) -> tuple[Any, Any]:
    import torch

    width = max(len(ids) for ids in batch)
    ids = torch.full((len(batch), width), pad_id, dtype=torch.long)
    mask = torch.zeros((len(batch), width), dtype=torch.long)
    for row, tokens in enumerate(batch):
        span = slice(width - len(tokens), width) if left else slice(0, len(tokens))
        ids[row, span] = torch.tensor(tokens, dtype=torch.long)
        mask[row, span] = 1
    return ids, mask
