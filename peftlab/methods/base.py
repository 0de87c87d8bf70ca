"""What a method is: its settings, how it builds, saves and reloads, what it can do; and the registry of methods.

The registry imports no method: each family module registers itself, and `peftlab.methods`
(the catalog) imports the families. A method states its capabilities here, so callers ask the
method (`method.mergeable`) instead of comparing `peft_type` strings.
"""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Callable, Iterator

from peftlab.config import from_dict
from peftlab.errors import PeftlabError
from peftlab.methods.saved_tensors import Expected, peft_saved_tensors


@dataclass(frozen=True)
class BuildContext:
    """What a method may need to know beyond the model and its settings."""

    is_seq2seq: bool
    total_steps: int | None = None  # optimizer steps of the run (AdaLoRA's rank schedule); None = unknown
    # collated batches of the first `rows` rows of the run's training data, for methods initialised from data
    # (EVA, CorDA, LoRA-GA); None outside a training run
    training_batches: Callable[[int], Iterator[dict]] | None = None
    tokenizer: Any = None  # the run's tokenizer (trainable-tokens names tokens by text); None = unknown
    say: Callable[[str], None] = lambda text: None  # a progress line for the person running it


def save_peft(model: Any, folder: Path) -> None:
    model.save_pretrained(folder)  # the standard PEFT format: adapter_config.json + adapter_model.safetensors


def load_peft(base_model: Any, folder: Path, adapter_name: str = "default") -> Any:
    """A PEFT adapter folder on `base_model`. A tensor of another shape than its config gives is left out here (peft
    would stop on it with a long size-mismatch report) and named by the check every load passes (`load_trained`)."""
    from peft import PeftModel

    return PeftModel.from_pretrained(base_model, str(folder), adapter_name=adapter_name, is_trainable=False,
                                     ignore_mismatched_sizes=True)


def in_fp32(model: Any) -> Any:
    """The model in fp32 when any weight is bf16 or fp16: small updates to such weights round away."""
    import torch

    if any(p.dtype in (torch.bfloat16, torch.float16) for p in model.parameters()):
        model = model.float()
    return model


@dataclass(frozen=True)
class Method:
    name: str
    description: str
    settings: type  # a dataclass whose defaults come from the method's paper or peft's docs
    build: Callable[[Any, Any, BuildContext], Any]  # (model, settings, context) -> trainable model
    save: Callable[[Any, Path], None] = save_peft  # (trained model, folder)
    load: Callable[[Any, Path], Any] = load_peft  # (base model, folder) -> trained model
    # (loaded model, folder, adapter name) -> the tensors its weights file must hold, checked on every load (a method
    # with its own format declares them; left at peft's, a model peft did not build is only checked finite)
    saved_tensors: Callable[[Any, Path, str], Expected | None] = peft_saved_tensors
    quantization: str | None = None  # how the base model must be loaded: None | "4bit" | "8bit"
    callbacks: Callable[[Any], list] = lambda model: []  # Trainer callbacks the method needs (AdaLoRA)
    # (model, lr, weight_decay) -> the optimizer the Trainer uses (LoRA+'s per-matrix rates); None = the Trainer's AdamW
    optimizer: Callable[[Any, float, float], Any] | None = None
    lr: float = 1e-3  # the learning rate used when train.lr is not set (the classic LoRA recipe's)
    # how a foreign adapter folder is recognised: adapter_config.json's peft_type, and the flags
    # that tell a variant apart (DoRA: use_dora); None = only peftlab.json names it
    peft_type: str | None = None
    peft_flags: tuple[str, ...] = ()

    @property
    def plain_lora(self) -> bool:
        """Saved as a LoRA adapter in peft's format (lora, rslora, dora, the initialisations...): nothing to convert."""
        return self.peft_type == "LORA"
    # --- capabilities: what the saved result can do ----------------------------------------------
    mergeable: bool = False  # merge_and_unload folds it into the base weights (`peftlab merge`)
    not_mergeable_because: str = "its trained weights are not a PEFT weight update"
    mixable: bool = False  # rows of several adapters share one forward pass (peft's adapter_names: LoRA only)
    prompt_learning: bool = False  # virtual tokens in front of the input: no packed batches
    answer_only_logits: bool = True  # training may compute logits only where the loss needs them
    trains_in_fp32: bool = False  # trainable weights are fp32 even on a bf16 base (small updates round away in bf16)
    lora_conversion: bool = False  # peft converts it to a plain LoRA (`peftlab export --format lora`): vLLM via conversion
    vllm: bool = False  # vLLM can serve the saved result: plain LoRA / rsLoRA only (vLLM's peft_helper.py refuses DoRA, biases, modules_to_save)
    servable: bool = True  # `peftlab serve` can load it beside the base

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
    """Add a method (a family module at import, or a test); the order of registration is the order listed."""
    if method.name in _REGISTRY:  # two families claiming one name: the later would silently win
        raise ValueError(f"a method named '{method.name}' is already registered (by {_REGISTRY[method.name].build.__module__}); "
                         "choose another name, or unregister the old one first")
    _REGISTRY[method.name] = method
    return method


