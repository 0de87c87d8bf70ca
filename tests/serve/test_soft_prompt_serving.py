"""Serving a soft-prompt adapter answers what its forward pass says, like eval does (through the continuous-batching scheduler)."""

from __future__ import annotations

import pytest

from tests.reference_decoding import reference_greedy
from peftlab.serve.scheduler import Scheduler
from tests.serve.conftest import train_adapter
from tests.serve.test_continuous import run_jobs

MAX_TOKENS = 8
PROMPTS = ["#Person1#: Hello, how are you today? #Person2#: I am fine.", "The quick brown fox"]


@pytest.mark.parametrize("method_name", ["prompt-tuning", "prefix-tuning"])
def test_a_served_soft_prompt_answers_like_uncached_forward_passes(tiny_llama, tmp_path, method_name):
    from peftlab.serve.launch import load_engine

    adapter = train_adapter(tiny_llama, tmp_path, f"method={method_name}", "train.lr=0.3")
    engine = load_engine(tiny_llama, [("soft", adapter)], "fp32", "tiny")
    tokenizer = engine.loaded.tokenizer
    scheduler = Scheduler(engine)
    try:  # the adapter's rows are prefilled with its soft prompt, then decode beside the base rows
        jobs = run_jobs(scheduler, engine, [(name, text, MAX_TOKENS) for name in ("soft", "tiny") for text in PROMPTS])
    finally:
        scheduler.close()

    def expected(model, ids):
        tokens = reference_greedy(model, ids, MAX_TOKENS, False)
        tokens = tokens[:tokens.index(tokenizer.eos_token_id)] if tokenizer.eos_token_id in tokens else tokens
        return tokenizer.decode(tokens, skip_special_tokens=True)

    soft, base = engine.families["adapter:soft"].model, engine.families["base"].model
    want = [expected(soft, job.prompt_ids) for job in jobs[:2]] + [expected(base, job.prompt_ids) for job in jobs[2:]]
    assert ["".join(job.output) for job in jobs] == want
    assert want[:2] != want[2:]  # the adapter answers differently from the base: the comparison means something
