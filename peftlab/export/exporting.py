"""`peftlab export`, top to bottom: merge the adapter (or take a merged folder), write the GGUF file beside its
final place, reload it through transformers and compare logits with the merged model, then publish it."""

from __future__ import annotations

import contextlib
import io
import math
from pathlib import Path
from typing import Any, Callable

from peftlab import atomic, outputs
from peftlab.errors import PeftlabError
from peftlab.export.gguf import (TENSOR_TYPES, check_exportable, gguf_architecture, lora_layers, update_in_llama_cpp_layout,
                                 write_gguf, write_gguf_lora)
from peftlab.export.merge import MERGE_INFO, PROBE_TEXT, merged_model, read_merge_info, relative_difference, within
from peftlab.models.gguf_cache import base_gguf_file

# max |GGUF logit - merged logit| / (1 + max |logit|) after the reload: the rounding of each file type
RELOAD_TOLERANCE = {"f32": 1e-4, "f16": 2e-2, "bf16": 5e-2}  # quantized types are reported, not judged here
# max |file's B A - peft's update| / (1 + max |update|) over a LoRA file's layers
LORA_TOLERANCE = {"f32": 1e-5, "f16": 1e-2}
MODELFILE = "Modelfile"
OLLAMA = outputs.OutputKind("Ollama model", (MODELFILE,), (MODELFILE, "model-*.gguf", "adapter-lora.gguf"))


def _merged_folder(folder: Path, say: Callable[[str], None]) -> tuple[Any, Any, dict[str, Any]]:
    from peftlab.models.loading import load_model

    info = read_merge_info(folder)
    loaded = load_model(str(folder), "fp32", device="cpu")  # nothing to compute: its tensors go straight into the file
    say(f"export: the merged model in {folder} (base {info['base']})")
    return loaded.model, loaded.tokenizer, info


def exported_here(path: Path) -> bool:
    """Whether `path` is a GGUF file `peftlab export` wrote: it names the model in it after the file (general.name)."""
    import gguf

    try:
        field = gguf.GGUFReader(path).get_field(gguf.Keys.General.NAME)
        return field is not None and field.contents() == path.stem
    except (OSError, ValueError, KeyError, IndexError, TypeError):
        return False


def export_inputs(source: str, model: str | None) -> list[outputs.Input]:
    """What an export reads: the adapter (or merged) folder and the base, also the one the adapter records."""
    from peftlab.artifacts import adapter_folder, recorded_model_name

    folder = Path(source).expanduser()
    if (folder / MERGE_INFO).is_file():
        return outputs.inputs(source=folder, model=model)
    folder = adapter_folder(source)
    return outputs.inputs(adapter=folder, model=model, base_model=None if model else recorded_model_name(folder))


def _checked_output(output: str, overwrite: bool, example: str, sources: list[outputs.Input]) -> Path:
    if Path(output).suffix != ".gguf":
        raise PeftlabError(f"--output {output} must name a .gguf file, e.g. --output {example}")
    return outputs.check_file(output, overwrite, "a GGUF file", exported_here, sources, example)


def _check_type(tensor_type: str) -> None:
    if tensor_type not in TENSOR_TYPES:
        raise PeftlabError(f"--type {tensor_type} is not a GGUF type this export writes; choose one of {', '.join(TENSOR_TYPES)}")


def _merged_source(source: str, model: str | None, say: Callable[[str], None], device: str) -> tuple[Any, Any, dict[str, Any]]:
    """(merged model on the CPU, tokenizer, what it was merged from) for an adapter folder or a folder from `peftlab merge`.
    The merge and its check run on `device`; the file is written from, and reloaded against, CPU tensors."""
    folder = Path(source)
    if (folder / MERGE_INFO).is_file():
        merged, tokenizer, info = _merged_folder(folder, say)
    else:
        merged, loaded, info = merged_model(source, model, "fp32", say, device)  # fp32: each file type rounds once, from exact weights
        merged, tokenizer = merged.cpu(), loaded.tokenizer
    check_exportable(merged.config, say)
    return merged, tokenizer, info


