"""The general multiple-choice items and their log-likelihood scoring (forgetting as accuracy against the base)."""

from __future__ import annotations

import pytest

from peftlab.compare.general_tasks import CONTEXT, choice_loglikelihoods, general_task_accuracy, load_items


def test_the_shipped_items_are_well_formed():
    items = load_items()
    assert len(items) >= 200
    assert {item["task"] for item in items} == {"arithmetic", "capitals", "opposites", "sequences", "plurals"}
    for item in items:
        assert len(set(item["choices"])) == 4 and 0 <= item["answer"] < 4
    capital = next(i for i in items if i["question"] == "What is the capital of France?")
    assert capital["choices"][capital["answer"]] == "Paris"


def one_at_a_time(model, tokenizer, is_seq2seq, context, choice):
    """The same log-likelihood from one unpadded forward pass per choice: the reference for the batched one."""
    import torch

    if is_seq2seq:
        source = torch.tensor([tokenizer(context)["input_ids"]])
        target = torch.tensor([tokenizer(choice)["input_ids"]])
        logits = model(input_ids=source, labels=target, use_cache=False).logits.float().log_softmax(-1)
        return float(logits[0].gather(-1, target[0][:, None]).sum())
    context_ids = tokenizer(context)["input_ids"]
    continuation = tokenizer(" " + choice, add_special_tokens=False)["input_ids"]
    logits = model(input_ids=torch.tensor([context_ids + continuation]), use_cache=False).logits.float().log_softmax(-1)
    return float(sum(logits[0, len(context_ids) - 1 + i, token] for i, token in enumerate(continuation)))


def test_batched_choices_score_as_each_alone(tiny_model):
    import torch

    from peftlab.models import load_model

    loaded = load_model(tiny_model, "fp32")
    item = load_items()[0]
    context = CONTEXT.format(question=item["question"])
    got = choice_loglikelihoods(loaded.model, loaded.tokenizer, loaded.is_seq2seq, context, item["choices"])
    with torch.inference_mode():
        want = [one_at_a_time(loaded.model, loaded.tokenizer, loaded.is_seq2seq, context, c) for c in item["choices"]]
    assert got == pytest.approx(want, abs=1e-4)


def test_accuracy_is_the_share_of_items_whose_likeliest_choice_is_the_answer(tiny_llama, monkeypatch):
    from peftlab.compare import general_tasks
    from peftlab.models import load_model

    loaded = load_model(tiny_llama, "fp32")
    items = load_items()[:4]
    # a scorer that prefers the first choice: right exactly where the answer is choice 0
    monkeypatch.setattr(general_tasks, "choice_loglikelihoods", lambda *args: [0.0, -1.0, -2.0, -3.0])
    result = general_task_accuracy(loaded.model, loaded.tokenizer, False, items)
    assert result["accuracy"] == sum(item["answer"] == 0 for item in items) / 4 and result["items"] == 4
