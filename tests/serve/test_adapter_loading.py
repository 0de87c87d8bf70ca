"""Adapters loaded and unloaded while serving: on request, from --adapter-dir on first use, least recently used evicted,
and loading never holds running streams up by more than a decoding step."""

from __future__ import annotations

import queue
import shutil
import statistics
import time
from dataclasses import dataclass, field

import pytest

from peftlab.errors import PeftlabError
from peftlab.serve.jobs import Job, TextStream
from tests.serve.test_continuous import PROMPTS, alone, run_jobs


@pytest.fixture
def scheduler_on(tiny_llama):
    from peftlab.serve.launch import load_engine
    from peftlab.serve.scheduler import Scheduler

    made = []

    def make(**options):
        engine = load_engine(tiny_llama, [], "fp32", "tiny")
        made.append(Scheduler(engine, **options))
        return made[-1]

    yield make
    for scheduler in made:
        scheduler.close()


def test_load_use_unload_while_serving(tiny_llama, lora_a, ia3_c, scheduler_on, tmp_path):
    scheduler = scheduler_on()
    engine = scheduler.engine
    assert scheduler.adapters.load("a", lora_a).result(60).method == "lora"
    assert scheduler.adapters.load("c", ia3_c).result(60).method == "ia3"
    with pytest.raises(PeftlabError, match="already taken"):
        scheduler.adapters.load("a", lora_a).result(60)
    broken = tmp_path / "broken"
    broken.mkdir()
    (broken / "adapter_config.json").write_text("{not json")
    with pytest.raises(PeftlabError, match="not readable JSON"):
        scheduler.adapters.load("broken", str(broken)).result(60)
    assert "broken" not in engine.models
    jobs = run_jobs(scheduler, engine, [("a", PROMPTS[0], 8), ("c", PROMPTS[1], 8), ("tiny", PROMPTS[2], 8)])
    for job, adapter in zip(jobs, [lora_a, ia3_c, None]):
        assert "".join(job.output) == alone(tiny_llama, adapter, job.prompt_ids, 8)
    assert scheduler.adapters.unload("a").result(60) is True
    assert "a" not in engine.models and "lora" not in engine.families  # the last LoRA: its shared model is freed
    with pytest.raises(KeyError):
        scheduler.adapters.unload("a").result(60)
    with pytest.raises(PeftlabError, match="base model"):
        scheduler.adapters.unload("tiny").result(60)
    jobs = run_jobs(scheduler, engine, [("c", PROMPTS[1], 8), ("tiny", PROMPTS[2], 8)])
    assert "".join(jobs[0].output) == alone(tiny_llama, ia3_c, jobs[0].prompt_ids, 8)


def test_a_second_lora_joins_the_shared_model_and_leaves_it_cleanly(tiny_llama, lora_a, lora_b, scheduler_on):
    scheduler = scheduler_on()
    engine = scheduler.engine
    scheduler.adapters.load("a", lora_a).result(60)
    scheduler.adapters.load("b", lora_b).result(60)  # moved into the model that holds "a"
    requests = [("a", PROMPTS[0], 8), ("b", PROMPTS[0], 8), ("tiny", PROMPTS[0], 8)]
    jobs = run_jobs(scheduler, engine, requests)
    assert [("".join(job.output)) for job in jobs] == [alone(tiny_llama, adapter, jobs[0].prompt_ids, 8)
                                                        for adapter in (lora_a, lora_b, None)]
    scheduler.adapters.unload("a").result(60)
    jobs = run_jobs(scheduler, engine, requests[1:])
    assert "".join(jobs[0].output) == alone(tiny_llama, lora_b, jobs[0].prompt_ids, 8)


