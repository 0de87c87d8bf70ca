"""The typed run config: defaults, YAML files, --set overrides, and the checks behind clear errors."""

from __future__ import annotations

import dataclasses
import re
import typing
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import yaml

from peftlab.errors import PeftlabError
from peftlab.models.device import DTYPES

# The summarization prompt of the classic Flan-T5 / DialogSum notebook recipe.
DEFAULT_TEMPLATE = "Summarize the following conversation.\n\n{prompt}\n\nSummary: "


@dataclass
class ModelConfig:
    name: str | None = None  # hub id, local folder or .gguf file; None = the embedded default
    dtype: str = "auto"  # auto (the device's fast dtype: bf16 where native, fp16 on older GPUs, else fp32) | fp32 | bf16 | fp16
    device: str = "auto"  # auto (a CUDA GPU, else Apple's MPS, else the CPU) | cpu | cuda | cuda:N | mps
    # auto: what transformers picks for the model (sdpa where the model has it, else eager: Gemma 2 has no sdpa in
    # transformers 5.24); or a name it knows (eager, sdpa, flash_attention_2, flex_attention...)
    attn_implementation: str = "auto"


@dataclass
class DataConfig:
    train: str | None = None  # JSONL / CSV / Parquet file, or hub:NAME[:SPLIT]
    eval: str | None = None  # validation rows for the eval loss, early stopping and tuning (same formats as train)
    # template field -> column of the file; `response` is the target the model learns to write
    columns: dict[str, str] = field(default_factory=lambda: {"prompt": "dialogue", "response": "summary"})
    template: str = DEFAULT_TEMPLATE  # the prompt: {field} / {column} placeholders filled from each row (template format)
    # auto (detected from the first row's columns) | template | text | prompt-completion | messages | sharegpt | alpaca
    format: str = "auto"
    train_on: str = "assistant"  # conversations: the loss on every assistant turn | the last one | all tokens
    chat_template: str = "auto"  # auto (use the tokenizer's when it has one) | on | off
    answer_only: bool = True  # loss on the response tokens only
    max_length: int = 1024  # tokens per example (seq2seq: per source and per target)
    max_samples: int | None = None  # use at most this many rows (after `every`); None: all
    every: int = 1  # keep every K-th row
    max_row_bytes: int = 1_048_576  # a row (one line, one Parquet row) over this is refused before it is parsed or tokenized


@dataclass
class TrainConfig:
    epochs: float = 1.0  # passes over the training rows (fractions allowed)
    max_steps: int = -1  # > 0 overrides epochs
    batch_size: int = 8  # rows per optimizer step (times grad_accum)
    grad_accum: int = 1  # batches whose gradients add up before each optimizer step
    lr: float | None = None  # None: the method's own rate (1e-3 for LoRA-style, 5e-5 for full, 3e-2 for prompt tuning)
    scheduler: str = "linear"  # the learning-rate schedule, one of transformers' SchedulerType names (linear, cosine, constant...)
    warmup_ratio: float = 0.0  # share of the steps over which the learning rate rises from 0
    weight_decay: float = 0.0  # AdamW's decoupled weight decay
    max_grad_norm: float = 1.0  # gradients are clipped to this norm
    batching: str = "length"  # length (group by length, pad little) | packed (no padding at all)
    # a batch whose padded tokens exceed this runs as several micro-batches of whole rows (causal LMs), one optimizer
    # step, the loss normalised over the whole batch's answer tokens: memory bounded, results as with one batch; 0: off
    max_batch_tokens: int = 2048
    eval_steps: int = 50  # evaluate the eval loss every N optimizer steps (with data.eval)
    save_steps: int = 50  # write a checkpoint (complete or absent) every N optimizer steps, for --resume
    save_total_limit: int = 2  # checkpoints kept, newest first
    patience: int | None = None  # early stop after this many evals without improvement
    seed: int = 42  # drives every RNG (Python, NumPy, torch) and the data order
    report_to: str = "none"  # experiment trackers, comma-separated: tensorboard (in the run folder), mlflow, trackio, wandb


