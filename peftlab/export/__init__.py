"""Export owns everything that leaves peftlab as a file: merge, GGUF per family, llama.cpp LoRA files, Ollama, hub upload, parity
checks, and its format table (formats.py, which the CLI reads). It may import models, methods, artifacts and generation code, never cli."""
