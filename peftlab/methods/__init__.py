"""Methods as data: a registry maps a name to how the trainable model is made and saved."""

from peftlab.methods.registry import Method, count_parameters, get_method, method_names

__all__ = ["Method", "count_parameters", "get_method", "method_names"]
