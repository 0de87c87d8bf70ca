"""Which modules a method adapts, found by role (q, k, v, o, gate, up, down) through one table of model families.

Every method that picks projections (LoRA and its variants, IA3, the bottleneck adapter) asks this module, so a
family added to FAMILIES works for all of them. A role is found by the module's name, whatever its class:
`torch.nn.Linear` and transformers' `Conv1D` (GPT-2) alike. Where a family fuses roles into one projection
(GPT-2's `c_attn`, Phi-3's `qkv_proj`, GPT-NeoX's `query_key_value`, MPT's `Wqkv`), asking for one of them
adapts the whole fused projection, and that is said once.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass
from typing import Any

from peftlab.errors import PeftlabError

log = logging.getLogger(__name__)

ROLES = ("q", "k", "v", "o", "gate", "up", "down")
FUSED = {"qkv": ("q", "k", "v"), "gate_up": ("gate", "up")}  # a fused layout -> the roles it holds
# parents of cross-attention projections (T5, BART-style decoders): an "o" there is not a self-attention output
CROSS_ATTENTION = ("EncDecAttention", "encoder_attn", "crossattention")


@dataclass(frozen=True)
class Family:
    name: str
    models: str  # the transformers models that name their projections this way
    modules: dict[str, str]  # a role or fused layout -> the module name (the end of the qualified name)

    def roles(self) -> dict[str, str]:
        """Each role -> the module that computes it (a fused module for each of its roles)."""
        return {role: name for layout, name in self.modules.items() for role in FUSED.get(layout, (layout,))}

    def fused_with(self, role: str) -> tuple[str, ...]:
        """The roles computed by the same module as `role` (just `role` where it has its own)."""
        return next((FUSED[layout] for layout in self.modules if role in FUSED.get(layout, ())), (role,))


# The first family whose every module name is present describes a model; more specific families come first.
FAMILIES = (
    Family("llama-style", "Llama, Mistral, Qwen2, Qwen3, Gemma 1-3, SmolLM",
           {"q": "q_proj", "k": "k_proj", "v": "v_proj", "o": "o_proj", "gate": "gate_proj", "up": "up_proj", "down": "down_proj"}),
    Family("phi-3", "Phi-3, Phi-4", {"qkv": "qkv_proj", "o": "o_proj", "gate_up": "gate_up_proj", "down": "down_proj"}),
    Family("opt", "OPT, BART-style decoders", {"q": "q_proj", "k": "k_proj", "v": "v_proj", "o": "out_proj", "up": "fc1", "down": "fc2"}),
    Family("gpt-j", "GPT-J", {"q": "q_proj", "k": "k_proj", "v": "v_proj", "o": "out_proj", "up": "fc_in", "down": "fc_out"}),
    Family("phi", "Phi-1, Phi-2", {"q": "q_proj", "k": "k_proj", "v": "v_proj", "o": "dense", "up": "fc1", "down": "fc2"}),
    Family("gpt-2", "GPT-2", {"qkv": "attn.c_attn", "o": "attn.c_proj", "up": "mlp.c_fc", "down": "mlp.c_proj"}),
    Family("gpt-neox", "GPT-NeoX, Pythia, Falcon, BLOOM",
           {"qkv": "query_key_value", "o": "dense", "up": "dense_h_to_4h", "down": "dense_4h_to_h"}),
    Family("mpt", "MPT", {"qkv": "Wqkv", "o": "out_proj", "up": "up_proj", "down": "down_proj"}),
    Family("t5", "T5", {"q": "q", "k": "k", "v": "v", "o": "o", "up": "wi", "down": "wo"}),
    Family("t5-gated", "T5 v1.1, Flan-T5, mT5", {"q": "q", "k": "k", "v": "v", "o": "o", "gate": "wi_0", "up": "wi_1", "down": "wo"}),
)
_SAID: set[str] = set()  # fusion notes already logged in this process


def adaptable_modules(model: Any) -> dict[str, Any]:
    """Qualified name -> module, for every projection peft can adapt: nn.Linear and transformers' Conv1D."""
    import torch
    from transformers.pytorch_utils import Conv1D

    return {name: module for name, module in model.named_modules() if isinstance(module, (torch.nn.Linear, Conv1D))}