def unregister(name: str) -> None:
    _REGISTRY.pop(name, None)


def get_method(name: str) -> Method:
    if name not in _REGISTRY:
        raise PeftlabError(f"unknown method '{name}'; choose one of: {', '.join(method_names())} (see `peftlab methods`)")
    return _REGISTRY[name]


def method_names() -> list[str]:
    return list(_REGISTRY)


def capabilities(method: Method) -> list[str]:
    """The capabilities a person reads in `peftlab methods`."""
    named = {"merge": method.mergeable, "mixed batches": method.mixable, "vLLM": method.vllm,
             "vLLM via conversion to LoRA": method.lora_conversion and not method.vllm, "serve": method.servable,
             "fp32 training": method.trains_in_fp32, "prompt learning": method.prompt_learning}
    return [name for name, present in named.items() if present]


def peft_task_type(is_seq2seq: bool) -> Any:
    from peft import TaskType

    return TaskType.SEQ_2_SEQ_LM if is_seq2seq else TaskType.CAUSAL_LM


def check_size_and_dropout(method: str, size: int, dropout: float, size_name: str = "r", dropout_name: str = "dropout") -> None:
    """The two checks most tuners' settings share: a size (rank, block) of at least 1 and a dropout in [0, 1)."""
    if size < 1:
        raise PeftlabError(f"{method}.{size_name} must be at least 1, got {size}")
    if not 0 <= dropout < 1:
        raise PeftlabError(f"{method}.{dropout_name} must be in [0, 1), got {dropout}")


def build_peft_tuner(model: Any, context: BuildContext, method: str, config_class: str, target: str, **fields: Any) -> Any:
    """One of peft's tuners (by its config class name) on the `target` modules, with its ValueErrors as PeftlabErrors."""
    import peft

    from peftlab.methods.targets import target_modules

    targets = target_modules(model, target, f"{method}.target")
    try:
        config = getattr(peft, config_class)(task_type=peft_task_type(context.is_seq2seq), target_modules=targets, **fields)
    except ValueError as error:
        raise PeftlabError(f"{method}: {str(error).strip().splitlines()[0]}; choose other {method}.* settings") from None
    return get_peft_model_checked(model, config, method)


def get_peft_model_checked(model: Any, config: Any, method: str) -> Any:
    """peft's get_peft_model with its ValueErrors (an unsupported architecture, a bad target) as PeftlabErrors."""
    from peft import get_peft_model

    try:
        return get_peft_model(model, config)
    except (ValueError, NotImplementedError, TypeError) as error:
        first = str(error).strip().splitlines()[0] if str(error).strip() else type(error).__name__
        raise PeftlabError(f"{method} cannot be applied to this model ({type(model).__name__}): {first}; "
                           f"choose other {method}.* settings or another method") from None
