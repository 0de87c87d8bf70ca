"""CorDA: LoRA started from the base weight's singular vectors weighted by the covariance of each layer's inputs on
the training data (context-oriented decomposition), via peft."""

from __future__ import annotations

import time
from dataclasses import dataclass
from typing import Any

from peftlab.errors import PeftlabError
from peftlab.methods.base import BuildContext, Method, get_peft_model_checked, register
from peftlab.methods.lora import (LORA_CAPABILITIES, LoraSettings, initialisation_batches, lora_config, preprocessing_config,
                                  remember_initial_adapter, save_as_plain_lora)


@dataclass
class CordaSettings(LoraSettings):
    """Yang et al. 2024; peft's CorDA example: no dropout, instruction-previewed mode (ipm)."""

    dropout: float = 0.0
    mode: str = "ipm"  # ipm: the components the data uses most (fast learning) | kpm: the least (keeps world knowledge)
    init_rows: int = 64  # training rows whose layer inputs give the covariance

    def check(self) -> None:
        super().check()
        if self.mode not in ("ipm", "kpm"):
            raise PeftlabError(f"corda.mode must be ipm or kpm, got {self.mode!r}")
        if self.init_rows < 1:
            raise PeftlabError(f"corda.init_rows must be at least 1, got {self.init_rows}")


def single_rows(batches: list[dict]) -> list[dict]:
    """Each row alone without its padding: peft 0.21's covariance hook reads one sequence per forward (`input[0].squeeze(0)`)."""
    rows = []
    for batch in batches:
        for index in range(len(batch["input_ids"])):
            mask = batch["attention_mask"][index].bool() if "attention_mask" in batch else slice(None)
            row = {"input_ids": batch["input_ids"][index][mask][None]}
            labels = batch.get("labels")
            if labels is not None and labels.shape == batch["input_ids"].shape:
                row["labels"] = labels[index][mask][None]
            elif labels is not None:  # seq2seq: the decoder side, without its padding
                row["labels"] = labels[index][labels[index] != -100][None]
            rows.append(row)
    return rows


def build_corda(model: Any, settings: CordaSettings, context: BuildContext) -> Any:
    import torch
    from peft.tuners.lora.config import CordaConfig  # not exported at the top level of peft 0.21
    from peft.tuners.lora.corda import preprocess_corda

    rows = single_rows(initialisation_batches(model, context, "corda", settings.init_rows))
    config = lora_config(model, settings, context, "corda", init_lora_weights="corda", corda_config=CordaConfig(corda_method=settings.mode))
    config = preprocessing_config(model, config, "corda")

    def run_model() -> None:
        with torch.no_grad():
            for row in rows:
                model(**row)

    start = time.perf_counter()
    preprocess_corda(model, config, run_model=run_model)
    context.say(f"corda: covariance and decomposition in {time.perf_counter() - start:.1f} s")
    return remember_initial_adapter(get_peft_model_checked(model, config, "corda"))


register(Method("corda", "LoRA started from the weight's singular vectors weighted by the training data's input covariance "
                "(Yang et al. 2024)", CordaSettings, build_corda, save=save_as_plain_lora, mixable=True, vllm=True,
                **LORA_CAPABILITIES))
