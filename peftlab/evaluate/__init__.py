"""Owns the `peftlab eval` and `peftlab generate` recipes: settings, test references, predictions; metrics/ holds the metrics.
May import config, artifacts, atomic, outputs, errors, models, data and generation; never train, compare, export or serve."""
