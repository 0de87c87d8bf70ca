"""Trainable tokens: only the embeddings of chosen tokens train (new special tokens, or ones to re-learn), via peft."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from peftlab.errors import PeftlabError
from peftlab.methods.base import BuildContext, Method, get_peft_model_checked, register

ADDED = "added"


@dataclass
class TrainableTokensSettings:
    """peft's TrainableTokensConfig: the chosen rows of the input embedding (and of a tied output head) train."""

    tokens: str = ADDED  # added (the tokenizer's added tokens: chat markers, pad) | comma-separated token ids or texts


def token_indices(tokens: str, tokenizer: Any, vocabulary: int) -> list[int]:
    if tokens == ADDED:
        if tokenizer is None:
            raise PeftlabError("trainable-tokens.tokens=added reads the tokenizer's added tokens; name token ids instead")
        found = sorted(index for index in getattr(tokenizer, "added_tokens_decoder", {}) if index < vocabulary)
        if not found:
            raise PeftlabError("this tokenizer has no added tokens; name the tokens to train with trainable-tokens.tokens=ID,ID or TEXT,TEXT")
        return found
    indices = []
    for item in (part.strip() for part in tokens.split(",") if part.strip()):
        if item.isdigit():
            indices.append(int(item))
            continue
        ids = tokenizer.convert_tokens_to_ids(item) if tokenizer is not None else None
        if not isinstance(ids, int) or ids == tokenizer.unk_token_id:
            raise PeftlabError(f"trainable-tokens.tokens: {item!r} is not one token of this tokenizer; give its id instead")
        indices.append(ids)
    bad = [index for index in indices if not 0 <= index < vocabulary]
    if bad or not indices:
        raise PeftlabError(f"trainable-tokens.tokens names no token of this model's {vocabulary} ({', '.join(map(str, bad)) or tokens})")
    return sorted(set(indices))


def build_trainable_tokens(model: Any, settings: TrainableTokensSettings, context: BuildContext) -> Any:
    from peft import TrainableTokensConfig

    from peftlab.methods.base import peft_task_type

    indices = token_indices(settings.tokens, context.tokenizer, model.get_input_embeddings().num_embeddings)
    config = TrainableTokensConfig(task_type=peft_task_type(context.is_seq2seq), token_indices=indices)
    return get_peft_model_checked(model, config, "trainable-tokens")


register(Method("trainable-tokens", "Only the embeddings of chosen tokens (by default the added ones) train (peft's TrainableTokens)",
                TrainableTokensSettings, build_trainable_tokens, peft_type="TRAINABLE_TOKENS", mergeable=True))
