"""Use the result: generate, merge into the base, and serve base + adapters behind an OpenAI-compatible API."""
