"""Will vLLM load this adapter? Its documented LoRA rules (vllm/lora/peft_helper.py, vllm/lora/utils.py), checked offline."""

from __future__ import annotations

import json
from pathlib import Path

from peftlab.artifacts import ADAPTER_CONFIG, adapter_folder, recorded_base

VLLM_RANKS = (1, 8, 16, 32, 64, 128, 256, 320, 512)  # values vLLM's --max-lora-rank accepts
ALLOWED_TENSORS = ("lora_A", "lora_B", "lora_embedding_A", "lora_embedding_B")


def _tensor_names(folder: Path) -> list[str]:
    if (folder / "adapter_model.safetensors").is_file():
        from safetensors import safe_open

        with safe_open(str(folder / "adapter_model.safetensors"), framework="pt") as handle:
            return list(handle.keys())
    if (folder / "adapter_model.bin").is_file():
        import torch

        return list(torch.load(folder / "adapter_model.bin", map_location="cpu", weights_only=True))
    return []


def _encoder_decoder_base(folder: Path, config: dict) -> bool:
    if config.get("task_type") == "SEQ_2_SEQ_LM":
        return True
    _, base = recorded_base(folder)
    base_config = Path(base) / "config.json" if base else None
    if base_config and base_config.is_file():
        return bool(json.loads(base_config.read_text(encoding="utf-8")).get("is_encoder_decoder"))
    return False


def problems(adapter: str | Path) -> list[str]:
    """Every reason vLLM would refuse the adapter; empty when it loads (rank: see required_max_lora_rank)."""
    folder = adapter_folder(str(adapter))
    config = json.loads((folder / ADAPTER_CONFIG).read_text(encoding="utf-8"))
    found = []
    if config.get("peft_type") != "LORA":
        found.append(f"peft_type is {config.get('peft_type')}: vLLM serves LoRA adapters only")
    if config.get("use_dora"):
        found.append("use_dora is set: vLLM does not support DoRA")
    if config.get("bias", "none") != "none":
        found.append(f"bias is '{config.get('bias')}': vLLM needs bias 'none'")
    if config.get("modules_to_save"):
        found.append(f"modules_to_save is {config['modules_to_save']}: vLLM refuses adapters that save whole modules")
    if _encoder_decoder_base(folder, config):
        found.append("the base is an encoder-decoder (seq2seq) model: vLLM's LoRA support is for decoder-only models")
    rank = _largest_rank(config)
    if rank > VLLM_RANKS[-1]:
        found.append(f"rank {rank} is above the largest --max-lora-rank vLLM accepts ({VLLM_RANKS[-1]})")
    names = _tensor_names(folder)
    if not names:
        found.append("no adapter_model.safetensors or adapter_model.bin")
    other = [name for name in names if not any(f".{part}." in name or name.endswith(f".{part}") for part in ALLOWED_TENSORS)]
    if other:
        found.append(f"{len(other)} tensors other than lora_A/lora_B (first: {other[0]}): vLLM loads only LoRA matrices")
    return found


def _largest_rank(config: dict) -> int:
    return max([int(config.get("r") or 0), *map(int, (config.get("rank_pattern") or {}).values())])


def required_max_lora_rank(adapter: str | Path) -> int:
    """The smallest --max-lora-rank vLLM must be started with for this adapter (its default is 16)."""
    rank = _largest_rank(json.loads((adapter_folder(str(adapter)) / ADAPTER_CONFIG).read_text(encoding="utf-8")))
    return next((value for value in VLLM_RANKS if value >= rank), rank)


def check(adapter: str | Path) -> str:
    """One line for a person: servable by vLLM (and with which --max-lora-rank), or why not."""
    found = problems(adapter)
    if found:
        return "vLLM: no: " + "; ".join(found)
    rank = required_max_lora_rank(adapter)
    return "vLLM: yes" + (f" (start vLLM with --max-lora-rank {rank}; its default is 16)" if rank > 16 else "")
