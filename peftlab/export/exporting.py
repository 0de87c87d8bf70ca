"""`peftlab export`, top to bottom: merge the adapter (or take a merged folder), write the GGUF file beside its
final place, reload it through transformers and compare logits with the merged model, then publish it."""

from __future__ import annotations

import contextlib
import io
import json
from pathlib import Path
from typing import Any, Callable

from peftlab import atomic
from peftlab.errors import PeftlabError
from peftlab.export.gguf import TENSOR_TYPES, check_exportable, write_gguf
from peftlab.export.merge import MERGE_INFO, PROBE_TEXT, merged_model

# max |GGUF logit - merged logit| / (1 + max |logit|) after the reload: the rounding of each file type
RELOAD_TOLERANCE = {"f32": 1e-4, "f16": 2e-2, "bf16": 5e-2}  # quantized types are reported, not judged here


def base_gguf_file(model_spec: str | None) -> Path | None:
    """The GGUF file the base came from (its tokenizer fields are copied), None for a transformers base."""
    from peftlab.models.gguf_cache import default_gguf_path

    if model_spec is None:
        return default_gguf_path()
    return Path(model_spec).expanduser() if model_spec.endswith(".gguf") else None


def _merged_folder(folder: Path, say: Callable[[str], None]) -> tuple[Any, Any, dict[str, Any]]:
    from peftlab.models.loading import load_model

    info = json.loads((folder / MERGE_INFO).read_text(encoding="utf-8"))
    loaded = load_model(str(folder), "fp32")
    say(f"export: the merged model in {folder} (base {info['base']})")
    return loaded.model, loaded.tokenizer, info


def export_gguf(source: str, output: str, tensor_type: str = "f16", model: str | None = None, overwrite: bool = False,
                say: Callable[[str], None] = lambda text: None) -> dict[str, Any]:
    """SOURCE (an adapter folder from `peftlab train`, or a folder from `peftlab merge`) as one GGUF file."""
    if tensor_type not in TENSOR_TYPES:
        raise PeftlabError(f"--type {tensor_type} is not a GGUF type this export writes; choose one of {', '.join(TENSOR_TYPES)}")
    out = Path(output)
    if out.suffix != ".gguf":
        raise PeftlabError(f"--output {output} must name a .gguf file, e.g. --output model-{tensor_type}.gguf")
    if out.is_dir() or (out.exists() and not overwrite):
        raise PeftlabError(f"{out} already exists; pass --overwrite to replace it (it is replaced only once the new file is "
                           "written and checked) or choose another --output")
    folder = Path(source)
    if (folder / MERGE_INFO).is_file():
        merged, tokenizer, info = _merged_folder(folder, say)
    else:
        merged, loaded, info = merged_model(source, model, "fp32", say)  # fp32: each file type rounds once, from exact weights
        tokenizer = loaded.tokenizer
    check_exportable(merged.config)
    base_gguf = base_gguf_file(info.get("base_model"))
    name = out.stem
    say(f"export: writing {out} ({tensor_type}; tokenizer " + (f"fields copied from {base_gguf.name})" if base_gguf else "from transformers)"))
    try:
        with atomic.file(out) as tmp:
            counts = write_gguf(merged, tokenizer, tmp, tensor_type, name, base_gguf)
            difference = reload_difference(merged, tokenizer, tmp)
            limit = RELOAD_TOLERANCE.get(tensor_type)
            if limit is not None and difference > limit:
                raise PeftlabError(f"the GGUF file reloaded through transformers differs from the merged model by {difference:.2e} "
                                   f"(relative logits, limit {limit:.0e} for {tensor_type}); nothing was written")
    except OSError as error:
        raise PeftlabError(f"cannot write {out}: {error.strerror}; free space or choose another --output") from None
    result = {"file": str(out), "bytes": out.stat().st_size, "type": tensor_type, "tensor_types": counts,
              "tokenizer": str(base_gguf) if base_gguf else "transformers", "reload_relative_logit_difference": difference,
              "merged_from": info.get("adapter")}
    say(f"export: {out} ({out.stat().st_size / 1e6:.1f} MB, tensors {counts}); reloaded through transformers it differs "
        f"from the merged model by {difference:.1e} (relative logits)")
    return result


def reload_difference(merged: Any, tokenizer: Any, path: Path) -> float:
    """Load the written file with transformers (`gguf_file=`, its own GGUF reader and dequantizer) and compare
    the logits on the probe prompt with the merged model's."""
    import torch
    from transformers import AutoModelForCausalLM

    with contextlib.redirect_stderr(io.StringIO()):  # transformers' GGUF reader draws a progress bar nothing turns off
        reloaded = AutoModelForCausalLM.from_pretrained(path.parent, gguf_file=path.name, dtype=torch.float32).eval()
    ids = tokenizer(PROBE_TEXT, return_tensors="pt")["input_ids"]
    with torch.inference_mode():
        expected = merged.float()(input_ids=ids).logits
        got = reloaded(input_ids=ids).logits
    return float((got - expected).abs().max() / (1 + expected.abs().max()))
