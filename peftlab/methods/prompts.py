"""Soft prompts: prompt tuning, prefix tuning and P-tuning (virtual tokens learned in front of the input), via peft."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from peftlab.errors import PeftlabError
from peftlab.methods.base import BuildContext, Method, get_peft_model_checked, peft_task_type, register


def _check_tokens(count: int) -> None:
    if count < 1:
        raise PeftlabError(f"num_virtual_tokens must be at least 1, got {count}")


@dataclass
class PromptTuningSettings:
    """Lester et al. 2021; 20 virtual tokens as in peft's prompt-tuning guide."""

    num_virtual_tokens: int = 20
    init_text: str = ""  # start from the embeddings of this text (e.g. "Summarize the conversation:"); "" = random

    def check(self) -> None:
        _check_tokens(self.num_virtual_tokens)


@dataclass
class PrefixTuningSettings:
    """Li & Liang 2021; peft's PrefixTuningConfig defaults (no reparameterisation MLP unless asked)."""

    num_virtual_tokens: int = 20
    prefix_projection: bool = False  # train the prefix through a 2-layer MLP (the paper's stabiliser)
    encoder_hidden_size: int = 512  # that MLP's hidden size

    def check(self) -> None:
        _check_tokens(self.num_virtual_tokens)


@dataclass
class PTuningSettings:
    """Liu et al. 2021 (GPT Understands, Too); peft's P-tuning guide: an MLP prompt encoder of width 128."""

    num_virtual_tokens: int = 20
    encoder_hidden_size: int = 128
    encoder_reparameterization_type: str = "MLP"  # MLP | LSTM

    def check(self) -> None:
        _check_tokens(self.num_virtual_tokens)
        if self.encoder_reparameterization_type not in ("MLP", "LSTM"):
            raise PeftlabError(f"p-tuning.encoder_reparameterization_type must be MLP or LSTM, got {self.encoder_reparameterization_type}")


def build_prompt_tuning(model: Any, settings: PromptTuningSettings, context: BuildContext) -> Any:
    from peft import PromptTuningConfig, PromptTuningInit

    init = {"prompt_tuning_init": PromptTuningInit.RANDOM}
    if settings.init_text:
        init = {"prompt_tuning_init": PromptTuningInit.TEXT, "prompt_tuning_init_text": settings.init_text,
                "tokenizer_name_or_path": model.config.name_or_path}
    config = PromptTuningConfig(task_type=peft_task_type(context.is_seq2seq), num_virtual_tokens=settings.num_virtual_tokens, **init)
    return get_peft_model_checked(model, config, "prompt-tuning")


def build_prefix_tuning(model: Any, settings: PrefixTuningSettings, context: BuildContext) -> Any:
    from peft import PrefixTuningConfig

    config = PrefixTuningConfig(
        task_type=peft_task_type(context.is_seq2seq), num_virtual_tokens=settings.num_virtual_tokens,
        prefix_projection=settings.prefix_projection, encoder_hidden_size=settings.encoder_hidden_size,
    )
    return get_peft_model_checked(model, config, "prefix-tuning")


def build_p_tuning(model: Any, settings: PTuningSettings, context: BuildContext) -> Any:
    from peft import PromptEncoderConfig

    config = PromptEncoderConfig(
        task_type=peft_task_type(context.is_seq2seq), num_virtual_tokens=settings.num_virtual_tokens,
        encoder_hidden_size=settings.encoder_hidden_size,
        encoder_reparameterization_type=settings.encoder_reparameterization_type,
    )
    return get_peft_model_checked(model, config, "p-tuning")


# virtual tokens shift every position: no packed rows, no answer-only logits, nothing to merge into the weights
PROMPT_CAPABILITIES = {"prompt_learning": True, "answer_only_logits": False,
                       "not_mergeable_because": "prompt-learning methods add virtual tokens, not weight updates"}
register(Method("prompt-tuning", "Learned virtual-token embeddings prepended to the input (Lester et al. 2021)",
                PromptTuningSettings, build_prompt_tuning, lr=3e-2, peft_type="PROMPT_TUNING", **PROMPT_CAPABILITIES))
register(Method("prefix-tuning", "Learned key/value prefixes in every attention layer (Li & Liang 2021)",
                PrefixTuningSettings, build_prefix_tuning, lr=1e-2, peft_type="PREFIX_TUNING", **PROMPT_CAPABILITIES))
register(Method("p-tuning", "Virtual tokens produced by a small prompt encoder MLP (Liu et al. 2021)",
                PTuningSettings, build_p_tuning, lr=1e-2, peft_type="P_TUNING", **PROMPT_CAPABILITIES))