def export_gguf(source: str, output: str, tensor_type: str = "f16", model: str | None = None, overwrite: bool = False,
                say: Callable[[str], None] = lambda text: None, device: str = "auto") -> dict[str, Any]:
    """SOURCE (an adapter folder from `peftlab train`, or a folder from `peftlab merge`) as one GGUF file."""
    _check_type(tensor_type)
    out = _checked_output(output, overwrite, f"model-{tensor_type}.gguf", export_inputs(source, model))
    merged, tokenizer, info = _merged_source(source, model, say, device)
    return _write_checked(merged, tokenizer, info, out, tensor_type, say)


def _write_checked(merged: Any, tokenizer: Any, info: dict[str, Any], out: Path, tensor_type: str,
                   say: Callable[[str], None], shown: Path | None = None) -> dict[str, Any]:
    """Write the GGUF file beside `out`, reload it through transformers, publish it only when it matches.
    `shown`: the path to name in messages (where `out` is inside a folder published later)."""
    base_gguf = base_gguf_file(info.get("base_model"))
    shown = shown or out
    say(f"export: writing {shown} ({tensor_type}; tokenizer " + (f"fields copied from {base_gguf.name})" if base_gguf else "from transformers)"))
    try:
        with atomic.file(out) as tmp:
            counts = write_gguf(merged, tokenizer, tmp, tensor_type, out.stem, base_gguf)
            misread = transformers_misreads(merged.config, tmp)
            difference = None if misread else reload_difference(merged, tokenizer, tmp)
            limit = RELOAD_TOLERANCE.get(tensor_type, math.inf)  # quantized types: reported, never NaN or infinite
            if difference is not None and not within(difference, limit):
                raise PeftlabError(f"the GGUF file reloaded through transformers differs from the merged model by {difference:.2e} "
                                   f"(relative logits, limit {limit:.0e} for {tensor_type}; NaN or infinite logits never pass); "
                                   "nothing was written")
    except OSError as error:
        raise PeftlabError(f"cannot write {out}: {error.strerror}; free space or choose another --output") from None
    result = {"file": str(out), "bytes": out.stat().st_size, "type": tensor_type, "tensor_types": counts,
              "tokenizer": str(base_gguf) if base_gguf else "transformers", "reload_relative_logit_difference": difference,
              "merged_from": info.get("adapter")}
    checked = (f"reloaded through transformers it differs from the merged model by {difference:.1e} (relative logits)"
               if difference is not None else f"not reloaded ({misread}): check it in llama.cpp with "
               f"`peftlab check ADAPTER --data ROWS --gguf {shown}`")
    say(f"export: {shown} ({out.stat().st_size / 1e6:.1f} MB, tensors {counts}); {checked}")
    return result


def export_ollama(source: str, output: str, tensor_type: str = "q8_0", model: str | None = None, overwrite: bool = False,
                  say: Callable[[str], None] = lambda text: None, device: str = "auto") -> dict[str, Any]:
    """A folder for `ollama create NAME -f OUT/Modelfile`: the merged model as GGUF and its Modelfile."""
    from peftlab.export.ollama import modelfile

    _check_type(tensor_type)
    out = outputs.check_folder(output, overwrite, OLLAMA, export_inputs(source, model))
    merged, tokenizer, info = _merged_source(source, model, say, device)
    model_file = f"model-{tensor_type}.gguf"
    try:
        with outputs.replaced_folder(out, OLLAMA) as tmp:
            result = _write_checked(merged, tokenizer, info, tmp / model_file, tensor_type, say, shown=out / model_file)
            text, templated = modelfile(tokenizer, f"./{model_file}")
            (tmp / MODELFILE).write_text(text, encoding="utf-8")
    except OSError as error:
        raise PeftlabError(f"cannot write {out}: {error.strerror}; free space or choose another --output") from None
    if not templated:
        say("export: the chat template is more than a wrapper per message, so the Modelfile has no TEMPLATE: Ollama "
            "takes one from the GGUF file's chat template field; check its answers with `ollama run`")
    say(f"export: {out / MODELFILE}; create the model with: ollama create NAME -f {out / MODELFILE}")
    return {**result, "file": str(out / model_file), "modelfile": str(out / MODELFILE), "template": templated}


