"""A merged model as one GGUF file for llama.cpp and Ollama, and a LoRA adapter as a llama.cpp LoRA file, for every
family in `gguf_families.FAMILIES` (Llama, Mistral, Qwen2, Qwen3, Gemma 2, Gemma 3, Phi-3, GPT-2, GPT-NeoX).

Built on the `gguf` package (llama.cpp's own writer, constants, tensor-name map and quantizers); what it lacks per
family lives in `gguf_families`, the tokenizer fields in `gguf_tokenizer`. When the base came from a GGUF file, its
tokenizer fields are copied as they are, so llama.cpp tokenizes exactly as it did for the base.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any, Callable, Iterator

from peftlab.errors import PeftlabError
from peftlab.export.gguf_families import ELSEWHERE, gguf_family, llama_cpp_rows, llama_cpp_tensor, skipped
from peftlab.export.gguf_tokenizer import copy_tokenizer_fields, tokenizer_fields

# --type -> (the type of each 2-D weight, the file type recorded in general.file_type); 1-D tensors stay F32
TENSOR_TYPES = {"f32": ("F32", "ALL_F32"), "f16": ("F16", "MOSTLY_F16"), "bf16": ("BF16", "MOSTLY_BF16"),
                "q8_0": ("Q8_0", "MOSTLY_Q8_0"), "q5_1": ("Q5_1", "MOSTLY_Q5_1"), "q5_0": ("Q5_0", "MOSTLY_Q5_0"),
                "q4_1": ("Q4_1", "MOSTLY_Q4_1"), "q4_0": ("Q4_0", "MOSTLY_Q4_0")}


def check_exportable(config: Any, say: Callable[[str], None] = lambda text: None) -> None:
    """Refuse, before anything slow, a model this writer would describe wrongly; say what llama.cpp will ignore."""
    gguf_family(config, say)


def _arch(config: Any) -> Any:
    import gguf

    return gguf.MODEL_ARCH[gguf_family(config).arch]


def gguf_architecture(config: Any) -> str:
    """The architecture name a GGUF file of this model carries ('llama' for Mistral too)."""
    import gguf

    return gguf.MODEL_ARCH_NAMES[_arch(config)]


def tensor_names(config: Any) -> Any:
    """The gguf package's map from transformers tensor names to llama.cpp's, for this model's architecture."""
    import gguf

    return gguf.get_tensor_name_map(_arch(config), config.num_hidden_layers)


def _writer(path: Path, config: Any) -> Any:
    import gguf

    return gguf.GGUFWriter(path, gguf_architecture(config))


def update_in_llama_cpp_layout(module: Any, adapter: str, target: str, config: Any) -> Any:
    """peft's weight update of one LoRA layer (numpy) in llama.cpp's orientation and row order."""
    delta = module.get_delta_weight(adapter).detach().float().numpy()
    if getattr(module, "fan_in_fan_out", False):
        delta = delta.T  # Conv1D: peft returns it inputs x outputs, like the weight
    return llama_cpp_rows(delta, target, config)


def lora_layers(adapted: Any) -> Iterator[tuple[str, Any, str]]:
    """(llama.cpp name of the base weight, the peft LoRA layer, its active adapter) for each LoRA layer of `adapted`;
    what a llama.cpp LoRA file cannot hold is refused in one line."""
    from peft.tuners.lora import LoraLayer

    names = tensor_names(adapted.get_base_model().config)
    for module_name, module in adapted.named_modules():
        if not isinstance(module, LoraLayer):
            continue
        adapter = module.active_adapters[0]
        problem = ("DoRA's magnitude vectors" if module.use_dora.get(adapter) else
                   "LoRA on an embedding" if adapter in module.lora_embedding_A else None)
        if problem:
            raise PeftlabError(f"a llama.cpp LoRA file cannot hold {problem}; export the merged model instead (--format gguf)")
        if adapter not in module.lora_A:
            continue
        key = module_name.removeprefix("base_model.model.") + ".weight"
        target = names.get_name(key, try_suffixes=(".weight",))
        if target is None:
            raise PeftlabError(f"GGUF export: no llama.cpp name for the LoRA layer on {key}; export the merged model instead (--format gguf)")
        yield target, module, adapter


def _finish(writer: Any) -> None:
    writer.write_header_to_file()
    writer.write_kv_data_to_file()
    writer.write_tensors_to_file()
    writer.close()


