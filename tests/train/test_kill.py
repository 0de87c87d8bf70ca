"""Training killed for real (SIGKILL) at random moments, some inside a checkpoint save, resumed after
each kill: the final adapter is bit-identical to an uninterrupted run's, every step logged once."""

import contextlib
import json
import os
import random
import signal
import subprocess
import sys
import time
from pathlib import Path

import torch
from safetensors.torch import load_file

from peftlab.train.checkpoints import SAVING
from tests.train.test_distributed import CPU_CONFIG, free_port

ROOT = Path(__file__).resolve().parents[2]
WRAPPER = str(Path(__file__).resolve().parent / "slow_saves.py")
STEPS = 16


def environment():
    return {**os.environ, "PYTHONPATH": os.pathsep.join([str(ROOT), os.environ.get("PYTHONPATH", "")])}


def train_args(tiny_llama, data, out):
    return ["train", "--model", tiny_llama, "--data", data, "--dtype", "fp32", "--max-steps", str(STEPS), "--lr", "0.03",
            "--batch-size", "2", "--set", "lora.r=4", "--set", "lora.dropout=0.1", "--set", "train.save_steps=1",
            "--set", "train.save_total_limit=2", "--output", str(out)]


def logged_steps(out: Path) -> list[int]:
    path = out / "log.jsonl"
    if not path.exists():
        return []
    steps = []
    for line in path.read_text(encoding="utf-8").splitlines():
        try:
            record = json.loads(line)
        except ValueError:
            continue  # a torn last line, as a kill can leave it
        if "loss" in record:
            steps.append(record["step"])
    return steps


def wait_for(condition, process, timeout=120.0) -> bool:
    deadline = time.time() + timeout
    while time.time() < deadline:
        if condition():
            return True
        if process.poll() is not None:
            return False
        time.sleep(0.005)
    raise AssertionError("the training process made no progress in time")


def kill_repeatedly(command, out: Path, kills: int, seed: int) -> list[str]:
    """Start `command` (which resumes), SIGKILL its process group at a random moment, `kills` times;
    every other kill waits for a checkpoint save to start, the others for a new training step."""
    rng = random.Random(seed)
    landed = []
    while len(landed) < kills:
        before = len(logged_steps(out))
        process = subprocess.Popen(command, env=environment(), start_new_session=True,
                                   stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
        in_save = len(landed) % 2 == 0
        if in_save:
            alive = wait_for(lambda: (out / "checkpoints" / SAVING).is_dir(), process)
            time.sleep(rng.uniform(0, 0.1))
        else:
            alive = wait_for(lambda: len(logged_steps(out)) > before, process)
            time.sleep(rng.uniform(0, 0.5))
        if not alive or process.poll() is not None:
            raise AssertionError(f"the run finished before kill {len(landed) + 1}; give it more steps")
        kill_tree(process)
        landed.append("inside a save" if (out / "checkpoints" / SAVING).is_dir() else "between saves")
    return landed


def kill_tree(process) -> None:
    """SIGKILL a process and every descendant (torch's elastic launcher puts its workers in other groups)."""
    import psutil

    family = [psutil.Process(process.pid), *psutil.Process(process.pid).children(recursive=True)]
    for member in family:
        with contextlib.suppress(psutil.NoSuchProcess):
            member.send_signal(signal.SIGKILL)
    process.wait()
    psutil.wait_procs(family, timeout=30)


def assert_identical_adapters(a: Path, b: Path) -> None:
    first = load_file(a / "adapter" / "adapter_model.safetensors")
    second = load_file(b / "adapter" / "adapter_model.safetensors")
    assert first.keys() == second.keys()
    for key in first:
        assert first[key].dtype == torch.float32 and torch.equal(first[key], second[key]), key


def test_sigkill_at_random_moments_then_resume_gives_the_same_adapter(tiny_llama, toy_data, tmp_path):
    straight = subprocess.run([sys.executable, WRAPPER, *train_args(tiny_llama, toy_data, tmp_path / "straight")],
                              env=environment(), capture_output=True, text=True, timeout=600)
    assert straight.returncode == 0, straight.stderr[-2000:]

    out = tmp_path / "killed"
    command = [sys.executable, WRAPPER, *train_args(tiny_llama, toy_data, out), "--resume"]
    seed = int(os.environ.get("PEFTLAB_KILL_SEED", random.randrange(10**6)))
    landed = kill_repeatedly(command, out, kills=10, seed=seed)
    assert landed.count("inside a save") >= 3, (seed, landed)

    finished = subprocess.run(command, env=environment(), capture_output=True, text=True, timeout=600)
    assert finished.returncode == 0, (seed, finished.stderr[-2000:])
    assert "resuming from" in finished.stdout
    assert_identical_adapters(tmp_path / "straight", out)
    assert logged_steps(out) == list(range(1, STEPS + 1)), seed  # every step once: the resumed runs dropped their repeats
    assert not (out / "checkpoints" / SAVING).exists()


def test_two_process_run_killed_during_saves_resumes_to_the_same_adapter(tiny_llama, toy_data, tmp_path):
    def launch(out, *extra):
        return [sys.executable, "-m", "accelerate.commands.launch", "--config_file", str(CPU_CONFIG), "--main_process_port",
                str(free_port()), WRAPPER, *train_args(tiny_llama, toy_data, out), *extra]

    straight = subprocess.run(launch(tmp_path / "straight"), env=environment(), capture_output=True, text=True, timeout=600)
    assert straight.returncode == 0, straight.stderr[-2000:]

    out = tmp_path / "killed"
    seed = int(os.environ.get("PEFTLAB_KILL_SEED", random.randrange(10**6)))
    landed = kill_repeatedly(launch(out, "--resume"), out, kills=3, seed=seed)
    assert "inside a save" in landed, (seed, landed)
    finished = subprocess.run(launch(out, "--resume"), env=environment(), capture_output=True, text=True, timeout=600)
    assert finished.returncode == 0, (seed, finished.stderr[-2000:])
    assert_identical_adapters(tmp_path / "straight", out)
    assert logged_steps(out) == list(range(1, STEPS + 1)), seed
