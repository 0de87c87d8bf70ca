"""The one output rule every writing command follows: never over an input, never over a file peftlab did not write,
replaced only when the new output is complete.

Each kind of output folder declares the names peftlab writes at its top level (`OutputKind.entries`): that is
how peftlab knows which files are its own. A folder is replaced (with --overwrite) only when everything in it
is peftlab's own: a file or folder it did not write makes the command refuse, naming it, with or without
--overwrite; peftlab never deletes it. A command that continues its folder in place (train --resume, compare
adding methods) only adds its own files there and leaves the others alone.

An output is never one of the command's inputs (its data file, adapter folder, model folder or file, config
file), nor inside an input folder, and a folder that would be replaced never holds an input.
"""

from __future__ import annotations

import contextlib
import fnmatch
import os
import shutil
from dataclasses import dataclass
from pathlib import Path
from typing import Callable, Iterable, Iterator

from peftlab import atomic
from peftlab.errors import PeftlabError

# A file system's limit on one name is 255 bytes; peftlab builds an output under a longer temporary name beside
# it (".NAME.peftlab-new", ".NAME.XXXXXXXX.tmp", ".NAME.old-PID"), so the name itself must leave room for that.
MAX_NAME_BYTES = 255 - len(".peftlab-new.old-4194304")
TEMPORARY = (".*.tmp",)  # atomic writes' temporary names, left behind only by a killed process


@dataclass(frozen=True)
class OutputKind:
    """A kind of output folder: what to call it, the names that mark it as one, the names peftlab writes in it."""

    holds: str  # "evaluation": read in "already holds an evaluation"
    markers: tuple[str, ...]  # any of these at its top level marks an earlier output of this kind
    entries: tuple[str, ...]  # fnmatch patterns of the top-level names peftlab writes there
    recorded: Callable[[Path], Iterable[str]] = lambda folder: ()  # names the output itself lists as written

    @property
    def a(self) -> str:
        return ("an " if self.holds[0] in "aeiou" else "a ") + self.holds

    def marks(self, folder: Path) -> bool:
        return any((folder / name).exists() for name in self.markers)

    def owns(self, folder: Path, name: str) -> bool:
        return any(fnmatch.fnmatchcase(name, pattern) for pattern in (*self.entries, *TEMPORARY)) or name in set(self.recorded(folder))


@dataclass(frozen=True)
class Input:
    """A path the command reads: output may never be it, sit inside it or (when replaced) hold it."""

    role: str  # "--data file", "adapter folder", ...
    path: Path


def inputs(**paths: str | Path | None) -> list[Input]:
    """The command's local inputs by role, e.g. inputs(data=..., config=..., model=...); hub ids and None are skipped.
    The role names the flag: data -> "--data file", model -> "--model", any other -> as given."""
    found = []
    for role, spec in paths.items():
        if spec is None or str(spec).startswith("hub:"):
            continue
        path = Path(spec).expanduser()
        if role in ("model", "base_model") and not path.exists():
            continue  # a hub id
        found.append(Input(ROLES.get(role, role.replace("_", " ")), path))
    return found


ROLES = {"data": "--data file", "eval_data": "--eval-data file", "test_data": "test data file", "model": "--model",
         "config": "--config file", "adapter": "adapter folder", "source": "source folder", "base_model": "adapter's base model"}


def _resolved(path: Path) -> Path:
    return Path(os.path.realpath(path))  # realpath: also for paths that do not exist yet; links followed


def _inside(path: Path, folder: Path) -> bool:
    return path != folder and folder in path.parents


def check_name(out: Path) -> None:
    """An output name the file system can hold, with room for peftlab's temporary names beside it."""
    for part in out.parent.parts:
        if len(os.fsencode(part)) > 255:
            raise PeftlabError(f"--output {str(out)[:60]}... has a folder name over the file system's 255 bytes; choose a shorter --output")
    size = len(os.fsencode(out.name))
    if size > MAX_NAME_BYTES:
        raise PeftlabError(f"output name {out.name[:40]}... is {size} bytes long; a name may have at most {MAX_NAME_BYTES} "
                           "(the file system's 255, less room for peftlab's temporary name beside it): choose a shorter --output")


def check_not_an_input(out: Path, sources: Iterable[Input]) -> None:
    """The output is none of the command's inputs, and not inside an input folder."""
    target = _resolved(out)
    for source in sources:
        where = _resolved(source.path)
        if target == where:
            raise PeftlabError(f"--output {out} is this command's {source.role} {source.path}: writing it would destroy the "
                               "input; choose another --output")
        if _inside(target, where):
            raise PeftlabError(f"--output {out} is inside this command's {source.role} {source.path}: peftlab never writes "
                               "into its inputs; choose an --output outside it")


def check_inputs_outside(out: Path, sources: Iterable[Input]) -> None:
    """No input lies inside a folder the command is about to replace."""
    target = _resolved(out)
    for source in sources:
        if _inside(_resolved(source.path), target):
            raise PeftlabError(f"this command's {source.role} {source.path} is inside --output {out}, which it would replace: "
                               "move the input out of that folder or choose another --output")


