"""The one owner of where models run: the device (--device), the dtype that is fast there, the attention kernel, peak memory.

Every model load and the training arguments ask this module; no other module looks at
`torch.cuda` or `torch.backends.mps` (tests/test_layout.py holds that).
"""

from __future__ import annotations

import importlib.util
import re
import resource
from typing import Any

from peftlab.errors import PeftlabError

DEVICE_HELP = "where models run: auto (default: a CUDA GPU, else Apple Silicon's MPS, else the CPU), cpu, cuda, cuda:N or mps"
DTYPES = ("auto", "fp32", "bf16", "fp16")
_CUDA_INDEX = re.compile(r"^cuda:(\d+)$")


def _available() -> str:
    """What this machine offers, in words, for error messages."""
    import torch

    found = [f"cuda:0..cuda:{torch.cuda.device_count() - 1}"] if torch.cuda.is_available() else []
    found += ["mps"] if torch.backends.mps.is_available() else []
    return ", ".join(found + ["cpu"])


def resolve_device(name: str = "auto") -> Any:
    """'auto' | 'cpu' | 'cuda' | 'cuda:N' | 'mps' -> a torch.device that exists here; auto: CUDA, then MPS, then the CPU."""
    import torch

    name = (name or "auto").strip().lower()
    if name == "auto":
        if torch.cuda.is_available():
            return torch.device("cuda", torch.cuda.current_device())
        return torch.device("mps" if torch.backends.mps.is_available() else "cpu")
    if name == "cpu":
        return torch.device("cpu")
    if name == "mps":
        if not torch.backends.mps.is_available():
            raise PeftlabError(f"--device mps: Apple Silicon's MPS is not available here (available: {_available()}); "
                               "use --device auto or cpu, or on a Mac install torch from PyPI (see docs/getting-started.md)")
        return torch.device("mps")
    index = _CUDA_INDEX.match(name)
    if name == "cuda" or index:
        if not torch.cuda.is_available():
            raise PeftlabError(f"--device {name}: no CUDA GPU is visible (available: {_available()}); use --device auto or cpu, "
                               "or install a CUDA build of torch (see docs/getting-started.md)")
        number = int(index.group(1)) if index else torch.cuda.current_device()
        if number >= torch.cuda.device_count():
            raise PeftlabError(f"--device {name}: this machine has {torch.cuda.device_count()} CUDA GPU(s) (available: {_available()}); "
                               "pick one of those")
        return torch.device("cuda", number)
    raise PeftlabError(f"--device '{name}' is not one of auto, cpu, cuda, cuda:N, mps")


def cpu_computes_bf16() -> bool:
    """Whether this CPU has native bf16 arithmetic (AVX-512-BF16 or AMX): there bf16 matmuls ran ~2.8x faster than fp32;
    on AVX2-only CPUs torch emulates bf16 (0.28 GFLOP/s against 130 fp32, measured with torch 2.13)."""
    import torch

    try:
        return bool(torch.ops.mkldnn._is_mkldnn_bf16_supported())
    except (AttributeError, RuntimeError):
        return False


def _cuda_bf16(device: Any) -> bool:
    """Native bf16 only: compute capability 8 (Ampere) or newer, as torch.cuda.is_bf16_supported(including_emulation=False)
    reads it (torch 2.13); older GPUs emulate bf16 slower than they compute fp16. ROCm GPUs compute it."""
    import torch

    if torch.version.hip:
        return True
    return torch.cuda.get_device_capability(device)[0] >= 8


def _mps_bf16() -> bool:
    import torch

    # accelerate 1.15 and transformers 5.24 both read MPS bf16 support as macOS 14 or newer
    return bool(torch.backends.mps.is_macos_or_newer(14, 0))


def native_dtype(device: Any) -> str:
    """The dtype that is fast on `device`: bf16 where native, fp16 where only fp16 is (older GPUs, MPS before macOS 14), else fp32."""
    if device.type == "cuda":
        return "bf16" if _cuda_bf16(device) else "fp16"
    if device.type == "mps":
        return "bf16" if _mps_bf16() else "fp16"
    return "bf16" if cpu_computes_bf16() else "fp32"


