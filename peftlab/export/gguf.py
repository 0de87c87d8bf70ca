"""A merged Llama-family model as one GGUF file, for llama.cpp and Ollama.

Built on the `gguf` package (llama.cpp's own writer, constants, tensor-name map and quantizers). Written here,
because that package lacks them (they live in llama.cpp's convert script, which is not a library): the Llama
metadata from a transformers config, the row order of the query and key weights that llama.cpp's rotary
embedding expects, and the tokenizer fields from a transformers BPE tokenizer. When the base came from a GGUF
file, its tokenizer fields are copied as they are, so llama.cpp tokenizes exactly as it did for the base.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any, Iterator

from peftlab.errors import PeftlabError

# --type -> (the type of each 2-D weight, the file type recorded in general.file_type); 1-D tensors stay F32
TENSOR_TYPES = {"f32": ("F32", "ALL_F32"), "f16": ("F16", "MOSTLY_F16"), "bf16": ("BF16", "MOSTLY_BF16"),
                "q8_0": ("Q8_0", "MOSTLY_Q8_0"), "q5_1": ("Q5_1", "MOSTLY_Q5_1"), "q5_0": ("Q5_0", "MOSTLY_Q5_0"),
                "q4_1": ("Q4_1", "MOSTLY_Q4_1"), "q4_0": ("Q4_0", "MOSTLY_Q4_0")}
ARCHITECTURES = {"llama": "LLAMA"}  # transformers model_type -> gguf MODEL_ARCH with the same tensors and rotary layout


def check_exportable(config: Any) -> None:
    """Refuse, before anything slow, a model this writer would describe wrongly."""
    if config.model_type not in ARCHITECTURES:
        raise PeftlabError(f"GGUF export supports Llama-family models ({', '.join(ARCHITECTURES)}), not {config.model_type}; "
                           "merge it with `peftlab merge` and convert the folder with llama.cpp's convert_hf_to_gguf.py")
    rope = _rope(config)
    if rope.get("rope_type", "default") not in ("default", "linear"):
        raise PeftlabError(f"GGUF export does not yet write {rope['rope_type']} rotary scaling; merge with `peftlab merge` "
                           "and convert the folder with llama.cpp's convert_hf_to_gguf.py")


def _rope(config: Any) -> dict[str, Any]:
    parameters = dict(getattr(config, "rope_parameters", None) or getattr(config, "rope_scaling", None) or {})
    parameters.setdefault("rope_theta", getattr(config, "rope_theta", 10000.0))
    return parameters


def rotary_row_order(weight: Any, heads: int) -> Any:
    """transformers rotates each head's first half against its second half; llama.cpp rotates neighbouring
    pairs. Row i of a head's second half goes next to row i of its first half (numpy, 2-D or 1-D)."""
    rows = weight.shape[0]
    return weight.reshape(heads, 2, rows // heads // 2, *weight.shape[1:]).swapaxes(1, 2).reshape(weight.shape)


def tensor_names(config: Any) -> Any:
    """The gguf package's map from transformers tensor names to llama.cpp's, for this model's architecture."""
    import gguf

    return gguf.get_tensor_name_map(gguf.MODEL_ARCH[ARCHITECTURES[config.model_type]], config.num_hidden_layers)


def llama_cpp_rows(data: Any, target: str, config: Any) -> Any:
    """A weight (or a weight update) of the query or key projection in llama.cpp's row order; others as they are."""
    if ".attn_q." in target:
        return rotary_row_order(data, config.num_attention_heads)
    if ".attn_k." in target:
        return rotary_row_order(data, config.num_key_value_heads)
    return data


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
    """Write `model` (a merged transformers Llama) to `path`; return how many tensors of each type it holds."""
    import gguf
    import numpy as np

    config = model.config
    check_exportable(config)
    weight_type, file_type = TENSOR_TYPES[tensor_type]
    names = tensor_names(config)
    writer = gguf.GGUFWriter(path, gguf.MODEL_ARCH_NAMES[gguf.MODEL_ARCH[ARCHITECTURES[config.model_type]]])
    _model_metadata(writer, config, name, gguf.LlamaFileType[file_type])
    if base_gguf is not None:
        _copy_tokenizer_fields(writer, base_gguf)
    else:
        _tokenizer_fields(writer, tokenizer)
    counts: dict[str, int] = {}
    for key, tensor in model.state_dict().items():
        if key == "lm_head.weight" and config.tie_word_embeddings:
            continue  # llama.cpp uses the token embedding when the file has no output weight
        target = names.get_name(key, try_suffixes=(".weight", ".bias"))
        if target is None:
            raise PeftlabError(f"GGUF export: no llama.cpp name for tensor {key}; this model has parts the Llama "
                               "layout lacks; convert the merged folder with llama.cpp's convert_hf_to_gguf.py")
        data = llama_cpp_rows(tensor.detach().float().cpu().numpy(), target, config)
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


def _model_metadata(writer: Any, config: Any, name: str, file_type: Any) -> None:
    import gguf

    rope = _rope(config)
    head_dim = getattr(config, "head_dim", None) or config.hidden_size // config.num_attention_heads
    writer.add_type(gguf.GGUFType.MODEL)
    writer.add_name(name)
    writer.add_context_length(config.max_position_embeddings)
    writer.add_embedding_length(config.hidden_size)
    writer.add_block_count(config.num_hidden_layers)
    writer.add_feed_forward_length(config.intermediate_size)
    writer.add_head_count(config.num_attention_heads)
    writer.add_head_count_kv(config.num_key_value_heads)
    writer.add_layer_norm_rms_eps(config.rms_norm_eps)
    writer.add_rope_freq_base(float(rope["rope_theta"]))
    writer.add_rope_dimension_count(head_dim)
    writer.add_vocab_size(config.vocab_size)
    if rope.get("rope_type") == "linear":
        writer.add_rope_scaling_type(gguf.RopeScalingType.LINEAR)
        writer.add_rope_scaling_factor(float(rope["factor"]))
    writer.add_file_type(file_type)


def _copy_tokenizer_fields(writer: Any, base_gguf: Path) -> None:
    """Every tokenizer.* field of the GGUF file the base came from, with its GGUF type."""
    import gguf

    reader = gguf.GGUFReader(base_gguf)
    for key, field in reader.fields.items():
        if not key.startswith("tokenizer."):
            continue
        main = field.types[0]
        sub = field.types[-1] if main == gguf.GGUFValueType.ARRAY else None
        writer.add_key_value(key, field.contents(), main, sub_type=sub)


LLAMA3_SPLIT = r"(?i:'s|'t|'re|'ve|'m|'ll|'d)|[^\r\n\p{L}\p{N}]?\p{L}+|\p{N}{1,3}| ?[^\s\p{L}\p{N}]+[\r\n]*|\s*[\r\n]+|\s+(?!\S)|\s+"


def pre_tokenizer_name(pre: dict[str, Any]) -> str:
    """llama.cpp's name for how text is split before BPE (it names splits, it does not read them): GPT-2's own
    regex (a ByteLevel pre-tokenizer that splits: 'gpt-2'), Llama 3's split ('llama-bpe'), else llama.cpp's default."""
    if pre.get("type") == "ByteLevel" and pre.get("use_regex", True):
        return "gpt-2"
    steps = pre.get("pretokenizers", []) if pre.get("type") == "Sequence" else []
    patterns = [step.get("pattern", {}).get("Regex") for step in steps if step.get("type") == "Split"]
    return "llama-bpe" if patterns == [LLAMA3_SPLIT] else "default"


def _tokenizer_fields(writer: Any, tokenizer: Any) -> None:
    """A transformers byte-level BPE tokenizer as llama.cpp's 'gpt2' tokenizer: tokens by id, their kinds, merges,
    special ids, whether a BOS is added, and the chat template."""
    import gguf

    backend = json.loads(tokenizer.backend_tokenizer.to_str()) if getattr(tokenizer, "is_fast", False) else {}
    if backend.get("model", {}).get("type") != "BPE":
        raise PeftlabError("GGUF export writes byte-level BPE tokenizers (Llama 3, SmolLM, Qwen style) or copies the fields "
                           "of a base that came from a GGUF file; this tokenizer is neither: convert the merged folder with "
                           "llama.cpp's convert_hf_to_gguf.py")
    vocab = tokenizer.get_vocab()
    by_id = sorted(vocab.items(), key=lambda item: item[1])
    if [i for _, i in by_id] != list(range(len(by_id))):
        raise PeftlabError("GGUF export: the tokenizer's ids have gaps; convert the merged folder with llama.cpp's convert_hf_to_gguf.py")
    special = set(tokenizer.all_special_ids)
    added = {token.content for token in tokenizer.added_tokens_decoder.values()}
    kinds = [gguf.TokenType.CONTROL if i in special else gguf.TokenType.USER_DEFINED if token in added else gguf.TokenType.NORMAL
             for token, i in by_id]
    merges = [m if isinstance(m, str) else " ".join(m) for m in backend["model"].get("merges", [])]
    writer.add_tokenizer_model("gpt2")
    writer.add_tokenizer_pre(pre_tokenizer_name(backend.get("pre_tokenizer") or {}))
    writer.add_token_list([token for token, _ in by_id])
    writer.add_token_types(kinds)
    writer.add_token_merges(merges)
    for setter, token_id in ((writer.add_bos_token_id, tokenizer.bos_token_id), (writer.add_eos_token_id, tokenizer.eos_token_id),
                             (writer.add_unk_token_id, tokenizer.unk_token_id), (writer.add_pad_token_id, tokenizer.pad_token_id)):
        if token_id is not None:
            setter(token_id)
    probe = tokenizer("a")["input_ids"]
    writer.add_add_bos_token(bool(probe) and tokenizer.bos_token_id is not None and probe[0] == tokenizer.bos_token_id)
    if isinstance(getattr(tokenizer, "chat_template", None), str):
        writer.add_chat_template(tokenizer.chat_template)


def write_gguf_lora(adapted: Any, path: Path, tensor_type: str, name: str) -> dict[str, int]:
    """Write the LoRA layers of `adapted` (a peft model on a Llama base) as a llama.cpp LoRA adapter file:
    '<base tensor>.lora_a' (rank x inputs) and '.lora_b' (outputs x rank) per layer, loaded with `--lora`.

    peft's per-layer scale (alpha / r, alpha / sqrt(r) for rsLoRA, per-module patterns) is folded into lora_b
    and the file's alpha is 0, which llama.cpp reads as scale 1: every layer keeps its exact scale."""
    import gguf
    import numpy as np

    config = adapted.get_base_model().config
    check_exportable(config)
    weight_type = "F16" if tensor_type == "f16" else "F32"
    writer = gguf.GGUFWriter(path, gguf.MODEL_ARCH_NAMES[gguf.MODEL_ARCH[ARCHITECTURES[config.model_type]]])
    writer.add_type(gguf.GGUFType.ADAPTER)
    writer.add_name(name)
    writer.add_string(gguf.Keys.Adapter.TYPE, "lora")
    writer.add_float32(gguf.Keys.Adapter.LORA_ALPHA, 0.0)
    counts: dict[str, int] = {}
    for target, module, adapter in lora_layers(adapted):
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
