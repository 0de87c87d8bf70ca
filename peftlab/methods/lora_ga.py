"""LoRA-GA: LoRA whose A and B start from the SVD of the full weights' gradient on the training data, via peft."""

from __future__ import annotations

import time
from dataclasses import dataclass
from typing import Any

from peftlab.errors import PeftlabError
from peftlab.methods.base import BuildContext, Method, get_peft_model_checked, register
from peftlab.methods.lora import (LORA_CAPABILITIES, LoraSettings, initialisation_batches, lora_config, preprocessing_config,
                                  remember_initial_adapter, save_as_plain_lora)


@dataclass
class LoraGaSettings(LoraSettings):
    """Wang et al. 2024; peft's LoraGAConfig defaults (direction ArB2r, stable scale with gamma 16)."""

    stable_gamma: int = 16  # the initial update is scaled by out_features^(1/4) / sqrt(gamma)
    init_rows: int = 64  # training rows whose gradient is estimated

    def check(self) -> None:
        super().check()
        if self.stable_gamma < 1:
            raise PeftlabError(f"lora-ga.stable_gamma must be at least 1, got {self.stable_gamma}")
        if self.init_rows < 1:
            raise PeftlabError(f"lora-ga.init_rows must be at least 1, got {self.init_rows}")


def build_lora_ga(model: Any, settings: LoraGaSettings, context: BuildContext) -> Any:
    from peft import LoraGAConfig
    from peft.tuners.lora.loraga import preprocess_loraga

    batches = initialisation_batches(model, context, "lora-ga", settings.init_rows)
    config = lora_config(model, settings, context, "lora-ga", init_lora_weights="lora_ga",
                         lora_ga_config=LoraGAConfig(stable_gamma=settings.stable_gamma))
    config = preprocessing_config(model, config, "lora-ga", r_times=2)  # B and A take different halves of the top 2r

    def train_step() -> None:  # gradients accumulate over the batches; peft averages them per layer
        for batch in batches:
            model(**batch).loss.backward()

    start = time.perf_counter()
    preprocess_loraga(model, config, train_step)
    context.say(f"lora-ga: gradient estimated in {time.perf_counter() - start:.1f} s")
    return remember_initial_adapter(get_peft_model_checked(model, config, "lora-ga"))


register(Method("lora-ga", "LoRA started from the SVD of the full fine-tuning gradient on the training data (Wang et al. 2024)",
                LoraGaSettings, build_lora_ga, save=save_as_plain_lora, mixable=True, vllm=True, **LORA_CAPABILITIES))
