"""`peftlab merge` (export): fold an adapter into its base, check the merged model answers as base + adapter, save it plainly.

Quantized-base adapters (qlora, lora-8bit) are merged into the base the adapter was trained on,
dequantized to fp32/bf16 first: never into 4-bit or 8-bit weights, where rounding the merged
update back to the quantization grid loses most of it.
"""

from __future__ import annotations

import json
import math
from pathlib import Path
from typing import Any, Callable

from peftlab import outputs
from peftlab.errors import PeftlabError
from peftlab.artifacts import (adapter_folder, check_base, misfit_error, read_json, read_run_config,
                               recorded_attn_implementation, recorded_model_name)
from peftlab.models.device import resolve_device, resolve_dtype, torch_dtype
from peftlab.models.loading import LoadedModel, load_model

# max |merged logit - base+adapter logit| / (1 + max |logit|): rounding of W + BA in the weights' dtype
TOLERANCE = {"fp32": 1e-4, "bf16": 3e-2, "fp16": 1e-2}
PROBE_TEXT = "Summarize the following conversation.\n\n#Person1#: Hello, can I book a table for two?\n#Person2#: Sure.\n\nSummary: "
MERGE_INFO = "peftlab-merge.json"
# what save_pretrained writes for a model and its tokenizer (transformers 5.24); the names a merge actually wrote
# are also recorded in MERGE_INFO ("files"), so a file a later transformers adds is known as peftlab's too
SAVED_MODEL_FILES = ("config.json", "generation_config.json", "model*.safetensors", "model.safetensors.index.json", "tokenizer*",
                     "special_tokens_map.json", "added_tokens.json", "chat_template.jinja", "vocab.*", "merges.txt", "spiece.model")


def read_merge_info(folder: Path) -> dict[str, Any]:
    """The merged folder's own record (base, adapter, method, parity, files)."""
    return read_json(Path(folder) / MERGE_INFO, f"the merged model's record is damaged: merge it again with "
                                                f"`peftlab merge --adapter DIR --output {folder} --overwrite`")


def _recorded_files(folder: Path) -> list[str]:
    try:
        files = read_merge_info(folder).get("files", [])
    except PeftlabError:
        return []  # a damaged record lists nothing: only the names save_pretrained writes count as peftlab's
    return [name for name in files if isinstance(name, str)] if isinstance(files, list) else []


MERGED = outputs.OutputKind("merged model", (MERGE_INFO,), (MERGE_INFO, *SAVED_MODEL_FILES), _recorded_files)


def _mergeable(folder: Path, method: Any) -> None:
    if not method.mergeable:
        raise PeftlabError(f"method {method.name} cannot be merged: {method.not_mergeable_because}; serve it as an adapter instead "
                           f"(peftlab serve --adapter NAME={folder})")


def _probe(loaded: LoadedModel) -> dict[str, Any]:
    import torch

    ids = loaded.tokenizer(PROBE_TEXT, return_tensors="pt")["input_ids"]
    inputs = {"input_ids": ids}
    if loaded.is_seq2seq:
        inputs["decoder_input_ids"] = torch.tensor([[loaded.model.config.decoder_start_token_id, *ids[0, :8].tolist()]])
    return inputs


def relative_difference(got: Any, expected: Any) -> float:
    """max |got - expected| / (1 + max |expected|): logits or weights, torch or numpy. Infinite when either side holds
    a NaN or an infinity: a NaN difference would pass every `difference > limit` test, and `max()` would drop it."""
    difference = float(abs(got - expected).max() / (1 + abs(expected).max()))
    return difference if math.isfinite(difference) else math.inf


def within(difference: float, limit: float = math.inf) -> bool:
    """The one test of a difference against its limit: a NaN or infinite difference never passes (NaN compares False
    with everything, so `difference > limit` would let it through)."""
    return math.isfinite(difference) and difference <= limit


def _logits(model: Any, inputs: dict[str, Any]) -> Any:
    import torch

    with torch.inference_mode():
        return model(**{k: v.to(model.device) for k, v in inputs.items()}).logits.float().cpu()


