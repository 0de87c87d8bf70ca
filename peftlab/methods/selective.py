"""Selective fine-tuning: BitFit, LayerNorm tuning, and freezing all but some blocks.

BitFit and freeze save only the tensors they trained (peftlab-specific format):
- `trained_parameters.safetensors`: the trained tensors under the base model's parameter names (fp32),
- `trained_parameters.json`: {"format": "peftlab-selective", "method", "parameters": [names],
  "added_biases": [linear modules given a bias the base model lacks], "base_model_name_or_path"}.
LN tuning uses peft's format.

bf16 base models are trained (and reloaded) in fp32 by bitfit, freeze and ln-tuning: small updates
to bf16 weights round away.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from peftlab.artifacts import TRAINED_PARAMETERS
from peftlab.errors import PeftlabError
from peftlab.methods.base import BuildContext, Method, get_peft_model_checked, in_fp32, load_peft, peft_task_type, register
from peftlab.methods.saved_tensors import Expected

FORMAT = "peftlab-selective"
CONFIG_FILE = TRAINED_PARAMETERS  # what a folder holding trained tensors is recognised by
WEIGHTS_FILE = "trained_parameters.safetensors"
BLOCK_LISTS = ("layers", "block", "blocks", "h")  # names of the list of transformer blocks


def _train_only(model: Any, names: set[str]) -> Any:
    for name, parameter in model.named_parameters():
        parameter.requires_grad = name in names
    model.trained_parameters = sorted(names)
    return model


# --- BitFit -------------------------------------------------------------------------------------

@dataclass
class BitfitSettings:
    """Ben Zaken et al. 2022: train every bias term and nothing else."""

    # Llama-style and T5 models have no biases at all; true adds a zero bias to every linear layer
    # (except the output head) and trains those, which starts out equal to the base model
    add_missing_biases: bool = False


def _linear_layers(model: Any) -> list[tuple[str, Any]]:
    import torch

    head = model.get_output_embeddings()
    return [(name, module) for name, module in model.named_modules() if isinstance(module, torch.nn.Linear) and module is not head]


def add_biases(model: Any, module_names: list[str]) -> None:
    import torch

    for name in module_names:
        module = model.get_submodule(name)
        module.bias = torch.nn.Parameter(torch.zeros(module.out_features, dtype=module.weight.dtype, device=module.weight.device))


def build_bitfit(model: Any, settings: BitfitSettings, context: BuildContext) -> Any:
    added: list[str] = []
    if not any(name.endswith("bias") for name, _ in model.named_parameters()):
        if not settings.add_missing_biases:
            raise PeftlabError(f"bitfit trains bias terms, and {type(model).__name__} has none (Llama-style and T5 models use no biases); "
                               "pass --set bitfit.add_missing_biases=true to add zero biases to its linear layers and train those, "
                               "or choose ln-tuning, ia3 or lora")
        added = [name for name, module in _linear_layers(model) if module.bias is None]
        add_biases(model, added)
    model = in_fp32(model)
    model.added_biases = added
    return _train_only(model, {name for name, _ in model.named_parameters() if name.endswith("bias")})


# --- freeze -------------------------------------------------------------------------------------

@dataclass
class FreezeSettings:
    """Train the last N transformer blocks (for seq2seq: of the decoder) and any named modules; freeze the rest."""

    blocks: int = 2
    modules: str = ""  # comma-separated module names trained too, e.g. model.norm (substring of parameter names)

    def check(self) -> None:
        if self.blocks < 0:
            raise PeftlabError(f"freeze.blocks must be 0 or more, got {self.blocks}")
        if self.blocks == 0 and not self.modules.strip():
            raise PeftlabError("freeze trains nothing with freeze.blocks=0 and no freeze.modules; set one of them")


def last_block_list(model: Any) -> tuple[str, Any]:
    """The last list of transformer blocks in module order (the decoder's, for encoder-decoders)."""
    import torch

    lists = [(name, module) for name, module in model.named_modules()
             if isinstance(module, torch.nn.ModuleList) and len(module) and name.rsplit(".", 1)[-1] in BLOCK_LISTS]
    if not lists:
        raise PeftlabError(f"freeze: cannot find the transformer blocks of {type(model).__name__}; name what to train with freeze.modules and set freeze.blocks=0")
    return lists[-1]


def build_freeze(model: Any, settings: FreezeSettings, context: BuildContext) -> Any:
    prefixes = []
    if settings.blocks:
        list_name, blocks = last_block_list(model)
        if settings.blocks > len(blocks):
            raise PeftlabError(f"freeze.blocks={settings.blocks} but the model has {len(blocks)} blocks in {list_name}; use full to train everything")
        prefixes = [f"{list_name}.{index}." for index in range(len(blocks) - settings.blocks, len(blocks))]
    wanted = [name.strip() for name in settings.modules.split(",") if name.strip()]
    names = {name for name, _ in model.named_parameters()}
    unmatched = [w for w in wanted if not any(w in name for name in names)]
    if unmatched:
        raise PeftlabError(f"freeze.modules names no parameter of this model: {', '.join(unmatched)}; examples of names: {', '.join(sorted(names)[-3:])}")
    trained = {name for name in names if name.startswith(tuple(prefixes)) or any(w in name for w in wanted)}
    model = in_fp32(model)
    model.added_biases = []
    return _train_only(model, trained)


# --- saving and reloading the trained tensors ---------------------------------------------------

def save_trained_parameters(model: Any, folder: Path, method: str) -> None:
    from safetensors.torch import save_file

    Path(folder).mkdir(parents=True, exist_ok=True)
    trained = set(model.trained_parameters)
    tensors = {name: p.detach().contiguous().cpu() for name, p in model.named_parameters() if name in trained}
    save_file(tensors, str(Path(folder) / WEIGHTS_FILE), metadata={"format": "pt"})
    config = {"format": FORMAT, "method": method, "parameters": sorted(tensors), "added_biases": model.added_biases,
              "base_model_name_or_path": model.config.name_or_path}
    (Path(folder) / CONFIG_FILE).write_text(json.dumps(config, indent=2), encoding="utf-8")


def replace_parameter(model: Any, name: str, tensor: Any) -> None:
    """Put `tensor` in place of parameter `name` (and of every tied use of it) as a new tensor, never writing into the old one.

    `peftlab serve` builds each adapter on a module tree that shares the base's tensors: an
    in-place copy would change the base model for every request.
    """
    import torch

    old = model.get_parameter(name)
    new = torch.nn.Parameter(tensor.to(dtype=old.dtype, device=old.device), requires_grad=old.requires_grad)
    if new.shape != old.shape:
        raise RuntimeError(f"{name}: saved shape {tuple(new.shape)}, model shape {tuple(old.shape)}")
    for module in model.modules():
        for leaf, parameter in list(module._parameters.items()):
            if parameter is old:
                module._parameters[leaf] = new


def load_trained_parameters(base_model: Any, folder: Path) -> Any:
    import torch
    from safetensors.torch import load_file

    config = json.loads((Path(folder) / CONFIG_FILE).read_text(encoding="utf-8"))
    tensors = load_file(str(Path(folder) / WEIGHTS_FILE))
    if any(t.dtype == torch.float32 for t in tensors.values()):
        base_model = in_fp32(base_model)  # as it was trained
    try:
        add_biases(base_model, config["added_biases"])
        parameters = dict(base_model.named_parameters(remove_duplicate=False))
        for name, tensor in tensors.items():
            if name in parameters and parameters[name].shape == tensor.shape:  # the check every load passes names any other
                replace_parameter(base_model, name, tensor)
    except (AttributeError, KeyError, RuntimeError) as error:
        raise PeftlabError(f"trained parameters in {folder} do not fit this base model ({str(error).splitlines()[0]}); "
                           f"load the base model they were trained on ({config.get('base_model_name_or_path')})") from None
    return base_model


def trained_parameter_tensors(model: Any, folder: Path, adapter_name: str) -> Expected:
    """What `save_trained_parameters` writes: the parameters its config lists (those this base has), as loaded."""
    listed = json.loads((Path(folder) / CONFIG_FILE).read_text(encoding="utf-8")).get("parameters") or []
    parameters = dict(model.named_parameters(remove_duplicate=False))
    return Expected({name: parameters[name] for name in listed if name in parameters})


# --- LN tuning -------------------------------------------------------------------------------

@dataclass
class LnTuningSettings:
    """Zhao et al. 2024 (Tuning LayerNorm in Attention); peft's per-architecture norm layers."""


def build_ln_tuning(model: Any, settings: LnTuningSettings, context: BuildContext) -> Any:
    from peft import LNTuningConfig

    # peft trains copies of the norms in the model's dtype, and updates of ~1e-3 to weights near 1 round away in bf16
    model = in_fp32(model)
    return get_peft_model_checked(model, LNTuningConfig(task_type=peft_task_type(context.is_seq2seq)), "ln-tuning")


# small updates to bf16 weights round away: these train (and reload) in fp32
WHOLE_WEIGHTS = {"trains_in_fp32": True, "not_mergeable_because": "it is not a PEFT adapter (its trained weights are saved whole)"}
register(Method("bitfit", "Bias terms only (Ben Zaken et al. 2022); models without biases need bitfit.add_missing_biases=true",
                BitfitSettings, build_bitfit, save=lambda model, folder: save_trained_parameters(model, folder, "bitfit"),
                load=load_trained_parameters, saved_tensors=trained_parameter_tensors, **WHOLE_WEIGHTS))
register(Method("ln-tuning", "Normalization layers only (Zhao et al. 2024)", LnTuningSettings, build_ln_tuning,
                load=lambda base_model, folder: load_peft(in_fp32(base_model), folder), peft_type="LN_TUNING",
                mergeable=True, trains_in_fp32=True))
register(Method("freeze", "Only the last N blocks (and named modules) train; the rest is frozen", FreezeSettings, build_freeze,
                save=lambda model, folder: save_trained_parameters(model, folder, "freeze"), load=load_trained_parameters,
                saved_tensors=trained_parameter_tensors, lr=5e-5, **WHOLE_WEIGHTS))
