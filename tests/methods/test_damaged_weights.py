"""Damaged weights are never accepted: a weights file with no tensors, renamed tensors, a tensor of another shape or
a NaN value is refused in one line naming the folder, for every method's saved format, and through every command
that loads a trained result (generate, eval, merge, export, check; serve in tests/serve/test_damaged_adapters.py).

Before this check, peft and transformers loaded an empty or renamed file without an error and the model answered
as the base (exit 0); export wrote the base as "merged"."""

from __future__ import annotations

from pathlib import Path

import pytest
import torch

from peftlab.cli import main
from peftlab.errors import PeftlabError
from peftlab.generation import load_for_generation
from peftlab.methods import BuildContext, get_method
from peftlab.models import load_model
from tests.conftest import TOY_ROWS, write_jsonl
from tests.damaged import DAMAGES, damaged_copy
from tests.tiny_models import train_tiny

# one of each saved format: PEFT (LoRA family, IA3, prompt learning, LN tuning), bottleneck adapters, trained-parameter
# files (bitfit, freeze), whole models (full)
FORMATS = [
    ("lora", {"r": 4}), ("ia3", {}), ("prompt-tuning", {"num_virtual_tokens": 4}), ("prefix-tuning", {"num_virtual_tokens": 4}),
    ("p-tuning", {"num_virtual_tokens": 4, "encoder_hidden_size": 16}), ("ln-tuning", {}), ("adapter", {"reduction_factor": 4}),
    ("bitfit", {"add_missing_biases": True}), ("freeze", {"blocks": 1}), ("full", {}),
]


@pytest.fixture(scope="module")
def saved(tiny_llama, tmp_path_factory) -> dict[str, Path]:
    """Each format's result as its method saves it (built, weights moved off their initial values, saved; no training)."""
    results = {}
    for name, settings in FORMATS:
        method = get_method(name)
        model = method.build(load_model(tiny_llama, "fp32").model, method.parse_settings(settings), BuildContext(False, 4))
        with torch.no_grad():
            for parameter in model.parameters():
                if parameter.requires_grad:
                    parameter.add_(0.01)
        folder = tmp_path_factory.mktemp(name) / "adapter"
        method.save(model, folder)
        results[name] = folder
    return results


@pytest.mark.parametrize("name", [name for name, _ in FORMATS])
def test_every_format_loads_whole_and_refuses_each_damage(name, saved, tiny_llama, tmp_path):
    """Through `load_for_generation`, as generate, eval, check and export load (a tensor of another shape is named
    there as an adapter that does not fit the base)."""
    load_for_generation(tiny_llama, "fp32", str(saved[name]))  # the undamaged result loads
    for damage, said in DAMAGES.items():
        copy = damaged_copy(saved[name], tmp_path / damage, damage)
        with pytest.raises(PeftlabError) as refused:
            load_for_generation(tiny_llama, "fp32", copy)
        message = str(refused.value)
        assert copy in message and said in message and "\n" not in message, (damage, message)


# --- through the commands, with a trained LoRA adapter ---------------------------------------------------------

@pytest.fixture(scope="module")
def lora(tiny_llama, tmp_path_factory) -> str:
    folder = tmp_path_factory.mktemp("damaged-lora")
    train_tiny(tiny_llama, write_jsonl(folder / "toy.jsonl", TOY_ROWS * 2), folder / "run", "train.max_steps=2")
    return str(folder / "run" / "adapter")


def commands(adapter: str, llama: str, work: Path) -> dict[str, list[str]]:
    rows = str(write_jsonl(work / "rows.jsonl", TOY_ROWS[:2]))
    return {
        "generate": ["generate", "--model", llama, "--dtype", "fp32", "--adapter", adapter, "--max-new-tokens", "2", "Hello"],
        "eval": ["eval", "--model", llama, "--dtype", "fp32", "--adapter", adapter, "--data", rows, "--output", str(work / "eval"),
                 "--max-new-tokens", "2", "--samples", "0"],
        "merge": ["merge", "--adapter", adapter, "--output", str(work / "merged"), "--dtype", "fp32"],
        "export": ["export", adapter, "--type", "f32", "--output", str(work / "model.gguf")],
        "export-lora": ["export", adapter, "--format", "gguf-lora", "--output", str(work / "lora.gguf")],
        "check": ["check", adapter, "--data", rows, "--max-new-tokens", "2"],
    }


@pytest.mark.parametrize("damage", list(DAMAGES))
def test_every_command_refuses_a_damaged_adapter_in_one_line(damage, lora, tiny_llama, tmp_path, capsys):
    adapter = damaged_copy(lora, tmp_path / "adapter", damage)
    for command, argv in commands(adapter, tiny_llama, tmp_path).items():
        capsys.readouterr()
        code = main(argv)
        err = capsys.readouterr().err
        lines = [line for line in err.splitlines() if line.strip()]
        assert code == 2 and len(lines) == 1, (command, code, err)
        assert adapter in lines[0] and DAMAGES[damage] in lines[0], (command, lines[0])
    assert sorted(path.name for path in tmp_path.iterdir()) == ["adapter", "rows.jsonl"]  # no output written
