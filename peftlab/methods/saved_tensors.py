"""The check every load of a trained result passes: its weights file holds exactly the tensors that its config implies
on this base, each in the shape the base gives it, and every value is finite.

peft loads a file that lacks its adapter's tensors without an error (0.21.2 warns about missing keys and ignores
unexpected ones), and so does transformers for a whole model: an empty or renamed file would answer as the base. So
what the loaded model says the result must hold (each method knows: `Method.saved_tensors`) is compared with what the
file holds, here, for every method and every command.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from peftlab.errors import PeftlabError

BIN_WEIGHTS = ("adapter_model.bin", "pytorch_model.bin")  # read only where a folder has no safetensors file (older peft)


@dataclass
class Expected:
    """The tensors a result's weights file must hold (name as saved -> shape), and those it may hold besides."""

    required: dict[str, tuple[int, ...]]
    optional: dict[str, tuple[int, ...]] = field(default_factory=dict)


@dataclass
class SavedTensor:
    file: str
    shape: tuple[int, ...]
    nonfinite: int  # NaN and infinite values
    size: int


def _described(file: str, name: str, tensor: Any) -> SavedTensor:
    import torch

    nonfinite = int((~torch.isfinite(tensor)).sum()) if tensor.is_floating_point() or tensor.is_complex() else 0
    return SavedTensor(file, tuple(tensor.shape), nonfinite, tensor.numel())


def weights_files(folder: Path) -> list[Path]:
    files = sorted(Path(folder).glob("*.safetensors"))
    return files or [path for path in (Path(folder) / name for name in BIN_WEIGHTS) if path.is_file()]


def require_weights_file(folder: Path) -> None:
    """Before peft or transformers look for it (and, not finding it, look it up on the Hub)."""
    if not weights_files(folder):
        raise PeftlabError(f"adapter {folder} has no weights file (*.safetensors): it was not copied whole or its training "
                           "never finished; copy the whole folder, or train it again")


def read_saved_tensors(folder: Path) -> dict[str, SavedTensor]:
    """Every tensor of a result folder's weights files (one tensor in memory at a time), by its saved name."""
    import torch
    from safetensors import safe_open

    found: dict[str, SavedTensor] = {}
    for path in weights_files(folder):
        if path.suffix == ".safetensors":
            with safe_open(str(path), framework="pt") as weights:
                for name in weights.keys():
                    found[name] = _described(path.name, name, weights.get_tensor(name))
        else:
            tensors = torch.load(path, map_location="cpu", weights_only=True)  # weights_only: no code runs
            found.update({name: _described(path.name, name, tensor) for name, tensor in tensors.items()})
    return found


def _first(names: list[str]) -> str:
    return names[0] + (f" and {len(names) - 1} more" if len(names) > 1 else "")


def check_saved_tensors(folder: Path, expected: Expected, config_file: str) -> None:
    """Refuse, in one line naming the folder and the fault, a weights file other than `expected`: missing or extra
    tensors, another shape, a NaN or infinite value."""
    found = read_saved_tensors(folder)
    fix = "the file is damaged or was not written for this config: train it again"
    if not found:
        names = ", ".join(path.name for path in weights_files(folder))
        raise PeftlabError(f"adapter {folder}: its weights file {names} holds no tensors, where its {config_file} implies "
                           f"{len(expected.required)} on this base; {fix}")
    if not expected.required:
        raise PeftlabError(f"adapter {folder}: its {config_file} names no trained tensors on this base, so it would answer "
                           f"as the base; {fix}")
    missing = [name for name in expected.required if name not in found]
    extra = [name for name in found if name not in expected.required and name not in expected.optional]
    if missing or extra:
        parts = ([f"lacks {len(missing)} of the {len(expected.required)} tensors its {config_file} implies on this base "
                  f"({_first(missing)})"] if missing else []) + ([f"holds {len(extra)} it does not ({_first(extra)})"] if extra else [])
        raise PeftlabError(f"adapter {folder}: its weights file {' and '.join(parts)}; {fix}")
    for name, saved in found.items():
        wanted = expected.required.get(name, expected.optional.get(name))
        if saved.shape != wanted:
            raise PeftlabError(f"adapter {folder}: tensor {name} in {saved.file} has shape {saved.shape}, where its "
                               f"{config_file} on this base gives {wanted}; {fix}")
    for name, saved in found.items():
        if saved.nonfinite:
            raise PeftlabError(f"adapter {folder}: tensor {name} in {saved.file} holds {saved.nonfinite} NaN or infinite "
                               f"values (of {saved.size}); its training diverged or the file is damaged: train it again "
                               "(a lower train.lr)")


def peft_saved_tensors(model: Any, folder: Path, adapter_name: str) -> Expected:
    """What peft saves of adapter `adapter_name` of a loaded PeftModel (`get_peft_model_state_dict`, the function its
    save_pretrained calls): shapes from the layers its config built on this base. Embedding layers, which peft saves
    besides when the vocabulary was resized or an embedding is targeted, may be present."""
    from peft import get_peft_model_state_dict

    def shapes(embeddings: bool) -> dict[str, tuple[int, ...]]:
        state = get_peft_model_state_dict(model, adapter_name=adapter_name, save_embedding_layers=embeddings)
        return {name: tuple(tensor.shape) for name, tensor in state.items()}

    required = shapes(False)  # "auto" would read the base's config from its path or the Hub: not for a check
    return Expected(required, {k: v for k, v in shapes(True).items() if k not in required})


def whole_model_tensors(model: Any, folder: Path, adapter_name: str) -> Expected:
    """A whole saved model (full fine-tuning): every weight of its state_dict, less the tied copies transformers does
    not save (`all_tied_weights_keys`: {tied copy: source}), which may be present."""
    tied = getattr(model, "all_tied_weights_keys", None) or {}
    shapes = {name: tuple(tensor.shape) for name, tensor in model.state_dict().items()}
    return Expected({k: v for k, v in shapes.items() if k not in tied}, {k: v for k, v in shapes.items() if k in tied})