def export_ollama_lora(source: str, output: str, tensor_type: str = "f32", model: str | None = None, overwrite: bool = False,
                       say: Callable[[str], None] = lambda text: None, device: str = "auto") -> dict[str, Any]:
    """A folder for `ollama create`: the LoRA adapter as a llama.cpp LoRA file and a Modelfile whose FROM is the base's
    own GGUF file and ADAPTER the LoRA file (one base in Ollama, many small adapters)."""
    from transformers import AutoTokenizer

    from peftlab.artifacts import adapter_folder, recorded_model_name
    from peftlab.export.ollama import modelfile
    from peftlab.models.loading import resolve_source

    out = outputs.check_folder(output, overwrite, OLLAMA, export_inputs(source, model))
    name = model or recorded_model_name(adapter_folder(source))
    base = base_gguf_file(name)
    if base is None:
        raise PeftlabError("--format ollama-lora needs a base that came from a GGUF file (the embedded default did); "
                           "for this base use --format ollama (the merged model)")
    lora_file = "adapter-lora.gguf"
    try:
        with outputs.replaced_folder(out, OLLAMA) as tmp:
            result = export_gguf_lora(source, str(tmp / lora_file), tensor_type, model, False, say, device)
            tokenizer = AutoTokenizer.from_pretrained(resolve_source(name)[1])
            text, _ = modelfile(tokenizer, str(base.resolve()), f"./{lora_file}")
            (tmp / MODELFILE).write_text(text, encoding="utf-8")
    except OSError as error:
        raise PeftlabError(f"cannot write {out}: {error.strerror}; free space or choose another --output") from None
    say(f"export: {out / MODELFILE} (FROM {base}, ADAPTER {lora_file}); create the model with: ollama create NAME -f {out / MODELFILE}")
    return {**result, "file": str(out / lora_file), "modelfile": str(out / MODELFILE)}


# config fields whose value changes the logits; transformers' GGUF reader must recover each of them for the check to hold
LOGIT_FIELDS = ("max_position_embeddings", "hidden_size", "num_hidden_layers", "num_attention_heads", "num_key_value_heads", "intermediate_size",
                "head_dim", "layer_types", "sliding_window", "query_pre_attn_scalar", "attn_logit_softcapping",
                "final_logit_softcapping")


def transformers_misreads(config: Any, path: Path) -> str | None:
    """Why transformers' GGUF reader would rebuild another model from this file, or None: it reads no GPT-NeoX file,
    and in 5.24 its Qwen3 and Gemma readers drop the head width, which layers slide and Gemma's attention scale, its
    GPT-2 reader the number of positions (each keeps its config's default, which real checkpoints mostly have)."""
    from transformers import AutoConfig
    from transformers.integrations.ggml import GGUF_CONFIG_MAPPING

    if gguf_architecture(config) not in GGUF_CONFIG_MAPPING:
        return f"transformers reads no {gguf_architecture(config)} GGUF file"
    with contextlib.redirect_stderr(io.StringIO()):
        read = AutoConfig.from_pretrained(path.parent, gguf_file=path.name)
    lost = [field for field in LOGIT_FIELDS
            if getattr(config, field, None) is not None and getattr(read, field, None) != getattr(config, field)]
    return f"transformers' GGUF reader does not recover {', '.join(lost)}" if lost else None


def reload_difference(merged: Any, tokenizer: Any, path: Path) -> float:
    """Load the written file with transformers (`gguf_file=`, its own GGUF reader and dequantizer) and compare
    the logits on the probe prompt with the merged model's."""
    import torch
    from transformers import AutoModelForCausalLM

    with contextlib.redirect_stderr(io.StringIO()):  # transformers' GGUF reader draws a progress bar nothing turns off
        reloaded = AutoModelForCausalLM.from_pretrained(path.parent, gguf_file=path.name, dtype=torch.float32).eval()
    ids = tokenizer(PROBE_TEXT, return_tensors="pt")["input_ids"]
    with torch.inference_mode():
        return relative_difference(reloaded(input_ids=ids).logits, merged.float()(input_ids=ids).logits)


