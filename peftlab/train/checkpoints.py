"""Training checkpoints that are complete or absent, and the choice of the one to resume from.

A checkpoint is published by renaming a finished, fsync'd folder into place; its manifest lists
every file with its size, so a folder damaged afterwards (a file deleted, truncated) is known
incomplete too. Resume takes the newest complete checkpoint and removes the others past it.
"""

from __future__ import annotations

import json
import os
import re
import shutil
from dataclasses import dataclass, field
from pathlib import Path

from peftlab import atomic

SAVING = ".saving"  # a checkpoint being written; never resumed from
MANIFEST = "peftlab-checkpoint.json"  # {relative path: size in bytes} of every other file
_NUMBERED = re.compile(r"^checkpoint-(\d+)$")


def publish(staged: Path, target: Path) -> None:
    """Write the manifest into a finished checkpoint folder, fsync it and rename it to `target`."""
    files = {str(path.relative_to(staged)): path.stat().st_size for path in sorted(staged.rglob("*")) if path.is_file()}
    (staged / MANIFEST).write_text(json.dumps(files, indent=1), encoding="utf-8")
    atomic.fsync_tree(staged)
    if target.exists():  # an incomplete leftover of the same step
        shutil.rmtree(target)
    os.replace(staged, target)
    atomic.fsync_folder(target.parent)


def missing(checkpoint: Path) -> str | None:
    """Why a checkpoint folder cannot be resumed from (None when it is complete)."""
    try:
        files = json.loads((checkpoint / MANIFEST).read_text(encoding="utf-8"))
    except FileNotFoundError:
        return f"no {MANIFEST}: its save never finished"
    except (OSError, ValueError):
        return f"{MANIFEST} is damaged"
    if not isinstance(files, dict) or "trainer_state.json" not in files:
        return f"{MANIFEST} is damaged"
    for name, size in files.items():
        path = checkpoint / name
        if not path.is_file():
            return f"{name} is missing"
        if path.stat().st_size != size:
            return f"{name} is {path.stat().st_size} bytes, not {size}"
    return None


@dataclass
class ResumePoint:
    checkpoint: Path | None  # the newest complete checkpoint
    skipped: list[str] = field(default_factory=list)  # "checkpoint-6 (optimizer.pt is missing)", removed


def resume_point(folder: Path, clean: bool = True) -> ResumePoint:
    """The newest complete checkpoint in `folder`; with `clean` (one process only), the incomplete
    ones after it and a half-written save are removed."""
    point = ResumePoint(None)
    if not folder.is_dir():
        return point
    if clean:
        shutil.rmtree(folder / SAVING, ignore_errors=True)
    numbered = sorted((int(m.group(1)), path) for path in folder.iterdir()
                      if path.is_dir() and (m := _NUMBERED.match(path.name)))
    for _, path in reversed(numbered):
        reason = missing(path)
        if reason is None:
            point.checkpoint = path
            break
        point.skipped.append(f"{path.name} ({reason})")
        if clean:
            shutil.rmtree(path)
    return point
