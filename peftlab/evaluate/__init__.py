"""Evaluate: batched generation, ROUGE against one or several references, predictions and metrics files."""

from peftlab.evaluate.generation import GenerationSettings, generate
from peftlab.evaluate.recipe import eval_config, evaluate

__all__ = ["GenerationSettings", "eval_config", "evaluate", "generate"]