def _load_base(name: str | None, dtype: str, quantization: str | None, attention: str, device: str) -> LoadedModel:
    """The base as the adapter saw it (its attention implementation too); a quantized base dequantized to `dtype`."""
    if not quantization:
        return load_model(name, dtype, attention, device=device)
    loaded = load_model(name, dtype, attention, quantization=quantization, device=device)
    loaded.model = loaded.model.dequantize(dtype=torch_dtype(dtype))
    loaded.model.to(torch_dtype(dtype))
    loaded.quantization = None
    return loaded


def merged_model(adapter: str, model: str | None = None, dtype: str | None = None,
                 say: Callable[[str], None] = lambda text: None, device: str = "auto") -> tuple[Any, LoadedModel, dict[str, Any]]:
    """Fold the adapter into its base in memory and check it answers as base + adapter on a probe prompt:
    (the merged model, the loaded base with its tokenizer, what was merged and how closely it matches)."""
    from peftlab.methods import load_trained, saved_method

    folder = adapter_folder(adapter)
    name = model or recorded_model_name(folder)
    check_base(folder, name)
    method = saved_method(folder)
    _mergeable(folder, method)
    dtype = resolve_dtype(dtype or _run_dtype(folder), resolve_device(device))
    loaded = _load_base(name, dtype, method.quantization, recorded_attn_implementation(folder), device)
    say(f"merge: {method.name} adapter {folder} into {loaded.spec} ({dtype}"
        + (f", {method.quantization} base dequantized" if method.quantization else "") + ")")
    try:
        adapted = load_trained(loaded.model, folder).eval()
    except (RuntimeError, ValueError, KeyError) as error:
        raise misfit_error(folder, loaded.spec, error) from None
    if not hasattr(adapted, "merge_and_unload"):
        raise PeftlabError(f"method {method.name} cannot be merged (peft has no merge for it); serve it as an adapter instead")
    inputs = _probe(loaded)
    expected = _logits(adapted, inputs)
    merged = adapted.merge_and_unload()
    difference = relative_difference(_logits(merged, inputs), expected)
    if not math.isfinite(difference):
        raise PeftlabError(f"base + adapter {folder} or the merged model gives NaN or infinite logits on the probe prompt; "
                           "nothing was written; the adapter's weights overflow: train it again (a lower train.lr)")
    if not within(difference, TOLERANCE[dtype]):
        raise PeftlabError(f"the merged model differs from base + adapter by {difference:.2e} (relative logits, limit "
                           f"{TOLERANCE[dtype]:.0e} in {dtype}); nothing was written; try --dtype fp32")
    info = {"base": loaded.spec, "base_model": name, "base_path": loaded.path, "adapter": str(folder), "method": method.name,
            "dtype": dtype, "dequantized_from": method.quantization, "relative_logit_difference": difference,
            "tolerance": TOLERANCE[dtype]}
    return merged, loaded, info


def merge(adapter: str, output: str, model: str | None = None, dtype: str | None = None, overwrite: bool = False,
          say: Callable[[str], None] = lambda text: None, device: str = "auto") -> dict[str, Any]:
    """Merge (on `device`), verify against base + adapter on a probe prompt, and write OUT (a plain transformers folder)."""
    folder = adapter_folder(adapter)  # named before the output is checked
    out = outputs.check_folder(output, overwrite, MERGED, outputs.inputs(adapter=folder, model=model))
    merged, loaded, info = merged_model(adapter, model, dtype, say, device)
    try:
        with outputs.replaced_folder(out, MERGED) as tmp:
            merged.save_pretrained(tmp)
            loaded.tokenizer.save_pretrained(tmp)
            info["files"] = sorted([entry.name for entry in tmp.iterdir()] + [MERGE_INFO])
            (tmp / MERGE_INFO).write_text(json.dumps(info, indent=2), encoding="utf-8")
    except OSError as error:
        raise PeftlabError(f"cannot write {out}: {error.strerror}; choose another --output") from None
    say(f"merged model matches base + adapter (relative logit difference {info['relative_logit_difference']:.1e}, "
        f"limit {info['tolerance']:.0e}); saved to {out}")
    return info


def _run_dtype(folder: Path) -> str:
    recorded = read_run_config(folder)
    return recorded.model.dtype if recorded else "auto"
