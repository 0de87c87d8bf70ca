"""Bounded memory: a batch over train.max_batch_tokens runs as micro-batches inside one optimizer step and trains
exactly as the whole batch would; the mask-free attention for right-padded rows changes nothing the loss sees."""

from __future__ import annotations

import pytest
import torch

from peftlab.data.tokenize import IGNORE
from peftlab.train.trainer import micro_batches
from tests.conftest import TOY_ROWS, write_jsonl
from tests.tiny_models import train_tiny


def padded_batch(lengths: list[int], width: int) -> dict[str, torch.Tensor]:
    ids = torch.zeros(len(lengths), width, dtype=torch.long)
    mask = torch.zeros_like(ids)
    for row, length in enumerate(lengths):
        ids[row, :length] = torch.arange(1, length + 1) + 100 * row
        mask[row, :length] = 1
    labels = torch.where(mask.bool(), ids, torch.full_like(ids, IGNORE))
    return {"input_ids": ids, "attention_mask": mask, "labels": labels}


def test_a_batch_is_cut_into_whole_rows_within_the_budget():
    batch = padded_batch([10, 8, 3, 2, 9], width=10)
    pieces = micro_batches(batch, budget=20)
    assert [tuple(p["input_ids"].shape) for p in pieces] == [(2, 10), (2, 8), (1, 2)]  # 10+9 (a third: 3 x 10 > 20), 8+3, 2
    rows = sorted(tuple(r[r != 0].tolist()) for p in pieces for r in p["input_ids"])
    assert rows == sorted(tuple(r[r != 0].tolist()) for r in batch["input_ids"])  # every row once, none cut short
    for piece in pieces:
        assert piece["input_ids"].numel() <= 20 and (piece["labels"] != IGNORE).sum() == piece["attention_mask"].sum()
    assert micro_batches(batch, budget=0) == [batch] and micro_batches(batch, budget=50) == [batch]
    assert [p["input_ids"].shape[0] for p in micro_batches(batch, budget=5)] == [1, 1, 1, 1, 1]  # longer than the budget: alone


def gradients(model_path: str, batch: dict, budget: int, folder) -> dict[str, torch.Tensor]:
    """The LoRA gradients of one training step on `batch` through PeftlabTrainer.training_step."""
    from peft import LoraConfig, get_peft_model
    from transformers import AutoModelForCausalLM, TrainingArguments

    from peftlab.train.trainer import PeftlabTrainer

    torch.manual_seed(0)
    model = get_peft_model(AutoModelForCausalLM.from_pretrained(model_path, dtype=torch.float32),
                           LoraConfig(r=4, lora_alpha=8, lora_dropout=0.0, target_modules=["q_proj", "v_proj"], init_lora_weights=False))
    trainer = PeftlabTrainer(model=model, args=TrainingArguments(output_dir=str(folder), use_cpu=True, report_to="none"),
                             max_batch_tokens=budget)
    trainer.current_gradient_accumulation_steps = 1
    loss = trainer.training_step(trainer.model, batch, None)
    return {"loss": loss.detach(), **{n: p.grad.clone() for n, p in model.named_parameters() if p.requires_grad}}


def test_micro_batches_give_the_whole_batchs_gradient(tiny_llama, tmp_path):
    batch = padded_batch([12, 11, 6, 3], width=12)
    whole = gradients(tiny_llama, batch, 0, tmp_path)
    cut = gradients(tiny_llama, batch, 24, tmp_path)  # two pieces: 12 + 11, then 6 + 3
    assert len(micro_batches(batch, 24)) > 1 and whole.keys() == cut.keys()
    for name in whole:
        torch.testing.assert_close(cut[name], whole[name], rtol=1e-4, atol=1e-7)
    assert all(bool(g.abs().sum() > 0) for n, g in whole.items() if n != "loss")  # every LoRA matrix got a gradient


