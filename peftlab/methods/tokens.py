"""Which rows of the input embedding a setting names: the tokenizer's added tokens, or token ids and texts.

Shared by `trainable-tokens` (only those rows train) and the LoRA family's `trainable_tokens` setting (those rows
train beside the low-rank matrices); this module registers no method.
"""

from __future__ import annotations

from typing import Any

from peftlab.errors import PeftlabError

ADDED = "added"


def token_indices(tokens: str, tokenizer: Any, vocabulary: int, setting: str) -> list[int]:
    """The sorted embedding rows `tokens` names (ADDED, or comma-separated ids / token texts); `setting` is its name in errors."""
    if tokens == ADDED:
        if tokenizer is None:
            raise PeftlabError(f"{setting}=added reads the tokenizer's added tokens; name token ids instead")
        found = sorted(index for index in getattr(tokenizer, "added_tokens_decoder", {}) if index < vocabulary)
        if not found:
            raise PeftlabError(f"this tokenizer has no added tokens; name the tokens to train with {setting}=ID,ID or TEXT,TEXT")
        return found
    indices = []
    for item in (part.strip() for part in tokens.split(",") if part.strip()):
        if item.isdigit():
            indices.append(int(item))
            continue
        ids = tokenizer.convert_tokens_to_ids(item) if tokenizer is not None else None
        if not isinstance(ids, int) or ids == tokenizer.unk_token_id:
            raise PeftlabError(f"{setting}: {item!r} is not one token of this tokenizer; give its id instead")
        indices.append(ids)
    bad = [index for index in indices if not 0 <= index < vocabulary]
    if bad or not indices:
        raise PeftlabError(f"{setting} names no token of this model's {vocabulary} ({', '.join(map(str, bad)) or tokens})")
    return sorted(set(indices))
