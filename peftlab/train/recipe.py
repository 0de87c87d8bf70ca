"""`peftlab train`, top to bottom: check output, load model and data, wrap with the method, train, save."""

from __future__ import annotations

import dataclasses
import math
import time
from pathlib import Path
from typing import Any, Callable

from peftlab import artifacts, atomic
from peftlab import config as cfg
from peftlab.config import RunConfig
from peftlab.data.collator import CountingCollator
from peftlab.data.prepare import prepared_set
from peftlab.data.formats import describe
from peftlab.data.tokenize import TokenizedSet, check_trainable, tokenize, uses_chat_template
from peftlab.errors import PeftlabError
from peftlab.methods import BuildContext, get_method
from peftlab.models import device as devices
from peftlab.models import load_model
from peftlab.models.parameters import count_parameters
from peftlab.train import checkpoints, trackers
from peftlab.train.callbacks import LossLog, ProgressBar, StepClock
from peftlab.train.finite import NonFiniteTraining, StopOnNonFinite, discard_run


def load_tokenized(spec: str, config: RunConfig, tokenizer: Any, is_seq2seq: bool, chat: bool,
                   say: Callable[[str], None] = lambda text: None) -> TokenizedSet:
    tokenized = prepared_set(spec, config.data, tokenizer, is_seq2seq, chat, say)
    check_trainable(tokenized, spec, config.data.max_length)
    return tokenized


def training_arguments(config: RunConfig, out: Path, has_eval: bool, lr: float, dtype: str = "fp32") -> Any:
    """The Trainer's arguments; where it runs and its mixed precision come from the device owner (--device, the loaded dtype).

    On a bf16 (or fp16) base on a GPU the Trainer runs under autocast: peft 0.21.2's get_peft_model keeps LoRA's
    trainable weights in fp32 (autocast_adapter_dtype=True upcasts bf16/fp16 adapter weights) and its LoRA forward
    casts the input to that fp32 weight's dtype (BaseTunerLayer._cast_input_dtype); under autocast the matmuls run in
    bf16/fp16 anyway, while the optimizer updates the fp32 master weights. fp16 adds the Trainer's loss scaling.
    """
    from transformers import TrainingArguments

    t = config.train
    early_stop = t.patience is not None
    return TrainingArguments(
        output_dir=str(out / artifacts.CHECKPOINTS),
        per_device_train_batch_size=t.batch_size,
        per_device_eval_batch_size=t.batch_size,
        gradient_accumulation_steps=t.grad_accum,
        learning_rate=lr,
        num_train_epochs=t.epochs,
        max_steps=t.max_steps,
        lr_scheduler_type=t.scheduler,
        # transformers 5 (checked in 5.24: TrainingArguments.get_warmup_steps) reads a warmup_steps below 1 as a share of
        # the training steps, and dropped warmup_ratio; config keeps train.warmup_ratio in [0, 1)
        warmup_steps=t.warmup_ratio,
        weight_decay=t.weight_decay,
        max_grad_norm=t.max_grad_norm,
        logging_steps=1,
        logging_nan_inf_filter=False,  # the Trainer's default logs a NaN step as the mean of the others: StopOnNonFinite sees it
        eval_strategy="steps" if has_eval else "no",
        eval_steps=t.eval_steps,
        save_strategy="steps",
        save_steps=t.save_steps,
        save_total_limit=t.save_total_limit,
        load_best_model_at_end=early_stop,
        metric_for_best_model="eval_loss" if early_stop else None,
        greater_is_better=False if early_stop else None,
        seed=t.seed,
        data_seed=t.seed,
        remove_unused_columns=False,
        report_to=[name for name in cfg.trackers(t) if name != "tensorboard"] or "none",  # tensorboard: a callback, below
        disable_tqdm=True,
        dataloader_pin_memory=False,
        # use_cpu also joins several CPU processes over gloo; bf16/fp16: autocast (and fp16's loss scaling) on a GPU
        **devices.training_arguments(devices.resolve_device(config.model.device), dtype),
    )


def check_schedule(config: RunConfig, has_eval: bool) -> None:
    t = config.train
    if t.patience is not None:
        if not has_eval:
            raise PeftlabError("train.patience (early stopping) needs eval data; pass --eval-data FILE")
        if t.save_steps % t.eval_steps:
            raise PeftlabError(f"early stopping needs train.save_steps ({t.save_steps}) to be a multiple of train.eval_steps ({t.eval_steps})")


