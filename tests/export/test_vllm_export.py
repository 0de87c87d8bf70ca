"""`peftlab export ADAPTER... --format vllm`: LoRA folders vLLM accepts, and the `vllm serve` command line that serves them."""

from __future__ import annotations

import json
import shlex
import subprocess
from pathlib import Path

from peftlab.cli import main
from peftlab.serve import vllm_compat
from tests.serve.conftest import train_adapter


def test_lora_and_a_converted_loha_are_written_with_the_serve_command(tiny_llama, tmp_path, capsys):
    (tmp_path / "a").mkdir(), (tmp_path / "b").mkdir()
    lora = train_adapter(tiny_llama, tmp_path / "a", "lora.r=20")
    loha = train_adapter(tiny_llama, tmp_path / "b", "method=loha", "loha.r=4")
    out = tmp_path / "vllm"
    assert main(["export", f"support={lora}", f"legal={loha}", "--format", "vllm", "--rank", "8", "--output", str(out),
                 "--device", "cpu"]) == 0
    for name in ("support", "legal"):
        assert vllm_compat.problems(out / name) == []  # vLLM's rules: LoRA tensors only, no DoRA, bias none...
    script = (out / "serve.sh").read_text()
    command = shlex.split(script.splitlines()[-1])
    assert command[:3] == ["exec", "vllm", "serve"] and command[3] == str(Path(tiny_llama).resolve())
    assert command[4:] == ["--enable-lora", "--lora-modules", "support=./support", "legal=./legal",
                           "--max-lora-rank", "32", "--max-loras", "2", "$@"]  # LoRA rank 20 -> the next value vLLM allows
    assert 'cd "$(dirname "$0")"' in script and (out / "serve.sh").stat().st_mode & 0o111
    assert "--server http://127.0.0.1:8000 --server-model support" in (out / "README.md").read_text()
    assert json.loads((out / "vllm.json").read_text())["adapters"] == ["support", "legal"]
    # the script parses as sh, and its paths are the written folders
    assert subprocess.run(["sh", "-n", str(out / "serve.sh")]).returncode == 0
    assert "vllm serve" in capsys.readouterr().out


def test_an_adapter_vllm_cannot_serve_is_refused_and_nothing_written(tiny_llama, tmp_path, capsys):
    (tmp_path / "c").mkdir()
    ia3 = train_adapter(tiny_llama, tmp_path / "c", "method=ia3")
    out = tmp_path / "vllm"
    capsys.readouterr()  # the training's progress
    assert main(["export", ia3, "--format", "vllm", "--output", str(out)]) == 2
    error = capsys.readouterr().err.strip().splitlines()
    assert len(error) == 1 and "cannot be served by vLLM" in error[0] and "peftlab serve" in error[0]
    assert not out.exists()


def test_other_formats_take_one_source(adapter, tmp_path, capsys):
    assert main(["export", adapter, adapter, "--output", str(tmp_path / "m.gguf")]) == 2
    assert "--format gguf exports one source; got 2" in capsys.readouterr().err
