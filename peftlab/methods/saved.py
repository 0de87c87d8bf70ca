"""Reload any method's saved result onto a base model: the folder says which method wrote it."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

from peftlab.errors import PeftlabError
from peftlab.methods.registry import Method, get_method

RUN_INFO = "peftlab.json"  # written by `peftlab train` beside the method's own files
# adapter_config.json's peft_type -> our method (LoRA variants are told apart by their flags below)
PEFT_TYPE_METHODS = {"LORA": "lora", "ADALORA": "adalora", "LOHA": "loha", "LOKR": "lokr", "IA3": "ia3",
                     "PROMPT_TUNING": "prompt-tuning", "PREFIX_TUNING": "prefix-tuning", "P_TUNING": "p-tuning",
                     "LN_TUNING": "ln-tuning", "BOTTLENECK": "adapter"}


def _folder(folder: str | Path) -> Path:
    folder = Path(folder)
    if (folder / "adapter").is_dir() and not (folder / RUN_INFO).is_file():
        folder = folder / "adapter"  # a run folder: its result lives in DIR/adapter
    if not folder.is_dir():
        raise PeftlabError(f"trained model folder {folder} does not exist; point at the output of `peftlab train` (DIR or DIR/adapter)")
    return folder


def saved_method(folder: str | Path) -> Method:
    """The method that wrote `folder`: from peftlab.json, else recognised by its files."""
    from peftlab.methods import bottleneck, selective

    folder = _folder(folder)
    if (folder / RUN_INFO).is_file():
        name = json.loads((folder / RUN_INFO).read_text(encoding="utf-8")).get("method")
        if name:
            return get_method(name)
    if (folder / bottleneck.CONFIG_FILE).is_file():
        config = json.loads((folder / bottleneck.CONFIG_FILE).read_text(encoding="utf-8"))
        name = PEFT_TYPE_METHODS.get(config.get("peft_type"), "lora")  # other peft types reload as lora does
        if name == "lora":
            name = "dora" if config.get("use_dora") else "rslora" if config.get("use_rslora") else "lora"
        return get_method(name)
    if (folder / selective.CONFIG_FILE).is_file():
        return get_method(json.loads((folder / selective.CONFIG_FILE).read_text(encoding="utf-8"))["method"])
    if (folder / "config.json").is_file():
        return get_method("full")
    raise PeftlabError(f"{folder} holds no trained model (no adapter_config.json, {selective.CONFIG_FILE} or config.json); "
                       "point at the output of `peftlab train`")


def load_trained(base_model: Any, folder: str | Path) -> Any:
    """Apply the result saved in `folder` (a run's DIR or DIR/adapter) to `base_model`; returns the trained model.

    The base model must be loaded as for training: qlora / lora-8bit results want the base loaded
    with `load_model(..., quantization=saved_method(folder).quantization)`.
    """
    folder = _folder(folder)
    return saved_method(folder).load(base_model, folder)
