"""Cached generation for soft-prompt methods: the virtual tokens go into the inputs or a prefilled cache, then the base model generates.

peft 0.21's `prepare_inputs_for_generation` still looks for `past_key_values` and
`cache_position`; transformers 5 passes the cache as `cache` and no longer makes
`cache_position`. peft so never sees the cache and treats every decoding step as the first:
prompt tuning and P-tuning prepend the virtual tokens again in front of each new token, and
prefix tuning's prefix is dropped (transformers keeps `cache` over the deprecated
`past_key_values`). Instead of peft's hook we hand the base model's own `generate` what a
cached decode needs, through its public inputs only: `inputs_embeds` with the virtual tokens
in front (prompt tuning, P-tuning), or a cache already holding the prefix (prefix tuning).
Hand-written here because neither library offers it for this pair of versions.
"""

from __future__ import annotations

import functools
import inspect
from typing import Any

from peftlab.methods.prompts import PREFIXED, virtual_token_kind


def virtual_token_type(model: Any) -> str | None:
    """PROMPT_TUNING, P_TUNING or PREFIX_TUNING when this generation path handles the model's active adapter, else None."""
    config = getattr(model, "active_peft_config", None)
    if getattr(model, "_adapters_disabled", False):  # inside peft's disable_adapter(): the plain base generates
        return None
    return virtual_token_kind(str(getattr(getattr(config, "peft_type", None), "value", getattr(config, "peft_type", ""))))


def new_tokens(out: Any, ids: Any, is_seq2seq: bool) -> Any:
    """What generate added to the prompts: seq2seq output opens with the decoder start token, a causal LM's repeats the prompt."""
    return out[:, 1:] if is_seq2seq else out[:, ids.shape[1]:]


def cache_keyword(model: Any) -> str:
    """transformers 5 renamed the forward's `past_key_values` to `cache`; ask the underlying model which one it takes."""
    base = model.get_base_model() if hasattr(model, "get_base_model") else model
    return _cache_keyword_of(type(base))


@functools.cache  # asked at every decoding step: the signature of a class's forward does not change
def _cache_keyword_of(model_class: type) -> str:
    return "cache" if "cache" in inspect.signature(model_class.forward).parameters else "past_key_values"


def generate_with_virtual_tokens(model: Any, ids: Any, mask: Any, config: Any, is_seq2seq: bool, **extra: Any) -> Any:
    """The new tokens (rows x steps) a prompt-learning PeftModel generates for padded `ids`, with the cache on."""
    import torch

    peft_config = model.active_peft_config
    base = model.get_base_model()
    rows, virtual = ids.shape[0], peft_config.num_virtual_tokens
    # the virtual tokens are always attended to; their mask goes in front, as in peft's forward
    with_virtual = torch.cat((torch.ones(rows, virtual, dtype=mask.dtype, device=mask.device), mask), dim=1)
    if virtual_token_type(model) in PREFIXED:
        # generate does not widen a cache it is given for beams, so the prefix is built for every beam row
        prefix = model.get_prompt(batch_size=rows * max(config.num_beams or 1, 1))
        # T5's prefix lives in the decoder's self-attention only: the encoder mask stays as it is
        out = base.generate(input_ids=ids, attention_mask=mask if is_seq2seq else with_virtual, generation_config=config,
                            **{cache_keyword(base): prefix}, **extra)
        return new_tokens(out, ids, is_seq2seq)
    tokens = model.word_embeddings(ids)
    prompts = model.get_prompt(batch_size=rows)[:, :virtual].to(tokens.dtype)
    embeds = torch.cat((prompts, tokens), dim=1)
    # decoder-only generate from embeddings returns only the new tokens; position ids come from the
    # mask, so a left-padded row's tokens sit right after the virtual tokens as in training
    out = base.generate(inputs_embeds=embeds, attention_mask=with_virtual, generation_config=config, **extra)
    return out[:, 1:] if is_seq2seq else out
