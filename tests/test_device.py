"""The device owner's rules (availability patched: there is no GPU here), and --device reaching every command's model load."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest
import torch

from peftlab.errors import PeftlabError
from peftlab.models import device as devices

ROOT = Path(__file__).resolve().parents[1]


@pytest.fixture
def machine(monkeypatch):
    """Pretend this machine has `cuda` GPUs of a compute capability and/or MPS on some macOS."""
    def pretend(cuda: int = 0, mps: bool = False, capability: tuple[int, int] = (9, 0), macos14: bool = True):
        monkeypatch.setattr(torch.cuda, "is_available", lambda: cuda > 0)
        monkeypatch.setattr(torch.cuda, "device_count", lambda: cuda)
        monkeypatch.setattr(torch.cuda, "current_device", lambda: 0)
        monkeypatch.setattr(torch.cuda, "get_device_capability", lambda device=None: capability)
        monkeypatch.setattr(torch.version, "hip", None)
        monkeypatch.setattr(torch.backends.mps, "is_available", lambda: mps)
        monkeypatch.setattr(torch.backends.mps, "is_macos_or_newer", lambda major, minor: macos14)
    return pretend


def test_auto_picks_cuda_then_mps_then_the_cpu(machine):
    machine(cuda=2, mps=True)
    assert devices.resolve_device("auto") == torch.device("cuda", 0)
    machine(cuda=0, mps=True)
    assert devices.resolve_device("auto") == torch.device("mps")
    machine(cuda=0, mps=False)
    assert devices.resolve_device("auto") == torch.device("cpu")


def test_named_devices_resolve_where_they_exist(machine):
    machine(cuda=2, mps=True)
    assert devices.resolve_device("cuda") == torch.device("cuda", 0)
    assert devices.resolve_device("cuda:1") == torch.device("cuda", 1)
    assert devices.resolve_device("mps") == torch.device("mps")
    assert devices.resolve_device("cpu") == torch.device("cpu")


@pytest.mark.parametrize("name, cuda, mps, words", [
    ("cuda", 0, True, "no CUDA GPU is visible (available: mps, cpu)"),
    ("cuda:2", 2, False, "this machine has 2 CUDA GPU(s) (available: cuda:0..cuda:1, cpu)"),
    ("mps", 1, False, "MPS is not available here (available: cuda:0..cuda:0, cpu)"),
    ("tpu", 0, False, "is not one of auto, cpu, cuda, cuda:N, mps"),
])
def test_a_missing_device_is_one_line_naming_what_there_is(machine, name, cuda, mps, words):
    machine(cuda=cuda, mps=mps)
    with pytest.raises(PeftlabError) as error:
        devices.resolve_device(name)
    assert words in str(error.value) and "\n" not in str(error.value)


@pytest.mark.parametrize("capability, dtype", [((8, 0), "bf16"), ((7, 5), "fp16")])
def test_cuda_dtype_is_bf16_where_native_else_fp16(machine, capability, dtype):
    machine(cuda=1, capability=capability)
    assert devices.resolve_dtype("auto", devices.resolve_device("cuda")) == dtype
    assert devices.resolve_dtype("fp32", devices.resolve_device("cuda")) == "fp32"  # asked for: kept


@pytest.mark.parametrize("macos14, dtype", [(True, "bf16"), (False, "fp16")])
def test_mps_dtype_is_bf16_from_macos_14_else_fp16(machine, macos14, dtype):
    machine(mps=True, macos14=macos14)
    assert devices.resolve_dtype("auto", devices.resolve_device("mps")) == dtype


@pytest.mark.parametrize("native, dtype", [(True, "bf16"), (False, "fp32")])
def test_cpu_dtype_is_bf16_only_with_native_bf16(machine, monkeypatch, native, dtype):
    machine()
    monkeypatch.setattr(torch.ops.mkldnn, "_is_mkldnn_bf16_supported", lambda: native)
    assert devices.cpu_computes_bf16() is native
    assert devices.resolve_dtype("auto", torch.device("cpu")) == dtype


def test_training_arguments_follow_the_device_and_dtype():
    assert devices.training_arguments(torch.device("cpu"), "bf16") == {"use_cpu": True, "bf16": False, "fp16": False}
    assert devices.training_arguments(torch.device("cuda", 0), "bf16") == {"use_cpu": False, "bf16": True, "fp16": False}
    assert devices.training_arguments(torch.device("cuda", 0), "fp16") == {"use_cpu": False, "bf16": False, "fp16": True}
    assert devices.training_arguments(torch.device("mps"), "fp32") == {"use_cpu": False, "bf16": False, "fp16": False}
    with pytest.raises(PeftlabError, match="CUDA_VISIBLE_DEVICES=1"):
        devices.check_training_device(torch.device("cuda", 1))


def test_placement_attention_and_quantization(machine, monkeypatch):
    machine(cuda=2)
    cuda = torch.device("cuda", 0)
    assert devices.placement(torch.device("cpu")) == {}
    assert devices.placement(cuda) == {"device_map": {"": "cuda:0"}}
    assert devices.placement(cuda, spread=True) == {"device_map": "auto"}
    assert devices.spreads("auto", cuda) and not devices.spreads("cuda", cuda)
    monkeypatch.setattr(devices.importlib.util, "find_spec", lambda name: object() if name == "flash_attn" else None)
    assert devices.attention_implementation("auto", cuda, "bf16") == "flash_attention_2"
    assert devices.attention_implementation("auto", cuda, "fp32") is None  # flash-attn has no fp32 kernels
    assert devices.attention_implementation("auto", torch.device("cpu"), "bf16") is None
    assert devices.attention_implementation("eager", cuda, "bf16") == "eager"
    assert devices.quantized_compute_dtype(cuda) == torch.bfloat16
    with pytest.raises(PeftlabError, match="no MPS kernels"):
        devices.check_quantization("4bit", torch.device("mps"))


def _cli(*args: str) -> subprocess.CompletedProcess:
    env = {**os.environ, "PYTHONPATH": str(ROOT), "HF_HUB_OFFLINE": "1", "OMP_NUM_THREADS": "1"}
    return subprocess.run([sys.executable, "-m", "peftlab", *args], capture_output=True, text=True, env=env, timeout=300, cwd=ROOT)


@pytest.mark.skipif(torch.cuda.is_available() or torch.backends.mps.is_available(), reason="this machine has a GPU")
@pytest.mark.parametrize("command, device", [("train --data {data} --output {out}", "cuda"), ("generate hello", "mps"),
                                             ("serve --port 0", "cuda:0")])
def test_cli_asking_for_a_missing_device_is_one_line_and_exit_2(tiny_llama, toy_data, tmp_path, command, device):
    args = command.format(data=toy_data, out=tmp_path / "run").split()
    done = _cli(*args, "--model", tiny_llama, "--device", device)
    assert done.returncode == 2, done.stderr
    lines = done.stderr.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith(f"error: --device {device}: ") and "available: cpu" in lines[0], done.stderr
    assert not (tmp_path / "run").exists()  # nothing written


class Loads:
    """Spy on the device owner's single entry point, as every model load calls it, and on the models loaded."""

    def __init__(self, monkeypatch):
        from peftlab.models import loading

        self.asked, self.models = [], []
        resolve, load = devices.resolve_device, loading._from_pretrained
        monkeypatch.setattr(devices, "resolve_device", lambda name="auto": self.asked.append(name) or resolve(name))
        monkeypatch.setattr(loading, "_from_pretrained", lambda *a, **k: self._keep(load(*a, **k)))

    def _keep(self, loaded):
        if isinstance(loaded, torch.nn.Module):
            self.models.append(loaded)
        return loaded

    def landed_on_cpu(self) -> bool:
        return bool(self.models) and all(p.device.type == "cpu" for m in self.models for p in m.parameters())