def run(config: RunConfig, resume: bool = False, overwrite: bool = False, callbacks: tuple = (),
        say: Callable[[str], None] = lambda text: None, config_file: str | None = None) -> dict[str, Any]:
    """Nothing is written until the model, data and method are loaded: bad input leaves the folder as it was.
    `config_file`: the --config file the run was read from (an input, never written over)."""
    if not config.data.train:
        raise PeftlabError("no training data; pass --data FILE (JSONL, CSV, Parquet or hub:NAME)")
    method = get_method(config.method)
    settings = method.parse_settings(config.methods.get(config.method))
    check_schedule(config, bool(config.data.eval))
    trackers.check_installed(cfg.trackers(config.train))
    processes, folder = _check_output(config, resume, overwrite, config_file)
    if not processes.is_main_process:
        say = lambda text: None  # noqa: E731 - one voice on the terminal

    from transformers import set_seed

    set_seed(config.train.seed)
    loaded = load_model(config.model.name, config.model.dtype, config.model.attn_implementation, method.quantization, config.model.device)
    loaded.tokenizer.padding_side = "right"
    if config.train.batching == "packed" and loaded.is_seq2seq:
        raise PeftlabError("train.batching=packed works for causal LMs only; use length for seq2seq models")
    data_start = time.perf_counter()
    train_set, eval_set = _load_data(config, loaded, say)
    data_seconds = time.perf_counter() - data_start  # preparing the rows, or mapping them from the cache

    context = BuildContext(loaded.is_seq2seq, total_steps(config, len(train_set.features), processes.num_processes),
                           training_batches=first_batches(train_set, loaded, config.train.batch_size), tokenizer=loaded.tokenizer, say=say)
    model = method.build(loaded.model, settings, context)
    if config.train.batching == "packed" and method.prompt_learning:
        raise PeftlabError(f"{method.name} prepends virtual tokens to each row, which packed batches cannot hold; use train.batching=length")
    trainable, total = count_parameters(model)
    say(f"model: {loaded.spec} ({loaded.dtype}{', ' + loaded.quantization if loaded.quantization else ''} on {loaded.device}); "
        f"method: {method.name}")
    say(f"trainable parameters: {trainable:,} of {total:,} ({100 * trainable / total:.4f}%)")
    lr = config.train.lr if config.train.lr is not None else method.lr

    existed = folder.work.exists()
    checkpoint = _initialize(processes, folder, config, say)
    out = folder.work
    trainer, clock = _trainer(config, out, model, loaded, train_set, eval_set, lr,
                              [StopOnNonFinite(), *method.callbacks(model), *trackers.callbacks(cfg.trackers(config.train), out),
                               *callbacks],
                              method.answer_only_logits, method.optimizer(model, lr, config.train.weight_decay) if method.optimizer else None)
    try:
        start = time.perf_counter()
        result = trainer.train(resume_from_checkpoint=checkpoint)
        seconds = time.perf_counter() - start - trainer.eval_seconds
        real_tokens, computed_tokens, first_step_tokens = _sum_over_processes(trainer, *clock.tokens(), clock.first_step_tokens())
        summary = {
            "model": loaded.spec, "model_path": loaded.path, "method": method.name, "dtype": loaded.dtype,
            "quantization": loaded.quantization, "trainable_parameters": trainable, "total_parameters": total,
            "trainable_percent": 100 * trainable / total, "learning_rate": lr, "steps": trainer.state.global_step,
            "train_seconds": seconds, "processes": processes.num_processes, "real_tokens": real_tokens,
            "real_tokens_per_second": real_tokens / seconds, "real_token_share": real_tokens / max(computed_tokens, 1),
            **clock.warm_up_split(seconds, real_tokens, first_step_tokens),
            "peak_memory_bytes": devices.peak_memory_bytes(trainer.args.device), "train_loss": _last(trainer.state.log_history, "loss"),
            "train_loss_mean": result.training_loss, "eval_loss": _final_eval_loss(trainer) if eval_set else None,
            "data_rows": train_set.rows, "data_seconds": data_seconds, "first_step_started_at": clock.first_step_started_at,
            "rows_truncated": train_set.truncated, "rows_dropped_no_labels": train_set.no_labels,
            "trackers": trackers.locations(cfg.trackers(config.train), folder.final),
        }
        if processes.is_main_process:
            info = {k: summary[k] for k in ("model", "model_path", "method", "trainable_parameters", "total_parameters")}
            # the adapter records the format its rows had, so generate and eval build a bare prompt the same way
            trained = dataclasses.replace(config, data=dataclasses.replace(config.data, format=train_set.format))
            artifacts.save_result(out, lambda result_folder: method.save(model, result_folder), loaded.tokenizer, trained, info)
            artifacts.write_summary(out, summary)
            artifacts.finish_run(folder)
    except Exception as error:
        for callback in trainer.callback_handler.callbacks:
            if isinstance(callback, ProgressBar):
                callback.close()  # end the bar's line, so the error is a line of its own
        if isinstance(error, NonFiniteTraining):
            if processes.is_main_process:
                discard_run(folder, existed)
            raise
        reason = atomic.write_failure(error, out)
        if reason is None:
            raise
        raise PeftlabError(f"cannot write the run in {out}: {reason}; "
                           + ("the earlier run in " + str(folder.final) + " is untouched; " if folder.replaces else "")
                           + f"free space or fix the folder, then {folder.resume_hint()}") from None
    processes.wait_for_everyone()
    say(report(summary, folder.final))  # under `accelerate launch` only the main process speaks for all
    return summary


