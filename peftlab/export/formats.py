"""The formats `peftlab export --format` writes: each one's writer, default tensor type and help, in one table."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from peftlab.export.gguf import TENSOR_TYPES

LORA_TYPES = ("f32", "f16")  # a llama.cpp LoRA file's tensors: exact, or half the size


@dataclass(frozen=True)
class ExportFormat:
    name: str
    writer: str  # the function of export/exporting.py that writes it (imported when used: the CLI's parser stays light)
    default_type: str
    types: tuple[str, ...]
    help: str

    def write(self, source: str, output: str, tensor_type: str | None, model: str | None, overwrite: bool, say: Any,
              device: str = "auto") -> dict[str, Any]:
        from peftlab.export import exporting

        return getattr(exporting, self.writer)(source, output, tensor_type or self.default_type, model, overwrite, say=say, device=device)


FORMATS = {fmt.name: fmt for fmt in (
    ExportFormat("gguf", "export_gguf", "f16", tuple(TENSOR_TYPES), "the merged model as one file (default)"),
    ExportFormat("gguf-lora", "export_gguf_lora", "f32", LORA_TYPES, "a LoRA adapter as a llama.cpp --lora file"),
    ExportFormat("ollama", "export_ollama", "q8_0", tuple(TENSOR_TYPES), "a folder with the merged GGUF file and a Modelfile"),
    ExportFormat("ollama-lora", "export_ollama_lora", "f32", LORA_TYPES,
                 "the LoRA file and a Modelfile on the base's own GGUF file (FROM base, ADAPTER)"),
)}
DEFAULT_FORMAT = "gguf"
# formats written by a writer of their own (export/to_lora.py: a folder and a rank, not a GGUF tensor type)
CONVERSIONS = {"lora": "a LoHa/LoKr/VeRA/MiSS/SHiRA/RandLoRA/FourierFT adapter converted to a LoRA adapter folder (--rank)",
               "vllm": "one or more adapters (LoRA, or converted to it) in a folder with serve.sh: the `vllm serve --enable-lora` "
                       "command that serves them"}


def format_choices() -> list[str]:
    return [*FORMATS, *CONVERSIONS]


def tensor_type_choices() -> list[str]:
    return list(dict.fromkeys(t for fmt in FORMATS.values() for t in fmt.types))


def formats_help() -> str:
    return "; ".join([*(f"{fmt.name}: {fmt.help}" for fmt in FORMATS.values()), *(f"{name}: {text}" for name, text in CONVERSIONS.items())])


def types_help() -> str:
    """'weights in the file (gguf: default f16, ...)' from the table."""
    defaults = ", ".join(f"{fmt.name}: default {fmt.default_type}" + ("" if fmt.types == tuple(TENSOR_TYPES) else f" of {'/'.join(fmt.types)}")
                         for fmt in FORMATS.values())
    return f"weights in the file ({defaults}); q8_0 is about half of f16's size; norms stay f32"