def write_gguf(model: Any, tokenizer: Any, path: Path, tensor_type: str, name: str, base_gguf: Path | None) -> dict[str, int]:
    """Write `model` (a merged transformers model) to `path`; return how many tensors of each type it holds."""
    import gguf
    import numpy as np

    config = model.config
    family = gguf_family(config)
    weight_type, file_type = TENSOR_TYPES[tensor_type]
    names = tensor_names(config)
    writer = _writer(path, config)
    writer.add_type(gguf.GGUFType.MODEL)
    writer.add_name(name)
    family.metadata(writer, config)
    writer.add_file_type(gguf.LlamaFileType[file_type])
    if base_gguf is not None:
        copy_tokenizer_fields(writer, base_gguf)
    else:
        tokenizer_fields(writer, tokenizer)
    counts: dict[str, int] = {}
    for key, tensor in model.state_dict().items():
        if skipped(key, config):
            continue
        target = names.get_name(key, try_suffixes=(".weight", ".bias"))
        if target is None:
            raise PeftlabError(f"GGUF export: no llama.cpp name for tensor {key} in the {family.arch} layout; {ELSEWHERE}")
        data = llama_cpp_tensor(tensor.detach().float().cpu().numpy(), key, target, config)
        data, kind = _encode(data, weight_type, gguf, np)
        writer.add_tensor(target, data, raw_dtype=kind)
        counts[kind.name] = counts.get(kind.name, 0) + 1
    _finish(writer)
    return counts


def _encode(data: Any, weight_type: str, gguf: Any, np: Any) -> tuple[Any, Any]:
    """A tensor in the requested type; 1-D tensors (norms) in F32, and a weight whose rows do not fill whole
    quantization blocks in F16 (as llama.cpp's own converter does)."""
    kind = gguf.GGMLQuantizationType[weight_type]
    if data.ndim < 2 or kind == gguf.GGMLQuantizationType.F32:
        return data.astype(np.float32), gguf.GGMLQuantizationType.F32
    if kind == gguf.GGMLQuantizationType.F16:
        return data.astype(np.float16), kind
    try:
        return gguf.quants.quantize(data, kind), kind
    except gguf.quants.QuantError:
        return data.astype(np.float16), gguf.GGMLQuantizationType.F16


def write_gguf_lora(adapted: Any, path: Path, tensor_type: str, name: str) -> dict[str, int]:
    """Write the LoRA layers of `adapted` (a peft model on a base of a known family) as a llama.cpp LoRA adapter file:
    '<base tensor>.lora_a' (rank x inputs) and '.lora_b' (outputs x rank) per layer, loaded with `--lora`.

    peft's per-layer scale (alpha / r, alpha / sqrt(r) for rsLoRA, per-module patterns) is folded into lora_b
    and the file's alpha is 0, which llama.cpp reads as scale 1: every layer keeps its exact scale."""
    import gguf
    import numpy as np

    config = adapted.get_base_model().config
    check_exportable(config)
    weight_type = "F16" if tensor_type == "f16" else "F32"
    writer = _writer(path, config)
    writer.add_type(gguf.GGUFType.ADAPTER)
    writer.add_name(name)
    writer.add_string(gguf.Keys.Adapter.TYPE, "lora")
    writer.add_float32(gguf.Keys.Adapter.LORA_ALPHA, 0.0)
    counts: dict[str, int] = {}
    for target, module, adapter in lora_layers(adapted):
        # A (rank x inputs) and B (outputs x rank) are in llama.cpp's orientation for Linear and Conv1D alike
        down = module.lora_A[adapter].weight.detach().float().numpy()
        up = module.lora_B[adapter].weight.detach().float().numpy() * float(module.scaling[adapter])
        up = llama_cpp_rows(up, target, config)  # rows of the update follow the rows of the weight
        for suffix, data in (("lora_a", down), ("lora_b", up)):
            data, kind = _encode(data, weight_type, gguf, np)
            writer.add_tensor(f"{target}.{suffix}", data, raw_dtype=kind)
            counts[kind.name] = counts.get(kind.name, 0) + 1
    if not counts:
        raise PeftlabError("this adapter has no LoRA layers for a llama.cpp LoRA file; export the merged model instead (--format gguf)")
    _finish(writer)
    return counts
