"""A toy method written outside peftlab: importing this module registers "final-norm", as a family module of
peftlab.methods registers its methods when the catalog imports it."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import torch

from peftlab.errors import PeftlabError
from peftlab.methods import BuildContext, Method, register
from peftlab.methods.saved_tensors import Expected

WEIGHTS = "final_norm.safetensors"


@dataclass
class FinalNormSettings:
    """Train only the final normalization weight of a Llama-style model."""

    scale: float = 1.0  # multiplies the starting weight


def build_final_norm(model, settings: FinalNormSettings, context: BuildContext):
    norm = getattr(model.get_decoder(), "norm", None)
    if norm is None:  # as a real method says why it cannot apply (`peftlab methods --model` lists it so)
        raise PeftlabError(f"final-norm trains a Llama-style final norm, and {type(model).__name__} has none")
    for parameter in model.parameters():
        parameter.requires_grad = False
    norm.weight = torch.nn.Parameter(norm.weight.detach().clone() * settings.scale)
    return model


def save_final_norm(model, folder: Path) -> None:
    from safetensors.torch import save_file

    folder.mkdir(parents=True, exist_ok=True)
    save_file({"weight": model.get_decoder().norm.weight.detach().contiguous()}, str(folder / WEIGHTS))


def load_final_norm(base_model, folder: Path):
    from safetensors.torch import load_file

    # a new Parameter, not a copy into the old one: `serve` shares the base's tensors between models
    base_model.get_decoder().norm.weight = torch.nn.Parameter(load_file(str(folder / WEIGHTS))["weight"], requires_grad=False)
    return base_model


def final_norm_tensors(model, folder: Path, adapter_name: str) -> Expected:
    """What every load checks the weights file against: the one tensor, in the model's shape."""
    return Expected({"weight": model.get_decoder().norm.weight})


FINAL_NORM = register(Method("final-norm", "Only the final norm's weight (a test fixture)", FinalNormSettings, build_final_norm,
                             save=save_final_norm, load=load_final_norm, saved_tensors=final_norm_tensors, lr=0.1, servable=True))
