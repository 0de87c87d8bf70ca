"""Which runs a comparison makes: one per method, times the values of each --sweep that applies."""

from __future__ import annotations

import itertools
import re
from dataclasses import dataclass, field

from peftlab.errors import PeftlabError

SHARED_SECTIONS = ("train", "data", "model")  # a sweep over these applies to every trained run


@dataclass
class PlannedRun:
    method: str
    settings: dict[str, str] = field(default_factory=dict)  # --set key -> value, this run only

    @property
    def name(self) -> str:
        if not self.settings:
            return self.method
        return f"{self.method} " + " ".join(f"{key.split('.', 1)[1]}={value}" for key, value in self.settings.items())

    @property
    def folder(self) -> str:
        return re.sub(r"[^A-Za-z0-9._-]+", "_", self.name.replace(" ", "__"))

    def overrides(self) -> list[str]:
        return [f"method={self.method}"] + [f"{key}={value}" for key, value in self.settings.items()]


def parse_sweep(text: str) -> tuple[str, list[str]]:
    key, sep, values = text.partition("=")
    choices = [v.strip() for v in values.split(",") if v.strip()]
    if not sep or "." not in key or not choices:
        raise PeftlabError(f"--sweep {text!r}: expected SECTION.KEY=V1,V2 (e.g. lora.r=8,32 or train.lr=1e-4,1e-3)")
    return key.strip(), choices


def check_sweep(key: str, values: list[str]) -> None:
    """Every value of a sweep names a setting that exists and has the right type, before any run starts."""
    from peftlab import config as cfg
    from peftlab.methods import get_method

    for value in values:
        raw: dict = {}
        try:
            cfg.apply_override(raw, f"{key}={value}")
            config = cfg.from_dict(raw)
            for method, settings in config.methods.items():
                get_method(method).parse_settings(settings)
        except PeftlabError as error:
            raise PeftlabError(f"--sweep {key}={value}: {str(error).removeprefix('config: ')}") from None


def plan_runs(methods: list[str], sweeps: list[str]) -> list[PlannedRun]:
    """Runs in a stable order; 'base' (the zero-shot model) is evaluated separately and not listed."""
    from peftlab.methods import method_names

    known = set(method_names())
    unknown = [m for m in methods if m != "base" and m not in known]
    if unknown:
        raise PeftlabError(f"unknown method(s) {', '.join(unknown)} in --methods; choose from base, {', '.join(sorted(known))}")
    parsed = [parse_sweep(s) for s in sweeps]
    for key, values in parsed:
        section = key.split(".", 1)[0]
        if section not in SHARED_SECTIONS and section not in methods:
            raise PeftlabError(f"--sweep {key}: '{section}' is neither a method in --methods nor one of {', '.join(SHARED_SECTIONS)}")
        check_sweep(key, values)
    runs = []
    for method in dict.fromkeys(m for m in methods if m != "base"):
        mine = [(key, values) for key, values in parsed if key.split(".", 1)[0] in (method, *SHARED_SECTIONS)]
        keys = [key for key, _ in mine]
        for combination in itertools.product(*(values for _, values in mine)):
            runs.append(PlannedRun(method, dict(zip(keys, combination))))
    return runs
