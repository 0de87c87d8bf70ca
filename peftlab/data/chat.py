"""Conversations through the model's chat template: the one renderer (train, eval, generate, serve) and the loss mask."""

from __future__ import annotations

from typing import Any

from peftlab.errors import PeftlabError

IGNORE = -100  # label value the loss skips


def has_chat_template(tokenizer: Any) -> bool:
    return bool(getattr(tokenizer, "chat_template", None))


def render_chat(tokenizer: Any, messages: list[dict[str, Any]], add_generation_prompt: bool) -> str:
    """The conversation as text, exactly as `peftlab serve` renders a /v1/chat/completions request."""
    return tokenizer.apply_chat_template(messages, tokenize=False, add_generation_prompt=add_generation_prompt)


def chat_prompt_ids(tokenizer: Any, messages: list[dict[str, Any]]) -> list[int]:
    """The prompt of a chat request: the conversation so far and the assistant's opening.

    The rendered text carries the template's own special tokens (a BOS among them), so none are added.
    """
    return tokenizer(render_chat(tokenizer, messages, True), add_special_tokens=False)["input_ids"]


def special_ids(tokenizer: Any) -> set[int]:
    """Ids of the special tokens: an assistant turn's span ends at its last one (the end-of-turn token)."""
    added = getattr(tokenizer, "added_tokens_decoder", {}) or {}
    return set(tokenizer.all_special_ids) | {index for index, token in added.items() if getattr(token, "special", False)}


def _render(tokenizer: Any, messages: list[dict[str, Any]], add_generation_prompt: bool, where: str) -> str:
    try:
        return render_chat(tokenizer, messages, add_generation_prompt)
    except Exception as error:  # jinja's TemplateError and the template's own raise_exception: the model refuses this shape
        raise PeftlabError(f"{where}: the model's chat template refuses this conversation ({str(error).strip()[:200]}); "
                           "reorder or merge its messages (many templates want user and assistant turns to alternate)") from None


def turn_boundaries(tokenizer: Any, messages: list[dict[str, Any]], trained: tuple[int, ...], where: str) -> list[str]:
    """Rendered prefixes, in order: before turn i with the generation prompt, then through turn i, ..., the whole conversation.

    Each must begin with the one before it (the prefix property): then the text between "before" and "through"
    is exactly what the model writes for that turn when serve renders the conversation up to it.
    """
    texts = []
    for turn in trained:
        texts += [_render(tokenizer, messages[:turn], True, where), _render(tokenizer, messages[:turn + 1], False, where)]
    texts.append(_render(tokenizer, messages, False, where))
    for number, (earlier, later) in enumerate(zip(texts, texts[1:])):
        if not later.startswith(earlier):
            turn = trained[min(number // 2, len(trained) - 1)] + 1
            fix = "data.train_on=last (the loss on the last assistant turn only) or " if len(trained) > 1 else ""
            raise PeftlabError(
                f"{where}: the model's chat template renders the conversation before message {turn} differently once later "
                f"messages follow, so the loss cannot be put on that turn's answer alone; set {fix}data.train_on=all "
                "(the loss on every token)")
    return texts


def conversation_tokens(tokenizer: Any, messages: list[dict[str, Any]], trained: tuple[int, ...], train_all: bool,
                        where: str, specials: set[int]) -> tuple[list[int], list[int]]:
    """Token ids and labels of a conversation: the loss on each trained assistant turn's text and its end-of-turn token.

    Hand-written: transformers' return_assistant_tokens_mask needs templates marked with {% generation %}, which few
    models ship. The pieces between boundaries are tokenized apart, so an answer's tokens are the ones the model
    writes after the served prompt; the check below proves the prompt part equals the served prompt's tokens.
    """
    if train_all:
        ids = tokenizer(_render(tokenizer, messages, False, where), add_special_tokens=False)["input_ids"]
        return ids, list(ids)
    texts = turn_boundaries(tokenizer, messages, trained, where)
    cuts = [0, *map(len, texts)]
    full = texts[-1]
    pieces = tokenizer([full[start:end] for start, end in zip(cuts, cuts[1:])], add_special_tokens=False)["input_ids"]
    ids, labels, starts = [], [], []
    for number, piece in enumerate(pieces):
        if number % 2 == 0:  # before an answer (or after the last): no loss
            labels += [IGNORE] * len(piece)
        else:
            starts.append(len(ids))
            ends = [i for i, token in enumerate(piece) if token in specials]
            keep = ends[-1] + 1 if ends else len(piece)  # a template's text after the end-of-turn token is never generated
            if not keep:
                raise PeftlabError(f"{where}: the chat template renders nothing for message {trained[len(starts) - 1] + 1}")
            labels += piece[:keep] + [IGNORE] * (len(piece) - keep)
        ids += piece
    _check_served_prompts(tokenizer, texts[0:-1:2], ids, starts, where)
    return ids, labels


def _check_served_prompts(tokenizer: Any, prompts: list[str], ids: list[int], starts: list[int], where: str) -> None:
    served = tokenizer(prompts, add_special_tokens=False)["input_ids"]
    for prompt_ids, start in zip(served, starts):
        if prompt_ids != ids[:start]:
            raise PeftlabError(
                f"{where}: this tokenizer splits the conversation's text differently at a turn boundary, so training would "
                "not see the tokens serve sends; set data.train_on=all, or report the model to peftlab")


def require_chat_template(tokenizer: Any, setting: str, is_seq2seq: bool, where: str) -> None:
    """Conversations need a decoder-only model with a chat template (the one serve uses); anything else is one line."""
    if is_seq2seq:
        raise PeftlabError(f"{where}: conversations train decoder-only chat models; this model is encoder-decoder (T5-like); "
                           "convert the rows to prompt/completion, or use a causal model")
    if setting == "off":
        raise PeftlabError(f"{where}: conversations are rendered with the model's chat template, but data.chat_template=off; "
                           "set it to auto")
    if not has_chat_template(tokenizer):
        raise PeftlabError(f"{where}: conversations are rendered with the model's chat template, and this model has none; "
                           "use an instruct/chat model, or convert the rows to prompt/completion")
