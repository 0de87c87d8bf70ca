"""Greedy decoding by full forward passes without a cache: the definition every generation path is tested against."""

from __future__ import annotations

from typing import Any

from peftlab.generation.uncached import last_logits


def reference_greedy(model: Any, prompt: list[int], steps: int, is_seq2seq: bool) -> list[int]:
    """Greedy tokens from full forward passes without a cache: what generation must meet; eos does not stop it."""
    import torch

    tokens: list[int] = []
    with torch.inference_mode():
        for _ in range(steps):
            tokens.append(int(last_logits(model, prompt, tokens, is_seq2seq).argmax()))
    return tokens
