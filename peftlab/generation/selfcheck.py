"""The generation self-check: once per model and method, a few cached tokens are compared with uncached forward passes.

Cached generation of prompt-learning methods has broken silently with several releases of
peft and transformers (peft issues 1391 and 2123, transformers issue 36509); a broken cache
gives fluent-looking garbage and wrong scores, not an error. So the first generation with a
model and method decodes a short probe both ways; if they differ, that method generates
without a cache (slower, but what the model learned) or in static batches, and one line says so.
"""

from __future__ import annotations

import copy
import logging
import weakref
from typing import Any, Callable

from peftlab.generation.settings import GenerationSettings, eos_ids, generation_config, pad_batch
from peftlab.generation.soft_prompts import generate_with_virtual_tokens, new_tokens, virtual_token_type
from peftlab.generation.uncached import forward_logits

log = logging.getLogger(__name__)

PROBE_TOKENS = 4  # enough to cover the prefill and several cached steps
PROBE_LENGTHS = (12, 7)  # two prompts of different lengths, so the padded batch is checked too
# model object -> {method label: the cache agreed}; weak, so a freed model takes its verdicts along
_verdicts: weakref.WeakKeyDictionary = weakref.WeakKeyDictionary()


def method_label(model: Any) -> str:
    """The active adapter's peft type (LORA, PREFIX_TUNING...), or the model class for a model without an active PEFT adapter."""
    config = getattr(model, "active_peft_config", None)
    if config is None or getattr(model, "_adapters_disabled", False):
        base = model.get_base_model() if hasattr(model, "get_base_model") else model
        return type(base).__name__
    return str(getattr(config.peft_type, "value", config.peft_type))


def cached_generate(model: Any, ids: Any, mask: Any, config: Any, is_seq2seq: bool, **extra: Any) -> Any:
    """New tokens (rows x steps) for padded prompts, with the cache on: the fast path every method should take."""
    if virtual_token_type(model):
        return generate_with_virtual_tokens(model, ids, mask, config, is_seq2seq, **extra)
    out = model.generate(input_ids=ids, attention_mask=mask, generation_config=config, **extra)
    return new_tokens(out, ids, is_seq2seq)


def _probe_config(config: Any) -> Any:
    probe = copy.deepcopy(config)
    # greedy and blind to eos, so that the probe runs exactly PROBE_TOKENS steps
    probe.update(do_sample=False, temperature=None, top_p=None, top_k=None, num_beams=1,
                 max_new_tokens=PROBE_TOKENS, min_new_tokens=None, eos_token_id=None)
    return probe


def _rounding(model: Any) -> float:
    """Relative rounding of the model's arithmetic: fp32's, or bf16's when a weight is stored in fewer bits (bf16, int8, 4-bit)."""
    import torch

    exact = all(parameter.dtype in (torch.float32, torch.float64) for parameter in model.parameters())
    return torch.finfo(torch.float32 if exact else torch.bfloat16).eps


def continuous_generate(model: Any, ids: Any, mask: Any, config: Any, is_seq2seq: bool) -> Any:
    """New tokens (rows x steps) for padded prompts through continuous batching: the probe's view of continuous.py."""
    import torch

    from peftlab.generation.continuous import generate_continuously

    eos = set() if config.eos_token_id is None else eos_ids(model, None)
    prompts = [row[row_mask.bool()].tolist() for row, row_mask in zip(ids, mask)]
    tokens = generate_continuously(model, prompts, config.max_new_tokens, eos, len(prompts))
    return torch.tensor(tokens, device=ids.device)


def smallest_window(model: Any) -> int | None:
    """The sliding window of the model's windowed layers (Mistral, Gemma 2 and 3, Qwen2 with use_sliding_window...), if any."""
    config = model.get_base_model().config if hasattr(model, "get_base_model") else model.config
    window = getattr(config.get_text_config(decoder=True), "sliding_window", None)
    return window if isinstance(window, int) and window > 0 else None


def probe_prompts(model: Any, prompt: list[int]) -> list[tuple[int, ...]]:
    """Distinct probes, longest first: prefixes of `prompt`, and, for a model with a sliding window, one that is longer
    than the window (the prompt repeated as often as needed), so a cache that mishandles the window is caught."""
    probes = [tuple(prompt[:length]) for length in PROBE_LENGTHS]
    window = smallest_window(model)
    if window is not None:
        past_window = window + PROBE_TOKENS
        probes.insert(0, tuple((prompt * (past_window // len(prompt) + 1))[:past_window]))
    return list(dict.fromkeys(probes))


def cache_agrees(model: Any, prompt: list[int], config: Any, is_seq2seq: bool, generate: Callable = cached_generate) -> bool:
    """Whether every token cached generation picks for prefixes of `prompt` (batched, padded) is the uncached argmax.

    The uncached logits come from one teacher-forced forward pass per probe. A cached step and
    a full pass round differently, so a token counts as the argmax when its logit is within a
    few units in the last place of the top one: in fp32 that is an exact-equality test in all
    but ties; in bf16 or quantized models it keeps rounding from flagging a working cache,
    while a broken cache picks tokens whole logits below the top.
    """
    import torch

    probes = probe_prompts(model, prompt)
    ids, mask = pad_batch([list(p) for p in probes], config.pad_token_id, left=not is_seq2seq)
    got = generate(model, ids.to(model.device), mask.to(model.device), _probe_config(config), is_seq2seq)
    for probe, tokens in zip(probes, got[:, -PROBE_TOKENS:].tolist()):
        logits = forward_logits(model, list(probe), tokens[:-1], is_seq2seq)
        picked = logits.gather(1, torch.tensor(tokens, device=logits.device)[:, None])[:, 0]
        slack = 8 * _rounding(model) * logits.abs().max()
        if bool((logits.max(dim=1).values - picked > slack).any()):
            return False
    return True


def checked(model: Any, label: str, prompt: list[int], config: Any, is_seq2seq: bool, generate: Callable, fallback: str) -> bool:
    """This process's verdict on `generate` for the model's method: checked once, a warning when it fails."""
    verdicts = _verdicts.setdefault(model, {})
    if label not in verdicts:
        verdicts[label] = cache_agrees(model, prompt, config, is_seq2seq, generate)
        if not verdicts[label]:
            log.warning("self-check: %s differs from uncached forward passes; %s for this method", label, fallback)
    return verdicts[label]


def cache_checked(model: Any, prompt: list[int], config: Any, is_seq2seq: bool) -> bool:
    """Whether cached `generate` decodes this model's method as its forward pass does (checked once per process)."""
    return checked(model, f"cached generation of {method_label(model)}", prompt, config, is_seq2seq, cached_generate,
                   "generating without a cache (slower, but correct)")


def continuous_checked(model: Any, tokenizer: Any, prompt: list[int], settings: GenerationSettings) -> bool:
    """Whether continuous batching decodes this model's method as its forward pass does (checked once per process)."""
    config = generation_config(model, tokenizer, settings)
    return checked(model, f"continuous batching of {method_label(model)}", prompt, config, False, continuous_generate,
                   "generating in static batches")
