"""NaN never passes a parity or difference check. An adapter whose weights are all finite but overflow (two LoRA
ranks of +3e38 and -3e38 on equal inputs: inf - inf) gives NaN logits on base + adapter and on the merged model:
their difference is NaN, and `nan > limit` is False, so merge printed "matches base + adapter (relative logit
difference nan)" and check printed "check passed"."""

from __future__ import annotations

import shutil
from pathlib import Path

import numpy as np
import torch

from peftlab.cli import main
from peftlab.export.merge import relative_difference, within
from tests.conftest import TOY_ROWS, write_jsonl


def overflowing_copy(adapter: str, destination: Path) -> str:
    from safetensors.torch import load_file, save_file

    copy = Path(shutil.copytree(adapter, destination))
    weights = copy / "adapter_model.safetensors"
    tensors = load_file(str(weights))
    for name, tensor in tensors.items():
        if "lora_A" in name:
            tensor[:2] = 10.0  # ranks 0 and 1 see the same input...
        if "lora_B" in name:
            tensor[:, 0], tensor[:, 1] = 3e38, -3e38  # ...and add it at +-3e38: each product overflows, their sum is NaN
    assert all(bool(torch.isfinite(tensor).all()) for tensor in tensors.values())  # the load check passes it
    save_file(tensors, str(weights), metadata={"format": "pt"})
    return str(copy)


def one_error_line(capsys) -> str:
    captured = capsys.readouterr()
    lines = [line for line in captured.err.splitlines() if line.strip()]
    assert len(lines) == 1 and lines[0].startswith("error: "), captured
    return lines[0]


def test_merge_and_export_refuse_nan_logits(adapter, tmp_path, capsys):
    overflowing = overflowing_copy(adapter, tmp_path / "adapter")
    assert main(["merge", "--adapter", overflowing, "--output", str(tmp_path / "merged"), "--dtype", "fp32"]) == 2
    assert "NaN or infinite logits" in one_error_line(capsys)
    assert main(["export", overflowing, "--type", "f32", "--output", str(tmp_path / "model.gguf")]) == 2
    assert "NaN or infinite logits" in one_error_line(capsys)
    assert sorted(path.name for path in tmp_path.iterdir()) == ["adapter"]


def test_check_fails_on_nan_logits(adapter, tmp_path, capsys):
    overflowing = overflowing_copy(adapter, tmp_path / "adapter")
    rows = write_jsonl(tmp_path / "rows.jsonl", TOY_ROWS[:2])
    code = main(["check", overflowing, "--data", str(rows), "--max-new-tokens", "2"])
    printed = capsys.readouterr()
    assert code != 0 and "check passed" not in printed.out, printed
    assert "NaN or infinite logits" in printed.err


def test_a_non_finite_difference_never_passes_a_limit():
    for nan in (np.array([0.0, np.nan]), torch.tensor([0.0, float("nan")]), torch.tensor([0.0, float("inf")])):
        assert relative_difference(nan, nan * 0 + 1) == float("inf")
        assert relative_difference(nan * 0 + 1, nan) == float("inf")
        assert max(0.0, relative_difference(nan, nan)) == float("inf")  # a maximum over layers keeps it
    assert not within(float("nan"), 1.0) and not within(float("inf")) and within(1e-5, 1e-4)