def report(summary: dict[str, Any], out: Path) -> str:
    """What a finished run tells a person: speed, padding, memory, losses, where the result is."""
    losses = f"final train loss {summary['train_loss']:.4f}"
    if summary["eval_loss"] is not None:
        losses += f", eval loss {summary['eval_loss']:.4f}"
    steady = ""
    if summary.get("steady_tokens_per_second"):
        steady = f" ({summary['steady_tokens_per_second']:.0f} after the first step, which took {summary['first_step_seconds']:.1f} s)"
    return (f"done in {summary['train_seconds']:.1f} s: {summary['real_tokens_per_second']:.0f} real tokens/s{steady}, "
            f"{100 * summary['real_token_share']:.1f}% of batch tokens real, peak memory {summary['peak_memory_bytes'] / 2**30:.2f} GiB\n"
            f"{losses}; adapter: {out / artifacts.ADAPTER_DIR}")


def _check_output(config: RunConfig, resume: bool, overwrite: bool, config_file: str | None) -> tuple[Any, artifacts.RunFolder]:
    """Check the output folder in every process (reads only).

    Under `accelerate launch` every process runs this recipe; without a GPU the processes join
    over gloo on the CPU.
    """
    from accelerate import PartialState

    device = devices.resolve_device(config.model.device)  # a device this machine lacks: one line, before anything is written
    devices.check_training_device(device)
    processes = PartialState(cpu=device.type == "cpu")
    folder = artifacts.check_run_output(config, resume, overwrite, config_file)
    processes.wait_for_everyone()
    return processes, folder


def _initialize(processes: Any, folder: artifacts.RunFolder, config: RunConfig, say: Callable[[str], None]) -> str | None:
    """Write the run's config (main process), then find the checkpoint to resume from, if any."""
    if processes.is_main_process:
        artifacts.initialize_run(folder, config)
        if folder.replaces:
            say(f"building the new run in {folder.work}; it replaces {folder.final} when it has finished")
    processes.wait_for_everyone()
    if not folder.continue_work:
        return None
    found = checkpoints.resume_point(folder.work / artifacts.CHECKPOINTS, clean=processes.is_main_process)
    processes.wait_for_everyone()
    for skipped in found.skipped:
        say(f"skipped incomplete {skipped}; removed it")
    say(f"resuming from {found.checkpoint}" if found.checkpoint else "nothing to resume: no complete checkpoint yet, starting fresh")
    return str(found.checkpoint) if found.checkpoint else None


def _load_data(config: RunConfig, loaded: Any, say: Callable[[str], None]) -> tuple[TokenizedSet, TokenizedSet | None]:
    chat = uses_chat_template(loaded.tokenizer, config.data.chat_template, loaded.is_seq2seq)
    train_set = load_tokenized(config.data.train, config, loaded.tokenizer, loaded.is_seq2seq, chat, say)
    say(f"data: {config.data.train} ({describe(train_set.format)}): {train_set.summary()}" + (" (chat template)" if chat else ""))
    if not config.data.eval:
        return train_set, None
    eval_set = load_tokenized(config.data.eval, config, loaded.tokenizer, loaded.is_seq2seq, chat, say)
    say(f"eval data: {config.data.eval}: {eval_set.summary()}")
    return train_set, eval_set