def output_features(module: Any) -> int:
    """A projection's output width: Linear's out_features, Conv1D's nf (its weight is stored inputs x outputs)."""
    return module.out_features if hasattr(module, "out_features") else module.nf


def ends_with(qualified: str, name: str) -> bool:
    """peft's rule for a target name: the whole qualified name, or its end after a dot."""
    return qualified == name or qualified.endswith("." + name)


def model_family(model: Any) -> Family | None:
    present = list(adaptable_modules(model))
    return next((family for family in FAMILIES
                 if all(any(ends_with(q, name) for q in present) for name in family.modules.values())), None)


def role_modules(model: Any, roles: list[str], setting: str) -> list[str]:
    """The module names that compute `roles` in this model; a fused module that also computes other roles is
    taken whole, and that is logged once."""
    family = model_family(model)
    if family is None:
        names = ", ".join(sorted({q.rsplit(".", 1)[-1] for q in adaptable_modules(model)}))
        raise PeftlabError(f"{setting}: this model's projections match no known family, so roles ({', '.join(roles)}) cannot be "
                           f"found; name its modules instead, from: {names}")
    found = family.roles()
    missing = [role for role in roles if role not in found]
    if missing:
        raise PeftlabError(f"{setting}: the {family.name} family ({family.models}) has no {', '.join(missing)} projection; "
                           f"its roles: {describe_family(family)}")
    chosen = list(dict.fromkeys(found[role] for role in roles))
    for role in roles:
        extra = [other for other in family.fused_with(role) if other not in roles]
        if extra:
            _say_once(f"{family.name} computes {', '.join(family.fused_with(role))} in one projection ({found[role]}): "
                      f"asking for {', '.join(r for r in roles if r in family.fused_with(role))} trains all of it, "
                      f"{', '.join(extra)} included, since they cannot be separated")
    return chosen


def _say_once(text: str) -> None:
    """Log a fusion note the first time this process meets it (every method building on the model would repeat it)."""
    key = text.split(":")[0]  # the family and its fused projection, whatever roles were asked
    if key not in _SAID:
        _SAID.add(key)
        log.info(text)


def describe_family(family: Family) -> str:
    """'q,k,v: attn.c_attn (fused), o: attn.c_proj, ...' for messages and `peftlab methods --model`."""
    return ", ".join(f"{','.join(FUSED[layout])}: {name} (fused)" if layout in FUSED else f"{layout}: {name}"
                     for layout, name in family.modules.items())


def target_modules(model: Any, target: str, setting: str = "lora.target") -> list[str] | str:
    """Resolve a target spec to module names of this model; `setting` names the knob in errors.

    `qv`: the query and value roles; `all-linear`: peft's own choice; else a comma-separated list of roles
    (q, k, v, o, gate, up, down) and module names (`c_attn`, `attn.c_proj`, `q_proj`, ...)."""
    if target == "all-linear":
        return "all-linear"
    if target == "qv":
        return role_modules(model, ["q", "v"], setting)
    wanted = [name.strip() for name in target.split(",") if name.strip()]
    present = list(adaptable_modules(model))
    roles = [name for name in wanted if name in ROLES and not any(ends_with(q, name) for q in present)]
    names = [name for name in wanted if name not in roles]
    missing = [name for name in names if not any(ends_with(q, name) for q in present)]
    if missing or not wanted:
        choices = ", ".join(sorted({q.rsplit(".", 1)[-1] for q in present}))
        raise PeftlabError(f"{setting} names no projection of this model ({', '.join(missing) or target}); choose from: {choices}, "
                           f"the roles {', '.join(ROLES)}, or qv, all-linear")
    return list(dict.fromkeys([*(role_modules(model, roles, setting) if roles else []), *names]))
