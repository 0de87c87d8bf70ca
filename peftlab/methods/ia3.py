"""(IA)^3: learned vectors that rescale keys, values and the feed-forward activations, via peft."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from peftlab.errors import PeftlabError
from peftlab.methods.base import BuildContext, Method, get_peft_model_checked, peft_task_type, register
from peftlab.methods.targets import linear_module_names


@dataclass
class Ia3Settings:
    """Liu et al. 2022 (T-Few): keys, values and the FFN's inner activations; peft's per-architecture defaults."""

    target: str = "default"  # default (peft's: k_proj,v_proj,down_proj for Llama; k,v,wo for T5) | module names
    feedforward: str = ""  # which of the target names are feed-forward layers (scaled on their input); with target names


def _names(text: str) -> list[str]:
    return [name.strip() for name in text.split(",") if name.strip()]


def build_ia3(model: Any, settings: Ia3Settings, context: BuildContext) -> Any:
    from peft import IA3Config
    from peft.utils.constants import TRANSFORMERS_MODELS_TO_IA3_TARGET_MODULES_MAPPING

    if settings.target == "default":
        model_type = model.config.model_type
        if model_type not in TRANSFORMERS_MODELS_TO_IA3_TARGET_MODULES_MAPPING:
            raise PeftlabError(f"ia3 has no default targets for model type '{model_type}'; set ia3.target=NAMES and ia3.feedforward=NAMES "
                               f"(linear layers here: {', '.join(sorted(linear_module_names(model)))})")
        config = IA3Config(task_type=peft_task_type(context.is_seq2seq))
    else:
        targets, feedforward = _names(settings.target), _names(settings.feedforward)
        present = linear_module_names(model)
        unknown = [name for name in targets if name not in present] + [name for name in feedforward if name not in targets]
        if unknown or not targets:
            raise PeftlabError(f"ia3.target / ia3.feedforward name no target linear layer ({', '.join(unknown) or settings.target}); "
                               f"choose from: {', '.join(sorted(present))} (feedforward must be a subset of target)")
        config = IA3Config(task_type=peft_task_type(context.is_seq2seq), target_modules=targets, feedforward_modules=feedforward)
    return get_peft_model_checked(model, config, "ia3")


register(Method("ia3", "Learned rescaling vectors on keys, values and feed-forward activations (Liu et al. 2022)",
                Ia3Settings, build_ia3, peft_type="IA3", mergeable=True))
