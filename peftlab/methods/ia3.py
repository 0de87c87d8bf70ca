"""(IA)^3: learned vectors that rescale keys, values and the feed-forward activations, via peft."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from peftlab.errors import PeftlabError
from peftlab.methods.base import BuildContext, Method, get_peft_model_checked, peft_task_type, register
from peftlab.methods.targets import role_modules, target_modules

# Liu et al. 2022 (T-Few): keys and values rescaled on their outputs, the feed-forward down projection on its input
DEFAULT_ROLES, FEEDFORWARD_ROLES = ["k", "v", "down"], ["down"]


@dataclass
class Ia3Settings:
    """Keys, values and the FFN's inner activations, found by role in every family (peft's own per-architecture
    defaults lack some, Phi-3 among them)."""

    target: str = "default"  # default (roles k, v, down: k_proj,v_proj,down_proj for Llama; k,v,wo for T5) | roles or module names
    feedforward: str = ""  # which of the targets are feed-forward layers (scaled on their input); with target names


def build_ia3(model: Any, settings: Ia3Settings, context: BuildContext) -> Any:
    from peft import IA3Config

    if settings.target == "default":
        targets = role_modules(model, DEFAULT_ROLES, "ia3.target")
        feedforward = role_modules(model, FEEDFORWARD_ROLES, "ia3.target")
    else:
        targets = target_modules(model, settings.target, "ia3.target")
        if targets == "all-linear":
            raise PeftlabError("ia3.target=all-linear is not an IA3 choice: name roles or modules (and ia3.feedforward), or use default")
        feedforward = target_modules(model, settings.feedforward, "ia3.feedforward") if settings.feedforward else []
        unknown = [name for name in feedforward if name not in targets]
        if unknown:
            raise PeftlabError(f"ia3.feedforward must be among ia3.target ({', '.join(targets)}); not there: {', '.join(unknown)}")
    config = IA3Config(task_type=peft_task_type(context.is_seq2seq), target_modules=targets, feedforward_modules=feedforward)
    return get_peft_model_checked(model, config, "ia3")


register(Method("ia3", "Learned rescaling vectors on keys, values and feed-forward activations (Liu et al. 2022)",
                Ia3Settings, build_ia3, peft_type="IA3", mergeable=True))
