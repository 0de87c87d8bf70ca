"""The dataset formats: which one a row is (from its columns, or data.format), and its values checked as text and messages."""

from __future__ import annotations

import math
from typing import Any

from peftlab.data.readers import Row
from peftlab.errors import PeftlabError

ROLES = ("system", "user", "assistant", "tool")
# ShareGPT speakers (LLaMA-Factory's names and the common variants) -> chat roles
SHAREGPT_ROLES = {"human": "user", "user": "user", "gpt": "assistant", "assistant": "assistant", "chatgpt": "assistant",
                  "system": "system", "observation": "tool", "tool": "tool", "function_response": "tool"}
CONVERSATIONAL = ("messages", "sharegpt")  # formats whose rows are whole conversations


def describe(name: str) -> str:
    return {"template": "template (columns filled into data.template)", "text": "text", "prompt-completion": "prompt/completion",
            "messages": "messages", "sharegpt": "ShareGPT (conversations)", "alpaca": "Alpaca (instruction/input/output)"}[name]


def row_format(row: Row, template_columns: list[str], need_response: bool = True) -> str:
    """The format a row's columns say. Today's template comes first, so a file it reads keeps being read the same way.

    `need_response=False` (rows to answer, as `generate` reads them): a `prompt` column alone is a prompt/completion row.
    """
    values = row.values
    if all(_present(values, column) for column in template_columns):
        return "template"
    if "messages" in values:
        return "messages"
    if "conversations" in values:
        return "sharegpt"
    if "instruction" in values and ("output" in values or not need_response):
        return "alpaca"
    if "prompt" in values and ("completion" in values or not need_response):
        return "prompt-completion"
    if "text" in values:
        return "text"
    return "template"  # its missing-column message names the columns and the fix


def _present(values: dict[str, Any], column: str) -> bool:
    return column in values or f"{column}1" in values


REQUIRED = {"messages": ("messages",), "sharegpt": ("conversations",), "alpaca": ("instruction", "output"),
            "prompt-completion": ("prompt", "completion"), "text": ("text",)}


PROMPT_ONLY = {"alpaca": ("instruction",), "prompt-completion": ("prompt",)}  # rows to answer need no response column


def check_columns(row: Row, name: str, need_response: bool = True) -> None:
    """A row read with an explicit data.format must hold that format's columns."""
    for column in (REQUIRED if need_response else {**REQUIRED, **PROMPT_ONLY}).get(name, ()):
        if column not in row.values:
            present = ", ".join(map(str, row.values)) or "none"
            raise PeftlabError(f"{row.where}: no column '{column}' (data.format={name} needs {', '.join(REQUIRED[name])}); "
                               f"columns are: {present}; fix the row or set data.format to the file's format")


def text_value(value: Any, where: str, column: str) -> str:
    """A column's value as text. Numbers become their decimal text; anything else that is not text is refused by name.

    Without this, str() would train on Python reprs ("b'\\xff'", "{'x': 1}", "nan", "True").
    """
    if isinstance(value, str):
        return value
    if value is None:
        raise PeftlabError(f"{where}: column '{column}' is empty; fill it or drop the row")
    if isinstance(value, int) and not isinstance(value, bool):
        return str(value)
    if isinstance(value, float) and math.isfinite(value):
        return repr(value)  # the shortest text that reads back as the same number (0.1, not 0.1000000000000000055)
    kind = _kind(value)
    raise PeftlabError(f"{where}: column '{column}' holds {kind}, not text; write it as a string in the file "
                       "(only text and numbers are read as text)")


def _kind(value: Any) -> str:
    if isinstance(value, bool):
        return f"a boolean ({str(value).lower()})"
    if isinstance(value, float):
        return f"a number that is not finite ({value})"
    if isinstance(value, (bytes, bytearray)):
        return "binary data"
    if isinstance(value, dict):
        return "an object"
    if isinstance(value, (list, tuple)):
        return "a list"
    return f"a {type(value).__name__} value"


def sharegpt_messages(row: Row) -> list[dict[str, Any]]:
    turns = row.values["conversations"]
    if not isinstance(turns, list):
        raise PeftlabError(f"{row.where}: 'conversations' must be a list of {{\"from\": ..., \"value\": ...}} turns, got {_kind(turns)}")
    messages = []
    system = row.values.get("system")
    if system:
        messages.append({"role": "system", "content": text_value(system, row.where, "system")})
    for number, turn in enumerate(turns, start=1):
        if not isinstance(turn, dict) or "from" not in turn or "value" not in turn:
            raise PeftlabError(f"{row.where}: conversations turn {number} must be an object with 'from' and 'value'")
        role = SHAREGPT_ROLES.get(turn["from"]) if isinstance(turn["from"], str) else None
        if role is None:
            raise PeftlabError(f"{row.where}: conversations turn {number} is from {turn['from']!r}, an unknown speaker; "
                               f"use one of {', '.join(SHAREGPT_ROLES)}")
        messages.append({"role": role, "content": turn["value"]})
    return messages


def check_messages(messages: Any, where: str, column: str = "messages", need_assistant: bool = True) -> list[dict[str, Any]]:
    """A conversation as the chat template takes it; every rule a chat template would break on, named with the fix."""
    if not isinstance(messages, list) or not messages:
        raise PeftlabError(f"{where}: '{column}' must be a non-empty list of {{\"role\": ..., \"content\": ...}} messages")
    checked, called = [], False
    for number, message in enumerate(messages, start=1):
        here = f"{where}, {column} message {number}"
        if not isinstance(message, dict) or "role" not in message:
            raise PeftlabError(f"{here}: a message must be an object with 'role' and 'content'")
        role = message["role"]
        if role not in ROLES:
            raise PeftlabError(f"{here}: unknown role {role!r}; use one of {', '.join(ROLES)}")
        calls = role == "assistant" and bool(message.get("tool_calls"))
        content = message.get("content")
        if content is None or (isinstance(content, str) and not content.strip()):
            if not calls:
                raise PeftlabError(f"{here}: the {role} message has empty content; write its text or drop the message")
            content = ""
        elif not isinstance(content, str):
            raise PeftlabError(f"{here}: content holds {_kind(content)}, not text; write the message's text as a string")
        if role == "tool" and not called:
            raise PeftlabError(f"{here}: a tool message without a call; an assistant message with tool_calls must come before it")
        called = calls or (called and role == "tool")
        checked.append({**message, "content": content})
    if need_assistant and not any(m["role"] == "assistant" for m in checked):
        raise PeftlabError(f"{where}: the conversation has no assistant turn, so nothing to learn; add the assistant's answer")
    return checked
