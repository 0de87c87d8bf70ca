"""Atomic, durable writes: a file or folder appears complete under its final name, or not at all.

Every write goes to a temporary name beside its target, is fsync'd, and is renamed over the
target; the parent folder is fsync'd after the rename so the new name survives a power loss.
"""

from __future__ import annotations

import contextlib
import errno
import os
import shutil
import tempfile
from pathlib import Path
from typing import Callable, Iterator


def write_text(path: str | os.PathLike, text: str) -> None:
    """Write text to a temporary file beside `path`, then rename it over `path`."""
    write_bytes(path, text.encode("utf-8"))


def write_bytes(path: str | os.PathLike, data: bytes) -> None:
    """Write bytes to a temporary file beside `path`, fsync it, then rename it over `path`."""
    with file(path) as tmp:
        tmp.write_bytes(data)


@contextlib.contextmanager
def file(path: str | os.PathLike) -> Iterator[Path]:
    """Yield a temporary file path beside `path` for the caller (or a library) to write; on success it is
    fsync'd and renamed over `path`, on any failure removed. A reader sees the old file or the new, whole one."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, name = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".tmp", dir=path.parent)
    os.close(fd)
    tmp = Path(name)
    try:
        yield tmp
        with open(tmp, "rb+") as handle:
            os.fsync(handle.fileno())
        os.chmod(tmp, 0o666 & ~_umask())  # mkstemp makes 0600; give the file the mode open() would
        os.replace(tmp, path)
    except BaseException:
        with contextlib.suppress(FileNotFoundError):
            os.unlink(tmp)
        raise
    fsync_folder(path.parent)


def fsync_folder(path: str | os.PathLike) -> None:
    """Make the names in a folder durable (a rename is only on disk once its folder is fsync'd)."""
    fd = os.open(path, os.O_RDONLY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


def fsync_tree(path: str | os.PathLike) -> None:
    """fsync every file and folder under `path`, files first, so a rename after it publishes data on disk."""
    for root, folders, files in os.walk(path):
        for name in files:
            fd = os.open(os.path.join(root, name), os.O_RDONLY)
            try:
                os.fsync(fd)
            finally:
                os.close(fd)
    for root, folders, files in os.walk(path, topdown=False):
        fsync_folder(root)


def _umask() -> int:
    mask = os.umask(0)
    os.umask(mask)
    return mask


def publish(tmp: Path, path: Path) -> None:
    """Put the finished folder `tmp` in the place of `path` (replacing what is there), durably.

    The old folder is renamed aside first and removed only once the new one holds the name;
    between the two renames `path` is briefly absent, never half-written.
    """
    fsync_tree(tmp)
    if path.exists():
        old = path.with_name(f".{path.name}.old-{os.getpid()}")
        if old.exists():
            shutil.rmtree(old)
        os.replace(path, old)
        os.replace(tmp, path)
        fsync_folder(path.parent)
        shutil.rmtree(old, ignore_errors=True)
    else:
        os.replace(tmp, path)
        fsync_folder(path.parent)


@contextlib.contextmanager
def folder(path: str | os.PathLike, replace: bool = True, before_publish: Callable[[], None] | None = None) -> Iterator[Path]:
    """Yield a temporary folder beside `path`; on success it takes the place of `path`.

    With replace=False an existing `path` wins and the new folder is discarded, which lets two
    processes race to fill the same cache entry safely. `before_publish` may refuse the swap (raise):
    the new folder is then discarded and `path` left as it is.
    """
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = Path(tempfile.mkdtemp(prefix=f".{path.name}.", suffix=".tmp", dir=path.parent))
    os.chmod(tmp, 0o777 & ~_umask())  # mkdtemp makes 0700
    try:
        yield tmp
        if path.exists() and not replace:
            shutil.rmtree(tmp)
            return
        if before_publish is not None:
            before_publish()
        publish(tmp, path)
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        raise


_WRITE_ERRNOS = {errno.ENOSPC: "no space left on device", errno.EDQUOT: "disk quota exceeded",
                 errno.EROFS: "read-only file system", errno.EACCES: "permission denied", errno.EPERM: "permission denied"}
# torch.save and safetensors report a failed write in their own words, without an errno
_WRITE_FAILURE_TEXT = {"file write failed": "a write failed (disk full?)", "unexpected pos": "a write failed (disk full?)",
                       "storagefull": "no space left on device", "os error 28": "no space left on device",
                       "permissiondenied": "permission denied", "os error 13": "permission denied",
                       "read-only file system": "read-only file system", "os error 30": "read-only file system"}


def write_failure(error: BaseException, folder: str | os.PathLike | None = None) -> str | None:
    """What went wrong, when `error` is a failed write (disk full, read-only, no permission), else None.

    `folder`, where the failed write went, turns torch's wordless "file write failed" into
    "no space left on device" when that file system is (nearly) full.
    """
    if isinstance(error, OSError) and error.errno in _WRITE_ERRNOS:
        return _WRITE_ERRNOS[error.errno]
    text = str(error).lower().replace(" ", "") if not isinstance(error, OSError) else ""
    for needle, reason in _WRITE_FAILURE_TEXT.items():
        if needle.replace(" ", "") in text:
            if reason.endswith("(disk full?)") and folder is not None and _nearly_full(folder):
                return "no space left on device"
            return reason
    return None


def _nearly_full(folder: str | os.PathLike) -> bool:
    try:
        return shutil.disk_usage(folder).free < 1 << 20
    except OSError:
        return False
