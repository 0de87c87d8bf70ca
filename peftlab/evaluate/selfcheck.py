"""The reference decode: greedy tokens from full forward passes without a cache, which cached generation must equal."""

from __future__ import annotations

from typing import Any


def reference_greedy(model: Any, prompt: list[int], steps: int, is_seq2seq: bool) -> list[int]:
    """Greedy tokens from full forward passes over the whole sequence, without a cache: what generation must equal.

    The model's own forward is what training optimised (for prompt-learning methods peft's forward
    adds the virtual tokens), so this loop is the definition of the right answer; eos does not stop it.
    """
    import torch

    device = model.device
    source = torch.tensor([prompt], device=device)
    start = model.config.decoder_start_token_id if is_seq2seq else None
    tokens: list[int] = []
    with torch.inference_mode():
        for _ in range(steps):
            if is_seq2seq:
                decoder = torch.tensor([[start, *tokens]], device=device)
                logits = model(input_ids=source, attention_mask=torch.ones_like(source), decoder_input_ids=decoder,
                               use_cache=False).logits
            else:
                sequence = torch.tensor([prompt + tokens], device=device)
                logits = model(input_ids=sequence, attention_mask=torch.ones_like(sequence), use_cache=False).logits
            tokens.append(int(logits[0, -1].argmax()))
    return tokens