@pytest.fixture(scope="module")
def trained(tiny_llama, tmp_path_factory):
    from peftlab.cli import main

    data = tmp_path_factory.mktemp("rows") / "rows.jsonl"
    from tests.conftest import TOY_ROWS, write_jsonl

    write_jsonl(data, TOY_ROWS * 2)
    out = tmp_path_factory.mktemp("device-run") / "run"
    assert main(["train", "--model", tiny_llama, "--data", str(data), "--max-steps", "1", "--output", str(out), "--device", "cpu"]) == 0
    return out, data


COMMANDS = {
    "train": "train --model {model} --data {data} --max-steps 1 --output {tmp}/run2",
    "eval": "eval --adapter {run} --data {data} --max-new-tokens 2 --samples 0 --max-samples 2",
    "generate": "generate hello --adapter {run} --max-new-tokens 2",
    "merge": "merge --adapter {run} --output {tmp}/merged",
    "export": "export {run} --format gguf --type f32 --output {tmp}/model.gguf",
    "check": "check {run} --data {data} --max-samples 2 --max-new-tokens 2 --min-agreement 0",
}


@pytest.mark.parametrize("command", list(COMMANDS))
def test_every_command_loads_its_models_through_the_owner_on_the_asked_device(command, trained, tiny_llama, tmp_path, monkeypatch):
    from peftlab.cli import main

    run, data = trained
    loads = Loads(monkeypatch)
    args = COMMANDS[command].format(model=tiny_llama, data=data, run=run, tmp=tmp_path).split()
    main([*args, "--device", "cpu"])
    assert loads.asked and set(loads.asked) == {"cpu"}, loads.asked  # without the flag reaching the owner: "auto"
    assert loads.landed_on_cpu()


def test_serve_loads_through_the_owner_on_the_asked_device(trained, monkeypatch):
    from peftlab.cli import main
    from peftlab.serve import launch

    served = []

    def start(engine, *args, **kwargs):  # instead of listening: the engine's model, then stop
        served.append(engine.loaded.model)
        raise OSError(98, "stopped by the test")

    run, _ = trained
    loads = Loads(monkeypatch)
    monkeypatch.setattr(launch, "start", start)
    main(["serve", "--adapter", f"a={run}", "--port", "0", "--device", "cpu"])
    assert served and all(p.device.type == "cpu" for p in served[0].parameters())
    assert set(loads.asked) == {"cpu"} and loads.landed_on_cpu()


def test_compare_passes_the_device_to_its_runs_and_resumes_on_another():
    from peftlab.config import CompareSetup

    setup = CompareSetup(["data.train=train.jsonl", "model.device=cpu"], "test.jsonl")
    assert setup.shared_config().model.device == "cpu"  # each run's config.yaml, and the scoring, carry it
    assert setup.to_dict() == CompareSetup(["data.train=train.jsonl", "model.device=cuda"], "test.jsonl").to_dict()


@pytest.mark.skipif(torch.cuda.is_available(), reason="this machine has a CUDA GPU: gpu_check.py runs for real")
def test_gpu_check_without_a_gpu_says_so_in_one_line_and_exits_2():
    done = subprocess.run([sys.executable, str(ROOT / "benchmarks" / "gpu_check.py")], capture_output=True, text=True, timeout=300,
                          cwd=ROOT / "benchmarks", env={**os.environ, "PYTHONPATH": str(ROOT)})
    assert done.returncode == 2 and done.stdout.strip().splitlines() == [
        "gpu_check: no CUDA GPU is visible to torch here; run it on a machine with an NVIDIA GPU and a CUDA build of torch"]
