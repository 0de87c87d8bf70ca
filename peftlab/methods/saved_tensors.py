"""The check every load of a trained result passes: its weights file holds exactly the tensors that its config implies
on this base, each in the shape the base gives it, and every value is finite.

peft loads a file that lacks its adapter's tensors without an error (0.21.2 warns about missing keys and ignores
unexpected ones), and so does transformers for a whole model: an empty or renamed file would answer as the base. So
what the loaded model says the result must hold (each method knows: `Method.saved_tensors`) is compared with what the
file holds, here, for every method and every command.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Any, Callable

from peftlab.errors import PeftlabError

BIN_WEIGHTS = ("adapter_model.bin", "pytorch_model.bin")  # read only where a folder has no safetensors file (older peft)


@dataclass
class Expected:
    """The tensors a result's weights file must hold, as the loaded model holds them (by their saved names), and those
    it may hold besides. Shapes are compared with the file's; values, once loaded, are the file's: checked finite."""

    required: dict[str, Any]
    optional: Callable[[], dict[str, Any]] = dict  # asked only of a file that holds more than `required`


@dataclass
class SavedTensor:
    file: str
    shape: tuple[int, ...]


class ShapeMismatch(ValueError):
    """A saved tensor whose shape is not the one the config gives on this base: the loaders (generation, serve, merge)
    turn it into one line naming the base the adapter was trained on."""


def weights_files(folder: Path) -> list[Path]:
    files = sorted(Path(folder).glob("*.safetensors"))
    return files or [path for path in (Path(folder) / name for name in BIN_WEIGHTS) if path.is_file()]


def require_weights_file(folder: Path) -> None:
    """Before peft or transformers look for it (and, not finding it, look it up on the Hub)."""
    if not weights_files(folder):
        raise PeftlabError(f"adapter {folder} has no weights file (*.safetensors): it was not copied whole or its training "
                           "never finished; copy the whole folder, or train it again")


def _file_tensors(path: Path) -> dict[str, Any]:
    import torch

    return torch.load(path, map_location="cpu", weights_only=True)  # weights_only: no code runs


def read_saved_shapes(folder: Path) -> dict[str, SavedTensor]:
    """Name and shape of every tensor in a result folder's weights files, from the safetensors headers (no data read)."""
    from safetensors import safe_open

    found: dict[str, SavedTensor] = {}
    for path in weights_files(folder):
        if path.suffix == ".safetensors":
            with safe_open(str(path), framework="pt") as weights:
                found.update({name: SavedTensor(path.name, tuple(weights.get_slice(name).get_shape())) for name in weights.keys()})
        else:
            found.update({name: SavedTensor(path.name, tuple(tensor.shape)) for name, tensor in _file_tensors(path).items()})
    return found


def _file_values(folder: Path) -> dict[str, Any]:
    from safetensors.torch import load_file

    values: dict[str, Any] = {}
    for path in weights_files(folder):
        values.update(load_file(str(path)) if path.suffix == ".safetensors" else _file_tensors(path))
    return values


def _first(names: list[str]) -> str:
    return names[0] + (f" and {len(names) - 1} more" if len(names) > 1 else "")


def check_saved_tensors(folder: Path, expected: Expected | None, config_file: str) -> None:
    """Refuse, in one line naming the folder and the fault, a weights file other than `expected`: missing or extra
    tensors, another shape, a NaN or infinite value (`expected` None: a method that does not say; then the file must
    hold some tensors, all finite)."""
    found = read_saved_shapes(folder)
    fix = "the file is damaged or was not written for this config: train it again"
    if not found:
        names = ", ".join(path.name for path in weights_files(folder))
        implied = f", where its {config_file} implies {len(expected.required)} on this base" if expected else ""
        raise PeftlabError(f"adapter {folder}: its weights file {names} holds no tensors{implied}; {fix}")
    if expected is None:
        _check_finite(_file_values(folder), found, folder)
        return
    if not expected.required:
        raise PeftlabError(f"adapter {folder}: its {config_file} names no trained tensors on this base, so it would answer "
                           f"as the base; {fix}")
    missing = [name for name in expected.required if name not in found]
    extra = [name for name in found if name not in expected.required]
    optional = expected.optional() if extra else {}
    extra = [name for name in extra if name not in optional]
    if missing or extra:
        parts = ([f"lacks {len(missing)} of the {len(expected.required)} tensors its {config_file} implies on this base "
                  f"({_first(missing)})"] if missing else []) + ([f"holds {len(extra)} it does not ({_first(extra)})"] if extra else [])
        raise PeftlabError(f"adapter {folder}: its weights file {' and '.join(parts)}; {fix}")
    for name, saved in found.items():
        wanted = tuple(expected.required[name].shape if name in expected.required else optional[name].shape)
        if saved.shape != wanted:  # most often an adapter of another base: its loaders say so (artifacts.misfit_error)
            raise ShapeMismatch(f"tensor {name} in {saved.file} has shape {saved.shape}, where its {config_file} on this "
                                f"base gives {wanted}")
    _check_finite(expected.required, found, folder)  # as loaded: the file's values, names and shapes matching


def _check_finite(tensors: dict[str, Any], found: dict[str, SavedTensor], folder: Path) -> None:
    import torch

    floating = ((name, tensor) for name, tensor in tensors.items() if tensor.is_floating_point())
    name, tensor = next(((name, tensor) for name, tensor in floating if not bool(torch.isfinite(tensor).all())), (None, None))
    if name is None:
        return
    raise PeftlabError(f"adapter {folder}: tensor {name} in {found[name].file} holds {int((~torch.isfinite(tensor)).sum())} "
                       f"NaN or infinite values (of {tensor.numel()}); its training diverged or the file is damaged: train "
                       "it again (a lower train.lr)")


def peft_saved_tensors(model: Any, folder: Path, adapter_name: str) -> Expected | None:
    """What peft saves of adapter `adapter_name` of a loaded PeftModel (`get_peft_model_state_dict`, the function its
    save_pretrained calls): shapes from the layers its config built on this base. Embedding layers, which peft saves
    besides when the vocabulary was resized or an embedding is targeted, may be present. None for a model peft did not
    build: a method of its own that does not declare `saved_tensors`."""
    from peft import get_peft_model_state_dict

    if not hasattr(model, "peft_config"):
        return None

    def shapes(embeddings: bool) -> dict[str, Any]:
        return get_peft_model_state_dict(model, adapter_name=adapter_name, save_embedding_layers=embeddings)

    # "auto" would read the base's config from its path or the Hub: not for a check. Each call takes about 0.3 s on
    # a 135M model with LoRA on every linear layer (peft walks the modules): the second only for a file with more
    return Expected(shapes(False), lambda: shapes(True))


def whole_model_tensors(model: Any, folder: Path, adapter_name: str) -> Expected:
    """A whole saved model (full fine-tuning): every weight of its state_dict, less the tied copies transformers does
    not save (`all_tied_weights_keys`: {tied copy: source}), which may be present."""
    tied = getattr(model, "all_tied_weights_keys", None) or {}
    state = model.state_dict()
    return Expected({k: v for k, v in state.items() if k not in tied}, lambda: {k: v for k, v in state.items() if k in tied})
