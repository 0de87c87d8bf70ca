"""Examples -> token ids and labels, loss on the response only, with counts of what truncation cost."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

from peftlab.data.chat import IGNORE, chat_prompt_ids, has_chat_template, conversation_tokens, require_chat_template, special_ids
from peftlab.data.examples import CHAT, TEXT, Example
from peftlab.errors import PeftlabError


@dataclass
class TokenizedSet:
    features: list[dict[str, list[int]]] = field(default_factory=list)
    rows: int = 0
    truncated: int = 0  # rows cut to max_length
    no_labels: int = 0  # rows left with no label token (dropped: they would train on nothing)
    first_dropped: str | None = None

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
    specials = special_ids(tokenizer) if any(e.kind == CHAT for e in examples) else set()
    for example in examples:
        if example.kind == CHAT:
            require_chat_template(tokenizer, chat_setting, is_seq2seq, example.where)
            ids, labels = conversation_tokens(tokenizer, example.messages, example.trained,
                                              train_on == "all" or not answer_only, example.where, specials)
            feature, cut = {"input_ids": ids[:max_length], "labels": labels[:max_length]}, len(ids) > max_length
        else:
            feature, cut = _pair_feature(example, tokenizer, max_length, is_seq2seq, chat and example.kind != TEXT, answer_only)
        result.truncated += cut
        if all(label == IGNORE for label in feature["labels"]) or not feature["labels"]:
            result.no_labels += 1
            result.first_dropped = result.first_dropped or example.where
            continue
        result.features.append(feature)
    return result


def _pair_feature(example: Example, tokenizer: Any, max_length: int, is_seq2seq: bool, chat: bool,
                  answer_only: bool) -> tuple[dict[str, list[int]], bool]:
    """A prompt -> response example (text: an empty prompt, so the loss falls on every token of the text)."""
    source = prompt_ids(tokenizer, example.prompt, chat) if not is_seq2seq else tokenizer(example.prompt)["input_ids"]
    target = response_ids(tokenizer, example.response)
    if is_seq2seq:
        return {"input_ids": source[:max_length], "labels": target[:max_length]}, len(source) > max_length or len(target) > max_length
    ids = source + target
    labels = [IGNORE] * len(source) + target if answer_only else list(ids)
    return {"input_ids": ids[:max_length], "labels": labels[:max_length]}, len(ids) > max_length


def check_trainable(tokenized: TokenizedSet, name: str, max_length: int) -> None:
    """Refuse a data set on which training would learn nothing."""
    if not tokenized.features:
        raise PeftlabError(
            f"{name}: all {tokenized.rows} rows lost every response token to truncation (max_length={max_length} "
            "is shorter than the prompts); raise --set data.max_length or shorten the template"
        )
