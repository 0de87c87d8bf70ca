"""Batched generation for every command that generates offline (eval, generate, compare, check) and for static serving:
prompts sorted by length into batches, decoded continuously (greedy causal LMs) or in static batches, restored in order."""

from __future__ import annotations

import copy
from typing import Any, Callable

from peftlab.errors import PeftlabError
from peftlab.generation.context import check_context
from peftlab.generation.continuous import batches_continuously, generate_continuously
from peftlab.generation.sampler import sampled_token_processor, sampling_of
from peftlab.generation.selfcheck import cache_checked, cached_generate, continuous_checked
from peftlab.generation.settings import GenerationSettings, eos_ids, generation_config, pad_batch
from peftlab.generation.uncached import uncached_generate


def generate_new_tokens(model: Any, ids: Any, mask: Any, config: Any, is_seq2seq: bool, **extra: Any) -> Any:
    """New tokens (rows x steps) for padded prompts: cached unless this process's self-check caught the cache lying.

    Sampling (config.do_sample) is done by peftlab's sampler on either path: transformers then
    decodes greedily the token the sampler left (sampler.sampled_token_processor).
    """
    if not cache_checked(model, ids[0][mask[0].bool()].tolist(), config, is_seq2seq):
        return uncached_generate(model, ids, mask, config, is_seq2seq, **extra)
    if config.do_sample:
        processors = [*extra.pop("logits_processor", []), sampled_token_processor(sampling_of(config))]
        config = copy.deepcopy(config)
        config.update(do_sample=False, temperature=None, top_p=None, top_k=None)
        extra["logits_processor"] = processors
    return cached_generate(model, ids, mask, config, is_seq2seq, **extra)


def generate_ids(model: Any, tokenizer: Any, prompts: list[list[int]], is_seq2seq: bool,
                 settings: GenerationSettings, progress: Callable[[int], None] = lambda done: None,
                 labels: list[str] | None = None) -> list[list[int]]:
    """The new token ids (up to eos; pad tokens after it in static batches) generated for token-id prompts, in order.

    Greedy decoding of a causal LM batches continuously (continuous.py); beam search and
    seq2seq models use static batches through `generate`. Static batches hold prompts of similar length (sorted, longest first, so memory peaks at once);
    causal LMs are padded on the left so every row's next token follows its own last prompt
    token, T5 on the right with an attention mask.
    """
    import torch

    settings.check()
    if any(not ids for ids in prompts):
        raise PeftlabError("a prompt is empty after tokenization; check the template and the prompt column")
    check_context(model, prompts, settings.max_new_tokens, labels)  # the rule serve applies: refused, never run past
    model.eval()
    if settings.continuous and not is_seq2seq and settings.num_beams == 1 and batches_continuously(model) \
            and continuous_checked(model, tokenizer, prompts[0], settings):
        return generate_continuously(model, prompts, settings.max_new_tokens, eos_ids(model, tokenizer), settings.batch_size, progress)
    config = generation_config(model, tokenizer, settings)
    order = sorted(range(len(prompts)), key=lambda i: -len(prompts[i]))
    generated: list[list[int]] = [[] for _ in prompts]
    for start in range(0, len(order), settings.batch_size):
        chosen = order[start:start + settings.batch_size]
        ids, mask = pad_batch([prompts[i] for i in chosen], tokenizer.pad_token_id, left=not is_seq2seq)
        with torch.inference_mode():
            new_tokens = generate_new_tokens(model, ids.to(model.device), mask.to(model.device), config, is_seq2seq)
        for i, tokens in zip(chosen, new_tokens.tolist()):
            generated[i] = tokens
        progress(min(start + settings.batch_size, len(order)))
    return generated


def generate(model: Any, tokenizer: Any, prompts: list[list[int]], is_seq2seq: bool,
             settings: GenerationSettings, progress: Callable[[int], None] = lambda done: None,
             labels: list[str] | None = None) -> list[str]:
    """Decoded completions of token-id prompts, in the prompts' order (see generate_ids; `labels` name rows in errors)."""
    return [tokenizer.decode(tokens, skip_special_tokens=True).strip()
            for tokens in generate_ids(model, tokenizer, prompts, is_seq2seq, settings, progress, labels)]
