"""The method catalog: importing this package registers every method family found in it.

A family module (lora.py, prompts.py, ...) imports `peftlab.methods.base` and registers its
methods; nothing in `base` imports a family. Adding a method is one new module in this folder
(it is found and imported here) plus one row in tests/methods/test_methods.py's CASES.
"""

import importlib
import pkgutil

from peftlab.models.quantization import offline_bitsandbytes

offline_bitsandbytes()  # before anything imports peft, which imports bitsandbytes

from peftlab.methods.base import BuildContext, Method, capabilities, get_method, method_names, register, unregister  # noqa: E402
from peftlab.methods.saved import load_trained, saved_method  # noqa: E402
from peftlab.models.parameters import count_parameters  # noqa: E402

LIBRARY_MODULES = {"base", "saved", "saved_tensors", "shares", "targets"}  # helpers, not method families
LISTED_FIRST = ("lora", "lycoris", "quantized", "ia3", "prompts", "bottleneck", "selective")  # `peftlab methods` order


def _register_families() -> None:
    found = {module.name for module in pkgutil.iter_modules(__path__)} - LIBRARY_MODULES
    for name in [*LISTED_FIRST, *sorted(found - set(LISTED_FIRST))]:
        importlib.import_module(f"{__name__}.{name}")


_register_families()

__all__ = ["BuildContext", "Method", "capabilities", "count_parameters", "get_method", "load_trained", "method_names",
           "register", "saved_method", "unregister"]
