"""The run config eval and generate use: the adapter's training run (prompt, columns, base), then the flags."""

from __future__ import annotations

from typing import Any

from peftlab import config as cfg
from peftlab.artifacts import adapter_folder, recorded_base, run_config_path
from peftlab.config import RunConfig
from peftlab.errors import PeftlabError

RAW_TEMPLATE = "{prompt}"  # without an adapter and without --template a prompt goes to the model as written


def eval_config(adapter: str | None, overrides: list[str], flags: dict[str, Any],
                max_samples: int | None = None, every: int = 1, reads_rows: bool = True) -> RunConfig:
    """The run config evaluation uses: the adapter's training run (prompt, columns, base), then the flags.

    A template other than the one the adapter learned is refused: the scores would describe a
    prompt the model never trained on. `reads_rows`: the config reads a file of rows (not a typed prompt).
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
    if recorded and reads_rows and not any(o.startswith("data.format=") for o in overrides):
        _rows_in_their_own_format(config)
    if flags.get("model.device") is None and not any(o.startswith("model.device=") for o in overrides):
        config.model.device = "auto"  # where the model runs is this machine's choice, not the training run's
    cfg.validate(config)
    return config


def generate_config(adapter: str | None, overrides: list[str], flags: dict[str, Any], max_samples: int | None = None,
                    reads_rows: bool = True) -> RunConfig:
    """With an adapter: its training run's template, columns and base. Without: the prompt as written unless --template.
    `reads_rows=False` for a typed prompt, which is built as the adapter's own rows were (its recorded format)."""
    if not adapter and flags.get("data.template") is None:
        flags = {**flags, "data.template": RAW_TEMPLATE}
    return eval_config(adapter, overrides, flags, max_samples, reads_rows=reads_rows)


def _rows_in_their_own_format(config: RunConfig) -> None:
    """A file of test rows is read in its own format, detected from its columns: an adapter records the format it was
    trained on (for typed prompts), but a chat adapter is fairly scored on prompt/completion rows, which are wrapped in
    the same chat template. An adapter tuned on plain text never saw the chat template, so its prompts stay bare."""
    if config.data.format == "text" and config.data.chat_template == "auto":
        config.data.chat_template = "off"
    config.data.format = "auto"
