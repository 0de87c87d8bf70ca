"""Evaluate: batched generation, ROUGE against one or several references, predictions and metrics files."""

from peftlab.inference import GenerationSettings, generate
from peftlab.evaluate.evaluation import eval_config, evaluate

__all__ = ["GenerationSettings", "eval_config", "evaluate", "generate"]
