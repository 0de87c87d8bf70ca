"""Owns generation: loading for it, batched / continuous / uncached decoding, soft prompts, the self-check and the one sampler.
May import artifacts, errors, models, methods and data; never train, evaluate, compare, export, serve or report."""

from peftlab.generation.batched import generate, generate_ids, generate_new_tokens
from peftlab.generation.loading import encode_prompts, load_for_generation, source_ids
from peftlab.generation.settings import GenerationSettings, eos_ids, generation_config, pad_batch

__all__ = ["GenerationSettings", "encode_prompts", "eos_ids", "generate", "generate_ids", "generate_new_tokens",
           "generation_config", "load_for_generation", "pad_batch", "source_ids"]
