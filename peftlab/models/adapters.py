"""Base model + saved adapter folder -> a model ready to generate, refusing an adapter made for another base."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

from peftlab.errors import PeftlabError
from peftlab.models.loading import LoadedModel, load_model, resolve_source

ADAPTER_CONFIG = "adapter_config.json"
PEFTLAB_INFO = "peftlab.json"  # written by `peftlab train`: the base's label and the folder it loaded
RUN_FILE = "run.yaml"


def _holds_result(folder: Path) -> bool:
    """A PEFT adapter, or any method's result written by `peftlab train` (it records peftlab.json)."""
    return (folder / ADAPTER_CONFIG).is_file() or (folder / PEFTLAB_INFO).is_file()


def adapter_folder(path: str) -> Path:
    """The folder holding the trained result: DIR itself, or DIR/adapter of a training output."""
    folder = Path(path).expanduser()
    if not folder.is_dir():
        raise PeftlabError(f"adapter folder {path} does not exist; pass the adapter/ folder a `peftlab train` run wrote")
    if not _holds_result(folder) and _holds_result(folder / "adapter"):
        folder = folder / "adapter"
    if not _holds_result(folder):
        raise PeftlabError(
            f"{path} is not a PEFT adapter folder (no {ADAPTER_CONFIG}); pass the adapter/ folder inside a "
            "`peftlab train` output, e.g. --adapter runs/NAME/adapter"
        )
    return folder


def _read_json(path: Path) -> dict[str, Any]:
    try:
        data = json.loads(path.read_text(encoding="utf-8"))
    except (OSError, json.JSONDecodeError) as error:
        raise PeftlabError(f"{path} is not readable JSON ({error}); the adapter folder is damaged, train it again") from None
    if not isinstance(data, dict):
        raise PeftlabError(f"{path} does not hold a JSON object; the adapter folder is damaged, train it again")
    return data


def recorded_base(folder: Path) -> tuple[str | None, str | None]:
    """(label, loaded path) of the base the adapter was trained on, as far as the folder records it."""
    if (folder / PEFTLAB_INFO).is_file():
        info = _read_json(folder / PEFTLAB_INFO)
        return info.get("model"), info.get("model_path")
    base = _read_json(folder / ADAPTER_CONFIG).get("base_model_name_or_path")
    return base, base


def _same_source(a: str, b: str) -> bool:
    if Path(a).exists() and Path(b).exists():
        return Path(a).resolve() == Path(b).resolve()
    return a.rstrip("/") == b.rstrip("/")


def check_base(folder: Path, model_name: str | None) -> None:
    """Refuse a base other than the one the adapter was trained on (a peftlab adapter records it)."""
    label, path = recorded_base(folder)
    if not path or not (folder / PEFTLAB_INFO).is_file():
        return  # a foreign adapter: loading it below still catches shape mismatches
    wanted_label, wanted_path = resolve_source(model_name)
    if not _same_source(wanted_path, path):
        raise PeftlabError(
            f"adapter {folder} was trained on {_named(label, path)}, not on {_named(wanted_label, wanted_path)}; "
            "pass that base with --model, or omit --model to use it"
        )


def _named(label: str | None, path: str | None) -> str:
    return f"{label} ({path})" if label and path and label != path else str(label or path or "an unrecorded base")


def misfit_error(folder: Path, spec: str, error: Exception) -> PeftlabError:
    """One line for an adapter whose weights do not fit the base they are loaded onto."""
    label, path = recorded_base(folder)
    first = str(error).strip().splitlines()[0] if str(error).strip() else type(error).__name__
    if "size mismatch" in str(error):
        first = "its weight shapes do not match this model"
    return PeftlabError(
        f"adapter {folder} does not fit base {spec}: {first[:200]}; it was trained on {_named(label, path)}: "
        "pass that base with --model"
    )


def add_named_adapter(peft_model: Any, folder: Path, name: str, spec: str) -> None:
    """Load one more adapter of the same peft type into `peft_model` under `name` (several adapters, one base)."""
    try:
        peft_model.load_adapter(str(folder), adapter_name=name, is_trainable=False)
    except (RuntimeError, ValueError, KeyError) as error:
        raise misfit_error(folder, spec, error) from None


def recorded_model_name(folder: Path) -> str | None:
    """The --model the adapter's training run used (None = the embedded default); a foreign adapter's base path."""
    if (folder / RUN_FILE).is_file():
        from peftlab import config as cfg

        return cfg.load(str(folder / RUN_FILE)).model.name
    return recorded_base(folder)[1]


def load_adapted(adapter: str, model_name: str | None, dtype: str = "auto", attn_implementation: str = "sdpa") -> LoadedModel:
    """Load `model_name` (None = the embedded default) with the result in `adapter` applied.

    Any method's result: the method registry knows how each is reloaded (PEFT adapters, bottleneck
    adapters, trained-parameter files, whole models) and how its base must be loaded (4/8-bit).
    """
    from peftlab.methods import load_trained, saved_method

    folder = adapter_folder(adapter)
    check_base(folder, model_name)
    loaded = load_model(model_name, dtype, attn_implementation, saved_method(folder).quantization)
    try:
        loaded.model = load_trained(loaded.model, folder)
    except (RuntimeError, ValueError, KeyError) as error:
        raise misfit_error(folder, loaded.spec, error) from None
    return loaded
