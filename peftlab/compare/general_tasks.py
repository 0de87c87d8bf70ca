"""Forgetting as users know it: accuracy on general multiple-choice items (general_tasks.jsonl), the lm-evaluation-harness way.

Each choice is scored by its log-likelihood as the continuation of "Question: ...\nAnswer:"
(a space, then the choice), the most likely choice is the model's answer, and accuracy is the
share of items answered right (lm-evaluation-harness's `acc` for multiple choice). The same
items and scoring for every run, so the change against the base model is what the tuning cost.
"""

from __future__ import annotations

import json
from collections import defaultdict
from pathlib import Path
from typing import Any

GENERAL_TASKS = Path(__file__).with_name("general_tasks.jsonl")  # 258 items in five tasks, written for peftlab
CONTEXT = "Question: {question}\nAnswer:"


def load_items(path: Path = GENERAL_TASKS) -> list[dict[str, Any]]:
    return [json.loads(line) for line in path.read_text(encoding="utf-8").splitlines() if line.strip()]


def choice_loglikelihoods(model: Any, tokenizer: Any, is_seq2seq: bool, context: str, choices: list[str]) -> list[float]:
    """The summed log-probability of each choice after the context, all choices in one padded forward pass."""
    import torch

    device = model.device
    if is_seq2seq:
        source = torch.tensor([tokenizer(context)["input_ids"]] * len(choices), device=device)
        targets = [tokenizer(choice)["input_ids"] for choice in choices]
        width = max(map(len, targets))
        labels = torch.tensor([t + [-100] * (width - len(t)) for t in targets], device=device)
        with torch.inference_mode():
            logits = model(input_ids=source, attention_mask=torch.ones_like(source), labels=labels.clamp(min=0),
                           use_cache=False).logits.float()
        picked = logits.log_softmax(-1).gather(-1, labels.clamp(min=0)[..., None])[..., 0]
        return (picked * (labels != -100)).sum(-1).tolist()
    context_ids = tokenizer(context)["input_ids"]
    continuations = [tokenizer(" " + choice, add_special_tokens=False)["input_ids"] for choice in choices]
    rows = [context_ids + c for c in continuations]
    width = max(map(len, rows))
    pad = tokenizer.pad_token_id if tokenizer.pad_token_id is not None else 0
    ids = torch.tensor([r + [pad] * (width - len(r)) for r in rows], device=device)
    mask = torch.tensor([[1] * len(r) + [0] * (width - len(r)) for r in rows], device=device)
    with torch.inference_mode():
        logprobs = model(input_ids=ids, attention_mask=mask, use_cache=False).logits.float().log_softmax(-1)
    scores = []
    for row, continuation in enumerate(continuations):
        start = len(context_ids)  # the logits at position p predict token p + 1
        positions = torch.arange(start - 1, start - 1 + len(continuation), device=device)
        scores.append(float(logprobs[row, positions, torch.tensor(continuation, device=device)].sum()))
    return scores


def general_task_accuracy(model: Any, tokenizer: Any, is_seq2seq: bool, items: list[dict[str, Any]] | None = None) -> dict[str, Any]:
    """Accuracy over all items and per task."""
    model.eval()
    right: dict[str, list[bool]] = defaultdict(list)
    for entry in items or load_items():
        scores = choice_loglikelihoods(model, tokenizer, is_seq2seq, CONTEXT.format(question=entry["question"]), entry["choices"])
        right[entry["task"]].append(max(range(len(scores)), key=scores.__getitem__) == entry["answer"])
    every = [answer for answers in right.values() for answer in answers]
    return {"accuracy": sum(every) / len(every), "items": len(every),
            "per_task": {task: sum(answers) / len(answers) for task, answers in sorted(right.items())}}
