"""Methods as data: a registry maps a name to how the trainable model is made, saved and reloaded."""

from peftlab.models.quantization import offline_bitsandbytes

offline_bitsandbytes()  # before anything imports peft, which imports bitsandbytes

from peftlab.methods.registry import BuildContext, Method, count_parameters, get_method, method_names
from peftlab.methods.saved import load_trained, saved_method

__all__ = ["BuildContext", "Method", "count_parameters", "get_method", "load_trained", "method_names", "saved_method"]
