"""`peftlab demo`: evaluate the base model, train LoRA, evaluate the tuned model, write an HTML page."""

from peftlab.demo.workflow import DEMO_TEST, DEMO_TRAIN, run_demo

__all__ = ["DEMO_TEST", "DEMO_TRAIN", "run_demo"]