def test_adapter_dir_loads_on_first_use_and_evicts_the_least_recently_used(tiny_llama, lora_a, lora_b, ia3_c, tmp_path,
                                                                            scheduler_on):
    for name, folder in (("alfa", lora_a), ("beta", lora_b), ("gamma", ia3_c)):
        shutil.copytree(folder, tmp_path / name)
    scheduler = scheduler_on(adapter_dir=tmp_path, max_adapters=2)
    engine = scheduler.engine
    assert scheduler.ready("tiny") is None
    for unknown in ("nope", "../alfa", "alfa/..", ".hidden", ""):
        with pytest.raises(KeyError):
            scheduler.ready(unknown)
    scheduler.ready("alfa").result(60)
    scheduler.ready("beta").result(60)
    run_jobs(scheduler, engine, [("alfa", PROMPTS[0], 4)])  # alfa is now the more recently used
    scheduler.ready("gamma").result(60)
    assert [name for name in engine.models if name != "tiny"] == ["alfa", "gamma"]  # beta went
    jobs = run_jobs(scheduler, engine, [("gamma", PROMPTS[1], 8), ("alfa", PROMPTS[1], 8)])
    assert "".join(jobs[0].output) == alone(tiny_llama, ia3_c, jobs[0].prompt_ids, 8)
    assert "".join(jobs[1].output) == alone(tiny_llama, lora_a, jobs[1].prompt_ids, 8)


@pytest.mark.e2e
def test_loading_an_adapter_while_16_streams_run_delays_none_by_more_than_a_step(tmp_path):
    """The default model, 16 streams decoding; a LoRA adapter on every linear layer loads meanwhile (about 0.7 s of
    peft's Python when built in one go). Each stream's longest gap between tokens while it loads stays within its usual
    gap plus one step."""
    from peftlab.serve.launch import load_engine
    from peftlab.serve.scheduler import Scheduler

    engine = load_engine(None, [], "fp32")
    folders = [save_random_lora(engine.loaded, tmp_path / name, seed) for seed, name in enumerate(("first", "second"))]
    scheduler = Scheduler(engine, max_batch_size=16)
    try:
        scheduler.adapters.load("first", folders[0]).result(120)
        engine.eos_ids = set()  # the streams run until cancelled
        jobs = [StampedJob("first" if i % 2 else engine.base_name, engine.prompt_ids(PROMPTS[i % len(PROMPTS)]), 400,
                           TextStream(engine.loaded.tokenizer, []), queue.Queue()) for i in range(16)]
        stamps = [job.stamps for job in jobs]
        scheduler.submit(jobs)
        wait_until(lambda: min(len(s) for s in stamps) >= 8)
        load_start = time.perf_counter()
        scheduler.adapters.load("second", folders[1]).result(300)
        load_end = time.perf_counter()
        count_at_load_end = [len(s) for s in stamps]
        wait_until(lambda: all(len(s) >= n + 4 for s, n in zip(stamps, count_at_load_end)))
        for job in jobs:
            job.cancelled = True
    finally:
        scheduler.close()
    for times in stamps:
        before = [b - a for a, b in zip(times, times[1:]) if b < load_start]
        during = [b - a for a, b in zip(times, times[1:]) if b >= load_start and a <= load_end]
        step = statistics.median(before[2:])  # the usual gap: one decoding step (every stream gets a token per step)
        assert during, "the load finished between two tokens: nothing was measured"
        assert max(during) <= 2 * step + 0.05, (max(during), step, load_end - load_start)


@dataclass
class StampedJob(Job):
    """A job that notes when each of its tokens arrives."""

    stamps: list[float] = field(default_factory=list)

    def on_token(self, token_id: int, eos_ids: set[int]) -> bool:
        self.stamps.append(time.perf_counter())
        return super().on_token(token_id, eos_ids)


def wait_until(condition, seconds: float = 300) -> None:
    deadline = time.monotonic() + seconds
    while not condition():
        assert time.monotonic() < deadline, "timed out"
        time.sleep(0.005)


def save_random_lora(loaded, folder, seed: int) -> str:
    """A LoRA on every linear layer with random A and B (peft's init_lora_weights=False), saved as peft saves it."""
    import torch
    from peft import LoraConfig, get_peft_model

    from peftlab.serve.adapters import shared_weights_copy

    torch.manual_seed(seed)
    model = get_peft_model(shared_weights_copy(loaded.model),
                           LoraConfig(r=8, lora_alpha=16, target_modules="all-linear", init_lora_weights=False))
    model.save_pretrained(folder)
    return str(folder)
