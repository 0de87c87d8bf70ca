"""The on-disk formats, in one place: run folder, adapter folder, peftlab.json, run.yaml, summary.json,
adapter_config.json (read only here). The rule for writing them is `peftlab.outputs`.

A training run folder DIR holds run.yaml (the resolved config), log.jsonl, checkpoints/,
summary.json, and DIR/adapter: the trained result in its method's format beside peftlab.json
(base model and method), run.yaml and the tokenizer. Anything that takes "an adapter" takes DIR
or DIR/adapter, and a folder written by another tool (a plain PEFT adapter, a saved model).
"""

from __future__ import annotations

import dataclasses
import json
import re
import types
import typing
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Callable

import yaml

from peftlab import atomic, outputs
from peftlab import config as cfg
from peftlab.config import RunConfig
from peftlab.errors import PeftlabError
from peftlab.models.loading import resolve_source

RUN_FILE = "run.yaml"  # the resolved run config, in the run folder and in its adapter folder
RUN_INFO = "peftlab.json"  # written by `peftlab train` beside the result: the base's label and path, the method
SUMMARY = "summary.json"  # the training run's measurements
LOSS_LOG = "log.jsonl"
ADAPTER_DIR = "adapter"
CHECKPOINTS = "checkpoints"
ADAPTER_CONFIG = "adapter_config.json"  # PEFT's format (and the bottleneck adapter's, in its shape)
TRAINED_PARAMETERS = "trained_parameters.json"  # selective methods' format (bitfit, freeze)
MODEL_CONFIG = "config.json"  # a whole transformers model (full fine-tuning)
RESULT_FILES = (RUN_INFO, ADAPTER_CONFIG, TRAINED_PARAMETERS, MODEL_CONFIG)
TENSORBOARD_DIR = "tensorboard"  # train.report_to=tensorboard logs there
RUN_OUTPUT = outputs.OutputKind("peftlab run", (RUN_FILE,), (RUN_FILE, LOSS_LOG, SUMMARY, ADAPTER_DIR, CHECKPOINTS, TENSORBOARD_DIR))


# --- the adapter folder -------------------------------------------------------------------------

def holds_result(folder: Path) -> bool:
    """A trained result in any method's format, from `peftlab train` or another tool."""
    return any((folder / name).is_file() for name in RESULT_FILES)


def adapter_folder(path: str | Path) -> Path:
    """The folder holding the trained result: DIR itself, or DIR/adapter of a training output."""
    folder = Path(path).expanduser()
    if not folder.is_dir():
        raise PeftlabError(f"adapter folder {path} does not exist; pass the adapter/ folder a `peftlab train` run wrote")
    if not holds_result(folder) and holds_result(folder / ADAPTER_DIR):
        folder = folder / ADAPTER_DIR
    if not holds_result(folder):
        raise PeftlabError(
            f"{path} is not a PEFT adapter folder (no {ADAPTER_CONFIG}); pass the adapter/ folder inside a "
            "`peftlab train` output, e.g. --adapter runs/NAME/adapter"
        )
    return folder


ADAPTER_DAMAGED = "the adapter folder is damaged, train it again"


def read_json(path: Path, damaged: str = ADAPTER_DAMAGED) -> dict[str, Any]:
    """A JSON object from `path`; `damaged` says, for a person, what a damaged file means and the fix."""
    try:
        data = json.loads(path.read_text(encoding="utf-8"))
    except (OSError, UnicodeDecodeError, json.JSONDecodeError) as error:
        raise PeftlabError(f"{path} is not readable JSON ({str(error)[:200]}); {damaged}") from None
    if not isinstance(data, dict):
        raise PeftlabError(f"{path} does not hold a JSON object; {damaged}")
    return data


def read_adapter_config(folder: Path) -> dict[str, Any] | None:
    """adapter_config.json of a folder (None when it has none): the one place that reads it."""
    path = Path(folder) / ADAPTER_CONFIG
    return read_json(path) if path.is_file() else None


def write_adapter_config(folder: Path, config: dict[str, Any]) -> None:
    Path(folder).mkdir(parents=True, exist_ok=True)
    (Path(folder) / ADAPTER_CONFIG).write_text(json.dumps(config, indent=2), encoding="utf-8")


