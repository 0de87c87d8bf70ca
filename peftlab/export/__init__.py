"""Owns everything that leaves peftlab as a file: merge, GGUF per family, LoRA files, Ollama, hub upload, parity checks, the format table.
May import config, artifacts, atomic, outputs, errors, models, methods and generation; never cli, train, compare or serve."""
