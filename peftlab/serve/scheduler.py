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

    # --- TEMPORARY SHIM (branch http-layer), replaced by the continuous-batching scheduler -------------
    # The HTTP layer's adapter contract, done synchronously on the caller's thread and answered with
    # a completed Future. Unlike the real scheduler it does not wait for a decoding step boundary:
    # loading or unloading while a batch runs on the same model is unsafe. Delete this block at the merge.
    def load_adapter(self, name: str, path: str) -> "concurrent.futures.Future":
        import concurrent.futures

        future: concurrent.futures.Future = concurrent.futures.Future()
        try:
            future.set_result(self.engine.add_adapter(name, path))  # PeftlabError: a bad folder, a taken name
        except Exception as error:
            future.set_exception(error)
        return future

    def unload_adapter(self, name: str) -> "concurrent.futures.Future":
        import concurrent.futures

        from peftlab.errors import PeftlabError
        from peftlab.serve.engine import BASE_ROW, PLAIN, ServedModel

        engine, future = self.engine, concurrent.futures.Future()
        if name == engine.base_name:
            future.set_exception(PeftlabError(f"'{name}' is the base model; only adapters can be unloaded"))
            return future
        if name not in engine.models:
            future.set_exception(KeyError(name))
            return future
        served = engine.models.pop(name)
        others = [m for m in engine.models.values() if m.family == served.family and m.row_name != BASE_ROW]
        if served.row_name and others:
            engine.families[served.family].model.delete_adapter(name)
        else:
            del engine.families[served.family]
            if served.row_name:  # the last LoRA adapter: base rows go back to the plain model
                engine.models[engine.base_name] = ServedModel(engine.base_name, PLAIN)
        future.set_result(served)
        return future

    def ready(self, model: str) -> "concurrent.futures.Future | None":
        if model in self.engine.models:
            return None
        raise KeyError(model)  # this shim loads nothing on demand