def test_a_run_with_micro_batches_trains_as_one_without(tiny_llama, tmp_path):
    data = write_jsonl(tmp_path / "toy.jsonl", TOY_ROWS * 2)
    whole = train_tiny(tiny_llama, data, tmp_path / "whole", "train.batch_size=4", "train.max_batch_tokens=0", "lora.dropout=0")
    cut = train_tiny(tiny_llama, data, tmp_path / "cut", "train.batch_size=4", "train.max_batch_tokens=24", "lora.dropout=0")
    assert abs(cut["train_loss"] - whole["train_loss"]) < 1e-3 * whole["train_loss"]


def test_right_padded_rows_lose_nothing_without_the_attention_mask(tiny_llama):
    from peftlab.generation import load_for_generation

    model = load_for_generation(tiny_llama, "fp32", None).model
    batch = padded_batch([12, 7, 4], width=12)
    with torch.no_grad():
        masked = model(input_ids=batch["input_ids"], attention_mask=batch["attention_mask"]).logits
        unmasked = model(input_ids=batch["input_ids"]).logits
    real = batch["attention_mask"].bool()
    torch.testing.assert_close(unmasked[real], masked[real], rtol=1e-5, atol=1e-5)


def test_the_length_grouped_order_reads_an_arrow_column_once_and_orders_as_from_a_list(monkeypatch):
    """The Trainer hands the sampler a datasets Column; indexing it row by row made a million-row run wait minutes
    for its first step. The order is the same as from a plain list."""
    import datasets

    from peftlab.train.trainer import LengthGroupedOrder

    lengths = [(i * 37) % 101 + 1 for i in range(1000)]
    column = datasets.Dataset.from_dict({"length": lengths})["length"]
    monkeypatch.setattr(type(column), "__getitem__", _whole_slices_only(type(column).__getitem__))
    assert list(LengthGroupedOrder(column, batch_size=8, seed=3)) == list(LengthGroupedOrder(lengths, batch_size=8, seed=3))


def _whole_slices_only(getitem):
    def checked(self, key):
        assert isinstance(key, slice), "the sampler indexed the column row by row"
        return getitem(self, key)
    return checked


def _python_length_grouped_order(lengths, batch_size, seed, window=64):
    """The order as the sampler made it row by row in Python before it moved to NumPy (kept here as the reference)."""
    generator = torch.Generator().manual_seed(seed)
    order = torch.randperm(len(lengths), generator=generator).tolist()
    size = window * batch_size
    full, short = [], []
    for start in range(0, len(order), size):
        ordered = sorted(order[start:start + size], key=lambda i: lengths[i], reverse=True)
        for cut in range(0, len(ordered), batch_size):
            batch = ordered[cut:cut + batch_size]
            (full if len(batch) == batch_size else short).append(batch)
    return [i for batch in [full[i] for i in torch.randperm(len(full), generator=generator).tolist()] + short for i in batch]


@pytest.mark.parametrize("rows, batch_size, window", [(5000, 8, 64), (1003, 4, 3), (7, 8, 64), (600, 1, 5), (0, 8, 64)])
def test_the_length_grouped_order_is_the_one_python_sorting_gave(rows, batch_size, window):
    """The NumPy order equals the Python one, so training sees the same batches: many equal lengths (ties keep their
    shuffled order), a short last batch, fewer rows than a batch, an empty set, and a second epoch."""
    from peftlab.train.trainer import LengthGroupedOrder

    lengths = [(i * 7919) % 13 + 1 for i in range(rows)]
    sampler = LengthGroupedOrder(lengths, batch_size=batch_size, seed=11, window=window)
    assert list(sampler) == _python_length_grouped_order(lengths, batch_size, 11, window)
    sampler.set_epoch(1)
    assert list(sampler) == _python_length_grouped_order(lengths, batch_size, 12, window)
    assert all(type(i) is int for i in sampler)  # plain ints, as the DataLoader's fetch expects