@dataclass
class RunConfig:
    model: ModelConfig = field(default_factory=ModelConfig)
    data: DataConfig = field(default_factory=DataConfig)
    method: str = "lora"  # the training method (`peftlab methods` lists them)
    # per-method settings, e.g. {"lora": {"r": 8}}; checked against the method's own dataclass
    methods: dict[str, dict[str, Any]] = field(default_factory=dict)
    train: TrainConfig = field(default_factory=TrainConfig)
    output: str | None = None  # the run folder (adapter/, run.yaml, log.jsonl, summary.json, checkpoints/)

    def to_dict(self) -> dict[str, Any]:
        return dataclasses.asdict(self)

    def to_yaml(self) -> str:
        return yaml.safe_dump(self.to_dict(), sort_keys=False, allow_unicode=True)


# what a tuned comparison may choose each method's configuration by: validation loss, or the primary metric of answers
# generated for the validation rows ("rouge": the name before --metric existed, the same choice)
SELECT_BY = ("loss", "metric", "rouge")


@dataclass
class CompareSetup:
    """What every run of a comparison shares; a later call must match it to resume or add runs."""

    overrides: list[str]  # --set assignments every run starts from (model, data, budget, seed)
    eval_data: str  # test rows with references
    eval_rows: int | None = None  # test rows scored; None = all
    generation: dict[str, int] = field(default_factory=lambda: {"max_new_tokens": 64, "num_beams": 1})
    trials: int = 0  # > 0: tune each method with this many trials on validation rows before scoring
    seeds: int = 1  # seeds the chosen configuration of each method is trained with (tuned comparisons)
    val_share: float = 0.1  # share of the training rows kept for validation (tuned comparisons; at least 16 rows)
    select_by: str = "loss"  # what chooses each method's configuration: final validation "loss", or the primary "metric"
    metrics: list[str] = field(default_factory=lambda: ["rouge"])  # what every run is scored by; the first one decides
    judge: dict[str, str | None] = field(default_factory=dict)  # the judge metrics' endpoint: url, model, prompt_file
    general_tasks: bool = False  # also score general multiple-choice accuracy (forgetting as users know it)

    def to_dict(self) -> dict[str, Any]:
        record = dataclasses.asdict(self)
        # where the runs compute is not part of the comparison: it may continue on another machine or device
        record["overrides"] = [o for o in record["overrides"] if not o.startswith("model.device=")]
        # added later: recorded only when set, so comparisons begun before them still resume
        for name, default in (("select_by", "loss"), ("metrics", ["rouge"]), ("judge", {}), ("general_tasks", False)):
            if record[name] == default:
                del record[name]
        return record

    def shared_config(self) -> RunConfig:
        """The run config every trained run starts from, checked before anything slow."""
        shared = load(None, self.overrides)
        if shared.train.max_steps > 0 and "train.epochs" in {o.split("=", 1)[0] for o in self.overrides}:
            raise PeftlabError("pass --budget-steps or --epochs, not both")
        if not shared.data.train or not self.eval_data:
            raise PeftlabError("compare needs --data TRAIN and --eval-data TEST")
        if self.eval_rows is not None and self.eval_rows < 1:
            raise PeftlabError(f"--eval-samples must be at least 1, got {self.eval_rows}")
        return shared


def from_dict(data: dict[str, Any], cls: type = RunConfig, where: str = "") -> Any:
    """Build a config dataclass from plain data, naming any unknown key or wrong type."""
    if not isinstance(data, dict):
        section = f"'{where.lstrip('.')}' " if where else ""
        raise PeftlabError(f"config: {section}must be a mapping of settings, got {type(data).__name__}")
    hints = typing.get_type_hints(cls)
    fields = {f.name: f for f in dataclasses.fields(cls)}
    names = set(fields)
    values = {}
    for key, value in data.items():
        if key not in names:
            raise PeftlabError(
                f"config: unknown setting '{where.lstrip('.')}{'.' if where else ''}{key}'; "
                f"known here: {', '.join(sorted(names))}"
            )
        values[key] = _coerce(value, hints[key], f"{where}.{key}".lstrip("."))
        default = fields[key].default_factory
        if isinstance(values[key], dict) and default is not dataclasses.MISSING and typing.get_origin(hints[key]) is dict:
            values[key] = {**default(), **values[key]}  # a partial mapping keeps the other defaults
    return cls(**values)


