"""Bottleneck adapters (Houlsby et al. 2019; Pfeiffer et al. 2021), written here: peft has none.

Each adapter is down-projection -> nonlinearity -> up-projection with a residual connection,
applied to the output of a sublayer's output projection, before the block's residual sum:

- houlsby: after the self-attention output projection and after the feed-forward output,
- pfeiffer: after the feed-forward output only.

The up-projection starts at zero, so the adapted model starts out equal to the base model.

Saved format (peftlab-specific, in the shape of a PEFT folder):
- `adapter_config.json`: {"peft_type": "BOTTLENECK", "library": "peftlab", "placement", "reduction_factor",
  "activation", "bottleneck_size", "modules": [the projection modules adapted],
  "base_model_name_or_path"}
- `adapter_model.safetensors`: fp32 tensors `<module>.bottleneck_adapter.{down,up}.{weight,bias}`
  under the base model's own module names.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch
from torch import nn

from peftlab.artifacts import read_adapter_config, write_adapter_config
from peftlab.errors import PeftlabError
from peftlab.methods.base import BuildContext, Method, register
from peftlab.methods.saved_tensors import Expected
from peftlab.methods.targets import CROSS_ATTENTION, adaptable_modules, ends_with, output_features, role_modules

PEFT_TYPE = "BOTTLENECK"
WEIGHTS_FILE = "adapter_model.safetensors"
CHILD = "bottleneck_adapter"  # the adapter's name under the projection it follows
ACTIVATIONS = {"relu": nn.ReLU, "swish": nn.SiLU, "gelu": nn.GELU, "tanh": nn.Tanh}
PLACEMENT_ACTIVATION = {"houlsby": "swish", "pfeiffer": "relu"}  # AdapterHub's defaults per placement


@dataclass
class AdapterSettings:
    """AdapterHub's defaults: reduction factor 16 (bottleneck = hidden size / 16)."""

    placement: str = "houlsby"  # houlsby (after attention and feed-forward) | pfeiffer (after feed-forward)
    reduction_factor: int = 16
    activation: str = "auto"  # auto (swish for houlsby, relu for pfeiffer) | relu | swish | gelu | tanh

    def check(self) -> None:
        if self.placement not in PLACEMENT_ACTIVATION:
            raise PeftlabError(f"adapter.placement must be houlsby or pfeiffer, got '{self.placement}'")
        if self.reduction_factor < 1:
            raise PeftlabError(f"adapter.reduction_factor must be at least 1, got {self.reduction_factor}")
        if self.activation != "auto" and self.activation not in ACTIVATIONS:
            raise PeftlabError(f"adapter.activation must be auto or one of {', '.join(ACTIVATIONS)}, got '{self.activation}'")


class BottleneckAdapter(nn.Module):
    def __init__(self, hidden_size: int, bottleneck_size: int, activation: str):
        super().__init__()
        self.down = nn.Linear(hidden_size, bottleneck_size)
        self.activation = ACTIVATIONS[activation]()
        self.up = nn.Linear(bottleneck_size, hidden_size)
        nn.init.normal_(self.down.weight, std=1e-2)
        nn.init.zeros_(self.down.bias)
        nn.init.zeros_(self.up.weight)  # start as the identity
        nn.init.zeros_(self.up.bias)

    def forward(self, hidden_states: torch.Tensor) -> torch.Tensor:
        # computed in the adapter's dtype (fp32) whatever the base model's
        delta = self.up(self.activation(self.down(hidden_states.to(self.down.weight.dtype))))
        return hidden_states + delta.to(hidden_states.dtype)


def _apply_adapter(module: nn.Module, args: Any, output: torch.Tensor) -> torch.Tensor:
    return getattr(module, CHILD)(output)


def adapted_module_names(model: nn.Module, placement: str) -> list[str]:
    """The self-attention output (role o, houlsby only) and feed-forward output (role down) projections, by role
    in every family of the targets table; cross-attention outputs are left alone."""
    roles = ["o", "down"] if placement == "houlsby" else ["down"]
    suffixes = role_modules(model, roles, "adapter")
    return [name for name in adaptable_modules(model)
            if any(ends_with(name, suffix) for suffix in suffixes)
            and not any(f".{parent}." in f".{name}" for parent in CROSS_ATTENTION)]


def insert_adapters(model: nn.Module, config: dict[str, Any]) -> nn.Module:
    """Freeze the model and attach one fp32 adapter after each named projection (a forward hook applies it)."""
    for parameter in model.parameters():
        parameter.requires_grad = False
    for name in config["modules"]:
        projection = model.get_submodule(name)
        adapter = BottleneckAdapter(output_features(projection), config["bottleneck_size"], config["activation"])
        projection.add_module(CHILD, adapter.to(device=projection.weight.device))
        projection.register_forward_hook(_apply_adapter)
    model.bottleneck_config = config
    return model


def build_adapter(model: Any, settings: AdapterSettings, context: BuildContext) -> Any:
    names = adapted_module_names(model, settings.placement)
    hidden_size = output_features(model.get_submodule(names[0]))
    config = {
        "peft_type": PEFT_TYPE, "library": "peftlab", "placement": settings.placement,
        "reduction_factor": settings.reduction_factor,
        "activation": PLACEMENT_ACTIVATION[settings.placement] if settings.activation == "auto" else settings.activation,
        "bottleneck_size": max(1, hidden_size // settings.reduction_factor), "modules": names,
        "base_model_name_or_path": model.config.name_or_path,
    }
    return insert_adapters(model, config)


def save_adapter(model: Any, folder: Path) -> None:
    from safetensors.torch import save_file

    Path(folder).mkdir(parents=True, exist_ok=True)
    tensors = {name: tensor.detach().contiguous().cpu() for name, tensor in model.state_dict().items() if f".{CHILD}." in name}
    save_file(tensors, str(Path(folder) / WEIGHTS_FILE), metadata={"format": "pt"})
    write_adapter_config(folder, model.bottleneck_config)


def load_adapter(base_model: Any, folder: Path) -> Any:
    from safetensors.torch import load_file

    config = read_adapter_config(folder)
    try:
        insert_adapters(base_model, config)
    except AttributeError as error:  # get_submodule: the saved module names are not in this model
        raise PeftlabError(f"adapter in {folder} does not fit this base model ({error}); load the base model it was trained on "
                           f"({config.get('base_model_name_or_path')})") from None
    tensors = load_file(str(Path(folder) / WEIGHTS_FILE))
    model_tensors = base_model.state_dict()
    # only the tensors that fit: the check every load passes (`load_trained`) names any other, and any missing one
    fitting = {name: tensor for name, tensor in tensors.items()
               if f".{CHILD}." in name and name in model_tensors and model_tensors[name].shape == tensor.shape}
    base_model.load_state_dict(fitting, strict=False)
    return base_model


def adapter_tensors(model: Any, folder: Path, adapter_name: str) -> Expected:
    """What `save_adapter` writes: every tensor of the inserted adapters."""
    return Expected({name: tensor for name, tensor in model.state_dict().items() if f".{CHILD}." in name})


register(Method("adapter", "Bottleneck adapters after attention and/or feed-forward outputs (Houlsby 2019, Pfeiffer 2021)",
                AdapterSettings, build_adapter, save=save_adapter, load=load_adapter, saved_tensors=adapter_tensors, peft_type=PEFT_TYPE,
                not_mergeable_because="bottleneck adapters add layers, which no weight of the base can absorb"))
