"""Batched generation: sort prompts by length, pad (left for causal LMs), generate, restore the order."""

from __future__ import annotations

import copy
from dataclasses import dataclass
from typing import Any, Callable

from peftlab.errors import PeftlabError


@dataclass
class GenerationSettings:
    max_new_tokens: int = 128
    num_beams: int = 1  # 1 = greedy
    batch_size: int = 16

    def check(self) -> None:
        for name in ("max_new_tokens", "num_beams", "batch_size"):
            if getattr(self, name) < 1:
                raise PeftlabError(f"--{name.replace('_', '-')} must be at least 1, got {getattr(self, name)}")


def source_ids(tokenizer: Any, prompt: str, chat: bool, is_seq2seq: bool) -> list[int]:
    """The prompt as training fed it: the encoder input for seq2seq, the chat-wrapped prompt for causal LMs."""
    from peftlab.data.tokenize import prompt_ids

    return tokenizer(prompt)["input_ids"] if is_seq2seq else prompt_ids(tokenizer, prompt, chat)


def _generation_config(model: Any, tokenizer: Any, settings: GenerationSettings) -> Any:
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


def _pad(batch: list[list[int]], pad_id: int, left: bool) -> tuple[Any, Any]:
    import torch

    width = max(len(ids) for ids in batch)
    ids = torch.full((len(batch), width), pad_id, dtype=torch.long)
    mask = torch.zeros((len(batch), width), dtype=torch.long)
    for row, tokens in enumerate(batch):
        span = slice(width - len(tokens), width) if left else slice(0, len(tokens))
        ids[row, span] = torch.tensor(tokens, dtype=torch.long)
        mask[row, span] = 1
    return ids, mask


def generate_ids(model: Any, tokenizer: Any, prompts: list[list[int]], is_seq2seq: bool,
                 settings: GenerationSettings, progress: Callable[[int], None] = lambda done: None) -> list[list[int]]:
    """The new token ids (pad tokens included) generated for token-id prompts, in the prompts' order.

    Batches hold prompts of similar length (sorted, longest first, so memory peaks at once);
    causal LMs are padded on the left so every row's next token follows its own last prompt
    token, T5 on the right with an attention mask.
    """
    import torch

    from peftlab.evaluate.selfcheck import generate_new_tokens

    settings.check()
    if any(not ids for ids in prompts):
        raise PeftlabError("a prompt is empty after tokenization; check the template and the prompt column")
    config = _generation_config(model, tokenizer, settings)
    order = sorted(range(len(prompts)), key=lambda i: -len(prompts[i]))
    generated: list[list[int]] = [[] for _ in prompts]
    model.eval()
    for start in range(0, len(order), settings.batch_size):
        chosen = order[start:start + settings.batch_size]
        ids, mask = _pad([prompts[i] for i in chosen], tokenizer.pad_token_id, left=not is_seq2seq)
        with torch.inference_mode():
            new_tokens = generate_new_tokens(model, ids.to(model.device), mask.to(model.device), config, is_seq2seq)
        for i, tokens in zip(chosen, new_tokens.tolist()):
            generated[i] = tokens
        progress(min(start + settings.batch_size, len(order)))
    return generated


def generate(model: Any, tokenizer: Any, prompts: list[list[int]], is_seq2seq: bool,
             settings: GenerationSettings, progress: Callable[[int], None] = lambda done: None) -> list[str]:
    """Decoded completions of token-id prompts, in the prompts' order (see generate_ids)."""
    return [tokenizer.decode(tokens, skip_special_tokens=True).strip()
            for tokens in generate_ids(model, tokenizer, prompts, is_seq2seq, settings, progress)]