def export_gguf_lora(source: str, output: str, tensor_type: str = "f32", model: str | None = None, overwrite: bool = False,
                     say: Callable[[str], None] = lambda text: None, device: str = "auto") -> dict[str, Any]:
    """A LoRA adapter folder as a llama.cpp LoRA file, for the base's own GGUF file (`llama-cli -m BASE --lora FILE`)."""
    from peftlab.artifacts import adapter_folder, recorded_model_name
    from peftlab.generation import load_for_generation
    from peftlab.methods import saved_method

    if tensor_type not in LORA_TOLERANCE:
        raise PeftlabError(f"--type {tensor_type}: a llama.cpp LoRA file is written in {' or '.join(LORA_TOLERANCE)}")
    out = _checked_output(output, overwrite, "adapter-lora.gguf", export_inputs(source, model))
    folder = adapter_folder(source)
    name = model or recorded_model_name(folder)
    if saved_method(folder).quantization:
        raise PeftlabError("this adapter was trained on a 4/8-bit base: a LoRA file would meet other base weights in llama.cpp; "
                           "export the merged model instead (--format gguf)")
    # checks the base, refuses a misfit in one line; the file is written from CPU tensors
    adapted = load_for_generation(name, "fp32", str(folder), device=device).model.eval().cpu()
    check_exportable(adapted.get_base_model().config, say)
    say(f"export: LoRA layers of {folder} as a llama.cpp LoRA file {out} ({tensor_type})")
    try:
        with atomic.file(out) as tmp:
            counts = write_gguf_lora(adapted, tmp, tensor_type, out.stem)
            difference = lora_file_difference(adapted, tmp)
            if not within(difference, LORA_TOLERANCE[tensor_type]):
                raise PeftlabError(f"the LoRA file's updates differ from the adapter's by {difference:.2e} (relative, limit "
                                   f"{LORA_TOLERANCE[tensor_type]:.0e}); nothing was written")
    except OSError as error:
        raise PeftlabError(f"cannot write {out}: {error.strerror}; free space or choose another --output") from None
    base = base_gguf_file(name)
    say(f"export: {out} ({out.stat().st_size / 1e6:.2f} MB, {counts.get('F32', 0) + counts.get('F16', 0)} tensors); its updates "
        f"match the adapter's to {difference:.1e}; use it on the base's GGUF file: "
        f"llama-cli -m {base or 'BASE.gguf'} --lora {out}")
    say(f"export: check its answers in llama.cpp with: {lora_file_check(folder, out, base)}")
    return {"file": str(out), "bytes": out.stat().st_size, "type": tensor_type, "tensor_types": counts, "base_gguf": str(base) if base else None,
            "relative_update_difference": difference}


def lora_file_check(folder: Path, out: Path, base: Path | None) -> str:
    """`peftlab check` of a LoRA file: against the adapter a converted LoRA came from (with the LoRA folder beside it),
    else against the LoRA adapter itself."""
    from peftlab.artifacts import read_run_info
    from peftlab.export.parity import check_command

    original = (read_run_info(folder) or {}).get("converted_from_adapter")
    converted = ["--lora", str(folder)] if original and Path(original).is_dir() else []
    return check_command(original if converted else folder, *converted, "--gguf-lora", str(out),
                         *([] if base else ["--base-gguf", "BASE.gguf"]))


def lora_file_difference(adapted: Any, path: Path) -> float:
    """Read the written file back (the gguf package's reader) and compare each layer's lora_b @ lora_a with peft's own
    update for that layer (`get_delta_weight`, in llama.cpp's row order): the largest relative difference."""
    import gguf
    import numpy as np

    tensors = {t.name: np.asarray(t.data, dtype=np.float32) for t in gguf.GGUFReader(path).tensors}
    config = adapted.get_base_model().config
    worst = 0.0
    for target, module, adapter in lora_layers(adapted):
        expected = update_in_llama_cpp_layout(module, adapter, target, config)
        worst = max(worst, relative_difference(tensors[f"{target}.lora_b"] @ tensors[f"{target}.lora_a"], expected))
    return worst
