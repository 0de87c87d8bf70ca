"""Overwrite replaces only on success; a full or read-only disk costs nothing and the run resumes
after the cause is fixed; incomplete checkpoints and a torn step log never block --resume."""

import contextlib
import hashlib
import json
import math
import os
import shutil
import subprocess
import sys
import time
import uuid
from pathlib import Path

import pytest

from peftlab.cli import main
from peftlab.train.checkpoints import MANIFEST
from tests.train.test_kill import WRAPPER, assert_identical_adapters, environment, kill_tree, logged_steps

PAGE = 4096


def checksum(folder: Path) -> str:
    digest = hashlib.sha256()
    for path in sorted(folder.rglob("*")):
        digest.update(str(path.relative_to(folder)).encode())
        if path.is_file():
            digest.update(path.read_bytes())
    return digest.hexdigest()


def train_args(tiny_llama, data, out, steps=6, *extra):
    return ["train", "--model", tiny_llama, "--data", data, "--dtype", "fp32", "--max-steps", str(steps), "--lr", "0.03",
            "--batch-size", "2", "--set", "lora.r=4", "--set", "lora.dropout=0", "--set", "train.save_steps=1",
            "--set", "train.save_total_limit=2", "--output", str(out), *extra]


def cli(args, capsys) -> tuple[int, str]:
    code = main(args)
    return code, capsys.readouterr().err


def one_line(err: str) -> str:
    lines = [line for line in err.replace("\r", "\n").splitlines() if line.strip() and not line.startswith("train:")]
    assert len(lines) == 1 and lines[0].startswith("error: ") and "Traceback" not in err, err
    return lines[0]


@pytest.fixture
def small_disk(tmp_path):
    """A real, small file system: a tmpfs mounted for this test (needs root, as in CI's container)."""
    mount = tmp_path / "disk"
    mount.mkdir()
    tried = subprocess.run(["mount", "-t", "tmpfs", "-o", "size=64m", "tmpfs", str(mount)], capture_output=True, text=True)
    if tried.returncode != 0:
        pytest.skip(f"cannot mount a tmpfs here ({tried.stderr.strip() or 'mount failed'}); the disk-full test needs root")
    yield mount
    subprocess.run(["umount", "-l", str(mount)], check=False)


def resumes_to_the_reference(args, reference: Path, out: Path, steps: int, capsys, checkpoint: str = "checkpoint-") -> str:
    """Run `args` (a resume): it must resume from `checkpoint` and end bit-identical to `reference`, each step logged once."""
    code = main(args)
    printed = capsys.readouterr()
    assert code == 0, printed.err
    assert "resuming from" in printed.out and checkpoint in printed.out, printed.out
    assert_identical_adapters(reference, out)
    assert logged_steps(out) == list(range(1, steps + 1))
    return printed.out


def pages(folder: Path) -> int:
    return sum(math.ceil(p.stat().st_size / PAGE) * PAGE for p in folder.rglob("*") if p.is_file())


def test_overwrite_with_bad_data_keeps_the_finished_run(tiny_llama, toy_data, tmp_path, capsys):
    out = tmp_path / "out"
    assert cli(train_args(tiny_llama, toy_data, out, 2), capsys)[0] == 0
    before = checksum(out)
    bad = tmp_path / "bad.jsonl"
    bad.write_text('{"dialogue": "a", "summary": "b"}\n{oops\n')
    code, err = cli(train_args(tiny_llama, str(bad), out, 3, "--overwrite"), capsys)
    assert code == 2 and "bad.jsonl line 2" in one_line(err)
    assert checksum(out) == before and sorted(p.name for p in tmp_path.iterdir()) == ["bad.jsonl", "out", "toy.jsonl"]


