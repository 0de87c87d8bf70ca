"""Examples -> token ids and labels, loss on the response only, with counts of what truncation cost."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

from peftlab.data.examples import Example
from peftlab.errors import PeftlabError

IGNORE = -100  # label value the loss skips


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


def prompt_ids(tokenizer: Any, prompt: str, chat: bool) -> list[int]:
    """The prompt exactly as generation will see it (training and inference share this)."""
    if chat:
        text = tokenizer.apply_chat_template([{"role": "user", "content": prompt}], tokenize=False, add_generation_prompt=True)
        return tokenizer(text, add_special_tokens=False)["input_ids"]
    ids = tokenizer(prompt, add_special_tokens=True)["input_ids"]
    if ids and tokenizer.eos_token_id is not None and ids[-1] == tokenizer.eos_token_id:
        ids = ids[:-1]  # some tokenizers end every text with eos; a prompt must not
    return ids


def response_ids(tokenizer: Any, response: str) -> list[int]:
    return tokenizer(response, add_special_tokens=False)["input_ids"] + [tokenizer.eos_token_id]


def tokenize(examples: list[Example], tokenizer: Any, max_length: int, is_seq2seq: bool,
             chat: bool, answer_only: bool = True) -> TokenizedSet:
    result = TokenizedSet(rows=len(examples))
    for example in examples:
        source = prompt_ids(tokenizer, example.prompt, chat) if not is_seq2seq else tokenizer(example.prompt)["input_ids"]
        target = response_ids(tokenizer, example.response)
        if is_seq2seq:
            feature = {"input_ids": source[:max_length], "labels": target[:max_length]}
            cut = len(source) > max_length or len(target) > max_length
        else:
            ids = source + target
            labels = [IGNORE] * len(source) + target if answer_only else list(ids)
            feature = {"input_ids": ids[:max_length], "labels": labels[:max_length]}
            cut = len(ids) > max_length
        result.truncated += cut
        if all(label == IGNORE for label in feature["labels"]) or not feature["labels"]:
            result.no_labels += 1
            result.first_dropped = result.first_dropped or example.where
            continue
        result.features.append(feature)
    return result


def check_trainable(tokenized: TokenizedSet, name: str, max_length: int) -> None:
    """Refuse a data set on which training would learn nothing."""
    if not tokenized.features:
        raise PeftlabError(
            f"{name}: all {tokenized.rows} rows lost every response token to truncation (max_length={max_length} "
            "is shorter than the prompts); raise --set data.max_length or shorten the template"
        )