def foreign_entries(folder: Path, kind: OutputKind) -> list[str]:
    """The top-level names in `folder` that peftlab did not write (folders with a trailing /)."""
    return sorted(entry.name + ("/" if entry.is_dir() else "") for entry in folder.iterdir() if not kind.owns(folder, entry.name))


def _listed(names: list[str], limit: int = 4) -> str:
    return ", ".join(names[:limit]) + (f" and {len(names) - limit} more" if len(names) > limit else "")


def refuse_foreign(out: Path, kind: OutputKind) -> None:
    foreign = foreign_entries(out, kind)
    if foreign:
        raise PeftlabError(f"output folder {out} holds {_listed(foreign)}, which peftlab did not write; it replaces {kind.a} "
                           "only when nothing else is in it (and never deletes your files): move them out or choose another --output")


def holds_something(folder: Path) -> bool:
    return folder.is_dir() and any(folder.iterdir())


def check_folder(path: str | Path, overwrite: bool, kind: OutputKind, sources: Iterable[Input] = (),
                 continuable: bool = False) -> Path:
    """The rule for an output folder (train, eval, compare, demo, merge, export --format ollama). Reads only.

    A file is never replaced by a folder; a folder that holds something other than this kind of output is refused,
    naming what it holds; an earlier output of this kind is replaced only with --overwrite and only when everything
    in it is peftlab's own, unless the command continues it in place (`continuable`, without --overwrite).
    """
    out = Path(path).expanduser()
    sources = list(sources)
    check_name(out)
    if out.exists() and not out.is_dir():
        raise PeftlabError(f"output {out} is a file, not a folder; choose another --output")
    check_not_an_input(out, sources)
    if not holds_something(out):
        return out
    if not kind.marks(out):
        found = sorted(entry.name + ("/" if entry.is_dir() else "") for entry in out.iterdir())
        raise PeftlabError(f"output folder {out} holds {_listed(found, 3)}, not {kind.a}; choose another --output"
                           + ("" if overwrite else " or empty it"))
    if continuable and not overwrite:
        return out  # continued in place: peftlab adds its own files and touches no other
    check_inputs_outside(out, sources)
    refuse_foreign(out, kind)
    if not overwrite:
        raise PeftlabError(f"output folder {out} already holds {kind.a}; pass --overwrite to replace it or choose another --output")
    return out


def check_file(path: str | Path, overwrite: bool, holds: str, owned: Callable[[Path], bool], sources: Iterable[Input] = (),
               example: str = "answers.jsonl") -> Path:
    """The rule for a single output file (generate's answers, export's GGUF file): never a folder, never an input; an
    existing file is replaced only with --overwrite and only when `owned` recognises it as peftlab's `holds`."""
    out = Path(path).expanduser()
    check_name(out)
    if out.is_dir():
        raise PeftlabError(f"output {out} is a folder; --output takes a file name, e.g. {example}")
    check_not_an_input(out, sources)
    if out.exists():
        if not owned(out):
            raise PeftlabError(f"{out} already exists and is not {holds} peftlab wrote; peftlab never overwrites it, "
                               "even with --overwrite: choose another --output")
        if not overwrite:
            raise PeftlabError(f"{out} already exists; pass --overwrite to replace it (it is replaced only once the new "
                               "file is complete) or choose another --output")
    return out


# --- building a replacement beside the output -----------------------------------------------------------

def staging_folder(out: Path) -> Path:
    """Where a replacement for `out` is built (same parent, so the final rename is atomic)."""
    return out.with_name(f".{out.name}.peftlab-new")


def remove_ours(folder: Path) -> None:
    """Remove a staging folder peftlab made (its name says so)."""
    if folder.is_dir():
        shutil.rmtree(folder)


def replacement_folder(out: Path, keep: Callable[[Path], bool] = lambda staging: False) -> Path:
    """Where --overwrite builds a command's new output: `out` itself when it holds nothing, else its
    staging folder, continued when `keep` says the one there is this same job, else started empty.
    `publish_replacement` puts it in place when the command has finished."""
    if not holds_something(out):
        return out
    staging = staging_folder(out)
    if staging.is_dir() and not keep(staging):
        remove_ours(staging)
    return staging


def publish_replacement(work: Path, out: Path, kind: OutputKind) -> None:
    """Put the finished `work` in the place of `out`; checked once more, as a file may have been put there meanwhile."""
    if work != out:
        if out.is_dir():
            refuse_foreign(out, kind)
        atomic.publish(work, out)


@contextlib.contextmanager
def replaced_folder(out: Path, kind: OutputKind) -> Iterator[Path]:
    """Yield a temporary folder beside `out` to write the whole output in; on success it takes the place of `out`
    (checked with `check_folder` before, and once more here, just before the swap)."""
    out.parent.mkdir(parents=True, exist_ok=True)
    with atomic.folder(out, before_publish=lambda: refuse_foreign(out, kind) if out.is_dir() else None) as tmp:
        yield tmp
