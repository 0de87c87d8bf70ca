"""Owns the experiment matrix and its tuning: methods x trials x seeds, each run trained, scored and recorded, then gathered.
May import config, artifacts, outputs, atomic, errors, data, models, methods, train, generation, evaluate, report; never cli, serve, export."""
