"""Which modules a method adapts: `qv`, `all-linear` or module names, resolved against one model's layers."""

from __future__ import annotations

from typing import Any

from peftlab.errors import PeftlabError

# Attention query/value projection names per architecture family (the classic recipe's targets).
QUERY_VALUE_NAMES = [("q_proj", "v_proj"), ("q", "v"), ("query", "value"), ("c_attn",), ("query_key_value",)]


def linear_module_names(model: Any) -> set[str]:
    import torch

    return {name.rsplit(".", 1)[-1] for name, module in model.named_modules() if isinstance(module, torch.nn.Linear)}


def target_modules(model: Any, target: str, setting: str = "lora.target") -> list[str] | str:
    """Resolve a target spec to module names of this architecture; `setting` names the knob in errors."""
    present = linear_module_names(model)
    if target == "all-linear":
        return "all-linear"
    if target == "qv":
        for names in QUERY_VALUE_NAMES:
            if all(name in present for name in names):
                return list(names)
        raise PeftlabError(f"cannot find query/value projections in this model; set {setting} to some of: {', '.join(sorted(present))}")
    wanted = [name.strip() for name in target.split(",") if name.strip()]
    missing = [name for name in wanted if name not in present]
    if missing or not wanted:
        raise PeftlabError(f"{setting} names no linear layer of this model ({', '.join(missing) or target}); choose from: {', '.join(sorted(present))}, or qv, all-linear")
    return wanted
