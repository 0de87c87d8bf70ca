"""peftlab: parameter-efficient fine-tuning of language models, evaluated and compared."""

__version__ = "0.1.0"