def _coerce(value: Any, hint: Any, key: str) -> Any:
    if dataclasses.is_dataclass(hint):
        return from_dict(value, hint, f".{key}" if key else "")
    origin, args = typing.get_origin(hint), typing.get_args(hint)
    if origin in (typing.Union, getattr(__import__("types"), "UnionType", None)):
        if value is None or (isinstance(value, str) and value.lower() in ("none", "null")):
            if type(None) in args:
                return None
        inner = [a for a in args if a is not type(None)]
        return _coerce(value, inner[0], key)
    if origin is dict:
        if isinstance(value, str):
            value = parse_mapping(value, key)
        if not isinstance(value, dict):
            raise PeftlabError(f"config: '{key}' must be a mapping, got {value!r}")
        if args and args[1] is str:  # a mapping of names (data.columns): each value one name, never a section
            for name, item in value.items():
                if isinstance(item, (dict, list)) or item is None:
                    raise PeftlabError(f"config: '{key}.{name}' must be a column name, got {item!r}; "
                                       f"e.g. --set {key}.{name}=dialogue")
            return {str(name): str(item) for name, item in value.items()}
        return dict(value)
    try:
        if hint is bool:
            if isinstance(value, str):
                if value.lower() in ("true", "yes", "1", "on"):
                    return True
                if value.lower() in ("false", "no", "0", "off"):
                    return False
                raise ValueError(value)
            return bool(value)
        if hint is int:
            if isinstance(value, float) and not value.is_integer():
                raise ValueError(value)
            return int(value)
        if hint is float:
            return float(value)
        if hint is str:
            return str(value)
    except (TypeError, ValueError):
        raise PeftlabError(f"config: '{key}' must be {hint.__name__}, got {value!r}") from None
    return value


def parse_mapping(text: str, key: str = "columns") -> dict[str, str]:
    """'prompt=dialogue,response=summary' -> {'prompt': 'dialogue', 'response': 'summary'}."""
    mapping = {}
    for part in filter(None, (p.strip() for p in text.split(","))):
        name, sep, column = part.partition("=")
        if not sep or not name.strip() or not column.strip():
            raise PeftlabError(f"{key}: '{part}' is not NAME=COLUMN (example: prompt=dialogue,response=summary)")
        mapping[name.strip()] = column.strip()
    return mapping


def apply_override(raw: dict[str, Any], assignment: str) -> None:
    """Apply one --set key=value to a raw config dict: 'train.lr=1e-4', 'lora.r=8'."""
    key, sep, value = assignment.partition("=")
    if not sep or not key:
        raise PeftlabError(f"--set {assignment!r}: expected key=value, e.g. --set train.lr=1e-4")
    parts = key.strip().split(".")
    top = {f.name for f in dataclasses.fields(RunConfig)}
    if parts[0] not in top:
        # a method's own setting: lora.r=8 -> methods.lora.r
        parts = ["methods", *parts]
    node = raw
    for part in parts[:-1]:
        node = node.setdefault(part, {})
        if not isinstance(node, dict):
            raise PeftlabError(f"--set {assignment!r}: '{part}' is not a section")
    node[parts[-1]] = yaml.safe_load(value) if value.strip() else ""


def flag_assignment(key: str, value: Any) -> str:
    """A flag's value as a --set assignment that reads back as the same value: quoted as YAML, so a template with a
    colon or a newline stays a string (written plainly, `Topic: {prompt}` would be read as a mapping). A value that
    reads back as itself is written plainly, as before, so the setups recorded by earlier comparisons still match."""
    try:
        plain = yaml.safe_load(str(value)) == value
    except yaml.YAMLError:
        plain = False
    return f"{key}={value if plain else yaml.safe_dump(value, default_flow_style=True).strip()}"


def load(path: str | None, overrides: list[str] = (), base: dict[str, Any] | None = None) -> RunConfig:
    """Defaults <- YAML file <- `base` (the CLI's flags) <- --set overrides, then validate."""
    raw = read_config_file(path) if path else {}
    for key, value in (base or {}).items():
        if value is not None:
            apply_override(raw, flag_assignment(key, value))
    for assignment in overrides:
        apply_override(raw, assignment)
    config = from_dict(raw)
    validate(config)
    return config


def read_config_file(path: str) -> dict[str, Any]:
    """A run config YAML file as raw settings; its own mistakes are named with the file (and the line)."""
    file = Path(path)
    if not file.is_file():
        raise PeftlabError(f"config file {path} does not exist")
    try:
        raw = yaml.safe_load(file.read_text(encoding="utf-8")) or {}
    except yaml.YAMLError as error:
        mark = getattr(error, "problem_mark", None)
        where = f" at line {mark.line + 1}, column {mark.column + 1}" if mark else ""
        problem = getattr(error, "problem", None) or str(error).splitlines()[0]
        raise PeftlabError(f"config file {path} is not valid YAML: {problem}{where}; fix the file there") from None
    except UnicodeDecodeError:
        raise PeftlabError(f"config file {path} is not UTF-8 text; save it as UTF-8") from None
    if not isinstance(raw, dict):
        raise PeftlabError(f"config file {path} holds a {type(raw).__name__}, not a mapping of settings; "
                           "write sections of key: value lines, e.g. 'train:' then '  lr: 1e-4'")
    try:
        from_dict(raw)
    except PeftlabError as error:
        raise PeftlabError(f"config file {path}: {str(error).removeprefix('config: ')}") from None
    return raw


