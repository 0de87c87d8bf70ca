"""The experiment matrix: base, full fine-tuning and PEFT methods on the same data and budget."""
