"""The output folder: refuse to clobber another run, find what to resume, save results atomically."""

from __future__ import annotations

import json
import shutil
from pathlib import Path
from typing import Any

import yaml

from peftlab import atomic
from peftlab.config import RunConfig
from peftlab.errors import PeftlabError

RUN_FILE = "run.yaml"
ADAPTER = "adapter"
CHECKPOINTS = "checkpoints"


def _flatten(data: Any, prefix: str = "") -> dict[str, Any]:
    if isinstance(data, dict):
        flat: dict[str, Any] = {}
        for key, value in data.items():
            flat.update(_flatten(value, f"{prefix}{key}."))
        return flat
    return {prefix.rstrip("."): data}


def config_differences(old: dict[str, Any], new: dict[str, Any]) -> list[str]:
    a, b = _flatten(old), _flatten(new)
    return sorted(key for key in a.keys() | b.keys() if a.get(key) != b.get(key))


def check(config: RunConfig, resume: bool, overwrite: bool) -> Path:
    """Refuse an output folder that holds something else, before anything slow runs (reads only)."""
    if not config.output:
        raise PeftlabError("no output folder; pass --output DIR")
    out = Path(config.output)
    if out.exists() and not out.is_dir():
        raise PeftlabError(f"output {out} is a file, not a folder; choose another --output")
    run_file = out / RUN_FILE
    if out.is_dir() and any(out.iterdir()) and not overwrite:
        if not run_file.is_file():
            raise PeftlabError(f"output folder {out} is not empty and holds no peftlab run; choose another --output or pass --overwrite")
        old = yaml.safe_load(run_file.read_text(encoding="utf-8")) or {}
        changed = config_differences(old, config.to_dict())
        if changed:
            raise PeftlabError(f"output folder {out} holds a different run (differs in {', '.join(changed[:5])}); pass --overwrite to replace it or choose another --output")
        if (out / ADAPTER).is_dir():
            raise PeftlabError(f"output folder {out} already holds this finished run; pass --overwrite to train it again")
        if not resume:
            raise PeftlabError(f"output folder {out} holds an unfinished run of this config; pass --resume to continue it or --overwrite to start over")
    return out


def initialize(out: Path, config: RunConfig, overwrite: bool) -> None:
    """Empty the folder if asked, and write the resolved config into it (the main process only)."""
    if overwrite and out.is_dir():
        for entry in out.iterdir():
            shutil.rmtree(entry) if entry.is_dir() else entry.unlink()
    try:
        out.mkdir(parents=True, exist_ok=True)
        atomic.write_text(out / RUN_FILE, config.to_yaml())
    except PermissionError:
        raise PeftlabError(f"output folder {out} is not writable; choose another --output") from None
    except OSError as error:
        raise PeftlabError(f"cannot write to output folder {out}: {error.strerror}; choose another --output") from None


def last_checkpoint(out: Path) -> str | None:
    from transformers.trainer_utils import get_last_checkpoint

    folder = out / CHECKPOINTS
    return get_last_checkpoint(str(folder)) if folder.is_dir() else None


def save_adapter(out: Path, model: Any, tokenizer: Any, config: RunConfig, info: dict[str, Any]) -> Path:
    """Write DIR/adapter in the method's format, with tokenizer and run config, all at once."""
    from peftlab.methods import get_method

    target = out / ADAPTER
    with atomic.folder(target) as tmp:
        get_method(config.method).save(model, tmp)
        tokenizer.save_pretrained(tmp)
        (tmp / RUN_FILE).write_text(config.to_yaml(), encoding="utf-8")
        (tmp / "peftlab.json").write_text(json.dumps(info, indent=2), encoding="utf-8")
    return target


def write_json(path: Path, data: dict[str, Any]) -> None:
    atomic.write_text(path, json.dumps(data, indent=2) + "\n")
