"""Owns `peftlab demo`: evaluate the base model, train LoRA, evaluate the tuned one, write an HTML page; its synthetic data.
May import config, artifacts, atomic, outputs, errors, data, train, generation, evaluate and report; only cli imports it."""

from peftlab.demo.workflow import DEMO_TEST, DEMO_TRAIN, run_demo

__all__ = ["DEMO_TEST", "DEMO_TRAIN", "run_demo"]
