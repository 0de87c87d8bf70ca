"""The run config eval and generate use: the adapter's training run (prompt, columns, base), then the flags."""

from __future__ import annotations

from typing import Any

from peftlab import config as cfg
from peftlab.artifacts import adapter_folder, recorded_base, run_config_path
from peftlab.config import RunConfig
from peftlab.errors import PeftlabError

RAW_TEMPLATE = "{prompt}"  # without an adapter and without --template a prompt goes to the model as written


def eval_config(adapter: str | None, overrides: list[str], flags: dict[str, Any],
                max_samples: int | None = None, every: int = 1) -> RunConfig:
    """The run config evaluation uses: the adapter's training run (prompt, columns, base), then the flags.

    A template other than the one the adapter learned is refused: the scores would describe a
    prompt the model never trained on.
    """
    folder = adapter_folder(adapter) if adapter else None
    run_file = run_config_path(folder) if folder else None
    recorded = cfg.load(run_file) if run_file else None
    if folder and recorded is None and flags.get("model.name") is None:
        flags = {**flags, "model.name": recorded_base(folder)[1]}  # a foreign PEFT adapter
    config = cfg.load(run_file, overrides, flags)
    if recorded and config.data.template != recorded.data.template:
        raise PeftlabError(
            f"adapter {adapter} was trained with the template {recorded.data.template!r}; evaluating it with "
            f"{config.data.template!r} would score a prompt it never learned; drop --template"
        )
    # which test rows to use is the evaluation's choice, not the training run's
    config.data.max_samples, config.data.every = max_samples, every
    if flags.get("model.device") is None and not any(o.startswith("model.device=") for o in overrides):
        config.model.device = "auto"  # where the model runs is this machine's choice, not the training run's
    cfg.validate(config)
    return config


def generate_config(adapter: str | None, overrides: list[str], flags: dict[str, Any], max_samples: int | None = None) -> RunConfig:
    """With an adapter: its training run's template, columns and base. Without: the prompt as written unless --template."""
    if not adapter and flags.get("data.template") is None:
        flags = {**flags, "data.template": RAW_TEMPLATE}
    return eval_config(adapter, overrides, flags, max_samples)
