"""What llama.cpp needs per model family beyond gguf's own tables: the metadata keys, and how a transformers weight is
laid out in llama.cpp (row order, orientation, stored norm offsets), for every family both know.

Tensor names come from the gguf package (`gguf.get_tensor_name_map` for each `gguf.MODEL_ARCH`) and metadata is written
through its `GGUFWriter.add_*` methods; what is written here by hand is what those tables lack and llama.cpp's
convert script (not a library) holds: which config field feeds which key, and the tensor rewrites read from that
script (read in the llama.cpp that llama-cpp-python 0.3.36 vendors).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Callable

from peftlab.errors import PeftlabError

# where a family cannot go to llama.cpp: what to do instead (a route that exists)
ELSEWHERE = ("serve it with `peftlab serve`, or merge it with `peftlab merge` and load the folder with transformers, "
             "vLLM or any tool that reads transformers models")


@dataclass(frozen=True)
class GgufFamily:
    arch: str  # the gguf.MODEL_ARCH member
    metadata: Callable[[Any, Any], None]  # (writer, config): the keys beyond the common ones
    rotary_pairs: bool = False  # llama.cpp rotates neighbouring pairs (its "normal" rope): q/k rows are reordered
    norm_offset: float = 0.0  # the norm weights are applied as (offset + w) by transformers, as w by llama.cpp
    conv1d: bool = False  # weights stored inputs x outputs (transformers' Conv1D)
    qkv_per_head: bool = False  # the fused qkv rows interleave q, k, v per head
    output_optional: bool = True  # without an output weight llama.cpp uses the token embedding (tied embeddings)
    # (kind, text) for what this writer cannot describe ("refuse") or llama.cpp will ignore ("say")
    checks: Callable[[Any], list[tuple[str, str]]] = lambda config: []


def head_dim(config: Any) -> int:
    return getattr(config, "head_dim", None) or config.hidden_size // config.num_attention_heads


def rope(config: Any, layer_type: str = "full_attention") -> dict[str, Any]:
    """The rotary parameters of one attention kind (transformers 5 keeps one dict per layer type where they differ)."""
    parameters = dict(getattr(config, "rope_parameters", None) or getattr(config, "rope_scaling", None) or {})
    parameters = dict(parameters.get(layer_type, parameters))
    parameters.setdefault("rope_theta", getattr(config, "rope_theta", 10000.0))
    return parameters


def rope_problems(config: Any) -> list[tuple[str, str]]:
    kind = rope(config).get("rope_type", "default")
    return [] if kind in ("default", "linear") else [("refuse", f"{kind} rotary scaling is not written by this export")]


def sliding_ignored(config: Any) -> list[tuple[str, str]]:
    """A window llama.cpp's architecture does not implement for this family (it attends to the whole context)."""
    window = getattr(config, "sliding_window", None)
    used = getattr(config, "use_sliding_window", True)
    if window and used and window < config.max_position_embeddings:
        return [("say", f"llama.cpp runs this architecture without the sliding window of {window} tokens: answers to "
                        f"prompts longer than {window} tokens differ from transformers'")]
    return []


def shape_metadata(writer: Any, config: Any, feed_forward: int) -> None:
    """The sizes every family records (transformers' configs alias GPT-2's own field names to these)."""
    writer.add_context_length(config.max_position_embeddings)
    writer.add_embedding_length(config.hidden_size)
    writer.add_block_count(config.num_hidden_layers)
    writer.add_feed_forward_length(feed_forward)
    writer.add_head_count(config.num_attention_heads)
    writer.add_vocab_size(config.vocab_size)


def common_metadata(writer: Any, config: Any) -> None:
    """The keys every decoder with rotary attention shares (llama.cpp's convert script writes the same for each)."""
    shape_metadata(writer, config, config.intermediate_size)
    writer.add_head_count_kv(getattr(config, "num_key_value_heads", None) or config.num_attention_heads)
    writer.add_layer_norm_rms_eps(config.rms_norm_eps)
    writer.add_rope_freq_base(float(rope(config)["rope_theta"]))
    if rope(config).get("rope_type") == "linear":
        import gguf

        writer.add_rope_scaling_type(gguf.RopeScalingType.LINEAR)
        writer.add_rope_scaling_factor(float(rope(config)["factor"]))


def llama_metadata(writer: Any, config: Any) -> None:
    common_metadata(writer, config)
    writer.add_rope_dimension_count(head_dim(config))


