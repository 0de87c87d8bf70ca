"""What tuning varies for each method: its learning rate on a log scale around its default, and the
capacity and initialisation knobs its settings have (rank, virtual tokens, soft-prompt init, reduction factor,
OFT's block size, FourierFT's frequencies).

The knobs follow the fields of a method's settings dataclass, so a new method with an `r` is tuned
without touching this file.
"""

from __future__ import annotations

import dataclasses
import json
import math
from typing import Any

from peftlab.config import RunConfig
from peftlab.methods import get_method

LR_SPAN = 10.0  # the learning rate is searched in [default / 10, default * 10]
# every study first tries the default, then the default's learning rate times and divided by this (half-way to the
# span's ends, log scale), before TPE models the rest. The rate matters most and a handful of trials is the usual budget:
# TPE's random start could spend them all on one side (IA3 on DialogSum drew three rates below its default, none above).
START_STEP = math.sqrt(LR_SPAN)
DEFAULT, HIGHER_LR, LOWER_LR = "default", "higher lr", "lower lr"  # the starting points, in order
TASK_PROMPT, RANDOM = "task-prompt", "random"  # the two ways a soft prompt can start


def _halves_and_doubles(default: int, down: int, up: int) -> list[int]:
    values = [default // 2**k for k in range(down, 0, -1)] + [default] + [default * 2**k for k in range(1, up + 1)]
    return sorted({v for v in values if v >= 1})


# settings field -> candidate values from its default (categorical: a handful of trainings cannot fit more)
CAPACITY_KNOBS = {
    "r": lambda d: _halves_and_doubles(d, 2, 1),  # LoRA-family rank
    "num_virtual_tokens": lambda d: _halves_and_doubles(d, 1, 1),  # prompt, prefix and P-tuning
    "reduction_factor": lambda d: _halves_and_doubles(d, 1, 1),  # bottleneck adapters
    "block_size": lambda d: _halves_and_doubles(d, 1, 1),  # OFT's orthogonal blocks
    "n_frequency": lambda d: _halves_and_doubles(d, 1, 1),  # FourierFT's learned coefficients per weight
}


def task_text(template: str) -> str:
    """The instruction around `{prompt}` in the data template: what a soft prompt can start from."""
    before, _, after = template.partition("{prompt}")
    return (before.strip() or after.strip()).splitlines()[0] if (before.strip() or after.strip()) else ""


@dataclasses.dataclass(frozen=True)
class SearchSpace:
    method: str
    lr: float  # the default rate, the centre of the search
    knobs: dict[str, list[Any]]  # settings field -> candidates
    defaults: dict[str, Any]  # the untuned configuration, as trial parameters
    init_text: str  # the task text a soft prompt may start from ("" = not tunable)

    def suggest(self, trial: Any) -> dict[str, Any]:
        """Ask the Optuna trial for one configuration; returns its parameters."""
        params = {"lr": trial.suggest_float("lr", self.lr / LR_SPAN, self.lr * LR_SPAN, log=True)}
        for name, candidates in self.knobs.items():
            params[name] = trial.suggest_categorical(name, candidates)
        if self.init_text:
            params["init"] = trial.suggest_categorical("init", [RANDOM, TASK_PROMPT])
        return params

    def starting_points(self, trials: int) -> list[tuple[str, dict[str, Any]]]:
        """The first configurations of a study of `trials`, named and in order: the untuned default (so tuning can
        only match or beat it on validation), then a higher learning rate (a short fixed budget tends to favour one:
        on DialogSum every method's lower rates lost to its default, the adapter's higher one won), then a lower."""
        points = [(DEFAULT, self.defaults), (HIGHER_LR, {**self.defaults, "lr": self.lr * START_STEP}),
                  (LOWER_LR, {**self.defaults, "lr": self.lr / START_STEP})]
        return points[:trials]

    def overrides(self, params: dict[str, Any]) -> list[str]:
        """The --set assignments of one configuration."""
        sets = [f"method={self.method}", f"train.lr={params['lr']!r}"]
        sets += [f"{self.method}.{name}={json.dumps(params[name])}" for name in self.knobs if name in params]
        if "init" in params:
            text = self.init_text if params["init"] == TASK_PROMPT else ""
            sets.append(f"{self.method}.init_text={json.dumps(text)}")
        return sets


def search_space(method_name: str, shared: RunConfig) -> SearchSpace:
    """The space around the shared config's values for this method (the user's --set values are the centre)."""
    method = get_method(method_name)
    settings = dataclasses.asdict(method.parse_settings(shared.methods.get(method_name)))
    lr = shared.train.lr or method.lr
    knobs = {name: CAPACITY_KNOBS[name](settings[name]) for name in CAPACITY_KNOBS if isinstance(settings.get(name), int)}
    text = task_text(shared.data.template) if "init_text" in settings else ""
    defaults: dict[str, Any] = {"lr": lr, **{name: settings[name] for name in knobs}}
    if text:
        defaults["init"] = TASK_PROMPT if settings["init_text"] else RANDOM
        if settings["init_text"] and settings["init_text"] != text:
            text = settings["init_text"]  # the user's own init text is the one tuned against random
    return SearchSpace(method_name, lr, knobs, defaults, text)