DATA_FORMATS = ("auto", "template", "text", "prompt-completion", "messages", "sharegpt", "alpaca")
TRACKERS = ("tensorboard", "mlflow", "trackio", "wandb")  # transformers' report_to names that peftlab passes on


def trackers(train: TrainConfig) -> list[str]:
    return [name.strip() for name in train.report_to.split(",") if name.strip() and name.strip() != "none"]


def schedulers() -> list[str]:
    """The learning-rate schedules `train.scheduler` may name: transformers' own (its SchedulerType)."""
    from transformers.trainer_utils import SchedulerType

    return [schedule.value for schedule in SchedulerType]


def validate(config: RunConfig) -> None:
    """Reject impossible settings with the setting's name and a fix."""
    t, d = config.train, config.data
    checks = [
        (config.model.dtype in DTYPES, f"model.dtype '{config.model.dtype}' is not one of {', '.join(DTYPES)}"),
        (bool(re.fullmatch(r"auto|cpu|cuda(:\d+)?|mps", str(config.model.device))),
         f"model.device (--device) '{config.model.device}' is not one of auto, cpu, cuda, cuda:N, mps"),
        (t.lr is None or t.lr > 0, f"train.lr must be positive, got {t.lr}"),
        (t.batch_size >= 1, f"train.batch_size must be at least 1, got {t.batch_size}"),
        (t.grad_accum >= 1, f"train.grad_accum must be at least 1, got {t.grad_accum}"),
        (t.max_batch_tokens >= 0, f"train.max_batch_tokens must be 0 (off) or a token count, got {t.max_batch_tokens}"),
        (t.epochs > 0 or t.max_steps > 0, "train needs epochs > 0 or max_steps > 0"),
        (0 <= t.warmup_ratio < 1, f"train.warmup_ratio must be in [0, 1), got {t.warmup_ratio}"),
        (t.batching in ("length", "packed"), f"train.batching '{t.batching}' is not one of length, packed"),
        (t.scheduler in schedulers(), f"train.scheduler '{t.scheduler}' is not a schedule transformers knows; choose one of "
                                      f"{', '.join(schedulers())}"),
        (t.eval_steps >= 1 and t.save_steps >= 1, "train.eval_steps and train.save_steps must be at least 1"),
        (t.patience is None or t.patience >= 1, f"train.patience must be at least 1, got {t.patience}"),
        (set(trackers(t)) <= set(TRACKERS), f"train.report_to '{t.report_to}': choose from none, {', '.join(TRACKERS)} (comma-separated)"),
        (d.max_length >= 8, f"data.max_length must be at least 8 tokens, got {d.max_length}"),
        (d.every >= 1, f"data.every must be at least 1, got {d.every}"),
        (d.max_samples is None or d.max_samples >= 1, f"data.max_samples must be at least 1, got {d.max_samples}"),
        (d.format in DATA_FORMATS, f"data.format '{d.format}' is not one of {', '.join(DATA_FORMATS)}"),
        (d.train_on in ("assistant", "last", "all"), f"data.train_on '{d.train_on}' is not one of assistant, last, all"),
        (d.max_row_bytes >= 1024, f"data.max_row_bytes must be at least 1024, got {d.max_row_bytes}"),
        (d.chat_template in ("auto", "on", "off"), f"data.chat_template '{d.chat_template}' is not one of auto, on, off"),
        ("response" in d.columns, "data.columns needs a 'response' entry: the column the model learns to write, e.g. --columns response=summary"),
    ]
    for ok, message in checks:
        if not ok:
            raise PeftlabError(message)


def check_at_least_one(**values: int) -> None:
    """Counts given as flags (--max-tokens, --max-batch-size, ...) that must be at least 1."""
    for name, value in values.items():
        if value < 1:
            raise PeftlabError(f"--{name.replace('_', '-')} must be at least 1, got {value}")
