"""Damaged copies of a saved result's weights file, as a careless copy, another tool or a diverged run leaves them."""

from __future__ import annotations

import shutil
from pathlib import Path

DAMAGES = {
    # damage -> what the refusal says
    "empty": "holds no tensors",  # a safetensors file with no tensors in it
    "renamed": "lacks",  # every key renamed (a state dict saved from a DDP-wrapped model: "module." in front)
    "shape": "has shape",  # one tensor a row short
    "nan": "NaN or infinite",  # one value of one tensor NaN
    "missing": "has no weights file",  # the weights file not copied
}


def weights_file(folder: Path) -> Path:
    files = sorted(Path(folder).glob("*.safetensors"))
    assert len(files) == 1, files
    return files[0]


def damage_weights(folder: Path, damage: str) -> None:
    """Rewrite the weights file of the result in `folder` (real safetensors bytes) with `damage` (see DAMAGES)."""
    import torch
    from safetensors.torch import load_file, save_file

    path = weights_file(folder)
    if damage == "missing":
        path.unlink()
        return
    tensors = load_file(str(path))
    first = sorted(tensors)[0]
    if damage == "empty":
        tensors = {}
    elif damage == "renamed":
        tensors = {f"module.{name}": tensor for name, tensor in tensors.items()}
    elif damage == "shape":
        tensors[first] = tensors[first][:-1].clone()
    elif damage == "nan":
        tensors[first] = tensors[first].clone()
        tensors[first].view(-1)[0] = float("nan")
    else:
        raise ValueError(damage)
    save_file({name: tensor.contiguous() for name, tensor in tensors.items()}, str(path), metadata={"format": "pt"})
    if damage in ("shape", "nan"):
        assert bool(torch.isnan(load_file(str(path))[first]).any()) == (damage == "nan")


def damaged_copy(folder: str | Path, destination: Path, damage: str) -> str:
    """A copy of the result folder `folder` at `destination`, its weights damaged."""
    copy = Path(shutil.copytree(folder, destination))
    damage_weights(copy, damage)
    return str(copy)
