"""Owns everything that leaves peftlab as a file: merge, GGUF per family, LoRA files, Ollama, hub upload, parity checks, the format table.
May import config, artifacts, atomic, outputs, errors, models, methods, generation and serve (vllm_compat: what vLLM loads); never cli, train or compare."""
