"""An Ollama Modelfile for an exported GGUF file: FROM, the chat template as Ollama's Go template, the default
system prompt, stop tokens, and ADAPTER for a LoRA file.

Ollama's templates are Go templates, the tokenizer's is Jinja, and no library translates one into the other. Most
chat templates wrap each message in a fixed prefix and suffix per role (ChatML, Llama 3, Mistral-style), so the
pieces are found by rendering the tokenizer's own template around marker messages, the Go template is built from
them, and the same pieces must reproduce the Jinja rendering of test conversations exactly; when they do not (a
template with logic beyond wrapping), no TEMPLATE line is written and Ollama falls back to its own detection from
the GGUF file's chat template field, and the caller is told.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

MARK = "\x00{}\x00"  # a message content no template produces by itself
ROLES = ("system", "user", "assistant")


@dataclass
class ChatPieces:
    begin: str  # once, before the first message (a BOS the template writes itself)
    prefix: dict[str, str]
    suffix: dict[str, str]
    generation: str  # after the last message, where the answer starts
    default_system: str | None  # the system prompt the template adds when the conversation has none


def _render(tokenizer: Any, messages: list[tuple[str, str]], generation: bool) -> str:
    return tokenizer.apply_chat_template([{"role": r, "content": c} for r, c in messages], tokenize=False,
                                         add_generation_prompt=generation)


def _between(text: str, start: str | None, end: str | None) -> str:
    left = text.index(start) + len(start) if start else 0
    return text[left:text.index(end, left)] if end else text[left:]


def chat_pieces(tokenizer: Any) -> ChatPieces | None:
    """The per-role wrappers of the tokenizer's chat template, or None when it is not a pure wrapping."""
    s, u, a, u2 = (MARK.format(name) for name in ("SYS", "USR", "AST", "USR2"))
    try:
        one = _render(tokenizer, [("system", s), ("user", u)], False)
        asking = _render(tokenizer, [("system", s), ("user", u)], True)
        answered = _render(tokenizer, [("system", s), ("user", u), ("assistant", a)], False)
        again = _render(tokenizer, [("system", s), ("user", u), ("assistant", a), ("user", u2)], False)
        alone = _render(tokenizer, [("user", u)], False)
    except Exception:  # templates raise for orders they refuse (e.g. no system role): not a pure wrapping
        return None
    if not (asking.startswith(one) and answered.startswith(one) and again.startswith(answered)):
        return None
    user_suffix = _between(one, u, None)
    user_prefix = _between(again[len(answered):], None, u2)
    before_system = _between(one, None, s)
    bos = tokenizer.bos_token or ""
    begin = bos if bos and before_system.startswith(bos) and not user_prefix.startswith(bos) else ""  # once, not per message
    system_suffix = _between(one, s, u).removesuffix(user_prefix)
    pieces = ChatPieces(begin, {"system": before_system[len(begin):], "user": user_prefix, "assistant": _between(answered[len(one):], None, a)},
                        {"system": system_suffix, "user": user_suffix, "assistant": _between(answered, a, None)},
                        asking[len(one):], None)
    lead = _between(alone, None, u).removesuffix(user_prefix)[len(begin):]
    if lead:  # the template adds a system message of its own
        if not (lead.startswith(pieces.prefix["system"]) and lead.endswith(system_suffix)):
            return None
        pieces.default_system = lead[len(pieces.prefix["system"]):len(lead) - len(system_suffix)]
    return pieces if reproduces(tokenizer, pieces) else None


def render_pieces(pieces: ChatPieces, messages: list[tuple[str, str]], generation: bool) -> str:
    """What the Go template built from `pieces` writes (Ollama puts the SYSTEM line first when a chat has none)."""
    if pieces.default_system is not None and (not messages or messages[0][0] != "system"):
        messages = [("system", pieces.default_system), *messages]
    text = pieces.begin + "".join(pieces.prefix[r] + c + pieces.suffix[r] for r, c in messages)
    return text + (pieces.generation if generation else "")


def reproduces(tokenizer: Any, pieces: ChatPieces) -> bool:
    """The pieces give the Jinja template's exact text on conversations unlike the ones they were read from."""
    chats = [[("user", "Hi there")], [("system", "Be brief."), ("user", "Sum up: a, b."), ("assistant", "a and b"), ("user", "Again?")],
             [("user", "One"), ("assistant", "Two"), ("user", "Three")]]
    return all(_render(tokenizer, chat, True) == render_pieces(pieces, chat, True) for chat in chats)


def _go_literal(text: str) -> str:
    return text.replace("{{", '{{ "{{" }}')


def go_template(pieces: ChatPieces) -> str:
    """No `{{-` trims: they would eat the newlines the pieces end with."""
    branches = "".join(f'{{{{ {"if" if i == 0 else "else if"} eq .Role "{role}" }}}}{_go_literal(pieces.prefix[role])}'
                       f"{{{{ .Content }}}}{_go_literal(pieces.suffix[role])}" for i, role in enumerate(ROLES))
    return f"{_go_literal(pieces.begin)}{{{{ range .Messages }}}}{branches}{{{{ end }}}}{{{{ end }}}}{_go_literal(pieces.generation)}"


def _quoted(text: str) -> str:
    return '"' + text.replace("\\", "\\\\").replace('"', '\\"') + '"'


def modelfile(tokenizer: Any, model_file: str, adapter_file: str | None = None) -> tuple[str, bool]:
    """The Modelfile's text and whether it carries a TEMPLATE (False: Ollama detects one from the GGUF file)."""
    lines = [f"FROM {model_file}"]
    if adapter_file:
        lines.append(f"ADAPTER {adapter_file}")
    pieces = chat_pieces(tokenizer) if isinstance(getattr(tokenizer, "chat_template", None), str) else None
    if pieces is not None:
        template = go_template(pieces)
        if '"""' in template:
            pieces = None
        else:
            lines.append(f'TEMPLATE """{template}"""')
            if pieces.default_system is not None:
                lines.append(f"SYSTEM {_quoted(pieces.default_system)}")
    stops = [tokenizer.eos_token] if tokenizer.eos_token else []
    if pieces is not None:
        end = pieces.suffix["assistant"].strip()
        if end and end not in stops:
            stops.append(end)
    lines += [f"PARAMETER stop {_quoted(stop)}" for stop in stops]
    return "\n".join(lines) + "\n", pieces is not None
