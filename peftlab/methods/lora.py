"""LoRA and its variants DoRA, rsLoRA and AdaLoRA, through peft."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Any

from peftlab.errors import PeftlabError
from peftlab.methods.base import BuildContext, Method, get_peft_model_checked, peft_task_type, register
from peftlab.methods.targets import target_modules
from peftlab.methods.tokens import token_indices


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


@dataclass
class LoraTokensSettings(LoraSettings):
    """lora, dora and rslora: peft's LoraConfig(trainable_token_indices=...) also trains chosen rows of the input
    embedding (and of a head tied to it), for tokens the base has never learned, such as a chat template's markers."""

    trainable_tokens: str = ""  # "" (none) | added (the tokenizer's added tokens) | comma-separated token ids or texts


def lora_config(model: Any, settings: LoraSettings, context: BuildContext, method: str, **variant: Any) -> Any:
    from peft import LoraConfig

    return LoraConfig(
        task_type=peft_task_type(context.is_seq2seq),
        r=settings.r,
        lora_alpha=settings.alpha,
        lora_dropout=settings.dropout,
        target_modules=target_modules(model, settings.target, f"{method}.target"),
        bias="none",
        **variant,
    )


def build_lora(model: Any, settings: LoraSettings, context: BuildContext, method: str = "lora", **variant: Any) -> Any:
    tokens = getattr(settings, "trainable_tokens", "")  # only LoraTokensSettings has it
    if tokens:
        vocabulary = model.get_input_embeddings().num_embeddings
        variant["trainable_token_indices"] = token_indices(tokens, context.tokenizer, vocabulary, f"{method}.trainable_tokens")
    return get_peft_model_checked(model, lora_config(model, settings, context, method, **variant), method)


# --- initialisations from the training data (EVA, CorDA, LoRA-GA) ------------------------------------

def initialisation_batches(model: Any, context: BuildContext, method: str, rows: int) -> list[dict]:
    """The first `rows` rows of the run's training data as batches on the model's device, announced to the person waiting."""
    if context.training_batches is None:
        raise PeftlabError(f"{method} initialises its adapter from the training data; build it in `peftlab train` (no data here)")
    device = next(model.parameters()).device
    batches = [{key: value.to(device) for key, value in batch.items()} for batch in context.training_batches(rows)]
    if not batches:
        raise PeftlabError(f"{method} needs training rows for its initialisation, and the training data has none")
    context.say(f"{method}: initialising the adapter from {sum(len(b['input_ids']) for b in batches)} training rows "
                f"({len(batches)} batches)...")
    return batches


def preprocessing_config(model: Any, config: Any, method: str, r_times: int = 1) -> Any:
    """The config for peft's preprocessing before the adapter exists (CorDA, LoRA-GA): target names spelled out, rank checked.

    peft 0.21 expands `all-linear` only inside get_peft_model, which runs after the preprocessing; and a rank above
    the narrowest weight fails deep inside it. Decomposition inits need r_times * r singular vectors of every weight.
    """
    import torch
    from peft.tuners.lora.model import LoraModel
    from peft.tuners.tuners_utils import _maybe_include_all_linear_layers

    config = _maybe_include_all_linear_layers(config, model)
    widths = [min(module.in_features, module.out_features) for name, module in model.named_modules()
              if isinstance(module, torch.nn.Linear) and LoraModel._check_target_module_exists(config, name)]
    if widths and r_times * config.r > min(widths):
        raise PeftlabError(f"{method}.r={config.r} needs {r_times * config.r} singular vectors, and the narrowest adapted layer "
                           f"has {min(widths)}; set {method}.r to at most {min(widths) // r_times}")
    return config


# --- initialisations that move the base weights (PiSSA, OLoRA, CorDA, LoRA-GA) ----------------------
# They start A and B from a decomposition of the base weight W and train on W_res = W - scale * B0 A0. Saved as
# they are, the adapter would need W_res, not the base model users have; peft converts it to a plain LoRA of
# twice the rank on W itself (dW = BA - B0A0), given the initial A0, B0 in a folder
# (`save_pretrained(path_initial_model_for_weight_conversion=...)`, peft 0.21).

def remember_initial_adapter(model: Any) -> Any:
    """Keep A0 and B0 (in memory) for the conversion at save."""
    from peft import get_peft_model_state_dict

    model.peftlab_initial_adapter = {name: tensor.detach().clone() for name, tensor in get_peft_model_state_dict(model).items()}
    return model


