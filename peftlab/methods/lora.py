"""LoRA and its variants DoRA and rsLoRA, through peft."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from peftlab.errors import PeftlabError
from peftlab.methods.registry import Method, register

# Attention query/value projection names per architecture family (the classic recipe's targets).
QUERY_VALUE_NAMES = [("q_proj", "v_proj"), ("q", "v"), ("query", "value"), ("c_attn",), ("query_key_value",)]


@dataclass
class LoraSettings:
    r: int = 32
    alpha: float = 32
    dropout: float = 0.05
    target: str = "qv"  # qv (query + value projections) | all-linear | comma-separated module names

    def check(self) -> None:
        if self.r < 1:
            raise PeftlabError(f"lora.r must be at least 1, got {self.r}")
        if self.alpha <= 0:
            raise PeftlabError(f"lora.alpha must be positive, got {self.alpha}")
        if not 0 <= self.dropout < 1:
            raise PeftlabError(f"lora.dropout must be in [0, 1), got {self.dropout}")


def linear_module_names(model: Any) -> set[str]:
    import torch

    return {name.rsplit(".", 1)[-1] for name, module in model.named_modules() if isinstance(module, torch.nn.Linear)}


def target_modules(model: Any, target: str) -> list[str] | str:
    """Resolve a target spec to module names of this architecture."""
    present = linear_module_names(model)
    if target == "all-linear":
        return "all-linear"
    if target == "qv":
        for names in QUERY_VALUE_NAMES:
            if all(name in present for name in names):
                return list(names)
        raise PeftlabError(f"cannot find query/value projections in this model; set lora.target to some of: {', '.join(sorted(present))}")
    wanted = [name.strip() for name in target.split(",") if name.strip()]
    missing = [name for name in wanted if name not in present]
    if missing or not wanted:
        raise PeftlabError(f"lora.target names no linear layer of this model ({', '.join(missing) or target}); choose from: {', '.join(sorted(present))}, or qv, all-linear")
    return wanted


def build_lora(model: Any, settings: LoraSettings, is_seq2seq: bool, **variant: bool) -> Any:
    from peft import LoraConfig, TaskType, get_peft_model

    config = LoraConfig(
        task_type=TaskType.SEQ_2_SEQ_LM if is_seq2seq else TaskType.CAUSAL_LM,
        r=settings.r,
        lora_alpha=settings.alpha,
        lora_dropout=settings.dropout,
        target_modules=target_modules(model, settings.target),
        bias="none",
        **variant,
    )
    return get_peft_model(model, config)


register(Method("lora", "Low-rank adapters on the chosen projections (Hu et al. 2021)", LoraSettings, build_lora))
register(Method("dora", "LoRA with a learned magnitude per output (Liu et al. 2024)", LoraSettings,
                lambda model, s, seq2seq: build_lora(model, s, seq2seq, use_dora=True)))
register(Method("rslora", "LoRA scaled by alpha/sqrt(r), stable at high rank (Kalajdzievski 2023)", LoraSettings,
                lambda model, s, seq2seq: build_lora(model, s, seq2seq, use_rslora=True)))
