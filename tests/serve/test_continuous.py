"""Continuous batching: rows join and leave at every step, every method's rows answer exactly as that adapter alone does."""

from __future__ import annotations

import queue
import time

import pytest

from peftlab.serve.jobs import Job, TextStream
from tests.serve.conftest import train_adapter, wait_for

PROMPTS = ["#Person1#: Hello, how are you today? #Person2#: I am fine.", "The quick brown fox",
           "Summarize the following conversation. Summary:", "#Person1#: Can I book a table for two at seven?"]


@pytest.fixture(scope="module")
def other_methods(tiny_llama, tmp_path_factory):
    # freeze reloads trained weights of the base's own layers: served, it must not change the base's answers
    return {name: train_adapter(tiny_llama, tmp_path_factory.mktemp(name), f"method={name}", "train.lr=0.3")
            for name in ("prompt-tuning", "prefix-tuning", "dora", "loha", "freeze")}


@pytest.fixture(scope="module")
def adapters(lora_a, lora_b, ia3_c, other_methods):
    return {"a": lora_a, "b": lora_b, "c": ia3_c, **other_methods}


def alone(model_path: str, adapter: str | None, prompt: list[int], max_tokens: int) -> str:
    """The answer of base (+ adapter) to one prompt through transformers' generate (the checked static path), nothing else loaded."""
    import torch

    from peftlab.generation import GenerationSettings, generate_new_tokens, generation_config, load_for_generation

    loaded = load_for_generation(model_path, "fp32", adapter)
    config = generation_config(loaded.model, loaded.tokenizer, GenerationSettings(max_new_tokens=max_tokens))
    ids = torch.tensor([prompt])
    with torch.inference_mode():
        tokens = generate_new_tokens(loaded.model, ids, torch.ones_like(ids), config, False)[0].tolist()
    eos = loaded.tokenizer.eos_token_id
    tokens = tokens[:tokens.index(eos)] if eos in tokens else tokens
    return loaded.tokenizer.decode(tokens, skip_special_tokens=True)


def run_jobs(scheduler, engine, requests: list[tuple[str, str, int]], gap_seconds: float = 0.0) -> list[Job]:
    jobs = [Job(model, engine.prompt_ids(text), max_tokens, TextStream(engine.loaded.tokenizer, []), queue.Queue())
            for model, text, max_tokens in requests]
    for job in jobs:
        scheduler.submit([job])
        time.sleep(gap_seconds)  # later jobs join a batch that is already decoding
    for job in jobs:
        assert job.events.get(timeout=120)[0] in ("delta", "end")
    deadline = time.monotonic() + 120
    while not all(job.done for job in jobs) and time.monotonic() < deadline:
        time.sleep(0.01)
    assert all(job.done for job in jobs)
    return jobs


def test_every_method_answers_as_it_does_alone_while_rows_join_and_leave(tiny_llama, adapters):
    from peftlab.serve.launch import load_engine
    from peftlab.serve.scheduler import Scheduler

    engine = load_engine(tiny_llama, list(adapters.items()), "fp32", "tiny")
    scheduler = Scheduler(engine, max_batch_size=8, prefill_chunk_tokens=5)  # small chunks: prefills interleave with steps
    try:
        names = ["tiny", *adapters]
        requests = [(name, PROMPTS[i % len(PROMPTS)], 3 + (5 * i) % 14) for i, name in enumerate(names * 2)]
        jobs = run_jobs(scheduler, engine, requests, gap_seconds=0.003)
    finally:
        scheduler.close()
    assert scheduler.largest_batch > 1 and scheduler.steps > 0
    for job, (name, text, max_tokens) in zip(jobs, requests):
        want = alone(tiny_llama, adapters.get(name), engine.prompt_ids(text), max_tokens)
        assert "".join(job.output) == want, (name, text)
    assert len({"".join(job.output) for job in jobs[:len(names)]}) > 3  # the methods answer differently: the check means something


def test_a_seq2seq_model_is_served_in_static_batches(tiny_t5, tmp_path):
    from peftlab.generation import GenerationSettings, generate, load_for_generation
    from peftlab.serve.launch import load_engine
    from peftlab.serve.scheduler import Scheduler

    lora = train_adapter(tiny_t5, tmp_path, "train.lr=0.05")
    engine = load_engine(tiny_t5, [("a", lora)], "fp32", "t5")
    scheduler = Scheduler(engine)
    try:
        jobs = run_jobs(scheduler, engine, [(name, text, 6) for name in ("t5", "a") for text in PROMPTS[:2]])
    finally:
        scheduler.close()
    for job in jobs:
        loaded = load_for_generation(tiny_t5, "fp32", lora if job.model == "a" else None)
        want = generate(loaded.model, loaded.tokenizer, [job.prompt_ids], True, GenerationSettings(max_new_tokens=6))[0]
        assert "".join(job.output).strip() == want


def test_a_cancelled_row_leaves_at_the_next_step(tiny_llama, lora_a, slow_tokens):
    from peftlab.serve.launch import load_engine
    from peftlab.serve.scheduler import Scheduler

    engine = load_engine(tiny_llama, [("a", lora_a)], "fp32", "tiny")
    engine.eos_ids = set()  # never ends by itself: only the cancel can stop it early
    scheduler = Scheduler(engine)
    try:
        job = Job("a", engine.prompt_ids(PROMPTS[0]), 400, TextStream(engine.loaded.tokenizer, []), queue.Queue())
        scheduler.submit([job])
        wait_for(lambda: job.completion_tokens >= 3)
        job.cancelled = True
        wait_for(lambda: job.done and not scheduler.batches and not scheduler.prefills, seconds=10)
        assert slow_tokens == [(job, "cancelled")] and job.completion_tokens < 10  # one step, not the 400 asked for
    finally:
        scheduler.close()
