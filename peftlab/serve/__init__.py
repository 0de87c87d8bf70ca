"""Serve base + adapters behind an OpenAI-compatible API: the scheduler (continuous batching), the engine, the HTTP app."""
