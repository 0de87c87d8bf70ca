"""Reload any method's saved result onto a base model: the folder (read by `peftlab.artifacts`) says which method wrote it."""

from __future__ import annotations

from pathlib import Path
from typing import Any

from peftlab.artifacts import SavedResult, read_saved
from peftlab.errors import PeftlabError
from peftlab.methods.base import Method, get_method, load_peft, method_names
from peftlab.methods.saved_tensors import check_saved_tensors, require_weights_file


def method_for_adapter_config(config: dict[str, Any], folder: Path) -> Method:
    """The method whose saved result an adapter_config.json describes: its peft_type, and the most specific flags set."""
    peft_type = config.get("peft_type")
    candidates = [get_method(name) for name in method_names() if get_method(name).peft_type == peft_type]
    matching = [m for m in candidates if all(config.get(flag) for flag in m.peft_flags)]
    if not matching:
        known = sorted({get_method(name).peft_type for name in method_names()} - {None})
        raise PeftlabError(f"the adapter in {folder} has peft_type {peft_type!r}, which no peftlab method loads "
                           f"(known: {', '.join(known)}); use the tool that wrote it, or train with `peftlab train`")
    return max(matching, key=lambda m: len(m.peft_flags))


def method_of(saved: SavedResult) -> Method:
    if saved.method:
        return get_method(saved.method)
    if saved.adapter_config is not None:
        return method_for_adapter_config(saved.adapter_config, saved.folder)
    if saved.trained_parameters is not None:
        return get_method(saved.trained_parameters["method"])
    if saved.whole_model:
        return get_method("full")
    raise PeftlabError(f"{saved.folder} holds no trained model (no PEFT adapter, trained parameters or whole model); "
                       "point at the output of `peftlab train`")


def saved_method(folder: str | Path) -> Method:
    """The method that wrote `folder` (DIR or DIR/adapter): from peftlab.json, else recognised by its files."""
    return method_of(read_saved(folder))


def shares_mixed_batches(folder: str | Path) -> bool:
    """Whether the rows of this saved result can share a forward pass with other LoRA adapters' (peft's adapter_names):
    the method's capability, unless its adapter also trains token rows (lora.trainable_tokens). peft 0.21.2's mixed
    batch asks every row's adapter for token rows and raises KeyError on an adapter without them."""
    saved = read_saved(folder)
    return method_of(saved).mixable and not (saved.adapter_config or {}).get("trainable_token_indices")


def load_trained(base_model: Any, folder: str | Path, adapter_name: str | None = None) -> Any:
    """Apply the result saved in `folder` (a run's DIR or DIR/adapter) to `base_model`; returns the trained model.

    Every command that loads a trained result comes here, and so every load is checked: the weights file holds
    exactly the tensors the config implies on this base, in shape, all finite (else a PeftlabError naming the
    folder). `adapter_name`: load a PEFT adapter under that name (serve keeps several LoRA adapters in one model).
    The base model must be loaded as for training: qlora / lora-8bit results want the base loaded
    with `load_model(..., quantization=saved_method(folder).quantization)`.
    """
    saved = read_saved(folder)
    method = method_of(saved)
    require_weights_file(saved.folder)
    if adapter_name is None:
        model, adapter_name = method.load(base_model, saved.folder), "default"
    else:
        model = load_peft(base_model, saved.folder, adapter_name)
    check_saved_tensors(saved.folder, method.saved_tensors(model, saved.folder, adapter_name), saved.config_file)
    return model