def save_as_plain_lora(model: Any, folder: Path) -> None:
    """Save the trained adapter as a plain LoRA on the unmodified base: it loads, merges and serves like `lora`."""
    import tempfile

    from safetensors.torch import save_file

    with tempfile.TemporaryDirectory() as scratch:
        initial = Path(scratch) / "initial"  # peft loads it as an adapter named after the folder, then deletes it
        initial.mkdir()
        save_file({name: t.contiguous() for name, t in model.peftlab_initial_adapter.items()}, str(initial / "adapter_model.safetensors"))
        model.save_pretrained(folder, path_initial_model_for_weight_conversion=str(initial))


@dataclass
class AdaLoraSettings:
    """peft's AdaLoraConfig defaults (Zhang et al. 2023); the schedule phases are shares of the run's steps."""

    init_r: int = 12
    target_r: int = 8
    alpha: float = 32
    dropout: float = 0.05
    target: str = "qv"
    warmup_share: float = 0.1  # tinit: steps before ranks are pruned
    final_share: float = 0.2  # tfinal: steps at the end with ranks fixed
    delta_t: int = 1  # steps between two budget allocations
    beta1: float = 0.85
    beta2: float = 0.85
    orth_reg_weight: float = 0.5

    def check(self) -> None:
        if not 1 <= self.target_r <= self.init_r:
            raise PeftlabError(f"adalora needs 1 <= target_r <= init_r, got target_r={self.target_r}, init_r={self.init_r}")
        if self.warmup_share < 0 or self.final_share < 0 or self.warmup_share + self.final_share >= 1:
            raise PeftlabError("adalora.warmup_share and adalora.final_share must be >= 0 and sum to less than 1")


def build_adalora(model: Any, settings: AdaLoraSettings, context: BuildContext) -> Any:
    from peft import AdaLoraConfig

    if not context.total_steps:
        raise PeftlabError("adalora needs the number of training steps for its rank schedule; set train.max_steps or train.epochs")
    tinit = int(settings.warmup_share * context.total_steps)
    tfinal = int(settings.final_share * context.total_steps)
    config = AdaLoraConfig(
        task_type=peft_task_type(context.is_seq2seq), init_r=settings.init_r, target_r=settings.target_r,
        lora_alpha=settings.alpha, lora_dropout=settings.dropout, target_modules=target_modules(model, settings.target, "adalora.target"),
        tinit=tinit, tfinal=tfinal, deltaT=settings.delta_t, beta1=settings.beta1, beta2=settings.beta2,
        orth_reg_weight=settings.orth_reg_weight, total_step=context.total_steps,
    )
    return get_peft_model_checked(model, config, "adalora")


def adalora_callbacks(model: Any) -> list:
    """AdaLoRA reallocates ranks from the gradients after each optimizer step, before they are zeroed."""
    from transformers import TrainerCallback

    class RankAllocation(TrainerCallback):
        def on_optimizer_step(self, args: Any, state: Any, control: Any, **kwargs: Any) -> None:
            model.base_model.update_and_allocate(state.global_step)

    return [RankAllocation()]


LORA_CAPABILITIES = {"peft_type": "LORA", "mergeable": True}
register(Method("lora", "Low-rank adapters on the chosen projections (Hu et al. 2021)", LoraTokensSettings, build_lora,
                mixable=True, vllm=True, **LORA_CAPABILITIES))
register(Method("dora", "LoRA with a learned magnitude per output (Liu et al. 2024)", LoraTokensSettings,
                lambda model, s, context: build_lora(model, s, context, "dora", use_dora=True), peft_flags=("use_dora",),
                **LORA_CAPABILITIES))  # peft 0.21's mixed batches (generate(adapter_names=...)) raise for DoRA
register(Method("rslora", "LoRA scaled by alpha/sqrt(r), stable at high rank (Kalajdzievski 2023)", LoraTokensSettings,
                lambda model, s, context: build_lora(model, s, context, "rslora", use_rslora=True), peft_flags=("use_rslora",),
                mixable=True, vllm=True, **LORA_CAPABILITIES))
register(Method("adalora", "LoRA whose rank budget is pruned to the important layers during training (Zhang et al. 2023)",
                AdaLoraSettings, build_adalora, callbacks=adalora_callbacks, peft_type="ADALORA", mergeable=True,
                answer_only_logits=False))  # its orthogonality regulariser rides on the model's own loss
