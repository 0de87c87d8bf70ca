"""Load models and tokenizers: hub id, local folder or GGUF file (converted once and cached); where they run (device.py)."""

from peftlab.models.device import resolve_device, resolve_dtype
from peftlab.models.loading import LoadedModel, load_model, load_tokenizer, resolve_source

__all__ = ["LoadedModel", "load_model", "load_tokenizer", "resolve_device", "resolve_dtype", "resolve_source"]
