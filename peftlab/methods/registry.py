"""The method registry: name -> description, typed defaults, how to build, save and reload the trainable model."""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Callable

from peftlab.config import from_dict
from peftlab.errors import PeftlabError


@dataclass(frozen=True)
class BuildContext:
    """What a method may need to know beyond the model and its settings."""

    is_seq2seq: bool
    total_steps: int | None = None  # optimizer steps of the run (AdaLoRA's rank schedule); None = unknown


def save_peft(model: Any, folder: Path) -> None:
    model.save_pretrained(folder)  # the standard PEFT format: adapter_config.json + adapter_model.safetensors


def load_peft(base_model: Any, folder: Path) -> Any:
    from peft import PeftModel

    return PeftModel.from_pretrained(base_model, str(folder))


@dataclass(frozen=True)
class Method:
    name: str
    description: str
    settings: type  # a dataclass whose defaults come from the method's paper or peft's docs
    build: Callable[[Any, Any, BuildContext], Any]  # (model, settings, context) -> trainable model
    save: Callable[[Any, Path], None] = save_peft  # (trained model, folder)
    load: Callable[[Any, Path], Any] = load_peft  # (base model, folder) -> trained model
    quantization: str | None = None  # how the base model must be loaded: None | "4bit" | "8bit"
    callbacks: Callable[[Any], list] = lambda model: []  # Trainer callbacks the method needs (AdaLoRA)
    vllm: bool = False  # vLLM can serve the saved result (FACTS.md: plain LoRA / rsLoRA only)
    lr: float = 1e-3  # the learning rate used when train.lr is not set (the classic LoRA recipe's)

    def parse_settings(self, raw: dict[str, Any] | None) -> Any:
        settings = from_dict(raw or {}, self.settings, where=f".{self.name}")
        check = getattr(settings, "check", None)
        if check:
            check()
        return settings

    def defaults(self) -> dict[str, Any]:
        return dataclasses.asdict(self.settings())


_REGISTRY: dict[str, Method] = {}


def register(method: Method) -> Method:
    _REGISTRY[method.name] = method
    return method


def get_method(name: str) -> Method:
    _load_all()
    if name not in _REGISTRY:
        raise PeftlabError(f"unknown method '{name}'; choose one of: {', '.join(method_names())} (see `peftlab methods`)")
    return _REGISTRY[name]


def method_names() -> list[str]:
    _load_all()
    return list(_REGISTRY)


def _load_all() -> None:
    # importing a method module registers it; the order here is the order `peftlab methods` lists
    from peftlab.methods import lora, lycoris, quantized, ia3, prompts, bottleneck, selective  # noqa: F401


def count_parameters(model: Any) -> tuple[int, int]:
    """(trainable, total) parameters; 4-bit weights count as their unpacked size."""
    trainable = total = 0
    for parameter in model.parameters():
        count = parameter.numel()
        if hasattr(parameter, "quant_state") or type(parameter).__name__ == "Params4bit":
            count *= 2  # two 4-bit values per stored byte
        total += count
        if parameter.requires_grad:
            trainable += count
    return trainable, total


def peft_task_type(is_seq2seq: bool) -> Any:
    from peft import TaskType

    return TaskType.SEQ_2_SEQ_LM if is_seq2seq else TaskType.CAUSAL_LM


def get_peft_model_checked(model: Any, config: Any, method: str) -> Any:
    """peft's get_peft_model with its ValueErrors (an unsupported architecture, a bad target) as PeftlabErrors."""
    from peft import get_peft_model

    try:
        return get_peft_model(model, config)
    except (ValueError, NotImplementedError, TypeError) as error:
        first = str(error).strip().splitlines()[0] if str(error).strip() else type(error).__name__
        raise PeftlabError(f"{method} cannot be applied to this model ({type(model).__name__}): {first}; "
                           f"choose other {method}.* settings or another method") from None
