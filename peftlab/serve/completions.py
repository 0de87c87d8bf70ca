"""One generation request, start to end: checked against the server's limits, tokenized, run as scheduler jobs, answered."""

from __future__ import annotations

import asyncio
import time
import uuid
from dataclasses import dataclass
from typing import Any, AsyncIterator

from peftlab.errors import PeftlabError
from peftlab.generation.sampler import GREEDY_BELOW  # the sampler's own bound: a request below it is greedy
from peftlab.serve.jobs import GREEDY, Job, TextStream
from peftlab.serve.limits import Limits
from peftlab.serve.openai_api import (ApiError, AssistantMessage, ChatBody, ChatChoice, ChatChunk, ChatCompletion, ChunkChoice,
                                      Completion, CompletionBody, Delta, TextChoice, Usage)


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
    seed: int | None = None
    id: str = ""
    created: int = 0


def _too_many(what: str, count: int, limit: int, flag: str, param: str) -> ApiError:
    return ApiError(400, f"'{param}' holds {count} {what}; this server takes at most {limit} per request ({flag})", param, "invalid_value")


def _max_tokens(body: ChatBody | CompletionBody, limit: int) -> int:
    name = "max_completion_tokens" if body.max_completion_tokens is not None else "max_tokens"
    asked = getattr(body, name)
    if asked is None:
        return min(limit, 256)
    if not 1 <= asked <= limit:
        raise ApiError(400, f"'{name}' must be between 1 and {limit} (this server's --max-tokens), got {asked}", name, "invalid_value")
    return asked


def _stop(body: ChatBody | CompletionBody, limits: Limits) -> list[str]:
    stop = body.stop or []
    if len(stop) > limits.max_stop_strings:
        raise _too_many("stop strings", len(stop), limits.max_stop_strings, "--max-stop-strings", "stop")
    for i, text in enumerate(stop):
        if len(text) > limits.max_stop_chars:
            raise ApiError(400, f"'stop[{i}]' is {len(text)} characters long; this server takes stop strings of at most "
                           f"{limits.max_stop_chars} characters (--max-stop-chars)", f"stop[{i}]", "invalid_value")
    return stop


def _prompt_ids(body: ChatBody | CompletionBody, engine: Any, limits: Limits) -> list[list[int]]:
    if isinstance(body, ChatBody):
        if len(body.messages) > limits.max_messages:
            raise _too_many("messages", len(body.messages), limits.max_messages, "--max-messages", "messages")
        plain = [{"role": "system" if m.role == "developer" else m.role, "content": m.content} for m in body.messages]
        try:
            return [engine.prompt_ids("", plain)]
        except PeftlabError as refused:  # the chat template's own refusal: the conversation is the client's to fix
            raise ApiError(400, str(refused), "messages", "invalid_value") from None
    if len(body.prompt) > limits.max_prompts:
        raise _too_many("prompts", len(body.prompt), limits.max_prompts, "--max-prompts", "prompt")
    return [engine.prompt_ids(text) for text in body.prompt]


def check_request(body: ChatBody | CompletionBody, engine: Any, limits: Limits) -> Request:
    """The server's limits on a parsed body, its prompts tokenized and checked against the model's context."""
    kind = "chat" if isinstance(body, ChatBody) else "completion"
    max_tokens, stop = _max_tokens(body, limits.max_tokens), _stop(body, limits)
    prompts = _prompt_ids(body, engine, limits)
    param = "messages" if kind == "chat" else "prompt"
    served = engine.models.get(body.model)  # None when unloaded meanwhile: submit() answers 404
    virtual = served.virtual_token_count if served else 0
    for ids in prompts:
        if not ids:
            raise ApiError(400, "the prompt is empty after tokenization", param, "invalid_value")
        if virtual + len(ids) + max_tokens > engine.context_tokens:
            soft = f"{virtual} for the adapter's soft prompt, " if virtual else ""
            raise ApiError(400, f"This model's maximum context length is {engine.context_tokens} tokens. However, you requested "
                           f"{virtual + len(ids) + max_tokens} tokens ({soft}{len(ids)} in the prompt, {max_tokens} for the "
                           "completion). Please reduce the length of the prompt or of max_tokens.", param, "context_length_exceeded")
    sampling = GREEDY if body.temperature < GREEDY_BELOW else (body.temperature, body.top_p)
    if body.seed is not None and sampling != GREEDY and engine.loaded.is_seq2seq:
        # encoder-decoders are served by static batches through transformers' generate, which draws from one RNG
        raise ApiError(400, "'seed' is honoured on decoder-only models only; this one is an encoder-decoder: leave it out",
                       "seed", "unsupported_parameter")
    include_usage = bool(body.stream_options and body.stream_options.include_usage)
    prefix = "chatcmpl" if kind == "chat" else "cmpl"
    return Request(kind, body.model, prompts, max_tokens, sampling, stop, body.stream, include_usage, body.seed,
                   f"{prefix}-{uuid.uuid4().hex}", int(time.time()))