def resolve_dtype(dtype: str, device: Any = None) -> str:
    """'auto' -> the device's fast dtype (native_dtype); fp32/bf16/fp16 as asked. `device`: a torch.device (None: resolve 'auto')."""
    if dtype != "auto":
        return dtype
    return native_dtype(device if device is not None else resolve_device("auto"))


def torch_dtype(dtype: str) -> Any:
    import torch

    return {"fp32": torch.float32, "bf16": torch.bfloat16, "fp16": torch.float16}[dtype]


def quantized_compute_dtype(device: Any) -> Any:
    """bitsandbytes' compute dtype: bf16 (QLoRA's recipe) unless the GPU only computes fp16 fast."""
    import torch

    if device.type == "cuda" and not _cuda_bf16(device):
        return torch.float16
    return torch.bfloat16


def attention_implementation(requested: str, device: Any, dtype: str) -> str | None:
    """'auto': flash_attention_2 for bf16/fp16 weights on a CUDA GPU where the flash-attn package is installed (it has no
    fp32 kernels), else transformers' choice (None: sdpa where the model has it, eager otherwise); other names as asked."""
    if requested != "auto":
        return requested
    if device.type == "cuda" and dtype in ("bf16", "fp16") and importlib.util.find_spec("flash_attn") is not None:
        return "flash_attention_2"
    return None


def check_quantization(quantization: str | None, device: Any) -> None:
    """bitsandbytes' 4/8-bit kernels exist for CUDA and the CPU (bitsandbytes 0.50), not for Apple's MPS."""
    if quantization and device.type == "mps":
        raise PeftlabError(f"{quantization} loading uses bitsandbytes, which has no MPS kernels; "
                           "use a method without quantization (e.g. lora instead of qlora) or --device cpu")


def spreads(device_name: str, device: Any) -> bool:
    """Whether a model for generation is spread over every GPU (device_map='auto'): only when --device auto found
    several CUDA GPUs. One GPU, or a named one, holds the whole model."""
    import torch

    return (device_name or "auto") == "auto" and device.type == "cuda" and torch.cuda.device_count() > 1


def placement(device: Any, spread: bool = False) -> dict[str, Any]:
    """from_pretrained's keyword for where weights go: straight onto the device (no CPU copy first; bitsandbytes' 4/8-bit
    layers need it); over every GPU when `spread`; nothing on the CPU (transformers' default)."""
    if spread:
        return {"device_map": "auto"}
    if device.type == "cpu":
        return {}
    return {"device_map": {"": str(device)}}  # e.g. {"": "cuda:0"}: every module on that device


def training_arguments(device: Any, dtype: str) -> dict[str, Any]:
    """TrainingArguments keywords for `device`: the CPU when asked (the Trainer picks CUDA, then MPS, itself otherwise);
    mixed precision on a GPU: bf16 autocast, or fp16 autocast with loss scaling (a GradScaler)."""
    accelerated = device.type in ("cuda", "mps")
    return {"use_cpu": device.type == "cpu", "bf16": accelerated and dtype == "bf16", "fp16": accelerated and dtype == "fp16"}


def check_training_device(device: Any) -> None:
    """The Trainer runs one process on the first visible GPU (transformers 5.24: cuda:0); a later one is picked by
    hiding the others."""
    if device.type == "cuda" and device.index not in (None, 0):
        raise PeftlabError(f"--device {device}: training uses the first visible GPU; run "
                           f"`CUDA_VISIBLE_DEVICES={device.index} peftlab train --device cuda ...` instead")


def reset_peak_memory(device: Any) -> None:
    import torch

    if device.type == "cuda":
        torch.cuda.reset_peak_memory_stats(device)


def peak_memory_bytes(device: Any = None) -> int:
    """Peak memory of this process on `device`: CUDA's allocator peak; on MPS the driver's current allocation (torch 2.13
    has no MPS peak counter); on the CPU the peak resident set (Linux reports KiB)."""
    import torch

    device = device if device is not None else resolve_device("auto")
    if device.type == "cuda":
        return int(torch.cuda.max_memory_allocated(device))
    if device.type == "mps":
        return int(torch.mps.driver_allocated_memory())
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * 1024


def release_cached_memory() -> None:
    """Give the memory of freed models back (torch keeps it cached on a GPU): between compare's scoring runs."""
    import torch

    if torch.cuda.is_available():
        torch.cuda.empty_cache()
    if torch.backends.mps.is_available():
        torch.mps.empty_cache()

