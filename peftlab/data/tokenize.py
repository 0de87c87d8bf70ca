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

    def add(self, feature: dict[str, list[int]], cut: bool, where: str) -> None:
        """Keep a tokenized row, or count it dropped when truncation left it no label token."""
        self.truncated += cut
        if all(label == IGNORE for label in feature["labels"]) or not feature["labels"]:
            self.no_labels += 1
            self.first_dropped = self.first_dropped or where
        else:
            self.features.append(feature)

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
            feature, cut = {"input_ids": ids[:max_length], "labels": labels[:max_length]}, len(ids) > max_length
        else:
            feature, cut = next(pairs)
        result.add(feature, cut, example.where)
    return result


def _pair_features(examples: list[Example], tokenizer: Any, max_length: int, is_seq2seq: bool, chat: bool,
                   answer_only: bool) -> list[tuple[dict[str, list[int]], bool]]:
    """Prompt -> response examples, tokenized a batch at a time (text: an empty prompt, the loss on every token).

    The ids equal prompt_ids + response_ids of each example alone; one call per batch lets the fast tokenizer
    spread the work over every core.
    """
    if not examples:
        return []
    prompts = [e.prompt for e in examples]
    if is_seq2seq:
        sources = tokenizer(prompts)["input_ids"]
    elif chat and examples[0].kind != TEXT:  # one format per file: every example is wrapped, or none
        rendered = [render_chat(tokenizer, [{"role": "user", "content": prompt}], True) for prompt in prompts]
        sources = tokenizer(rendered, add_special_tokens=False)["input_ids"]
    else:
        eos = tokenizer.eos_token_id
        sources = [ids[:-1] if ids and eos is not None and ids[-1] == eos else ids  # a prompt must not end with eos
                   for ids in tokenizer(prompts, add_special_tokens=True)["input_ids"]]
    targets = [ids + [tokenizer.eos_token_id] for ids in tokenizer([e.response for e in examples], add_special_tokens=False)["input_ids"]]
    features = []
    for source, target in zip(sources, targets):
        if is_seq2seq:
            features.append(({"input_ids": source[:max_length], "labels": target[:max_length]},
                             len(source) > max_length or len(target) > max_length))
            continue
        ids = source + target
        labels = [IGNORE] * len(source) + target if answer_only else list(ids)
        features.append(({"input_ids": ids[:max_length], "labels": labels[:max_length]}, len(ids) > max_length))
    return features


def check_trainable(tokenized: TokenizedSet, name: str, max_length: int) -> None:
    """Refuse a data set on which training would learn nothing."""
    if not tokenized.features:
        raise PeftlabError(
            f"{name}: all {tokenized.rows} rows lost every response token to truncation (max_length={max_length} "
            "is shorter than the prompts); raise --set data.max_length or shorten the template"
        )
