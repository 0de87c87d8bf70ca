"""Examples -> token ids and labels, loss on the response only, with counts of what truncation cost."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

from peftlab.data.chat import (IGNORE, chat_prompt_ids, conversation_tokens, has_chat_template, render_chat,
                               require_chat_template, special_ids)
from peftlab.data.examples import CHAT, TEXT, Example
from peftlab.errors import PeftlabError


@dataclass
class TokenizedSet:
    features: list[dict[str, list[int]]] = field(default_factory=list)
    rows: int = 0
    truncated: int = 0  # rows cut to max_length
    no_labels: int = 0  # rows left with no label token (dropped: they would train on nothing)
    first_dropped: str | None = None
    format: str = "template"  # the rows' format (data.format, or the one detected)

    def add(self, feature: dict[str, list[int]], cut: bool, where: str, has_labels: bool | None = None) -> None:
        """Keep a tokenized row, or count it dropped when truncation left it no label token.

        `has_labels`: whether it kept one, when the caller knows it without scanning the labels (a prompt/completion
        row keeps one iff it is longer than its prompt)."""
        self.truncated += cut
        if has_labels is None:
            has_labels = any(label != IGNORE for label in feature["labels"])
        if has_labels:
            self.features.append(feature)
        else:
            self.no_labels += 1
            self.first_dropped = self.first_dropped or where

    def summary(self) -> str:
        text = f"{len(self.features)} examples"
        if self.truncated:
            text += f", {self.truncated} truncated to max_length"
        if self.no_labels:
            text += f", {self.no_labels} dropped with no response token left (first: {self.first_dropped})"
        return text


def uses_chat_template(tokenizer: Any, setting: str, is_seq2seq: bool) -> bool:
    has_one = bool(getattr(tokenizer, "chat_template", None))
    if setting == "on" and not has_one:
        raise PeftlabError("data.chat_template=on but this tokenizer has no chat template; use auto or off")
    return not is_seq2seq and (setting == "on" or (setting == "auto" and has_one))


def prompt_ids(tokenizer: Any, prompt: str | list[dict[str, Any]], chat: bool) -> list[int]:
    """The prompt exactly as generation will see it (training and inference share this).

    A list is a conversation up to the assistant turn to write; a text goes in as one user message.
    """
    if isinstance(prompt, list):
        if not chat:  # the setting is off, or the model has no chat template: say which
            require_chat_template(tokenizer, "off" if has_chat_template(tokenizer) else "auto", False, "a conversation")
        return chat_prompt_ids(tokenizer, prompt)
    if chat:
        return chat_prompt_ids(tokenizer, [{"role": "user", "content": prompt}])
    ids = tokenizer(prompt, add_special_tokens=True)["input_ids"]
    if ids and tokenizer.eos_token_id is not None and ids[-1] == tokenizer.eos_token_id:
        ids = ids[:-1]  # some tokenizers end every text with eos; a prompt must not
    return ids


def response_ids(tokenizer: Any, response: str) -> list[int]:
    return tokenizer(response, add_special_tokens=False)["input_ids"] + [tokenizer.eos_token_id]


def tokenize(examples: list[Example], tokenizer: Any, max_length: int, is_seq2seq: bool,
             chat: bool, answer_only: bool = True, train_on: str = "assistant", chat_setting: str = "auto") -> TokenizedSet:
    """Every example as ids and labels; a long one keeps its first max_length tokens (later turns are cut first)."""
    result = TokenizedSet(rows=len(examples))
    conversations = [e for e in examples if e.kind == CHAT]
    specials = special_ids(tokenizer) if conversations else set()
    pairs = iter(_pair_features([e for e in examples if e.kind != CHAT], tokenizer, max_length, is_seq2seq, chat, answer_only))
    for example in examples:
        if example.kind == CHAT:
            require_chat_template(tokenizer, chat_setting, is_seq2seq, example.where)
            ids, labels = conversation_tokens(tokenizer, example.messages, example.trained,
                                              train_on == "all" or not answer_only, example.where, specials)
            feature, cut, has_labels = {"input_ids": ids[:max_length], "labels": labels[:max_length]}, len(ids) > max_length, None
        else:
            feature, cut, has_labels = next(pairs)
        result.add(feature, cut, example.where, has_labels)
    return result


def _pair_features(examples: list[Example], tokenizer: Any, max_length: int, is_seq2seq: bool, chat: bool,
                   answer_only: bool) -> list[tuple[dict[str, list[int]], bool, bool]]:
    """Prompt -> response examples, tokenized a batch at a time (text: an empty prompt, the loss on every token).

    Each is (feature, cut to max_length, kept a label token). The ids equal prompt_ids + response_ids of each example
    alone; one call per batch lets the fast tokenizer spread the work over every core.
    """
    if not examples:
        return []
    prompts, eos = [e.prompt for e in examples], tokenizer.eos_token_id
    if is_seq2seq:
        sources = batch_ids(tokenizer, prompts, True)
    elif chat and examples[0].kind != TEXT:  # one format per file: every example is wrapped, or none
        sources = batch_ids(tokenizer, chat_prompt_texts(tokenizer, prompts), False)
    else:
        sources = [ids[:-1] if ids and eos is not None and ids[-1] == eos else ids  # a prompt must not end with eos
                   for ids in batch_ids(tokenizer, prompts, True)]
    targets = batch_ids(tokenizer, [e.response for e in examples], False)
    features = []
    for source, target in zip(sources, targets):
        target.append(eos)
        if is_seq2seq:
            kept = target[:max_length]
            features.append(({"input_ids": source[:max_length], "labels": kept},
                             len(source) > max_length or len(target) > max_length, bool(kept)))
            continue
        prompt_length, length = len(source), len(source) + len(target)
        labels = [IGNORE] * prompt_length + target if answer_only else source + target
        source += target  # the prompt's list becomes the row's ids: no copy
        if length > max_length:
            del source[max_length:], labels[max_length:]
        kept = min(length, max_length)
        features.append(({"input_ids": source, "labels": labels}, length > max_length,
                         kept > prompt_length if answer_only else kept > 0))
    return features


def batch_ids(tokenizer: Any, texts: list[str], add_special_tokens: bool) -> list[list[int]]:
    """`tokenizer(texts)["input_ids"]`, without the per-row conversion to masks and dicts when the tokenizer is fast.

    transformers 5.24's fast tokenizers pass the texts to their backend's encode_batch and then convert every
    Encoding; calling the backend directly gives the same ids (nothing else is done to them) as long as no truncation,
    padding or split-special-tokens setting sits on it.
    """
    backend = getattr(tokenizer, "backend_tokenizer", None) if getattr(tokenizer, "is_fast", False) else None
    if (backend is None or backend.truncation is not None or backend.padding is not None
            or backend.encode_special_tokens != bool(getattr(tokenizer, "split_special_tokens", False))):
        return tokenizer(texts, add_special_tokens=add_special_tokens)["input_ids"]
    return [encoding.ids for encoding in backend.encode_batch(texts, add_special_tokens=add_special_tokens)]


# two contents with whitespace at their edges and braces inside: a template that trims, escapes or reacts to the content
# renders them differently around it
PROBES = (" \n probe {one} <x> \n", "second\tprobe\n\n")


def chat_wrap(tokenizer: Any) -> tuple[str, str] | None:
    """(before, after) when the chat template renders a one-user-message prompt as before + content + after, else None.

    Proven per tokenizer on two probe contents: both must split into the same text before and after them.
    """
    first, second = (render_chat(tokenizer, [{"role": "user", "content": probe}], True) for probe in PROBES)
    at = first.find(PROBES[0])
    if at < 0:
        return None
    before, after = first[:at], first[at + len(PROBES[0]):]
    return (before, after) if second == before + PROBES[1] + after else None


def chat_prompt_texts(tokenizer: Any, prompts: list[str]) -> list[str]:
    """Each prompt as one user message through the chat template: joined to the template's constant wrap when it has
    one (rendering Jinja per row cost more than tokenizing on two cores), else rendered row by row."""
    wrap = chat_wrap(tokenizer)
    if wrap is None:
        return [render_chat(tokenizer, [{"role": "user", "content": prompt}], True) for prompt in prompts]
    before, after = wrap
    return [before + prompt + after for prompt in prompts]


def check_trainable(tokenized: TokenizedSet, name: str, max_length: int) -> None:
    """Refuse a data set on which training would learn nothing."""
    if not tokenized.features:
        raise PeftlabError(
            f"{name}: all {tokenized.rows} rows lost every response token to truncation (max_length={max_length} "
            "is shorter than the prompts); raise --set data.max_length or shorten the template"
        )
