"""The scheduler: one thread owns the model and decides, at every decoding step, which rows run.

Continuous batching: a request joins as soon as there is room, its prompt is prefilled in
chunks between decoding steps (so running streams keep flowing), and each row leaves the step it
ends. Rows are grouped by family (base and all LoRA adapters share one forward; each other
adapter has its own), and every iteration gives each family with rows one step, so no family
waits for another's answers to finish. Adapters are loaded and unloaded here too, between steps.

transformers' own continuous batching (`generate_batch`) packs all requests into one flat sequence
over a paged cache and, on a peft model, ignores per-row adapters (checked: rows asking for the
base got the LoRA's tokens); soft-prompt adapters need a cache they prefill. So the rows live in
the model's ordinary KV cache instead (peftlab/generation/continuous.py).
"""

from __future__ import annotations

import gc
import logging
import re
import threading
import time
from collections import deque
from concurrent.futures import Future
from pathlib import Path
from typing import Any

from peftlab.errors import PeftlabError
from peftlab.serve.adapters import BackgroundLoader
from peftlab.generation.continuous import Prefill, RunningBatch, empty_cache
from peftlab.generation.sampler import choose
from peftlab.serve.jobs import Busy, Job, fail
from peftlab.serve.static import run_static

log = logging.getLogger(__name__)
ADAPTER_NAME = re.compile(r"[A-Za-z0-9][A-Za-z0-9._-]{0,199}")  # a folder name under --adapter-dir: no path separators