class LoopEvents:
    """A job's `events`: the scheduler thread puts, a request's handler awaits on the event loop (no thread per request)."""

    def __init__(self, loop: asyncio.AbstractEventLoop):
        self.loop = loop
        self.queue: asyncio.Queue[tuple] = asyncio.Queue()

    def put(self, event: tuple) -> None:
        try:
            self.loop.call_soon_threadsafe(self.queue.put_nowait, event)
        except RuntimeError:  # the server has stopped and its loop is closed: no one is waiting
            pass


def make_jobs(request: Request, tokenizer: Any, events: LoopEvents, device: Any = "cpu") -> list[Job]:
    """One job per prompt. With a `seed`, each job samples from its own torch.Generator seeded with seed + its index:
    its draws depend on nothing else in the batch, so the same request gives the same answer (on the same server)."""
    jobs = [Job(request.model, ids, request.max_tokens, TextStream(tokenizer, request.stop), events, index, request.sampling)  # type: ignore[arg-type]
            for index, ids in enumerate(request.prompts)]
    if request.seed is not None and request.sampling != GREEDY:
        import torch

        for job in jobs:
            job.generator = torch.Generator(device=device).manual_seed((request.seed + job.index) % (1 << 64))
    return jobs


def error_of(event: tuple) -> ApiError:
    """A job's ("error", index, message, status, code) event as the error answered to the client."""
    _, _, message, status, code = event
    return ApiError(status, message, "model" if status == 404 else None, code, "server_error" if status >= 500 else "invalid_request_error")


async def job_events(jobs: list[Job], events: LoopEvents, timeout_seconds: float) -> AsyncIterator[tuple]:
    """The jobs' events until each has ended or failed; ApiError(504) after `timeout_seconds` without one."""
    open_jobs = len(jobs)
    while open_jobs:
        try:
            event = await asyncio.wait_for(events.queue.get(), timeout_seconds)
        except asyncio.TimeoutError:
            raise ApiError(504, f"no progress for {timeout_seconds:.0f} s; the server is overloaded, retry later",
                           None, "timeout", "server_error") from None
        if event[0] in ("end", "error"):
            open_jobs -= 1
        yield event


def _usage(prompt_tokens: int, completion_tokens: int) -> Usage:
    return Usage(prompt_tokens=prompt_tokens, completion_tokens=completion_tokens, total_tokens=prompt_tokens + completion_tokens)


def _header(request: Request) -> dict[str, Any]:
    return {"id": request.id, "created": request.created, "model": request.model}


async def answer(request: Request, events: AsyncIterator[tuple]) -> ChatCompletion | Completion:
    """The non-streaming answer, built from the jobs' events."""
    texts: dict[int, list[str]] = {i: [] for i in range(len(request.prompts))}
    ends: dict[int, str] = {}
    prompt_tokens = completion_tokens = 0
    async for event in events:
        if event[0] == "delta":
            texts[event[1]].append(event[2])
        elif event[0] == "error":
            raise error_of(event)
        else:
            _, index, reason, prompt_n, completion_n = event
            prompt_tokens, completion_tokens = prompt_tokens + prompt_n, completion_tokens + completion_n
            ends[index] = reason
    usage = _usage(prompt_tokens, completion_tokens)
    if request.kind == "chat":
        choices = [ChatChoice(index=i, message=AssistantMessage(content="".join(texts[i])), finish_reason=ends[i]) for i in sorted(ends)]
        return ChatCompletion(**_header(request), choices=choices, usage=usage)
    return Completion(**_header(request), choices=[TextChoice(index=i, text="".join(texts[i]), finish_reason=ends[i]) for i in sorted(ends)],
                      usage=usage)


async def stream(request: Request, events: AsyncIterator[tuple]) -> AsyncIterator[ChatChunk | Completion | dict[str, Any]]:
    """The streaming answer: a role chunk per choice (chat), text deltas, a finish chunk per choice, an optional usage chunk."""
    def chunk(index: int, text: str | None, reason: str | None) -> ChatChunk | Completion:
        if request.kind == "completion":
            return Completion(**_header(request), choices=[TextChoice(index=index, text=text or "", finish_reason=reason)])
        delta = Delta(role="assistant", content="") if text is None else Delta(content=text) if reason is None else Delta()
        return ChatChunk(**_header(request), choices=[ChunkChoice(index=index, delta=delta, finish_reason=reason)])

    if request.kind == "chat":
        for index in range(len(request.prompts)):
            yield chunk(index, None, None)
    prompt_tokens = completion_tokens = 0
    async for event in events:
        if event[0] == "delta":
            yield chunk(event[1], event[2], None)
        elif event[0] == "error":
            yield error_of(event).body()
        else:
            _, index, reason, prompt_n, completion_n = event
            prompt_tokens, completion_tokens = prompt_tokens + prompt_n, completion_tokens + completion_n
            yield chunk(index, "", reason)
    if request.include_usage:
        usage = _usage(prompt_tokens, completion_tokens)
        yield (ChatChunk if request.kind == "chat" else Completion)(**_header(request), choices=[], usage=usage)
