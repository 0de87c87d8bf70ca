"""Static batching, the reference continuous batching is measured against (and how seq2seq models are served):
requests that arrive together form a batch, which generates to its end through transformers' `generate`."""

from __future__ import annotations

import queue
import threading
import time
from collections import defaultdict
from typing import Any

from peftlab.generation import GenerationSettings, generate_new_tokens, generation_config, pad_batch
from peftlab.serve.jobs import Busy, Job, fail


def run_static(engine: Any, jobs: list[Job]) -> None:
    """Generate for every job to its end: one generate call per (family, sampling settings) group."""
    groups: dict[tuple, list[Job]] = defaultdict(list)
    for job in jobs:
        if job.cancelled:
            job.finish("cancelled")
            continue
        groups[(engine.models[job.model].family, job.sampling)].append(job)
    for (family, sampling), group in groups.items():
        try:
            _generate(engine, engine.families[family], group, sampling)
        except Exception as error:  # a failed batch answers its own requests with 500s; the server goes on
            fail(group, error)


def _generate(engine: Any, family: Any, jobs: list[Job], sampling: tuple[float, float]) -> None:
    import torch
    from transformers import StoppingCriteriaList

    tokenizer, is_seq2seq = engine.loaded.tokenizer, engine.loaded.is_seq2seq
    settings = GenerationSettings(max_new_tokens=max(job.max_tokens for job in jobs), num_beams=1, batch_size=len(jobs))
    config = generation_config(family.model, tokenizer, settings)
    temperature, top_p = sampling
    if temperature > 0:
        config.update(do_sample=True, temperature=temperature, top_p=top_p)
    ids, mask = pad_batch([job.prompt_ids for job in jobs], tokenizer.pad_token_id, left=not is_seq2seq)
    extra = {"adapter_names": [engine.models[job.model].row_name for job in jobs]} if family.mixed else {}
    hook = StepHook(jobs, engine.eos_ids)
    device = family.model.device
    with torch.inference_mode():  # the checked path: prompt-learning adapters need its cache handling
        generate_new_tokens(family.model, ids.to(device), mask.to(device), config, is_seq2seq,
                            stopping_criteria=StoppingCriteriaList([hook]), **extra)
    for job in jobs:
        job.finish("length")  # rows the step hook did not end ran into max_new_tokens


class StepHook:
    """A transformers stopping criterion used as a per-step callback: it sees every row's newest token.

    It hands each token to its job and ends rows individually (their own max_tokens, eos, stop
    string, a departed client); generate stops when every row has ended.
    """

    def __init__(self, jobs: list[Job], eos_ids: set[int]):
        self.jobs = jobs
        self.eos_ids = eos_ids

    def __call__(self, input_ids: Any, scores: Any, **kwargs: Any) -> Any:
        import torch

        newest = input_ids[:, -1].tolist()
        done = [job.on_token(token, self.eos_ids) for job, token in zip(self.jobs, newest)]
        return torch.tensor(done, dtype=torch.bool, device=input_ids.device)


class StaticScheduler:
    """Static batching, the reference for the benchmark: requests that arrive within `window_seconds` form a batch,
    which generates to its end before the next starts. max_batch_size=1 serves one request at a time."""

    def __init__(self, engine: Any, max_batch_size: int = 32, window_seconds: float = 0.01, max_waiting: int = 1024):
        self.engine = engine
        self.max_batch_size = max_batch_size
        self.window_seconds = window_seconds
        self.max_waiting = max_waiting
        self.waiting: queue.Queue[Job | None] = queue.Queue()
        self.batches = 0
        self.largest_batch = 0
        self._thread = threading.Thread(target=self._loop, name="peftlab-static-scheduler", daemon=True)
        self._thread.start()

    def submit(self, jobs: list[Job]) -> None:
        if self.waiting.qsize() + len(jobs) > self.max_waiting:
            raise Busy(f"{self.waiting.qsize()} requests are waiting (limit {self.max_waiting})")
        for job in jobs:
            self.waiting.put(job)

    def ready(self, model: str) -> None:
        if model not in self.engine.models:
            raise KeyError(model)

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
            self.largest_batch = max(self.largest_batch, len(batch))
            try:
                run_static(self.engine, batch)
            except Exception as error:  # never let one bad batch stop the server
                fail(batch, error)
            if closing:
                return
