"""Load models and tokenizers: hub id, local folder or GGUF file (converted once and cached)."""

from peftlab.models.loading import LoadedModel, load_model, load_tokenizer, resolve_dtype, resolve_source

__all__ = ["LoadedModel", "load_model", "load_tokenizer", "resolve_dtype", "resolve_source"]
