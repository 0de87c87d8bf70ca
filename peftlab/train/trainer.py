"""The transformers Trainer with five changes measured to matter on small hardware, and one for safety (the last).

- batches grouped by length over large windows (little padding, still shuffled),
- logits computed only where the loss needs them (causal LMs; the vocabulary projection and
  its fp32 logits are a fifth of the compute and most of the memory otherwise),
- evaluation batches kept out of the training token count,
- memory bounded by a token budget: a batch with more padded tokens than `max_batch_tokens` runs as
  micro-batches of whole rows inside one optimizer step, each normalised by the whole batch's answer
  tokens, so the gradient is the one batch's (activations, not the attention scores, are most of a
  step's memory: about 1.5 MB per token on the default model in fp32, measured),
- no attention mask for right-padded causal batches: a real token attends only to tokens before it,
  never to the padding after its row's end, so the mask changes nothing the loss sees, and without
  one sdpa runs its causal flash kernel (measured on CPU: less memory and time per step),
- checkpoints that are complete or absent: the Trainer writes checkpoint-N in place, file by
  file, so a kill or a full disk during a save leaves a folder that looks like the newest
  checkpoint and is not (transformers has no atomic save). Here each one is written under
  checkpoints/.saving, fsync'd, given a manifest of its files, and renamed into place.
"""

from __future__ import annotations

import contextlib
import os
import shutil
import time
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch.utils.data import Sampler
from transformers import Trainer
from transformers.trainer_utils import PREFIX_CHECKPOINT_DIR, rotate_checkpoints

from peftlab.train import checkpoints
from peftlab.data.tokenize import IGNORE


class LengthGroupedOrder(Sampler):
    """Shuffle, sort windows of `window` batches by length, cut into batches, shuffle the batches.

    transformers' own LengthGroupedSampler sorts windows of at most a quarter of the data and
    moves the longest example first, which leaves much padding on small sets. The short batch
    of each window goes last so that the DataLoader's fixed-size cuts fall on batch edges.
    """

    def __init__(self, lengths: Any, batch_size: int, seed: int, window: int = 64):
        # read the column once: a datasets Column answers each index with an Arrow query (datasets 5.2: on 1M rows,
        # minutes before the first step; the whole column as one slice takes 0.05 s)
        self.lengths = np.asarray(lengths if isinstance(lengths, (list, np.ndarray)) else lengths[:], dtype=np.int64)
        self.batch_size, self.seed, self.window = batch_size, seed, window
        self.epoch = 0

    def set_epoch(self, epoch: int) -> None:
        self.epoch = epoch

    def __len__(self) -> int:
        return len(self.lengths)

    def __iter__(self):
        yield from self.batches().tolist()

    def batches(self) -> np.ndarray:
        """The whole epoch's order in NumPy (sorting 1M rows window by window in Python took about a second of CPU
        before the first step); the same order as sorting each window with Python's stable sort, longest first."""
        generator = torch.Generator().manual_seed(self.seed + self.epoch)
        order = torch.randperm(len(self.lengths), generator=generator).numpy()
        window_of = np.arange(len(order)) // (self.window * self.batch_size)
        longest = int(self.lengths.max(initial=0))
        # one stable sort on (window, longest first) keeps equal lengths in their shuffled order, as sorted() does
        order = order[np.argsort(window_of * (longest + 1) + (longest - self.lengths[order]), kind="stable")]
        # windows hold whole batches, so only the epoch's last batch can be short
        whole = len(order) // self.batch_size * self.batch_size
        full, short = order[:whole].reshape(-1, self.batch_size), order[whole:]
        shuffled = full[torch.randperm(len(full), generator=generator).numpy()]
        return np.concatenate([shuffled.reshape(-1), short])


