"""`peftlab export --format lora`: a plain LoRA adapter for a method peft converts (LoHa, LoKr, VeRA, MiSS, SHiRA,
RandLoRA, FourierFT), so the engines that serve LoRA only (vLLM, SGLang, llama.cpp, Ollama) can serve its result.

peft 0.21's `save_as_lora` does the conversion: each layer's update is cut to a rank-r SVD (a fixed rank, or the
smallest rank holding a share of the update's energy). The cut loses something: the logits of the LoRA against the
original adapter's, on a probe prompt, are measured and recorded; `peftlab check` measures the answers.
"""

from __future__ import annotations

import shutil
from pathlib import Path
from typing import Any, Callable

from peftlab import outputs
from peftlab.artifacts import (CONVERTED_LORA, RUN_FILE, adapter_folder, read_adapter_config, read_run_info, recorded_model_name,
                               write_run_info)
from peftlab.errors import PeftlabError
from peftlab.export.merge import PROBE_TEXT, relative_difference
from peftlab.export.parity import check_command


def parse_rank(text: str) -> int | float:
    """`--rank 16` (a fixed rank) or `--rank 0.95` (the smallest rank holding that share of each update's energy)."""
    try:
        rank: int | float = int(text)
    except ValueError:
        try:
            rank = float(text)
        except ValueError:
            rank = 0
        if not 0 < rank <= 1:
            raise PeftlabError(f"--rank {text}: give a rank (a whole number, e.g. 16) or an energy share in (0, 1], e.g. 0.95") from None
    if rank < 1 and isinstance(rank, int):
        raise PeftlabError(f"--rank {text}: a rank is at least 1")
    return rank


def convertible_method(folder: Path) -> Any:
    from peftlab.methods import get_method, method_names, saved_method

    method = saved_method(folder)
    if method.plain_lora:
        raise PeftlabError(f"{folder} is already a LoRA adapter ({method.name}); serve or export it as it is (--format gguf-lora)")
    if not method.lora_conversion:
        convertible = ", ".join(name for name in method_names() if get_method(name).lora_conversion)
        raise PeftlabError(f"peft converts to LoRA only adapters that add an update to each weight ({convertible}); "
                           f"{method.name} is not one: merge it (`peftlab merge`) and export the merged model instead")
    return method


def probe_logits(model: Any, tokenizer: Any) -> Any:
    import torch

    ids = tokenizer(PROBE_TEXT, return_tensors="pt")["input_ids"].to(model.device)
    inputs = {"input_ids": ids}
    if model.config.is_encoder_decoder:
        inputs["decoder_input_ids"] = ids[:, :8]
    with torch.inference_mode():
        return model(**inputs).logits.float().cpu()


def export_lora(source: str, output: str, rank: int | float, model: str | None = None, overwrite: bool = False,
                say: Callable[[str], None] = lambda text: None, device: str = "auto") -> dict[str, Any]:
    """Write OUTPUT, a LoRA adapter folder (PEFT format, with the source's tokenizer and run.yaml) equal to the source
    adapter up to the rank cut, which is measured on a probe prompt and recorded in its peftlab.json."""
    from peft import PeftModel
    from peft.tuners.lora.conversion import save_as_lora

    from peftlab.generation import load_for_generation
    from peftlab.models import load_model

    folder = adapter_folder(source)
    method = convertible_method(folder)
    out = outputs.check_folder(output, overwrite, CONVERTED_LORA, outputs.inputs(adapter=folder, model=model))
    name = model or recorded_model_name(folder)
    loaded = load_for_generation(name, "fp32", str(folder), device=device)  # peft's conversion (an SVD per layer) runs there
    original = probe_logits(loaded.model.eval(), loaded.tokenizer)
    say(f"export: {method.name} adapter {folder} as a LoRA adapter (rank {rank}) in {out}")
    try:
        with outputs.replaced_folder(out, CONVERTED_LORA) as tmp:
            try:
                save_as_lora(str(tmp), loaded.model, rank=rank)
            except (TypeError, ValueError) as error:
                raise PeftlabError(f"peft cannot convert {folder} to LoRA: {str(error).splitlines()[0]}") from None
            converted = PeftModel.from_pretrained(load_model(name, "fp32", device=device).model, str(tmp)).eval()
            difference = relative_difference(probe_logits(converted, loaded.tokenizer), original)
            loaded.tokenizer.save_pretrained(tmp)
            if (folder / RUN_FILE).is_file():
                shutil.copyfile(folder / RUN_FILE, tmp / RUN_FILE)
            lora = read_adapter_config(tmp) or {}
            info = {**(read_run_info(folder) or {}), "method": "lora", "converted_from": method.name,
                    "converted_from_adapter": str(folder.resolve()), "rank": rank,
                    "lora_rank": lora.get("r"), "rank_pattern": bool(lora.get("rank_pattern")),
                    "relative_logit_difference": difference}
            write_run_info(tmp, info)
    except OSError as error:
        raise PeftlabError(f"cannot write {out}: {error.strerror}; choose another --output") from None
    # the probe prompt's logits are measured here, in seconds; answers on many prompts are `peftlab check`'s to measure
    # (it needs rows to prompt with, takes minutes, and also runs the llama.cpp file --format gguf-lora writes from this)
    say(f"export: LoRA adapter in {out}; its logits differ from the {method.name} adapter's by {difference:.2e} (relative, "
        f"probe prompt); measure its answers and logits against the {method.name} adapter with: "
        f"{check_command(source, '--lora', str(out))}; then --format gguf-lora reads it")
    return info
