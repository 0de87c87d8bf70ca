"""The scheduler: one thread owns the model and decides, at every decoding step, which rows run.

Continuous batching: a request joins as soon as there is room, its prompt is prefilled in
chunks between decoding steps (so running streams keep flowing), and each row leaves the step it
ends. Rows are grouped by family (base and all LoRA adapters share one forward; each other
adapter has its own), and every iteration gives each family with rows one step, so no family
waits for another's answers to finish. Which adapters are served is the AdapterPool's business (adapters.py); the
loop gives it the moments between steps to install and free them.

transformers' own continuous batching (`generate_batch`) packs all requests into one flat sequence
over a paged cache and, on a peft model, ignores per-row adapters (checked: rows asking for the
base got the LoRA's tokens); soft-prompt adapters need a cache they prefill. So the rows live in
the model's ordinary KV cache instead (peftlab/generation/continuous.py).
"""

from __future__ import annotations

import gc
import logging
import threading
import time
from collections import deque
from concurrent.futures import Future
from pathlib import Path
from typing import Any

from peftlab.generation.continuous import Prefill, RunningBatch, batches_continuously, empty_cache
from peftlab.generation.sampler import choose
from peftlab.serve.adapters import AdapterPool
from peftlab.serve.jobs import Busy, Job, fail
from peftlab.serve.static import run_static

log = logging.getLogger(__name__)