class Scheduler:
    """Continuous batching over the engine's families, with adapters loaded and unloaded while serving."""

    def __init__(self, engine: Any, max_batch_size: int = 32, max_waiting: int = 256, prefill_chunk_tokens: int = 256,
                 adapter_dir: str | Path | None = None, max_adapters: int | None = None):
        self.engine = engine
        self.max_batch_size = max_batch_size  # rows prefilling or decoding at once
        self.max_waiting = max_waiting
        self.prefill_chunk_tokens = prefill_chunk_tokens
        self.adapter_dir = Path(adapter_dir) if adapter_dir else None
        self.max_adapters = max_adapters
        self.waiting: deque[Job] = deque()
        self.prefills: list[Prefill] = []
        self.batches: dict[int, RunningBatch] = {}  # by id of the model they decode with (a batch keeps its model alive)
        self.loader = BackgroundLoader()
        self.loading: dict[str, Future] = {}
        self.unloading: dict[str, Future] = {}
        self.last_used: dict[str, float] = {}
        self.steps = 0  # decoding steps run, and the most rows in one: for tests and the benchmark
        self.largest_batch = 0
        self.step_seconds = 0.05  # the last iteration's model time: sizes the loader's slices
        self._wake = threading.Condition()
        self._closing = False
        gc.freeze()  # the model's million objects leave the collector's scans: a full collection would pause every stream
        self._thread = threading.Thread(target=self._loop, name="peftlab-scheduler", daemon=True)
        self._thread.start()

    # --- called from request handlers -------------------------------------------------------------

    def submit(self, jobs: list[Job]) -> None:
        """Queue jobs; Busy when the queue is full, KeyError when a job's model is no longer served (evicted or unloaded)."""
        with self._wake:
            for job in jobs:
                if job.model not in self.engine.models or job.model in self.unloading:
                    raise KeyError(job.model)
            if len(self.waiting) + len(jobs) > self.max_waiting:
                raise Busy(f"{len(self.waiting)} requests are waiting for a place (limit {self.max_waiting})")
            now = time.monotonic()
            for job in jobs:
                self.last_used[job.model] = now
                self.waiting.append(job)
            self._wake.notify()

    def ready(self, model: str) -> Future | None:
        """None when `model` is served; a future that completes once it is loaded from --adapter-dir; KeyError when unknown."""
        with self._wake:
            if model in self.unloading:
                raise KeyError(model)
            if model in self.engine.models:
                self.last_used[model] = time.monotonic()
                return None
            if model in self.loading:
                return self.loading[model]
        folder = self.adapter_dir / model if self.adapter_dir and ADAPTER_NAME.fullmatch(model) else None
        if folder is None or not folder.is_dir():
            raise KeyError(model)
        return self.load_adapter(model, str(folder))

    def load_adapter(self, name: str, path: str) -> Future:
        """Start loading an adapter; the future gives its ServedModel, or the PeftlabError/Busy that stopped it."""
        future: Future = Future()
        with self._wake:
            if name in self.engine.models or name in self.loading:
                future.set_exception(PeftlabError(f"an adapter named '{name}' is already taken (served or loading); unload it first"))
                return future
            self.loading[name] = future
            self.loader.start(name, lambda: self.engine.prepare_adapter(name, path))
            self._wake.notify()
        return future

    def unload_adapter(self, name: str) -> Future:
        """Stop serving adapter `name`: new requests for it are refused at once, its running rows finish, then its
        weights are freed. The future fails with KeyError for a name not served, PeftlabError for the base."""
        future: Future = Future()
        with self._wake:
            if name == self.engine.base_name:
                future.set_exception(PeftlabError(f"'{name}' is the base model; only adapters can be unloaded"))
            elif name not in self.engine.models or name in self.unloading:
                future.set_exception(KeyError(name))
            else:
                self.unloading[name] = future
                self._wake.notify()
        return future

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
        return bool(self.waiting or self.prefills or self.batches or self.unloading or self.loader.finished)

    def _loop(self) -> None:
        while True:
            with self._wake:
                while not self._has_work() and not self._closing:
                    self.loader.slices.open()  # nothing decodes: adapters load at full speed
                    self._wake.wait(timeout=0.05 if self.loader.busy else None)
                if self._closing and not self._has_work():
                    return
                self.loader.slices.close()
                admitted = self._admit()
            started = time.perf_counter()
            try:
                self._install_loaded()
                self._unload()
                self._start_prefills(admitted)
                self._prefill()
                self._decode()
            except Exception:  # a bug: never let it stop the server; the rows involved were failed where it happened
                log.exception("scheduler iteration failed")
            self.step_seconds = time.perf_counter() - started
            if self.loader.busy:  # a slice for the adapter being built: a quarter step, so no stream waits a step longer
                self.loader.slices.give(min(0.25 * self.step_seconds, 0.05))

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
            if job.model in self.engine.models and job.model not in self.unloading:
                servable.append(job)
            else:
                job.fail(f"model {job.model} was unloaded")
        jobs = servable
        if self.engine.loaded.is_seq2seq:  # generation/continuous.py batches decoder-only caches: encoder-decoders generate statically
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

    # --- adapters ---------------------------------------------------------------------------------

    def _running(self, name: str) -> bool:
        """Whether a row of model `name` is prefilling or decoding."""
        return any(p.job.model == name for p in self.prefills) or any(
            row.job.model == name for batch in self.batches.values() for row in batch.rows)

    def _in_use(self, name: str) -> bool:
        with self._wake:
            waiting = any(job.model == name for job in self.waiting)
        return waiting or self._running(name)

    def _install_loaded(self) -> None:
        for name, prepared, error in self.loader.take_finished():
            with self._wake:  # submit() checks names under the same lock: no job slips in for an adapter being evicted
                future = self.loading.pop(name)
                try:
                    if error is not None:
                        raise error
                    self._make_room()
                    future.set_result(self.engine.install(prepared))
                except (PeftlabError, Busy) as refused:
                    future.set_exception(refused)
                except Exception as failed:  # a misfit the method's loader did not name: still the request's answer
                    future.set_exception(PeftlabError(f"adapter {name} failed to load: {type(failed).__name__}: {failed}"))

    def _make_room(self) -> None:
        """With --max-adapters reached, unload the adapter used least recently that no request needs now."""
        if self.max_adapters is None:
            return
        adapters = [name for name in self.engine.models if name != self.engine.base_name and name not in self.unloading]
        if len(adapters) < self.max_adapters:
            return
        idle = [name for name in adapters if not self._in_use(name)]
        if not idle:
            raise Busy(f"all {self.max_adapters} adapter places (--max-adapters) are in use")
        victim = min(idle, key=lambda name: self.last_used.get(name, 0.0))
        self.engine.remove_adapter(victim)
        log.info("unloaded adapter %s (least recently used) to make room", victim)

    def _unload(self) -> None:
        for name, future in list(self.unloading.items()):
            if self._running(name):
                continue  # its rows finish first
            with self._wake:
                del self.unloading[name]
                for job in [job for job in self.waiting if job.model == name]:
                    self.waiting.remove(job)
                    job.fail(f"model {name} was unloaded")
                try:
                    if name in self.engine.models:  # not evicted meanwhile
                        self.engine.remove_adapter(name)
                    future.set_result(True)
                except Exception as error:  # answered, never left hanging
                    log.exception("unloading %s failed", name)
                    future.set_exception(PeftlabError(f"unloading {name} failed: {type(error).__name__}: {error}"))
