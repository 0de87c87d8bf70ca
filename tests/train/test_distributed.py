"""`accelerate launch` on two CPU processes (gloo): data sharded, gradients all-reduced, outputs written once."""

import json
import os
import shutil
import socket
import subprocess
import sys
from pathlib import Path

import torch
from safetensors.torch import load_file

from peftlab.train.recipe import run
from tests.tiny_models import tiny_run_config

CPU_CONFIG = Path(__file__).resolve().parents[2] / "examples" / "accelerate" / "cpu_2proc.yaml"


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def launch(args, tmp_path):
    env = {**os.environ, "PYTHONPATH": os.pathsep.join([str(Path(__file__).resolve().parents[2]), os.environ.get("PYTHONPATH", "")])}
    return subprocess.run(
        [sys.executable, "-m", "accelerate.commands.launch", "--config_file", str(CPU_CONFIG),
         "--main_process_port", str(free_port()), "-m", "peftlab", "train", *args],
        capture_output=True, text=True, timeout=600, env=env,
    )


def test_two_processes_match_one_process_with_the_same_global_batch(tiny_llama, toy_data, tmp_path):
    common = ["--model", tiny_llama, "--data", toy_data, "--dtype", "fp32", "--max-steps", "4", "--lr", "0.03",
              "--set", "lora.r=4", "--set", "lora.dropout=0", "--set", "train.save_steps=2"]
    launched = launch([*common, "--batch-size", "2", "--output", str(tmp_path / "two")], tmp_path)
    assert launched.returncode == 0, launched.stderr[-3000:]
    # one voice: the summary lines appear once, not once per process
    assert launched.stdout.count("trainable parameters:") == 1, launched.stdout
    assert launched.stdout.count("real tokens/s") == 1, launched.stdout

    single = tiny_run_config(tiny_llama, toy_data, tmp_path / "one", "train.max_steps=4", "train.lr=0.03", "lora.dropout=0",
                             "train.save_steps=2", "train.batch_size=4")
    run(single)

    two = json.loads((tmp_path / "two" / "summary.json").read_text())
    one = json.loads((tmp_path / "one" / "summary.json").read_text())
    assert two["processes"] == 2 and one["processes"] == 1
    assert two["real_tokens"] == one["real_tokens"]  # both ranks' shards together = the single run's batches
    a = load_file(tmp_path / "one" / "adapter" / "adapter_model.safetensors")
    b = load_file(tmp_path / "two" / "adapter" / "adapter_model.safetensors")
    assert a.keys() == b.keys()
    for key in a:
        assert torch.allclose(a[key], b[key], atol=1e-5), key
    steps = [json.loads(line) for line in (tmp_path / "two" / "log.jsonl").read_text().splitlines()]
    assert [s["step"] for s in steps if "loss" in s] == [1, 2, 3, 4]  # logged once, by the main process
    assert sorted(p.name for p in (tmp_path / "two").iterdir()) == ["adapter", "checkpoints", "log.jsonl", "run.yaml", "summary.json"]

    # A run killed after its step-2 checkpoint leaves exactly this behind; --resume must finish it
    # with the same adapter as the uninterrupted two-process run.
    shutil.copytree(tmp_path / "two", tmp_path / "killed")
    for leftover in ("adapter", "checkpoints/checkpoint-4", "summary.json"):
        shutil.rmtree(tmp_path / "killed" / leftover) if (tmp_path / "killed" / leftover).is_dir() else (tmp_path / "killed" / leftover).unlink()
    (tmp_path / "killed" / "run.yaml").write_text((tmp_path / "killed" / "run.yaml").read_text().replace(str(tmp_path / "two"), str(tmp_path / "killed")))
    resumed = launch([*common, "--batch-size", "2", "--output", str(tmp_path / "killed"), "--resume"], tmp_path)
    assert resumed.returncode == 0, resumed.stderr[-3000:]
    assert "resuming from" in resumed.stdout and "checkpoint-2" in resumed.stdout
    c = load_file(tmp_path / "killed" / "adapter" / "adapter_model.safetensors")
    for key in b:
        assert torch.allclose(b[key], c[key], atol=1e-6), key


def test_two_processes_with_micro_batches_match_one_process(tiny_llama, toy_data, tmp_path):
    """Each rank cuts its rows into micro-batches (one row each here), every piece normalised by the answer tokens
    of all ranks' batches: the result is one process's with whole batches."""
    common = ["--model", tiny_llama, "--data", toy_data, "--dtype", "fp32", "--max-steps", "3", "--lr", "0.03",
              "--set", "lora.r=4", "--set", "lora.dropout=0", "--set", "train.save_steps=10"]
    launched = launch([*common, "--batch-size", "2", "--set", "train.max_batch_tokens=8", "--output", str(tmp_path / "two")], tmp_path)
    assert launched.returncode == 0, launched.stderr[-3000:]
    run(tiny_run_config(tiny_llama, toy_data, tmp_path / "one", "train.max_steps=3", "train.lr=0.03", "lora.dropout=0",
                        "train.save_steps=10", "train.batch_size=4", "train.max_batch_tokens=0"))
    a = load_file(tmp_path / "one" / "adapter" / "adapter_model.safetensors")
    b = load_file(tmp_path / "two" / "adapter" / "adapter_model.safetensors")
    for key in a:
        assert torch.allclose(a[key], b[key], atol=1e-5), key
