"""The model's context: the positions a prompt, an adapter's soft prompt and the answer may take together.

One rule for serve and for every offline command (eval, generate, compare, check): soft-prompt tokens + prompt
tokens + new tokens must fit the model's positions (`max_position_embeddings`, GPT-2's `n_positions`). Past it a
RoPE model silently runs on positions it never learned and a learned-position model fails, so the prompt is refused
in one line naming it. Encoder-decoders (T5) have relative positions and no fixed context.
"""

from __future__ import annotations

from typing import Any

from peftlab.errors import PeftlabError
from peftlab.generation.soft_prompts import virtual_token_type


def context_tokens(model: Any) -> int | None:
    """The model's positions, or None where it has no fixed context (encoder-decoders)."""
    base = model.get_base_model() if hasattr(model, "get_base_model") else model
    config = base.config
    if getattr(config, "is_encoder_decoder", False):
        return None
    return int(getattr(config, "max_position_embeddings", 0) or getattr(config, "n_positions", 0) or 0) or None


def soft_prompt_tokens(model: Any) -> int:
    """Positions the active soft prompt (prompt, prefix or P-tuning) takes before the prompt's own tokens."""
    return int(model.active_peft_config.num_virtual_tokens) if virtual_token_type(model) else 0


def check_context(model: Any, prompts: list[list[int]], max_new_tokens: int, labels: list[str] | None = None) -> None:
    """Refuse, naming the first, a prompt whose tokens with the soft prompt and the answer do not fit the context."""
    limit = context_tokens(model)
    if limit is None:
        return
    virtual = soft_prompt_tokens(model)
    for index, ids in enumerate(prompts):
        if virtual + len(ids) + max_new_tokens > limit:
            label = labels[index] if labels else f"prompt {index + 1}"
            soft = f" + {virtual} of the adapter's soft prompt" if virtual else ""
            raise PeftlabError(f"{label}: {len(ids)} prompt tokens{soft} + {max_new_tokens} new tokens exceed the model's context "
                               f"of {limit} positions; shorten that row or lower --max-new-tokens")
