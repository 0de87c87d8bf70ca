"""The OpenAI API's shapes: request bodies checked into jobs, results and stream chunks, error objects."""

from __future__ import annotations

import queue
import time
import uuid
from dataclasses import dataclass
from typing import Any, Iterator

from peftlab.serve.jobs import GREEDY, Job, TextStream

ROLES = ("system", "user", "assistant", "developer")


class ApiError(Exception):
    """An error answered with an OpenAI-style body: {"error": {"message", "type", "param", "code"}}."""

    def __init__(self, status: int, message: str, param: str | None = None, code: str | None = None,
                 kind: str = "invalid_request_error"):
        super().__init__(message)
        self.status, self.message, self.param, self.code, self.kind = status, message, param, code, kind

    def body(self) -> dict[str, Any]:
        return {"error": {"message": self.message, "type": self.kind, "param": self.param, "code": self.code}}


@dataclass
class Request:
    kind: str  # chat | completion
    model: str
    prompts: list[list[int]]
    max_tokens: int
    sampling: tuple[float, float]
    stop: list[str]
    stream: bool
    include_usage: bool
    id: str = ""
    created: int = 0


def _field(body: dict[str, Any], name: str, types: type | tuple, default: Any = None, required: bool = False) -> Any:
    if name not in body or body[name] is None:
        if required:
            raise ApiError(400, f"missing required field '{name}'", name, "missing_required_parameter")
        return default
    value = body[name]
    if not isinstance(value, types) or (isinstance(value, bool) and bool not in (types if isinstance(types, tuple) else (types,))):
        wanted = " or ".join(t.__name__ for t in (types if isinstance(types, tuple) else (types,)))
        raise ApiError(400, f"'{name}' must be {wanted}, got {type(value).__name__}", name, "invalid_type")
    return value


def _messages(body: dict[str, Any]) -> list[dict[str, str]]:
    messages = _field(body, "messages", list, required=True)
    if not messages:
        raise ApiError(400, "'messages' must hold at least one message", "messages", "invalid_value")
    plain = []
    for i, message in enumerate(messages):
        if not isinstance(message, dict) or message.get("role") not in ROLES:
            raise ApiError(400, f"messages[{i}] needs a role, one of {', '.join(ROLES)}", f"messages[{i}].role", "invalid_value")
        content = message.get("content")
        if isinstance(content, list):  # the content-parts form: keep the text parts
            content = "".join(part.get("text", "") for part in content if isinstance(part, dict) and part.get("type") == "text")
        if not isinstance(content, str):
            raise ApiError(400, f"messages[{i}].content must be a string or a list of text parts", f"messages[{i}].content", "invalid_type")
        plain.append({"role": "system" if message["role"] == "developer" else message["role"], "content": content})
    return plain


def _prompts(body: dict[str, Any]) -> list[str]:
    prompt = _field(body, "prompt", (str, list), required=True)
    prompts = [prompt] if isinstance(prompt, str) else prompt
    if not prompts or not all(isinstance(p, str) for p in prompts):
        raise ApiError(400, "'prompt' must be a string or a non-empty list of strings", "prompt", "invalid_type")
    return prompts


def _sampling(body: dict[str, Any]) -> tuple[float, float]:
    # temperature 0 (greedy) unless asked: answers are reproducible and batching never changes them
    temperature = float(_field(body, "temperature", (int, float), 0.0))
    top_p = float(_field(body, "top_p", (int, float), 1.0))
    if not 0 <= temperature <= 2:
        raise ApiError(400, f"'temperature' must be between 0 and 2, got {temperature}", "temperature", "invalid_value")
    if not 0 < top_p <= 1:
        raise ApiError(400, f"'top_p' must be in (0, 1], got {top_p}", "top_p", "invalid_value")
    return GREEDY if temperature == 0 else (temperature, top_p)


def parse_request(kind: str, body: Any, engine: Any, max_tokens_limit: int) -> Request:
    """Check a /v1/completions or /v1/chat/completions body and tokenize its prompts."""
    if not isinstance(body, dict):
        raise ApiError(400, "the request body must be a JSON object", None, "invalid_body")
    model = _field(body, "model", str, required=True)
    if model not in engine.models:
        raise ApiError(404, f"The model '{model}' does not exist; served here: {', '.join(engine.models)}", "model", "model_not_found")
    if _field(body, "n", int, 1) != 1:
        raise ApiError(400, "only n=1 is supported; send several requests instead", "n", "unsupported_value")
    for name in ("logprobs", "top_logprobs", "echo", "tools", "suffix"):
        if body.get(name) not in (None, False, 0, []):
            raise ApiError(400, f"'{name}' is not supported by peftlab serve; leave it out", name, "unsupported_parameter")
    limit_name = "max_completion_tokens" if body.get("max_completion_tokens") is not None else "max_tokens"
    max_tokens = _field(body, limit_name, int, min(max_tokens_limit, 256))
    if not 1 <= max_tokens <= max_tokens_limit:
        raise ApiError(400, f"'{limit_name}' must be between 1 and {max_tokens_limit} (this server's --max-tokens), got {max_tokens}",
                       limit_name, "invalid_value")
    stop = _field(body, "stop", (str, list), [])
    stop = [stop] if isinstance(stop, str) else stop
    if len(stop) > 4 or not all(isinstance(s, str) for s in stop):
        raise ApiError(400, "'stop' must be a string or a list of at most 4 strings", "stop", "invalid_value")
    stream = _field(body, "stream", bool, False)
    options = _field(body, "stream_options", dict, {})
    if kind == "chat":
        prompts = [engine.prompt_ids("", _messages(body))]
    else:
        prompts = [engine.prompt_ids(text) for text in _prompts(body)]
    for ids in prompts:
        if not ids:
            raise ApiError(400, "the prompt is empty after tokenization", "prompt", "invalid_value")
        if len(ids) + max_tokens > engine.context_tokens:
            raise ApiError(400, f"This model's maximum context length is {engine.context_tokens} tokens. However, you requested "
                           f"{len(ids) + max_tokens} tokens ({len(ids)} in the prompt, {max_tokens} for the completion). "
                           "Please reduce the length of the prompt or of max_tokens.", "messages" if kind == "chat" else "prompt",
                           "context_length_exceeded")
    prefix = "chatcmpl" if kind == "chat" else "cmpl"
    return Request(kind, model, prompts, max_tokens, _sampling(body), stop, stream, bool(options.get("include_usage")),
                   f"{prefix}-{uuid.uuid4().hex}", int(time.time()))