def head_length_metadata(writer: Any, config: Any) -> None:
    """Qwen3 and Gemma: a head width of its own (not hidden / heads)."""
    common_metadata(writer, config)
    writer.add_key_length(head_dim(config))
    writer.add_value_length(head_dim(config))


def sliding_pattern(writer: Any, config: Any) -> None:
    """The window and which layers slide, as a per-layer list (llama.cpp reads it before its family default)."""
    import gguf

    writer.add_sliding_window(config.sliding_window)
    kinds = [kind == "sliding_attention" for kind in config.layer_types]
    writer.add_array(gguf.Keys.Attention.SLIDING_WINDOW_PATTERN.format(arch=writer.arch), kinds)


def gemma2_metadata(writer: Any, config: Any) -> None:
    head_length_metadata(writer, config)
    writer.add_attn_logit_softcapping(float(config.attn_logit_softcapping or 0.0))
    writer.add_final_logit_softcapping(float(config.final_logit_softcapping or 0.0))
    sliding_pattern(writer, config)


def gemma3_metadata(writer: Any, config: Any) -> None:
    head_length_metadata(writer, config)
    if getattr(config, "final_logit_softcapping", None):
        writer.add_final_logit_softcapping(float(config.final_logit_softcapping))
    sliding_pattern(writer, config)
    writer.add_rope_freq_base_swa(float(rope(config, "sliding_attention")["rope_theta"]))


