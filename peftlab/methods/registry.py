"""The method registry: name -> description, typed defaults, and how to build the trainable model."""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass
from typing import Any, Callable

from peftlab.config import from_dict
from peftlab.errors import PeftlabError


@dataclass(frozen=True)
class Method:
    name: str
    description: str
    settings: type  # a dataclass whose defaults come from the method's paper or peft's docs
    build: Callable[[Any, Any, bool], Any]  # (model, settings, is_seq2seq) -> trainable model

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
    # importing a method module registers it
    from peftlab.methods import lora  # noqa: F401


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