class PeftlabTrainer(Trainer):
    def __init__(self, *args: Any, eval_collator: Any = None, length_grouped: bool = True, answer_only_logits: bool = True,
                 max_batch_tokens: int = 0, **kwargs: Any):
        super().__init__(*args, **kwargs)
        self.max_batch_tokens = max_batch_tokens
        self.answer_only_logits = answer_only_logits  # the method allows it (not prompt learning, not AdaLoRA)
        self.eval_collator = eval_collator
        self.length_grouped = length_grouped
        self.eval_seconds = 0.0  # so throughput can be reported for training alone
        self._saving = False

    def _get_train_sampler(self, train_dataset: Any = None) -> Sampler | None:
        dataset = train_dataset if train_dataset is not None else self.train_dataset
        if not self.length_grouped:
            return super()._get_train_sampler(train_dataset)
        # group by the global batch: under N processes each takes its share of every group, so the
        # run sees the same batches as one process with N times the batch size
        global_batch = self.args.train_batch_size * self.args.world_size
        return LengthGroupedOrder(dataset["length"], global_batch, self.args.data_seed or self.args.seed)

    def _get_output_dir(self, trial: Any) -> str:
        run_dir = super()._get_output_dir(trial)
        return os.path.join(run_dir, checkpoints.SAVING) if self._saving else run_dir

    def _save_checkpoint(self, model: Any, trial: Any) -> None:
        """The Trainer's own save, into checkpoints/.saving; then published whole under its final name."""
        root = Path(super()._get_output_dir(trial))
        name = f"{PREFIX_CHECKPOINT_DIR}-{self.state.global_step}"
        staging = root / checkpoints.SAVING
        if self.args.should_save and staging.exists():
            shutil.rmtree(staging)  # what an interrupted save left
        self.accelerator.wait_for_everyone()
        self._saving = True
        try:
            super()._save_checkpoint(model, trial)
        finally:
            self._saving = False
        self.accelerator.wait_for_everyone()  # every process has written its RNG state
        if self.args.should_save:
            if self.state.best_model_checkpoint and Path(self.state.best_model_checkpoint).parent == staging:
                self.state.best_model_checkpoint = str(root / Path(self.state.best_model_checkpoint).name)
                self.state.save_to_json(str(staging / name / "trainer_state.json"))
            checkpoints.publish(staging / name, root / name)
            staging.rmdir()
            rotate_checkpoints(output_dir=str(root), save_total_limit=self.args.save_total_limit,
                               best_model_checkpoint=self.state.best_model_checkpoint, use_mtime=True)
        self.accelerator.wait_for_everyone()

    def evaluate(self, *args: Any, **kwargs: Any) -> dict[str, float]:
        train_collator, self.data_collator = self.data_collator, self.eval_collator or self.data_collator
        start = time.perf_counter()
        try:
            return super().evaluate(*args, **kwargs)
        finally:
            self.data_collator = train_collator
            self.eval_seconds += time.perf_counter() - start

    def training_step(self, model: Any, inputs: dict[str, Any], num_items_in_batch: Any = None) -> Any:
        pieces = micro_batches(inputs, self.max_batch_tokens) if self._sums_answer_tokens(model, inputs) else [inputs]
        if len(pieces) == 1:
            return super().training_step(model, inputs, num_items_in_batch)
        if num_items_in_batch is None:
            num_items_in_batch = (inputs["labels"][:, 1:] != IGNORE).sum()
        total = 0.0
        for number, piece in enumerate(pieces):  # gradients add up; under DDP only the last piece synchronises them
            last = number == len(pieces) - 1
            with contextlib.nullcontext() if last else self.accelerator.no_sync(model):
                total = total + super().training_step(model, piece, num_items_in_batch)
        return total

    def _sums_answer_tokens(self, model: Any, inputs: dict[str, Any]) -> bool:
        """Our own loss applies: summed over answer tokens and divided by the batch's count (not a per-piece mean)."""
        return self.answer_only_logits and "position_ids" not in inputs and _answer_logits_apply(model, inputs)

    def compute_loss(self, model: Any, inputs: dict[str, Any], return_outputs: bool = False,
                     num_items_in_batch: Any = None) -> Any:
        if return_outputs or not self.answer_only_logits or not _answer_logits_apply(model, inputs):
            return super().compute_loss(model, inputs, return_outputs, num_items_in_batch)
        inputs = dict(inputs)
        labels = inputs.pop("labels")
        if _right_padded(inputs.get("attention_mask")):
            del inputs["attention_mask"]  # causal attention never looks right, where the padding is: see the module's doc
        targets = labels[:, 1:]
        # the first position whose next token is a label; logits before it are never used
        start = int((targets != IGNORE).any(dim=0).nonzero()[0])
        keep = torch.arange(start, labels.shape[1] - 1, device=labels.device)
        logits = model(**inputs, logits_to_keep=keep, use_cache=False).logits
        loss = torch.nn.functional.cross_entropy(
            logits.float().reshape(-1, logits.shape[-1]), targets[:, start:].reshape(-1),
            ignore_index=IGNORE, reduction="sum",
        )
        if num_items_in_batch is None:
            return loss / (targets != IGNORE).sum().clamp(min=1)
        loss = loss / num_items_in_batch  # the label count of all processes and accumulation steps
        if self.args.average_tokens_across_devices:
            loss = loss * self.accelerator.num_processes  # as Trainer does: DDP then averages gradients
        return loss


def _right_padded(mask: Any) -> bool:
    """Every row's ones come first, then zeros only (or no padding at all)."""
    return mask is not None and not bool((mask[:, 1:] > mask[:, :-1]).any())


def micro_batches(inputs: dict[str, Any], budget: int) -> list[dict[str, Any]]:
    """Cut a right-padded batch into runs of whole rows whose padded size (rows x longest row) stays within
    `budget` tokens, each trimmed to its own longest row; a row longer than the budget goes alone."""
    mask = inputs.get("attention_mask")
    if budget <= 0 or mask is None or mask.numel() <= budget or not _right_padded(mask):
        return [inputs]
    lengths = mask.sum(dim=1).tolist()
    order = sorted(range(len(lengths)), key=lambda i: -lengths[i])  # longest first: pieces of similar rows
    pieces, current = [], []
    for row in order:
        if current and (len(current) + 1) * lengths[current[0]] > budget:
            pieces.append(current)
            current = []
        current.append(row)
    pieces.append(current)
    cut = []
    for rows in pieces:
        index = torch.tensor(sorted(rows))
        width = max(lengths[i] for i in rows)
        cut.append({k: (v[index, :width] if torch.is_tensor(v) and v.dim() == 2 and v.shape == mask.shape else v)
                    for k, v in inputs.items()})
    return cut


def _answer_logits_apply(model: Any, inputs: dict[str, Any]) -> bool:
    """Only for causal LMs whose forward takes logits_to_keep (the method's own say is asked first)."""
    base = model.module if hasattr(model, "module") else model
    if getattr(base.config, "is_encoder_decoder", False) or "labels" not in inputs:
        return False
    inner = base.get_base_model() if hasattr(base, "get_base_model") else base
    import inspect

    return "logits_to_keep" in inspect.signature(inner.forward).parameters