def first_batches(train_set: TokenizedSet, loaded: Any, batch_size: int) -> Callable[[int], Any]:
    """The first rows of the training data, padded into batches as training pads them (for methods initialised from data)."""
    def batches(rows: int) -> Any:
        collator = CountingCollator(loaded.tokenizer, loaded.is_seq2seq)
        # row by row: the prepared set is an Arrow dataset (a slice of it is a dict of columns, not a list of rows)
        features = [{key: train_set.features[i][key] for key in ("input_ids", "labels")}
                    for i in range(min(rows, len(train_set.features)))]
        for start in range(0, len(features), batch_size):
            yield collator(features[start:start + batch_size])
    return batches


def _trainer(config: RunConfig, out: Path, model: Any, loaded: Any, train_set: TokenizedSet,
             eval_set: TokenizedSet | None, lr: float, callbacks: list, answer_only_logits: bool,
             optimizer: Any = None) -> tuple[Any, StepClock]:
    from transformers import EarlyStoppingCallback, PrinterCallback

    from peftlab.train.trainer import PeftlabTrainer

    packed = config.train.batching == "packed"
    collator = CountingCollator(loaded.tokenizer, loaded.is_seq2seq, packed)
    early_stop = [EarlyStoppingCallback(config.train.patience)] if config.train.patience else []
    trainer = PeftlabTrainer(
        model=model,
        args=training_arguments(config, out, eval_set is not None, lr, loaded.dtype),
        train_dataset=_with_lengths(train_set),
        eval_dataset=_with_lengths(eval_set) if eval_set else None,
        data_collator=collator,
        processing_class=loaded.tokenizer,
        callbacks=[ProgressBar(collator.count), LossLog(out / artifacts.LOSS_LOG), *early_stop, *callbacks],
        optimizers=(optimizer, None),  # None: the Trainer's AdamW; the schedule is the Trainer's either way
        eval_collator=CountingCollator(loaded.tokenizer, loaded.is_seq2seq, packed),
        length_grouped=not packed,
        answer_only_logits=answer_only_logits,
        max_batch_tokens=config.train.max_batch_tokens,
    )
    trainer.remove_callback(PrinterCallback)
    clock = StepClock(collator.count, config.train.grad_accum, lambda: trainer.eval_seconds)
    trainer.add_callback(clock)
    return trainer, clock


def _sum_over_processes(trainer: Any, *counts: int) -> list[int]:
    """Token counts of all processes (each counts only its own shard of the data)."""
    import torch

    totals = trainer.accelerator.reduce(torch.tensor(counts, dtype=torch.long, device=trainer.args.device), reduction="sum")
    return [int(value) for value in totals.tolist()]


def total_steps(config: RunConfig, rows: int, processes: int = 1) -> int:
    """Optimizer steps the Trainer will take (as it counts them): max_steps, else epochs over the batches."""
    t = config.train
    if t.max_steps > 0:
        return t.max_steps
    updates_per_epoch = max(math.ceil(rows / (t.batch_size * processes)) // t.grad_accum, 1)
    return math.ceil(t.epochs * updates_per_epoch)


def _last(history: list[dict[str, Any]], key: str) -> float | None:
    values = [entry[key] for entry in history if key in entry]
    return values[-1] if values else None


def _final_eval_loss(trainer: Any) -> float:
    """The eval loss of the final model: reuse the Trainer's own if it evaluated at the last step."""
    last = [e for e in trainer.state.log_history if "eval_loss" in e]
    if last and last[-1].get("step") == trainer.state.global_step and not trainer.args.load_best_model_at_end:
        return last[-1]["eval_loss"]
    return trainer.evaluate()["eval_loss"]


def _with_lengths(tokenized: TokenizedSet) -> Any:
    import datasets

    rows = tokenized.features
    if isinstance(rows, datasets.Dataset):  # prepared: Arrow, memory-mapped, with its lengths
        return rows
    return datasets.Dataset.from_dict({
        "input_ids": [f["input_ids"] for f in rows],
        "labels": [f["labels"] for f in rows],
        "length": [len(f["input_ids"]) for f in rows],
    })
