"""Owns the training recipe: data -> model + method -> transformers Trainer -> adapter on disk, checkpoints and resume.
May import config, artifacts, atomic, outputs, errors, data, models and methods; never generation, evaluate or compare."""