def read_run_info(folder: Path) -> dict[str, Any] | None:
    """peftlab.json of a result folder (None for a result another tool wrote)."""
    path = Path(folder) / RUN_INFO
    return read_json(path) if path.is_file() else None


def write_run_info(folder: Path, info: dict[str, Any]) -> None:
    """peftlab.json of a result folder peftlab wrote, listing the files it wrote there (itself too)."""
    info = {**info, "files": sorted({entry.name for entry in Path(folder).iterdir()} | {RUN_INFO})}
    (Path(folder) / RUN_INFO).write_text(json.dumps(info, indent=2), encoding="utf-8")


# a LoRA adapter written by `peftlab export --format lora`: a PEFT folder whose peftlab.json lists its files
CONVERTED_LORA = outputs.OutputKind("converted LoRA adapter", (ADAPTER_CONFIG,),
                                    (ADAPTER_CONFIG, "adapter_model.safetensors", RUN_INFO, RUN_FILE),
                                    lambda folder: (read_run_info(folder) or {}).get("files", []))


def run_config_path(folder: Path) -> str | None:
    """run.yaml of a run or adapter folder, to load with overrides (None when the folder records none)."""
    path = Path(folder) / RUN_FILE
    return str(path) if path.is_file() else None


def read_run_config(folder: Path) -> RunConfig | None:
    """The run config recorded in a run or adapter folder (None when it records none)."""
    path = run_config_path(folder)
    return cfg.load(path) if path else None


@dataclass
class SavedResult:
    """What a result folder says about itself; the method registry turns it into a method."""

    folder: Path
    method: str | None  # named by peftlab.json
    adapter_config: dict[str, Any] | None
    trained_parameters: dict[str, Any] | None  # the selective format's config
    whole_model: bool  # a complete transformers model (full fine-tuning)

    @property
    def config_file(self) -> str:
        """The file that says what the weights file must hold, as a person finds it in the folder."""
        if self.adapter_config is not None:
            return ADAPTER_CONFIG
        return TRAINED_PARAMETERS if self.trained_parameters is not None else MODEL_CONFIG


def check_weight_files(folder: Path) -> None:
    """Every safetensors file of a result folder opens whole (its header covers the file): a truncated one is named before any model loads."""
    from safetensors import SafetensorError, safe_open

    for path in sorted(folder.glob("*.safetensors")):
        try:
            with safe_open(str(path), framework="np"):
                pass
        except (SafetensorError, OSError) as error:
            detail = str(error).strip().splitlines()[0] if str(error).strip() else type(error).__name__
            raise PeftlabError(f"{path} is damaged ({detail}); the adapter folder is incomplete, train it again") from None


def _fits(value: Any, hint: Any) -> bool:
    """Whether a JSON value has a config field's declared type; hints beyond plain scalars and their unions pass,
    and so does null (peft 0.21 declares many fields `int = None` and saves them as null)."""
    if value is None:
        return True
    origin = typing.get_origin(hint)
    if origin in (typing.Union, types.UnionType):
        return any(_fits(value, arg) for arg in typing.get_args(hint))
    if hint is type(None):
        return False
    if hint is bool:
        return isinstance(value, bool)
    if hint is int:
        return isinstance(value, int) and not isinstance(value, bool)
    if hint is float:
        return isinstance(value, (int, float)) and not isinstance(value, bool)
    if hint is str:
        return isinstance(value, str)
    return True


def check_adapter_config(config: dict[str, Any], folder: Path) -> None:
    """adapter_config.json is a config peft can build: refused in one line otherwise, naming the file, before peft
    would fail deep inside a model (peft 0.21 does not check the field types of a config read from a file) or the
    failure be reported as a base the adapter "does not fit"."""
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


def _hint_name(hint: Any) -> str:
    return " or ".join(getattr(arg, "__name__", str(arg)).replace("NoneType", "null") for arg in typing.get_args(hint) or (hint,))


def read_saved(path: str | Path) -> SavedResult:
    """Read any method's saved result folder (DIR or DIR/adapter)."""
    folder = adapter_folder(path)
    check_weight_files(folder)
    info = read_run_info(folder) or {}
    selective = folder / TRAINED_PARAMETERS
    adapter_config = read_adapter_config(folder)
    if adapter_config is not None:
        check_adapter_config(adapter_config, folder)
    return SavedResult(folder, info.get("method"), adapter_config,
                       read_json(selective) if selective.is_file() else None, (folder / MODEL_CONFIG).is_file())


