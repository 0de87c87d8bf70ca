"""Owns loading models and tokenizers (hub id, local folder or GGUF file, converted once), 4/8-bit, and where they run (device.py).
May import atomic and errors only: every other package builds on it."""

from peftlab.models.device import resolve_device, resolve_dtype
from peftlab.models.loading import LoadedModel, load_model, load_tokenizer, resolve_source

__all__ = ["LoadedModel", "load_model", "load_tokenizer", "resolve_device", "resolve_dtype", "resolve_source"]