def gemma_scale_problems(config: Any) -> list[tuple[str, str]]:
    """llama.cpp scales Gemma's attention by 1/sqrt(head_dim) (hidden / heads for the 27B shapes): a
    query_pre_attn_scalar that says otherwise would give other answers."""
    expected = {head_dim(config), config.hidden_size // config.num_attention_heads}
    if config.query_pre_attn_scalar not in expected:
        return [("refuse", f"query_pre_attn_scalar {config.query_pre_attn_scalar} differs from the head width "
                           f"{head_dim(config)}, and llama.cpp scales attention by the head width")]
    return []


def gemma3_problems(config: Any) -> list[tuple[str, str]]:
    problems = rope_problems(config) + gemma_scale_problems(config)
    if rope(config, "sliding_attention").get("rope_type", "default") != "default":
        problems.append(("refuse", "rotary scaling on sliding layers is not written by this export"))
    return problems


def phi3_metadata(writer: Any, config: Any) -> None:
    common_metadata(writer, config)
    writer.add_rope_scaling_orig_ctx_len(getattr(config, "original_max_position_embeddings", None) or config.max_position_embeddings)
    writer.add_rope_dimension_count(int(rope(config).get("partial_rotary_factor", 1.0) * head_dim(config)))
    writer.add_sliding_window(getattr(config, "sliding_window", None) or 0)  # 0: none (how llama.cpp tells Phi-4 apart)


def gpt2_metadata(writer: Any, config: Any) -> None:
    shape_metadata(writer, config, config.n_inner or 4 * config.n_embd)
    writer.add_layer_norm_eps(config.layer_norm_epsilon)


def gpt2_problems(config: Any) -> list[tuple[str, str]]:
    problems = []
    if config.activation_function != "gelu_new":
        problems.append(("say", f"llama.cpp's GPT-2 uses the tanh GELU, this model {config.activation_function}: logits differ slightly"))
    if config.scale_attn_by_inverse_layer_idx or not config.scale_attn_weights:
        problems.append(("refuse", "attention scaled otherwise than by 1/sqrt(head width), which llama.cpp's GPT-2 does not do"))
    return problems


def neox_metadata(writer: Any, config: Any) -> None:
    shape_metadata(writer, config, config.intermediate_size)
    writer.add_rope_dimension_count(int(rope(config).get("partial_rotary_factor", 1.0) * head_dim(config)))
    writer.add_rope_freq_base(float(rope(config)["rope_theta"]))
    writer.add_parallel_residual(config.use_parallel_residual)
    writer.add_layer_norm_eps(config.layer_norm_eps)


# transformers model_type -> what llama.cpp needs; the families llama.cpp and the gguf package both know
FAMILIES = {
    "llama": GgufFamily("LLAMA", llama_metadata, rotary_pairs=True, checks=rope_problems),
    "mistral": GgufFamily("LLAMA", llama_metadata, rotary_pairs=True, checks=lambda c: rope_problems(c) + sliding_ignored(c)),
    "qwen2": GgufFamily("QWEN2", common_metadata, checks=lambda c: rope_problems(c) + sliding_ignored(c)),
    "qwen3": GgufFamily("QWEN3", head_length_metadata, checks=lambda c: rope_problems(c) + sliding_ignored(c)),
    "gemma2": GgufFamily("GEMMA2", gemma2_metadata, norm_offset=1.0, checks=lambda c: rope_problems(c) + gemma_scale_problems(c)
                         + ([] if c.tie_word_embeddings else [("refuse", "llama.cpp's Gemma 2 reads no output weight of its own")])),
    "gemma3_text": GgufFamily("GEMMA3", gemma3_metadata, norm_offset=1.0, checks=gemma3_problems),
    "phi3": GgufFamily("PHI3", phi3_metadata, checks=lambda c: rope_problems(c) + sliding_ignored(c)),
    "gpt2": GgufFamily("GPT2", gpt2_metadata, conv1d=True, checks=gpt2_problems),
    "gpt_neox": GgufFamily("GPTNEOX", neox_metadata, qkv_per_head=True, output_optional=False, checks=rope_problems),
}
# families llama.cpp cannot run from this export, and why
REFUSED = {
    "opt": "llama.cpp has no OPT architecture",
    "t5": "this export writes decoder-only models; llama.cpp runs T5 only through its own converter, which no package installs",
    "gemma3": "this is Gemma 3 with its vision tower; export the text model (Gemma3ForCausalLM)",
}


def gguf_family(config: Any, say: Callable[[str], None] = lambda text: None) -> GgufFamily:
    """This model's family, after refusing (one line, before anything slow) what this writer would describe wrongly."""
    model_type = config.model_type
    if model_type not in FAMILIES:
        why = REFUSED.get(model_type, "llama.cpp or this export does not know this architecture")
        raise PeftlabError(f"GGUF export supports {', '.join(FAMILIES)}, not {model_type} ({why}); {ELSEWHERE}")
    family = FAMILIES[model_type]
    for kind, text in family.checks(config):
        if kind == "refuse":
            raise PeftlabError(f"GGUF export of this {model_type} model: {text}; {ELSEWHERE}")
        say(f"export: {text}")
    return family


def rotary_row_order(weight: Any, heads: int) -> Any:
    """transformers rotates each head's first half against its second half; llama.cpp's normal rope rotates
    neighbouring pairs. Row i of a head's second half goes next to row i of its first half (numpy, 2-D or 1-D)."""
    rows = weight.shape[0]
    return weight.reshape(heads, 2, rows // heads // 2, *weight.shape[1:]).swapaxes(1, 2).reshape(weight.shape)


def qkv_blocks(weight: Any, heads: int) -> Any:
    """GPT-NeoX's fused rows (q, k, v of head 0, then of head 1, ...) as llama.cpp's (all q, all k, all v)."""
    rows = weight.shape[0]
    return weight.reshape(heads, 3, rows // heads // 3, *weight.shape[1:]).swapaxes(0, 1).reshape(weight.shape)


def llama_cpp_rows(data: Any, target: str, config: Any) -> Any:
    """The rows of a weight, a bias or a weight update (LoRA's B) in llama.cpp's order for `target` (its GGUF name)."""
    family = FAMILIES[config.model_type]
    if family.rotary_pairs and ".attn_q." in target:
        return rotary_row_order(data, config.num_attention_heads)
    if family.rotary_pairs and ".attn_k." in target:
        return rotary_row_order(data, config.num_key_value_heads)
    if family.qkv_per_head and ".attn_qkv." in target:
        return qkv_blocks(data, config.num_attention_heads)
    return data


def llama_cpp_tensor(data: Any, key: str, target: str, config: Any) -> Any:
    """A base tensor (numpy, as transformers holds it under `key`) as llama.cpp reads it under `target`."""
    family = FAMILIES[config.model_type]
    if family.conv1d and data.ndim == 2 and not target.startswith(("token_embd", "position_embd", "output.")):
        data = data.T  # Conv1D's weight is inputs x outputs; llama.cpp's rows are outputs
    if family.norm_offset and key.endswith("norm.weight"):
        data = data + family.norm_offset
    return llama_cpp_rows(data, target, config)


def skipped(key: str, config: Any) -> bool:
    """A tensor llama.cpp does not read: the output projection where it is the token embedding (tied) and the
    family falls back to the embedding when the file has no output weight."""
    tied = getattr(config, "tie_word_embeddings", False)
    return tied and FAMILIES[config.model_type].output_optional and key in ("lm_head.weight", "embed_out.weight")
