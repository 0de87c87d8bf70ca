"""The family matrix: a tiny random model of every family through every command (train with five methods, eval,
merge, export, check, serve). Run it alone with `pytest -m families`; with $PEFTLAB_FAMILY_MATRIX set, each cell's
outcome is written to that JSON file, from which `scripts/family-matrix` writes the documentation's table (docs/concepts/families.md).

A cell passes when the command works, or when it is refused (one line, exit 2) for a reason in LIBRARY_LIMITS: a
thing a library, not peftlab, cannot do. Any other refusal or error fails the cell.
"""

from __future__ import annotations

import json
import os
from pathlib import Path

import pytest

from peftlab.cli import main
from tests.conftest import TOY_ROWS, write_jsonl
from tests.tiny_models import FAMILIES, save_tiny_any, train_tiny

pytestmark = pytest.mark.families

METHODS = ["lora", "ia3", "prompt-tuning", "adapter", "dora"]  # adapter: the bottleneck (Houlsby) adapter
COMMANDS = [*(f"train {method}" for method in METHODS), "eval", "merge", "export", "check", "serve"]
# (family, command) -> why a library cannot do it; the documentation's matrix lists each such cell with its reason
LIBRARY_LIMITS = {
    ("opt", "export"): "GGUF: neither the gguf package nor llama.cpp has an OPT architecture",
    ("t5", "export"): "GGUF: llama.cpp runs T5 through llama_encode, which llama-cpp-python 0.3.36's Llama.generate "
                      "never calls, so no file of ours could be checked",
}
_outcomes: dict[str, dict[str, str]] = {}  # family -> command -> "ok" | "refused: ..." | "failed: ..."
_adapters: dict[str, str] = {}  # family -> its LoRA adapter folder, trained by the "train lora" cell


@pytest.fixture(scope="module")
def workspace(tmp_path_factory) -> Path:
    return tmp_path_factory.mktemp("families")


@pytest.fixture(scope="module", autouse=True)
def matrix_file():
    """Write every cell's outcome to $PEFTLAB_FAMILY_MATRIX (when set) once the file's tests have run."""
    yield
    target = os.environ.get("PEFTLAB_FAMILY_MATRIX")
    if target:
        Path(target).write_text(json.dumps({"commands": COMMANDS, "limits": {f"{f} {c}": r for (f, c), r in LIBRARY_LIMITS.items()},
                                            "outcomes": _outcomes}, indent=2), encoding="utf-8")


def _model(family: str, workspace: Path) -> str:
    folder = workspace / family / "model"
    if not folder.is_dir():
        save_tiny_any(family, folder)
    return str(folder)


def _rows(workspace: Path) -> str:
    return str(write_jsonl(workspace / "rows.jsonl", TOY_ROWS))


def _cli(args: list[str], capsys) -> str:
    """Run a command in this process: "ok" (exit 0), else "refused: <its one line>"."""
    capsys.readouterr()
    code = main(args)
    said = capsys.readouterr()
    if code == 0:
        return "ok"
    lines = (said.err.strip() or said.out.strip()).splitlines()
    return f"refused: {lines[-1] if lines else f'exit {code}'}"


def _train(family: str, method: str, workspace: Path) -> str:
    from peftlab.errors import PeftlabError

    out = workspace / family / method
    try:
        train_tiny(_model(family, workspace), _rows(workspace), out, f"method={method}", "train.max_steps=2")
    except PeftlabError as error:
        return f"refused: {error}"
    if method == "lora":
        _adapters[family] = str(out / "adapter")
    return "ok"


def _serve(adapter: str, workspace: Path, capsys, monkeypatch) -> str:
    """A real server on loopback with the adapter as 'tuned'; `check --server` compares its answers with the adapter's."""
    from peftlab.serve.http import start, stop
    from peftlab.serve.launch import load_engine

    monkeypatch.setenv("PEFTLAB_API_KEY", "family-key")
    server = start(load_engine(None, [("tuned", adapter)], "fp32"), "127.0.0.1", 0, "family-key")
    try:
        return _cli(["check", adapter, "--data", _rows(workspace), "--max-new-tokens", "4",
                     "--server", f"http://127.0.0.1:{server.port}", "--server-model", "tuned"], capsys)
    finally:
        stop(server)


def _run(family: str, command: str, workspace: Path, capsys, monkeypatch) -> str:
    if command.startswith("train "):
        return _train(family, command.split()[1], workspace)
    if family not in _adapters:
        _train(family, "lora", workspace)
    adapter = _adapters.get(family)
    if adapter is None:
        return "failed: no LoRA adapter to take further"
    rows = _rows(workspace)
    if command == "eval":
        return _cli(["eval", "--adapter", adapter, "--data", rows, "--max-new-tokens", "4", "--skip-base",
                     "--output", str(workspace / family / "eval")], capsys)
    if command == "merge":
        return _cli(["merge", "--adapter", adapter, "--output", str(workspace / family / "merged")], capsys)
    if command == "export":
        return _cli(["export", adapter, "--output", str(workspace / family / "merged.gguf")], capsys)
    if command == "check":
        return _cli(["check", adapter, "--data", rows, "--max-new-tokens", "4"], capsys)
    return _serve(adapter, workspace, capsys, monkeypatch)


@pytest.mark.parametrize("command", COMMANDS)
@pytest.mark.parametrize("family", FAMILIES)
def test_family_command(family, command, workspace, capsys, monkeypatch):
    try:
        outcome = _run(family, command, workspace, capsys, monkeypatch)
    except Exception as error:
        _outcomes.setdefault(family, {})[command] = f"failed: {type(error).__name__}: {str(error).splitlines()[0][:200]}"
        raise
    _outcomes.setdefault(family, {})[command] = outcome
    if outcome.startswith("refused") and (family, command) in LIBRARY_LIMITS:
        return
    assert outcome == "ok", f"{family} {command}: {outcome}"
