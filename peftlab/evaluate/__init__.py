"""Evaluate and generate: the `peftlab eval` and `peftlab generate` recipes, ROUGE against one or several references."""
