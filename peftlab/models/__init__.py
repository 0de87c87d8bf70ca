"""Owns loading models and tokenizers: hub id, local folder or GGUF file (converted once and cached), dtype, 4/8-bit.
May import atomic and errors only: every other package builds on it."""

from peftlab.models.loading import LoadedModel, load_model, load_tokenizer, resolve_dtype, resolve_source

__all__ = ["LoadedModel", "load_model", "load_tokenizer", "resolve_dtype", "resolve_source"]
