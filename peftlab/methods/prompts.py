"""Soft prompts: prompt tuning, prefix tuning and P-tuning (virtual tokens learned in front of the input), via peft."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Any

from peftlab.artifacts import read_saved
from peftlab.errors import PeftlabError
from peftlab.methods.base import BuildContext, Method, get_peft_model_checked, load_peft, peft_task_type, register
from peftlab.methods.saved_tensors import check_saved_tensors, peft_saved_tensors


EMBEDDED = ("PROMPT_TUNING", "P_TUNING")  # virtual tokens are input embeddings in front of the prompt
PREFIXED = ("PREFIX_TUNING",)  # virtual tokens are key/value pairs in front of every layer's cache


def virtual_token_kind(peft_type: str) -> str | None:
    """The peft type when its virtual tokens must be placed by hand for cached generation (peftlab.generation.soft_prompts), else None."""
    return peft_type if peft_type in EMBEDDED + PREFIXED else None


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
    init_text: str = ""  # start from the keys and values of this text (the paper's "real words" init); "" = random

    def check(self) -> None:
        _check_tokens(self.num_virtual_tokens)
        if self.init_text and self.prefix_projection:
            raise PeftlabError("prefix-tuning.init_text sets the prefix itself, which prefix_projection=true replaces by an "
                               "MLP's output; use one of the two")


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
    peft_model = get_peft_model_checked(model, config, "prefix-tuning")
    if settings.init_text:
        if context.is_seq2seq:
            raise PeftlabError("prefix-tuning.init_text works for causal LMs only; leave it empty for seq2seq models")
        _prefix_from_text(peft_model, settings.init_text, settings.num_virtual_tokens)
    return peft_model


def _prefix_from_text(model: Any, text: str, count: int) -> None:
    """Set the prefix to the keys and values the base model computes for `text` (cut or repeated to
    `count` tokens): the untrained adapter then acts exactly as that text in front of the prompt.

    peft initialises prefixes at random, which on a small model costs the first hundreds of steps
    (loss 8.7 against the base model's 2.7 on DialogSum); Li & Liang 2021 (section 7.2) start from
    real words' activations. peft has no such option: written here, laid out as peft's get_prompt reads it.
    """
    import torch
    from transformers import AutoTokenizer

    config = model.active_peft_config
    tokenizer = AutoTokenizer.from_pretrained(model.get_base_model().config.name_or_path)
    ids = tokenizer(text, add_special_tokens=False)["input_ids"]
    if not ids:
        raise PeftlabError("prefix-tuning.init_text has no tokens; give a sentence describing the task")
    ids = (ids * (count // len(ids) + 1))[:count]
    with torch.no_grad():
        output = model.get_base_model()(input_ids=torch.tensor([ids], device=model.device), use_cache=True)
    cache = output.cache if "cache" in output else output.past_key_values  # transformers 5 renamed it
    heads, head_dim = config.num_attention_heads, config.token_dim // config.num_attention_heads
    per_layer = [tensor[0] for layer in cache.layers for tensor in (layer.keys, layer.values)]  # each (heads, count, head_dim)
    if len(per_layer) != 2 * config.num_layers or tuple(per_layer[0].shape) != (heads, count, head_dim):
        raise PeftlabError("prefix-tuning.init_text is not supported for this architecture's cache; leave it empty")
    prefix = torch.stack(per_layer).permute(2, 0, 1, 3).reshape(count, -1)  # peft's view(count, layers*2, heads, head_dim)
    embedding = model.prompt_encoder[model.active_adapter].embedding.weight
    embedding.data.copy_(prefix.to(embedding.dtype))


def build_p_tuning(model: Any, settings: PTuningSettings, context: BuildContext) -> Any:
    from peft import PromptEncoderConfig

    config = PromptEncoderConfig(
        task_type=peft_task_type(context.is_seq2seq), num_virtual_tokens=settings.num_virtual_tokens,
        encoder_hidden_size=settings.encoder_hidden_size,
        encoder_reparameterization_type=settings.encoder_reparameterization_type,
    )
    return get_peft_model_checked(model, config, "p-tuning")


def load_prompt_learning(base_model: Any, folder: Path) -> Any:
    """peft's load. peft 0.21.2 stops with a bare KeyError or a size-mismatch report on a file without the one tensor
    of prompt learning ('prompt_embeddings') or with it in another shape: then the check every load passes names what
    is wrong, against the adapter its config builds empty."""
    from peft import PeftConfig, get_peft_model

    try:
        return load_peft(base_model, folder)
    except (KeyError, RuntimeError):
        empty = get_peft_model(base_model, PeftConfig.from_pretrained(str(folder)))
        check_saved_tensors(folder, peft_saved_tensors(empty, folder, "default"), read_saved(folder).config_file)
        raise


# virtual tokens shift every position: no packed rows, no answer-only logits, nothing to merge into the weights
PROMPT_CAPABILITIES = {"load": load_prompt_learning, "prompt_learning": True, "answer_only_logits": False,
                       "not_mergeable_because": "prompt-learning methods add virtual tokens, not weight updates"}
register(Method("prompt-tuning", "Learned virtual-token embeddings prepended to the input (Lester et al. 2021)",
                PromptTuningSettings, build_prompt_tuning, lr=3e-2, peft_type="PROMPT_TUNING", **PROMPT_CAPABILITIES))
register(Method("prefix-tuning", "Learned key/value prefixes in every attention layer (Li & Liang 2021)",
                PrefixTuningSettings, build_prefix_tuning, lr=1e-2, peft_type="PREFIX_TUNING", **PROMPT_CAPABILITIES))
register(Method("p-tuning", "Virtual tokens produced by a small prompt encoder MLP (Liu et al. 2021)",
                PTuningSettings, build_p_tuning, lr=1e-2, peft_type="P_TUNING", **PROMPT_CAPABILITIES))
