"""Trainable tokens: only the embeddings of chosen tokens train (new special tokens, or ones to re-learn), via peft."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from peftlab.methods.base import BuildContext, Method, get_peft_model_checked, register
from peftlab.methods.tokens import ADDED, token_indices


@dataclass
class TrainableTokensSettings:
    """peft's TrainableTokensConfig: the chosen rows of the input embedding (and of a tied output head) train."""

    tokens: str = ADDED  # added (the tokenizer's added tokens: chat markers, pad) | comma-separated token ids or texts


def build_trainable_tokens(model: Any, settings: TrainableTokensSettings, context: BuildContext) -> Any:
    from peft import TrainableTokensConfig

    from peftlab.methods.base import peft_task_type

    indices = token_indices(settings.tokens, context.tokenizer, model.get_input_embeddings().num_embeddings, "trainable-tokens.tokens")
    config = TrainableTokensConfig(task_type=peft_task_type(context.is_seq2seq), token_indices=indices)
    return get_peft_model_checked(model, config, "trainable-tokens")


register(Method("trainable-tokens", "Only the embeddings of chosen tokens (by default the added ones) train (peft's TrainableTokens)",
                TrainableTokensSettings, build_trainable_tokens, peft_type="TRAINABLE_TOKENS", mergeable=True))
