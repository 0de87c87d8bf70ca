"""Method tests: every method of peftlab's catalog on tiny Llama and T5, and a method added from outside."""

import queue


def catalog_methods() -> list[str]:
    """The methods peftlab's catalog registers, in order (a test may register its own, as test_new_method.py does)."""
    from peftlab.methods import get_method, method_names

    return [name for name in method_names() if get_method(name).build.__module__.startswith("peftlab.methods.")]


def answer(engine, model: str, ids: list[int]) -> str:
    """Six greedy tokens for one prompt through `peftlab serve`'s scheduler."""
    from peftlab.serve.jobs import Job, TextStream
    from peftlab.serve.scheduler import Scheduler

    scheduler = Scheduler(engine)
    try:
        job = Job(model, ids, 6, TextStream(engine.loaded.tokenizer, []), queue.Queue())
        scheduler.submit([job])
        while job.events.get(timeout=60)[0] == "delta":
            pass
    finally:
        scheduler.close()
    assert job.done
    return "".join(job.output)


def alone(model: str, adapter: str | None, ids: list[int]) -> str:
    """A fresh base (+ adapter), greedy, one prompt, no server."""
    import torch

    from peftlab.generation import load_for_generation

    loaded = load_for_generation(model, "fp32", adapter)
    out = loaded.model.generate(input_ids=torch.tensor([ids]), max_new_tokens=6, do_sample=False, pad_token_id=loaded.tokenizer.pad_token_id)
    answer_ids = out[0] if loaded.is_seq2seq else out[0, len(ids):]  # a seq2seq output holds no prompt, only its start token
    return loaded.tokenizer.decode(answer_ids, skip_special_tokens=True)
