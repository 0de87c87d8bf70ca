"""The machine a benchmark ran on, written into every results file, so a figure is never read without its machine."""

from __future__ import annotations

import json
import os
import platform
import sys
from importlib import metadata
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parents[1]
CPU_FLAGS = ("avx2", "avx512f", "avx512_bf16", "amx_bf16", "amx_tile")  # what decides fp32 vs native bf16 speed on a CPU
LIBRARIES = ("torch", "transformers", "peft", "accelerate", "datasets", "bitsandbytes", "llama_cpp_python")


def _cpuinfo() -> tuple[str, list[str]]:
    try:
        text = Path("/proc/cpuinfo").read_text()
    except OSError:
        return platform.processor() or platform.machine(), []
    model = next((line.split(":", 1)[1].strip() for line in text.splitlines() if line.startswith("model name")), platform.machine())
    flags = next((line.split(":", 1)[1].split() for line in text.splitlines() if line.startswith("flags")), [])
    return model, [flag for flag in CPU_FLAGS if flag in flags]


def machine() -> dict[str, Any]:
    import torch

    model, flags = _cpuinfo()
    versions = {}
    for name in LIBRARIES:
        try:
            versions[name] = metadata.version(name.replace("_", "-"))
        except metadata.PackageNotFoundError:
            pass
    return {
        "cpu": model, "cores": os.cpu_count(), "cpu_flags": flags,
        "native_bf16": bool(torch.ops.mkldnn._is_mkldnn_bf16_supported()),
        "gpu": torch.cuda.get_device_name(0) if torch.cuda.is_available() else None,
        "python": sys.version.split()[0], "libraries": versions,
    }


def write_results(path: str | Path, result: dict[str, Any]) -> None:
    """The benchmark's results with the machine, written whole (a temporary name, then a rename)."""
    sys.path.insert(0, str(ROOT))
    from peftlab import atomic

    atomic.write_text(Path(path), json.dumps({**result, "machine": machine()}, indent=2) + "\n")