class Scheduler:
    """Continuous batching over the engine's families; `adapters` (an AdapterPool) decides which names are served."""

    def __init__(self, engine: Any, max_batch_size: int = 32, max_waiting: int = 256, prefill_chunk_tokens: int = 256,
                 adapter_dir: str | Path | None = None, max_adapters: int | None = None):
        self.engine = engine
        self.max_batch_size = max_batch_size  # rows prefilling or decoding at once
        self.max_waiting = max_waiting
        self.prefill_chunk_tokens = prefill_chunk_tokens
        self.waiting: deque[Job] = deque()
        self.prefills: list[Prefill] = []
        self.batches: dict[int, RunningBatch] = {}  # by id of the model they decode with (a batch keeps its model alive)
        self._wake = threading.Condition()
        self.adapters = AdapterPool(engine, self._wake, adapter_dir, max_adapters)
        self.steps = 0  # decoding steps run, and the most rows in one: for tests and the benchmark
        self.largest_batch = 0
        self.step_seconds = 0.05  # the last iteration's model time: sizes the loader's slices
        self._closing = False
        gc.freeze()  # the model's million objects leave the collector's scans: a full collection would pause every stream
        self._thread = threading.Thread(target=self._loop, name="peftlab-scheduler", daemon=True)
        self._thread.start()

    # --- called from request handlers -------------------------------------------------------------

    def submit(self, jobs: list[Job]) -> None:
        """Queue jobs; Busy when the queue is full, KeyError when a job's model is no longer served (evicted or unloaded)."""
        with self._wake:
            for job in jobs:
                if not self.adapters.serves(job.model):
                    raise KeyError(job.model)
            if len(self.waiting) + len(jobs) > self.max_waiting:
                raise Busy(f"{len(self.waiting)} requests are waiting for a place (limit {self.max_waiting})")
            for job in jobs:
                self.adapters.touch(job.model)
                self.waiting.append(job)
            self._wake.notify()

    def ready(self, model: str) -> Future | None:
        """None when `model` is served, else a future for its loading from --adapter-dir (KeyError when unknown)."""
        return self.adapters.ready(model)

    def close(self) -> None:
        with self._wake:
            self._closing = True
            self._wake.notify()
        self._thread.join(timeout=30)
        gc.unfreeze()  # what was frozen may be collected again once the engine goes

    # --- the loop ---------------------------------------------------------------------------------

    def _rows(self) -> int:
        return len(self.prefills) + sum(len(batch) for batch in self.batches.values())

    def _has_work(self) -> bool:
        return bool(self.waiting or self.prefills or self.batches or self.adapters.has_work())

    def _loop(self) -> None:
        loader = self.adapters.loader
        while True:
            with self._wake:
                while not self._has_work() and not self._closing:
                    loader.slices.open()  # nothing decodes: adapters load at full speed
                    self._wake.wait(timeout=0.05 if loader.busy else None)
                if self._closing and not self._has_work():
                    return
                loader.slices.close()
                admitted = self._admit()
            started = time.perf_counter()
            try:
                self.adapters.install_finished(self._in_use)
                self.adapters.unload_finished(self._running, self._drop_waiting)
                self._start_prefills(admitted)
                self._prefill()
                self._decode()
            except Exception:  # a bug: never let it stop the server; the rows involved were failed where it happened
                log.exception("scheduler iteration failed")
            self.step_seconds = time.perf_counter() - started
            if loader.busy:  # a slice for the adapter being built: a quarter step, so no stream waits a step longer
                loader.slices.give(min(0.25 * self.step_seconds, 0.05))

    def _admit(self) -> list[Job]:
        admitted = []
        while self.waiting and self._rows() + len(admitted) < self.max_batch_size:
            job = self.waiting.popleft()
            if job.cancelled:
                job.finish("cancelled")
            else:
                admitted.append(job)
        return admitted

    def _start_prefills(self, jobs: list[Job]) -> None:
        servable = []
        for job in jobs:
            if self.adapters.serves(job.model):
                servable.append(job)
            else:
                job.unloaded()
        jobs = servable
        # generation/continuous.py batches decoder-only caches of keys and values: encoder-decoders and caches with
        # recurrent state generate statically
        if self.engine.loaded.is_seq2seq or not batches_continuously(self.engine.loaded.model):
            run_static(self.engine, jobs)
            return
        for job in jobs:
            served = self.engine.models[job.model]
            family = self.engine.families[served.family]
            row_name = None if served.virtual_tokens else served.row_name
            try:
                self.prefills.append(Prefill(job, family.model, row_name, served.virtual_tokens, empty_cache(family.model)))
            except Exception as error:
                fail([job], error)

    def _prefill(self) -> None:
        """Prefill waiting prompts, oldest first, up to the chunk budget (all of them when nothing decodes)."""
        import torch

        budget = self.prefill_chunk_tokens if self.batches else None
        for prefill in list(self.prefills):
            if prefill.job.cancelled:
                prefill.job.finish("cancelled")
                self.prefills.remove(prefill)
                continue
            if budget is not None and budget <= 0:
                break
            tokens = prefill.remaining if budget is None else min(budget, prefill.remaining)
            try:
                with torch.inference_mode():
                    prefill.run_chunk(tokens)
            except Exception as error:
                fail([prefill.job], error)
                self.prefills.remove(prefill)
                continue
            budget = None if budget is None else budget - tokens
            if prefill.remaining == 0:
                self.prefills.remove(prefill)
                self._start_decoding(prefill)

    def _start_decoding(self, prefill: Prefill) -> None:
        token = choose(prefill.logits, [prefill.job])[0]
        if prefill.job.on_token(token, self.engine.eos_ids):
            return
        family_key, row_name = self.engine.decoding_family(self.engine.models[prefill.job.model])
        family = self.engine.families[family_key]
        batch = self.batches.setdefault(id(family.model), RunningBatch(family.model, family.mixed))
        batch.admit(prefill, token, row_name)

    def _decode(self) -> None:
        import torch

        for key, batch in list(self.batches.items()):
            for row in batch.rows:
                if row.job.cancelled:  # the client went away: its row leaves now
                    row.job.finish("cancelled")
            batch.keep([i for i, row in enumerate(batch.rows) if not row.job.done])
            if not batch.rows:
                del self.batches[key]
                continue
            try:
                with torch.inference_mode():
                    logits = batch.step()
            except Exception as error:
                fail([row.job for row in batch.rows], error)
                del self.batches[key]
                continue
            self.steps += 1
            self.largest_batch = max(self.largest_batch, len(batch))
            tokens = choose(logits, [row.job for row in batch.rows])
            keep = []
            for i, (row, token) in enumerate(zip(batch.rows, tokens)):
                if not row.job.on_token(token, self.engine.eos_ids):
                    row.token = token
                    keep.append(i)
            batch.keep(keep)
            if not batch.rows:
                del self.batches[key]

    # --- what the adapter pool asks ------------------------------------------------------------------

    def _running(self, name: str) -> bool:
        """Whether a row of model `name` is prefilling or decoding."""
        return any(p.job.model == name for p in self.prefills) or any(
            row.job.model == name for batch in self.batches.values() for row in batch.rows)

    def _in_use(self, name: str) -> bool:
        with self._wake:
            waiting = any(job.model == name for job in self.waiting)
        return waiting or self._running(name)

    def _drop_waiting(self, name: str) -> None:
        """The queued requests of an adapter just unloaded: 404, as if they had come a moment later."""
        with self._wake:
            for job in [job for job in self.waiting if job.model == name]:
                self.waiting.remove(job)
                job.unloaded()
