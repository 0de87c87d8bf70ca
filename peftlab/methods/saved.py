"""Reload any method's saved result onto a base model: the folder (read by `peftlab.artifacts`) says which method wrote it."""

from __future__ import annotations

import dataclasses
import types
import typing
from pathlib import Path
from typing import Any

from peftlab.artifacts import ADAPTER_CONFIG, MODEL_CONFIG, TRAINED_PARAMETERS, SavedResult, read_saved
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


PEFT_WEIGHTS = ("adapter_model.safetensors", "adapter_model.bin")  # the names peft saves an adapter's weights under


def _fits(value: Any, hint: Any) -> bool:
    """Whether a JSON value has a config field's declared type; hints beyond plain scalars and their unions pass."""
    origin = typing.get_origin(hint)
    if origin in (typing.Union, types.UnionType):
        return any(_fits(value, arg) for arg in typing.get_args(hint))
    if hint is type(None):
        return value is None
    if hint is bool:
        return isinstance(value, bool)
    if hint is int:
        return isinstance(value, int) and not isinstance(value, bool)
    if hint is float:
        return isinstance(value, (int, float)) and not isinstance(value, bool)
    if hint is str:
        return isinstance(value, str)
    return True


def check_peft_config(config: dict[str, Any], folder: Path) -> None:
    """adapter_config.json is a config peft can build, with its weights beside it: refused in one line otherwise,
    before peft would fail deep inside a model (a wrong type) or look for the weights on the Hub. peft 0.21 checks
    neither the field types of a config read from a file nor, offline, says which file is missing."""
    from peft.mapping import PEFT_TYPE_TO_CONFIG_MAPPING

    if config.get("library") == "peftlab":
        return  # peftlab's own format (the bottleneck adapter), checked by its loader
    where = folder / ADAPTER_CONFIG
    peft_type = config.get("peft_type")
    config_class = PEFT_TYPE_TO_CONFIG_MAPPING.get(peft_type) if isinstance(peft_type, str) else None
    if config_class is None:
        raise PeftlabError(f"{where} is not a valid PEFT adapter config: peft_type {peft_type!r} is not one peft knows; "
                           "the adapter folder is damaged, train it again")
    try:
        hints = typing.get_type_hints(config_class)
    except (NameError, TypeError):  # a hint naming a type peft imports only for checkers
        hints = {}
    for field in dataclasses.fields(config_class):
        if field.name in config and field.name in hints and not _fits(config[field.name], hints[field.name]):
            raise PeftlabError(f"{where} is not a valid PEFT adapter config: {field.name} is {config[field.name]!r}, not "
                               f"{_hint_name(hints[field.name])}; the adapter folder is damaged, train it again")
    if not any((folder / name).is_file() for name in PEFT_WEIGHTS):
        raise PeftlabError(f"adapter folder {folder} has no weights ({' or '.join(PEFT_WEIGHTS)}); it is incomplete: "
                           "copy the whole folder, or train it again")


def _hint_name(hint: Any) -> str:
    return " or ".join(getattr(arg, "__name__", str(arg)).replace("NoneType", "null") for arg in typing.get_args(hint) or (hint,))


def method_of(saved: SavedResult) -> Method:
    if saved.adapter_config is not None:
        check_peft_config(saved.adapter_config, saved.folder)
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


def _config_file(saved: SavedResult) -> str:
    """The file that says what the weights file must hold, as a person finds it in the folder."""
    if saved.adapter_config is not None:
        return ADAPTER_CONFIG
    return TRAINED_PARAMETERS if saved.trained_parameters is not None else MODEL_CONFIG


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
    check_saved_tensors(saved.folder, method.saved_tensors(model, saved.folder, adapter_name), _config_file(saved))
    return model