def make_jobs(request: Request, tokenizer: Any) -> tuple[list[Job], queue.Queue]:
    events: queue.Queue = queue.Queue()
    jobs = [Job(request.model, ids, request.max_tokens, TextStream(tokenizer, request.stop), events, index, request.sampling)
            for index, ids in enumerate(request.prompts)]
    return jobs, events


def _usage(prompt_tokens: int, completion_tokens: int) -> dict[str, int]:
    return {"prompt_tokens": prompt_tokens, "completion_tokens": completion_tokens, "total_tokens": prompt_tokens + completion_tokens}


def _envelope(request: Request, choices: list[dict[str, Any]], chunk: bool) -> dict[str, Any]:
    kind = ("chat.completion.chunk" if chunk else "chat.completion") if request.kind == "chat" else "text_completion"
    return {"id": request.id, "object": kind, "created": request.created, "model": request.model, "choices": choices}


def wait_all(jobs: list[Job], events: queue.Queue, timeout_seconds: float) -> Iterator[tuple]:
    """Events of the request's jobs until each has ended or failed; ApiError(504) after the timeout."""
    open_jobs = len(jobs)
    while open_jobs:
        try:
            event = events.get(timeout=timeout_seconds)
        except queue.Empty:
            raise ApiError(504, f"no progress for {timeout_seconds:.0f} s; the server is overloaded, retry later",
                           None, "timeout", "server_error") from None
        if event[0] in ("end", "error"):
            open_jobs -= 1
        yield event


def response(request: Request, events: Iterator[tuple]) -> dict[str, Any]:
    """The non-streaming answer, built from the jobs' events."""
    texts: dict[int, list[str]] = {i: [] for i in range(len(request.prompts))}
    choices, prompt_tokens, completion_tokens = [], 0, 0
    for event in events:
        if event[0] == "delta":
            texts[event[1]].append(event[2])
        elif event[0] == "error":
            raise ApiError(500, event[2], None, "generation_failed", "server_error")
        else:
            _, index, reason, prompt_n, completion_n = event
            prompt_tokens, completion_tokens = prompt_tokens + prompt_n, completion_tokens + completion_n
            text = "".join(texts[index])
            body = {"message": {"role": "assistant", "content": text}} if request.kind == "chat" else {"text": text}
            choices.append({"index": index, **body, "logprobs": None, "finish_reason": reason})
    choices.sort(key=lambda choice: choice["index"])
    return {**_envelope(request, choices, False), "usage": _usage(prompt_tokens, completion_tokens)}


def stream_chunks(request: Request, events: Iterator[tuple]) -> Iterator[dict[str, Any]]:
    """The streaming answer: a role chunk (chat), text deltas, a finish chunk per choice, an optional usage chunk."""
    def choice(index: int, text: str | None, reason: str | None) -> dict[str, Any]:
        if request.kind == "chat":
            delta = {"role": "assistant", "content": ""} if text is None else ({"content": text} if reason is None else {})
            return {"index": index, "delta": delta, "logprobs": None, "finish_reason": reason}
        return {"index": index, "text": text or "", "logprobs": None, "finish_reason": reason}

    if request.kind == "chat":
        for index in range(len(request.prompts)):
            yield _envelope(request, [choice(index, None, None)], True)
    prompt_tokens = completion_tokens = 0
    for event in events:
        if event[0] == "delta":
            yield _envelope(request, [choice(event[1], event[2], None)], True)
        elif event[0] == "error":
            yield {"error": {"message": event[2], "type": "server_error", "param": None, "code": "generation_failed"}}
        else:
            _, index, reason, prompt_n, completion_n = event
            prompt_tokens, completion_tokens = prompt_tokens + prompt_n, completion_tokens + completion_n
            yield _envelope(request, [choice(index, "", reason)], True)
    if request.include_usage:
        yield {**_envelope(request, [], True), "usage": _usage(prompt_tokens, completion_tokens)}


def models_list(engine: Any, created: int) -> dict[str, Any]:
    data = []
    for name, served in engine.models.items():
        entry = {"id": name, "object": "model", "created": created, "owned_by": "peftlab", "root": engine.base_name,
                 "parent": None if name == engine.base_name else engine.base_name}
        if served.method:
            entry["peftlab"] = {"method": served.method}  # not the folder: clients need not learn server paths
        data.append(entry)
    return {"object": "list", "data": data}
