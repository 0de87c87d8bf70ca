"""Owns the experiment matrix and its tuning: methods x trials x seeds, each run trained, scored, gathered into results.
May import config, artifacts, atomic, errors, data, models, methods, train, evaluate, inference and report; nothing imports it but cli."""
