"""The scheduler: one thread owns the model, collects the requests that arrive together and runs them as one batch."""

from __future__ import annotations

import logging
import queue
import threading
import time
from typing import Any

from peftlab.serve.jobs import Job

log = logging.getLogger(__name__)


class Busy(Exception):
    """More jobs are waiting than the server accepts."""


class Scheduler:
    """Requests wait at most `window_seconds` after the first of a batch arrives; a batch holds up to `max_batch_size` jobs.

    While a batch generates, new requests queue up and form the next one, so under load the
    batches fill by themselves. max_batch_size=1 serves one request at a time (the benchmark's
    reference).
    """

    def __init__(self, engine: Any, max_batch_size: int = 32, window_seconds: float = 0.01, max_waiting: int = 1024):
        self.engine = engine
        self.max_batch_size = max_batch_size
        self.window_seconds = window_seconds
        self.max_waiting = max_waiting
        self.waiting: queue.Queue[Job | None] = queue.Queue()
        self.batches = 0  # generate rounds run, and the jobs in them: for tests and the benchmark
        self.batched_jobs = 0
        self.largest_batch = 0
        self._thread = threading.Thread(target=self._loop, name="peftlab-scheduler", daemon=True)
        self._thread.start()

    def submit(self, jobs: list[Job]) -> None:
        if self.waiting.qsize() + len(jobs) > self.max_waiting:
            raise Busy(f"{self.waiting.qsize()} requests are waiting (limit {self.max_waiting})")
        for job in jobs:
            self.waiting.put(job)

    def close(self) -> None:
        self.waiting.put(None)
        self._thread.join(timeout=30)

    def _collect(self, first: Job) -> tuple[list[Job], bool]:
        batch, deadline = [first], time.monotonic() + self.window_seconds
        while len(batch) < self.max_batch_size:
            try:
                job = self.waiting.get(timeout=max(0.0, deadline - time.monotonic()))
            except queue.Empty:
                break
            if job is None:
                return batch, True
            batch.append(job)
        return batch, False

    def _loop(self) -> None:
        while True:
            first = self.waiting.get()
            if first is None:
                return
            batch, closing = self._collect(first)
            self.batches += 1
            self.batched_jobs += len(batch)
            self.largest_batch = max(self.largest_batch, len(batch))
            try:
                self.engine.run(batch)
            except Exception as error:  # never let one bad batch stop the server
                log.exception("batch failed")
                for job in batch:
                    job.fail(f"generation failed: {type(error).__name__}")
            if closing:
                return
