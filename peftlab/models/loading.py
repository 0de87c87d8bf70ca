"""Turn a model spec (None, hub id, folder, .gguf file) into a transformers model and tokenizer."""

from __future__ import annotations

import logging
import re
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from peftlab.errors import PeftlabError
from peftlab.models.gguf_cache import DEFAULT_MODEL_LABEL, converted_folder, default_gguf_path

log = logging.getLogger(__name__)
HUB_ID = re.compile(r"^[A-Za-z0-9][\w.-]*(/[\w.-]+)?$")


@dataclass
class LoadedModel:
    model: Any
    tokenizer: Any
    spec: str  # what the user named (or the default's label)
    path: str  # what transformers loaded: a folder or a hub id
    is_seq2seq: bool
    dtype: str  # fp32 | bf16 | fp16
    quantization: str | None = None  # None | 4bit (NF4) | 8bit: base weights loaded through bitsandbytes
    device: str = "cpu"  # where the weights are: cpu, cuda:N, mps ("auto" when spread over several GPUs)


def resolve_source(name: str | None) -> tuple[str, str]:
    """Return (label, folder-or-hub-id) for a model spec, converting GGUF files once."""
    if name is None:
        return DEFAULT_MODEL_LABEL, str(converted_folder(default_gguf_path()))
    path = Path(name).expanduser()
    if path.is_file() and path.suffix == ".gguf":
        return name, str(converted_folder(path))
    if path.is_dir():
        if not (path / "config.json").is_file():
            raise PeftlabError(f"model folder {name} has no config.json; point --model at a saved transformers model or a .gguf file")
        return name, str(path)
    if path.suffix == ".gguf" or name.startswith((".", "/", "~")) or path.is_file():
        raise PeftlabError(f"model path {name} does not exist (or is not a folder or .gguf file); check the path")
    if not HUB_ID.match(name):
        raise PeftlabError(f"model '{name}' is neither an existing folder, a .gguf file nor a hub id like org/name")
    return name, name


def _from_pretrained(loader: Any, label: str, path: str, **kwargs: Any) -> Any:
    try:
        return loader.from_pretrained(path, **kwargs)
    except (OSError, ValueError) as error:
        first = str(error).strip().splitlines()[0] if str(error).strip() else type(error).__name__
        if Path(path).is_dir():
            raise PeftlabError(f"cannot load model {label} from {path}: {first}") from None
        raise PeftlabError(
            f"cannot load model '{label}' from the Hugging Face Hub (offline, or a wrong id?): {first[:200]}; "
            "check the id and the network, or pass a local folder or .gguf file with --model"
        ) from None


def load_tokenizer(path: str, label: str | None = None) -> Any:
    from transformers import AutoTokenizer

    tokenizer = _from_pretrained(AutoTokenizer, label or path, path)
    if tokenizer.pad_token is None:
        tokenizer.pad_token = tokenizer.eos_token
    return tokenizer


def load_model(name: str | None, dtype: str = "auto", attn_implementation: str = "auto",
               quantization: str | None = None, device: str = "auto", spread: bool = False) -> LoadedModel:
    """Load model and tokenizer onto `device` (--device: auto, cpu, cuda, cuda:N, mps); seq2seq (T5) or causal is read from the config.

    dtype: "auto" is the device's fast dtype (peftlab.models.device.native_dtype), or fp32 / bf16 / fp16.
    quantization: None, "4bit" (NF4 with double quantization, bf16 compute: QLoRA) or "8bit" (LLM.int8()).
    attn_implementation: "auto" lets the device owner choose (flash_attention_2 on CUDA where installed, else sdpa or eager).
    spread: over every CUDA GPU (device_map="auto"), for generation when --device auto finds several.
    """
    from transformers import AutoConfig, AutoModelForCausalLM, AutoModelForSeq2SeqLM

    from peftlab.models import device as devices

    target = devices.resolve_device(device)
    devices.check_quantization(quantization, target)
    label, path = resolve_source(name)
    config = _from_pretrained(AutoConfig, label, path)
    is_seq2seq = bool(getattr(config, "is_encoder_decoder", False))
    loader = AutoModelForSeq2SeqLM if is_seq2seq else AutoModelForCausalLM
    resolved = devices.resolve_dtype(dtype, target)
    extra = devices.placement(target, spread)
    if quantization:
        from peftlab.models.quantization import bitsandbytes_config

        extra["quantization_config"] = bitsandbytes_config(quantization, devices.quantized_compute_dtype(target))
    model = _from_pretrained(loader, label, path, dtype=devices.torch_dtype(resolved),
                             attn_implementation=devices.attention_implementation(attn_implementation, target, resolved), **extra)
    if quantization:
        from peftlab.models.quantization import keep_trainable_layout

        keep_trainable_layout(model)
    tokenizer = load_tokenizer(path, label)
    return LoadedModel(model, tokenizer, label, path, is_seq2seq, resolved, quantization, "auto" if spread else str(target))
