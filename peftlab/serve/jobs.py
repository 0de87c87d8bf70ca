"""One generation request in flight: its tokens arrive step by step, become text deltas and a finish event."""

from __future__ import annotations

import logging
from dataclasses import dataclass, field
from typing import Any

from peftlab.serve.text import TextStream

GREEDY = (0.0, 1.0)  # (temperature, top_p)
__all__ = ["GREEDY", "Busy", "Job", "TextStream", "fail"]
log = logging.getLogger(__name__)


@dataclass
class Job:
    """One prompt of one request; events go to the request's queue as (kind, index, ...) tuples."""

    model: str
    prompt_ids: list[int]
    max_tokens: int
    text: TextStream
    events: Any  # anything with put(event): a queue.Queue, or a bridge into an asyncio loop
    index: int = 0
    sampling: tuple[float, float] = GREEDY
    generator: Any = None  # a torch.Generator seeded from the request's `seed`: its draws depend on nothing else
    cancelled: bool = False  # the client went away: stop spending compute on it
    done: bool = False
    completion_tokens: int = 0
    output: list[str] = field(default_factory=list)

    def on_token(self, token_id: int, eos_ids: set[int]) -> bool:
        """Take the next generated token; True once the job needs no more."""
        if self.done:
            return True
        if self.cancelled:
            self.finish("cancelled")
        elif token_id in eos_ids:
            self.finish("stop")
        else:
            self.completion_tokens += 1
            self._send(self.text.add(token_id))
            if self.text.stopped:
                self.finish("stop")
            elif self.completion_tokens >= self.max_tokens:
                self.finish("length")
        return self.done

    def _send(self, delta: str) -> None:
        if delta:
            self.output.append(delta)
            self.events.put(("delta", self.index, delta))

    def finish(self, reason: str) -> None:
        if self.done:
            return
        self._send(self.text.flush())
        self.done = True
        self.events.put(("end", self.index, reason, len(self.prompt_ids), self.completion_tokens))

    def fail(self, message: str, status: int = 500, code: str = "generation_failed") -> None:
        """End the job with an error: a 500 for a failure of ours, a 4xx (`status`, OpenAI `code`) for a refusal."""
        if not self.done:
            self.done = True
            self.events.put(("error", self.index, message, status, code))

    def unloaded(self) -> None:
        self.fail(f"the model '{self.model}' was unloaded while this request waited; load it again", 404, "model_not_found")


class Busy(Exception):
    """More jobs are waiting than the server accepts, or every adapter slot is in use."""


def fail(jobs: list[Job], error: Exception) -> None:
    log.exception("generation failed")
    for job in jobs:
        job.fail(f"generation failed: {type(error).__name__}: {str(error)[:200]}")