def recorded_base(folder: Path) -> tuple[str | None, str | None]:
    """(label, loaded path) of the base the adapter was trained on, as far as the folder records it."""
    info = read_run_info(folder)
    if info is not None:
        return info.get("model"), info.get("model_path")
    selective = folder / TRAINED_PARAMETERS
    config = read_adapter_config(folder) or (read_json(selective) if selective.is_file() else {})
    base = config.get("base_model_name_or_path")
    return base, base


def recorded_model_name(folder: Path) -> str | None:
    """The --model the adapter's training run used (None = the embedded default); a foreign adapter's base path."""
    recorded = read_run_config(folder)
    return recorded.model.name if recorded else recorded_base(folder)[1]


def recorded_attn_implementation(folder: Path) -> str:
    """The attention implementation the adapter's training run loaded its base with ("auto" when none is recorded)."""
    recorded = read_run_config(folder)
    return recorded.model.attn_implementation if recorded else "auto"


CONVERTED = re.compile(r".+-[0-9a-f]{16}")  # a converted GGUF's cache folder: its name hashes the file and the converting code


def _same_source(a: str, b: str) -> bool:
    if Path(a).exists() and Path(b).exists() and Path(a).resolve() == Path(b).resolve():
        return True
    name = Path(a.rstrip("/")).name
    if CONVERTED.fullmatch(name) and name == Path(b.rstrip("/")).name:
        return True  # the same GGUF model converted in another cache ($PEFTLAB_CACHE, another machine)
    return a.rstrip("/") == b.rstrip("/")


def check_base(folder: Path, model_name: str | None) -> None:
    """Refuse a base other than the one the adapter was trained on (a peftlab adapter records it)."""
    label, path = recorded_base(folder)
    if not path or read_run_info(folder) is None:
        return  # a foreign adapter: loading it still catches shape mismatches
    wanted_label, wanted_path = resolve_source(model_name)
    if not _same_source(wanted_path, path):
        raise PeftlabError(
            f"adapter {folder} was trained on {_named(label, path)}, not on {_named(wanted_label, wanted_path)}; "
            "pass that base with --model, or omit --model to use it"
        )


def _named(label: str | None, path: str | None) -> str:
    return f"{label} ({path})" if label and path and label != path else str(label or path or "an unrecorded base")


def misfit_error(folder: Path, spec: str, error: Exception) -> PeftlabError:
    """An adapter whose weights do not fit the loaded base, in one line naming the base it wants."""
    first = str(error).strip().splitlines()[0] if str(error).strip() else type(error).__name__
    label, path = recorded_base(folder)
    return PeftlabError(
        f"adapter {folder} does not fit base {spec}: {first[:200]}; it was trained on {_named(label, path)}: "
        "pass that base with --model"
    )


# --- the training run folder --------------------------------------------------------------------

def _flatten(data: Any, prefix: str = "") -> dict[str, Any]:
    if isinstance(data, dict):
        flat: dict[str, Any] = {}
        for key, value in data.items():
            flat.update(_flatten(value, f"{prefix}{key}."))
        return flat
    return {prefix.rstrip("."): data}


def config_differences(old: dict[str, Any], new: dict[str, Any], defaults: dict[str, Any] | None = None) -> list[str]:
    """Keys whose values differ. With `defaults`, a setting absent from `old` (added since it was recorded) held its
    default there: it differs only when `new` sets another value."""
    a, b = _flatten(old), _flatten(new)
    if defaults is not None:
        a = {**{k: v for k, v in _flatten(defaults).items() if k in b}, **a}
    return sorted(key for key in a.keys() | b.keys() if a.get(key) != b.get(key))


def recorded_differences(path: Path, current: dict[str, Any], defaults: dict[str, Any] | None = None) -> list[str] | None:
    """Settings in which the YAML recorded at `path` (run.yaml, compare.yaml) differs from `current` (None: nothing recorded)."""
    if not path.is_file():
        return None
    try:
        old = yaml.safe_load(path.read_text(encoding="utf-8")) or {}
    except (OSError, yaml.YAMLError):
        return [f"{path.name} (unreadable)"]
    return config_differences(old if isinstance(old, dict) else {}, current, defaults)


