"""The training recipe: data -> model + method -> transformers Trainer -> adapter on disk."""