def test_overwrite_killed_midway_keeps_the_old_run_and_resumes(tiny_llama, toy_data, tmp_path, capsys):
    out = tmp_path / "out"
    assert cli(train_args(tiny_llama, toy_data, out, 2), capsys)[0] == 0
    before = checksum(out)
    command = [sys.executable, WRAPPER, *train_args(tiny_llama, toy_data, out, 8, "--overwrite")]
    process = subprocess.Popen(command, env=environment(), start_new_session=True, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    staging = tmp_path / ".out.peftlab-new"
    deadline = time.time() + 300
    while not list(staging.glob(f"checkpoints/checkpoint-3/{MANIFEST}")) and process.poll() is None and time.time() < deadline:
        time.sleep(0.01)
    kill_tree(process)
    assert checksum(out) == before  # the finished run is untouched while its replacement is half-built
    assert json.loads((out / "summary.json").read_text())["steps"] == 2
    finished = subprocess.run([*command, "--resume"], env=environment(), capture_output=True, text=True, timeout=600)
    assert finished.returncode == 0, finished.stderr[-2000:]
    assert "resuming from" in finished.stdout and "checkpoint-" in finished.stdout
    assert json.loads((out / "summary.json").read_text())["steps"] == 8 and not staging.exists()
    assert [r["step"] for r in map(json.loads, (out / "log.jsonl").read_text().splitlines()) if r.get("resumed")]


def test_resume_skips_an_incomplete_checkpoint_and_a_torn_log_line(tiny_llama, toy_data, tmp_path, capsys):
    straight, out = tmp_path / "straight", tmp_path / "out"
    assert cli(train_args(tiny_llama, toy_data, straight, 6), capsys)[0] == 0
    assert cli(train_args(tiny_llama, toy_data, out, 6), capsys)[0] == 0
    # Made by hand, so weaker than a real kill (test_kill does those): what a damaged disk can leave.
    shutil.rmtree(out / "adapter")
    (out / "summary.json").unlink()
    (out / "checkpoints" / "checkpoint-6" / "optimizer.pt").unlink()
    with (out / "log.jsonl").open("a") as log:
        log.write('{"step": 7, "lo')
    printed = resumes_to_the_reference([*train_args(tiny_llama, toy_data, out, 6), "--resume"], straight, out, 6, capsys, "checkpoint-5")
    assert "skipped incomplete checkpoint-6 (optimizer.pt is missing)" in printed


def test_a_full_disk_costs_nothing_and_the_run_resumes_once_space_is_freed(tiny_llama, toy_data, tmp_path, small_disk, capsys):
    reference = tmp_path / "reference"
    assert cli(train_args(tiny_llama, toy_data, reference, 6), capsys)[0] == 0
    out = small_disk / "out"
    assert cli(train_args(tiny_llama, toy_data, out, 2), capsys)[0] == 0
    before = checksum(out)

    # leave room for the new run's config, log and one checkpoint and a half: it fails at its second save
    checkpoint = pages(reference / "checkpoints" / "checkpoint-6")
    room = 4 * PAGE + checkpoint * 3 // 2
    filler = small_disk / f"filler-{uuid.uuid4().hex}"
    with filler.open("wb") as handle:
        handle.write(b"\0" * max(shutil.disk_usage(small_disk).free - room, 0))
    code, err = cli(train_args(tiny_llama, toy_data, out, 6, "--overwrite"), capsys)
    line = one_line(err)
    assert code == 2 and "no space left on device" in line and "--overwrite --resume" in line, line
    assert checksum(out) == before

    filler.unlink()
    resumes_to_the_reference(train_args(tiny_llama, toy_data, out, 6, "--overwrite", "--resume"), reference, out, 6, capsys, "checkpoint-1")


def test_a_disk_turned_read_only_mid_run_is_one_line_and_the_run_resumes(tiny_llama, toy_data, tmp_path, small_disk, capsys):
    reference = tmp_path / "reference"
    assert cli(train_args(tiny_llama, toy_data, reference, 8), capsys)[0] == 0
    out = small_disk / "out"
    process = subprocess.Popen([sys.executable, WRAPPER, *train_args(tiny_llama, toy_data, out, 8)], env=environment(),
                               stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    deadline = time.time() + 300
    while not list(out.glob(f"checkpoints/checkpoint-2/{MANIFEST}")) and process.poll() is None and time.time() < deadline:
        time.sleep(0.01)
    subprocess.run(["mount", "-o", "remount,ro", str(small_disk)], check=True)
    try:
        _, err = process.communicate(timeout=300)
    finally:
        subprocess.run(["mount", "-o", "remount,rw", str(small_disk)], check=True)
    assert process.returncode == 2, err[-2000:]
    line = one_line(err)
    assert "read-only file system" in line and "--resume" in line, line
    resumes_to_the_reference([*train_args(tiny_llama, toy_data, out, 8), "--resume"], reference, out, 8, capsys)
