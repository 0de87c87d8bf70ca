"""A model ready to generate: the base (+ the trained result of any method), and prompts as the token ids training fed it."""

from __future__ import annotations

from typing import Any

from peftlab.artifacts import adapter_folder, check_base, misfit_error, recorded_attn_implementation
from peftlab.models.device import resolve_device, spreads
from peftlab.models.loading import LoadedModel, load_model


def load_for_generation(model_name: str | None, dtype: str = "auto", adapter: str | None = None,
                        attn_implementation: str | None = None, device: str = "auto") -> LoadedModel:
    """Load `model_name` (None = the embedded default) onto `device`, with the trained result in `adapter` applied if given.

    attn_implementation: None = the one the adapter's training run recorded ("auto" without an adapter or a record).
    device: --device; "auto" with several CUDA GPUs spreads the model over all of them (device_map="auto").

    Any method's result: the method registry knows how each is reloaded (PEFT adapters, bottleneck
    adapters, trained-parameter files, whole models) and how its base must be loaded (4/8-bit).
    """
    spread = spreads(device, resolve_device(device))
    if not adapter:
        return load_model(model_name, dtype, attn_implementation or "auto", device=device, spread=spread)
    from peftlab.methods import load_trained, saved_method

    folder = adapter_folder(adapter)
    check_base(folder, model_name)
    attention = attn_implementation or recorded_attn_implementation(folder)
    loaded = load_model(model_name, dtype, attention, saved_method(folder).quantization, device, spread)
    try:
        loaded.model = load_trained(loaded.model, folder)  # peft puts the adapter's weights beside the base layers they adapt
    except (RuntimeError, ValueError, KeyError) as error:
        raise misfit_error(folder, loaded.spec, error) from None
    return loaded


def source_ids(tokenizer: Any, prompt: str, chat: bool, is_seq2seq: bool) -> list[int]:
    """The prompt as training fed it: the encoder input for seq2seq, the chat-wrapped prompt for causal LMs."""
    from peftlab.data.tokenize import prompt_ids

    return tokenizer(prompt)["input_ids"] if is_seq2seq else prompt_ids(tokenizer, prompt, chat)


def encode_prompts(loaded: LoadedModel, texts: list[str], chat_template: str) -> tuple[list[list[int]], bool]:
    """Filled templates -> token ids as training fed them; also whether the chat template wrapped them."""
    from peftlab.data.tokenize import uses_chat_template

    chat = uses_chat_template(loaded.tokenizer, chat_template, loaded.is_seq2seq)
    return [source_ids(loaded.tokenizer, text, chat, loaded.is_seq2seq) for text in texts], chat