def _recorded_run_differences(folder: Path, config: RunConfig) -> list[str] | None:
    """Where the run computes (model.device) is not part of what it is: a run may resume on another device."""
    changed = recorded_differences(folder / RUN_FILE, config.to_dict(), RunConfig().to_dict())
    return None if changed is None else [key for key in changed if key != "model.device"]


@dataclass
class RunFolder:
    """Where a training run's result lives (`final`) and where this run is built (`work`).

    `work` is `final` itself, unless --overwrite replaces an earlier run: then the new run is built
    in a staging folder beside it and renamed over it only when it has finished, so a failed or
    interrupted new run never costs the old result.
    """

    final: Path
    work: Path
    continue_work: bool  # resume what is in `work` (else it starts empty)

    @property
    def replaces(self) -> bool:
        return self.work != self.final

    def resume_hint(self) -> str:
        return "rerun with --overwrite --resume" if self.replaces else "rerun with --resume"


def check_run_output(config: RunConfig, resume: bool, overwrite: bool, config_file: str | None = None) -> RunFolder:
    """Decide where the run is built, refusing a folder that holds something else or an input (reads only)."""
    if not config.output:
        raise PeftlabError("no output folder; pass --output DIR")
    sources = outputs.inputs(data=config.data.train, eval_data=config.data.eval, model=config.model.name, config=config_file)
    out = outputs.check_folder(config.output, overwrite, RUN_OUTPUT, sources, continuable=True)
    staging = outputs.staging_folder(out)
    if overwrite:
        if not outputs.holds_something(out):
            return RunFolder(out, out, continue_work=False)
        same = _recorded_run_differences(staging, config) == []
        return RunFolder(out, staging, continue_work=resume and same)
    changed = _recorded_run_differences(out, config)
    if changed:
        raise PeftlabError(f"output folder {out} holds a different run (differs in {', '.join(changed[:5])}); pass --overwrite to replace it or choose another --output")
    if changed == [] and (out / ADAPTER_DIR).is_dir():
        pending = " (an interrupted replacement waits in " + staging.name + ": --overwrite --resume continues it)" if staging.is_dir() else ""
        raise PeftlabError(f"output folder {out} already holds this finished run; pass --overwrite to train it again{pending}")
    if changed == [] and not resume:
        raise PeftlabError(f"output folder {out} holds an unfinished run of this config; pass --resume to continue it or --overwrite to start over")
    return RunFolder(out, out, continue_work=resume)


def initialize_run(folder: RunFolder, config: RunConfig) -> None:
    """Prepare the folder the run is built in and record the resolved config (the main process only)."""
    try:
        if folder.replaces and not folder.continue_work:
            outputs.remove_ours(folder.work)
        folder.work.mkdir(parents=True, exist_ok=True)
        atomic.write_text(folder.work / RUN_FILE, config.to_yaml())
    except PermissionError:
        raise PeftlabError(f"output folder {folder.final} is not writable; choose another --output") from None
    except OSError as error:
        raise PeftlabError(f"cannot write to output folder {folder.final}: {error.strerror}; choose another --output") from None


def finish_run(folder: RunFolder) -> None:
    """A finished replacement takes the place of the earlier run."""
    outputs.publish_replacement(folder.work, folder.final, RUN_OUTPUT)


def save_result(out: Path, save: Callable[[Path], None], tokenizer: Any, config: RunConfig, info: dict[str, Any]) -> Path:
    """Write DIR/adapter all at once: the method's files (`save` writes them), tokenizer, run.yaml, peftlab.json."""
    target = out / ADAPTER_DIR
    with atomic.folder(target) as tmp:
        save(tmp)
        tokenizer.save_pretrained(tmp)
        (tmp / RUN_FILE).write_text(config.to_yaml(), encoding="utf-8")
        (tmp / RUN_INFO).write_text(json.dumps(info, indent=2), encoding="utf-8")
    return target


def write_json(path: Path, data: dict[str, Any]) -> None:
    atomic.write_text(path, json.dumps(data, indent=2) + "\n")


def write_summary(out: Path, summary: dict[str, Any]) -> None:
    write_json(out / SUMMARY, summary)


def read_summary(out: Path) -> dict[str, Any]:
    return read_json(out / SUMMARY, f"the training run's summary in {out} is damaged: train it again "
                                    "(peftlab train --overwrite, or delete that run folder and rerun the command that trained it)")
