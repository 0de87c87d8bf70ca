"""Owns which methods exist: one import line per family registers its methods, in `peftlab methods` order.
May import its own modules, config, errors, artifacts and models; never train, generation, serve or export."""

from peftlab.models.quantization import offline_bitsandbytes

offline_bitsandbytes()  # before anything imports peft, which imports bitsandbytes

# the families, in `peftlab methods` order: adding a method is one file and one line here
from peftlab.methods import lora  # noqa: E402,F401  lora, dora, rslora, adalora
from peftlab.methods import pissa  # noqa: E402,F401
from peftlab.methods import olora  # noqa: E402,F401
from peftlab.methods import eva  # noqa: E402,F401
from peftlab.methods import corda  # noqa: E402,F401
from peftlab.methods import lora_ga  # noqa: E402,F401  lora-ga
from peftlab.methods import loraplus  # noqa: E402,F401
from peftlab.methods import lycoris  # noqa: E402,F401  loha, lokr
from peftlab.methods import quantized  # noqa: E402,F401  qlora, lora-8bit
from peftlab.methods import loftq  # noqa: E402,F401
from peftlab.methods import ia3  # noqa: E402,F401
from peftlab.methods import oft  # noqa: E402,F401
from peftlab.methods import vera  # noqa: E402,F401
from peftlab.methods import miss  # noqa: E402,F401
from peftlab.methods import shira  # noqa: E402,F401
from peftlab.methods import hira  # noqa: E402,F401
from peftlab.methods import lily  # noqa: E402,F401
from peftlab.methods import fourierft  # noqa: E402,F401
from peftlab.methods import randlora  # noqa: E402,F401
from peftlab.methods import prompts  # noqa: E402,F401  prompt-tuning, prefix-tuning, p-tuning
from peftlab.methods import bottleneck  # noqa: E402,F401  adapter
from peftlab.methods import selective  # noqa: E402,F401  bitfit, ln-tuning, freeze
from peftlab.methods import trainable_tokens  # noqa: E402,F401  trainable-tokens
from peftlab.methods import full  # noqa: E402,F401

from peftlab.methods.base import BuildContext, Method, capabilities, get_method, method_names, register, unregister  # noqa: E402
from peftlab.methods.saved import load_trained, saved_method, shares_mixed_batches  # noqa: E402
from peftlab.models.parameters import count_parameters  # noqa: E402

__all__ = ["BuildContext", "Method", "capabilities", "count_parameters", "get_method", "load_trained", "method_names",
           "register", "saved_method", "shares_mixed_batches", "unregister"]
