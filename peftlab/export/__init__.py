"""Export a trained result for use elsewhere: merged into its base as a plain transformers model."""
