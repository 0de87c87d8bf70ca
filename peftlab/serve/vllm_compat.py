"""Will vLLM load this adapter? Its documented LoRA rules (vllm/lora/peft_helper.py, vllm/lora/utils.py), checked offline."""

from __future__ import annotations

from pathlib import Path

from peftlab.artifacts import MODEL_CONFIG, adapter_folder, read_adapter_config, read_json, recorded_base

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
    base_config = Path(base) / MODEL_CONFIG if base else None
    if base_config and base_config.is_file():
        return bool(read_json(base_config).get("is_encoder_decoder"))
    return False


def problems(adapter: str | Path) -> list[str]:
    """Every reason vLLM would refuse the adapter; empty when it loads (rank: see required_max_lora_rank)."""
    from peftlab.methods import get_method, method_names, saved_method

    folder = adapter_folder(str(adapter))
    method = saved_method(folder)
    config = read_adapter_config(folder) or {}
    found = []
    if not method.vllm:
        servable = ", ".join(name for name in method_names() if get_method(name).vllm)
        found.append(f"method {method.name}: vLLM serves LoRA adapters only ({servable})")
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
    rank = _largest_rank(read_adapter_config(adapter_folder(str(adapter))) or {})
    return next((value for value in VLLM_RANKS if value >= rank), rank)


def check(adapter: str | Path) -> str:
    """One line for a person: servable by vLLM (and with which --max-lora-rank), or why not."""
    found = problems(adapter)
    if found:
        return "vLLM: no: " + "; ".join(found)
    rank = required_max_lora_rank(adapter)
    return "vLLM: yes" + (f" (start vLLM with --max-lora-rank {rank}; its default is 16)" if rank > 16 else "")
