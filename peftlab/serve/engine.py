"""One base model in memory serving several adapters: LoRA rows mixed in one forward, other methods per adapter."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from peftlab.artifacts import adapter_folder, check_base, misfit_error
from peftlab.data.chat import chat_prompt_ids, has_chat_template
from peftlab.errors import PeftlabError
from peftlab.generation import eos_ids, source_ids
from peftlab.models.loading import LoadedModel
from peftlab.generation.context import context_tokens
from peftlab.generation.soft_prompts import virtual_token_type
from peftlab.serve.adapters import BASE_ROW, Prepared, check_adapter_name, shared_weights_copy, transplant_lora

MIXED = "lora"  # the family holding every LoRA adapter that can share a forward pass
PLAIN = "base"


@dataclass
class Family:
    """A model object answering some of the names: the plain base, all mixable LoRA adapters, or one other adapter."""

    model: Any
    mixed: bool = False  # rows pick their adapter through peft's adapter_names


@dataclass
class ServedModel:
    name: str
    family: str  # the family whose model prefills this model's prompts
    row_name: str | None = None  # the name this model's rows carry in a mixed batch
    folder: str | None = None
    method: str | None = None
    virtual_tokens: str | None = None  # PROMPT_TUNING / P_TUNING / PREFIX_TUNING: prefilled with its soft prompt, decoded as the base
    virtual_token_count: int = 0  # positions the soft prompt takes in the context, before the prompt's own tokens


class Engine:
    """One base and the adapters on it, grouped into families of rows that can share a forward pass."""

    def __init__(self, loaded: LoadedModel, base_name: str, model_spec: str | None = None):
        loaded.model.eval()
        self.loaded = loaded
        self.model_spec = model_spec  # what --model said (None = the embedded default): adapters are checked against it
        self.families: dict[str, Family] = {PLAIN: Family(loaded.model)}
        self.models: dict[str, ServedModel] = {base_name: ServedModel(base_name, PLAIN)}
        self.base_name = base_name
        self.context_tokens = context_tokens(loaded.model) or 2048  # encoder-decoders: no fixed context, a generous bound
        self.eos_ids = eos_ids(loaded.model, loaded.tokenizer)

    def add_adapter(self, name: str, path: str) -> ServedModel:
        """Build and install an adapter at once (at start-up; while serving the scheduler splits the two)."""
        return self.install(self.prepare_adapter(name, path))

    def check_name(self, name: str) -> None:
        check_adapter_name(name, self.models)

    def prepare_adapter(self, name: str, path: str) -> Prepared:
        """Check an adapter folder and build its PEFT model on a shared-weights copy of the base: slow, and touches nothing served."""
        from peftlab.methods import load_trained, saved_method, shares_mixed_batches

        self.check_name(name)
        folder = adapter_folder(path)
        check_base(folder, self.model_spec)
        method = saved_method(folder)
        if not method.servable:
            raise PeftlabError(f"adapter {name}: method {method.name} cannot be served by `peftlab serve`; "
                               f"evaluate it with `peftlab eval --adapter {folder}` or merge it instead")
        tree = shared_weights_copy(self.loaded.model)
        mixable = shares_mixed_batches(folder)
        try:
            # checked as every load is: exactly the tensors its config implies, in shape, all finite
            model = load_trained(tree, folder, adapter_name=name if mixable else None)
        except (RuntimeError, ValueError, KeyError) as error:
            raise misfit_error(folder, self.loaded.spec, error) from None
        return Prepared(name, folder, method, model.eval(), mixable)

    def install(self, prepared: Prepared) -> ServedModel:
        """Serve a prepared adapter: milliseconds, so the decoding loop does it between two steps."""
        name, method = prepared.name, prepared.method
        self.check_name(name)
        if prepared.mixable:
            if MIXED in self.families:  # one more LoRA adapter on the shared PEFT model
                transplant_lora(self.families[MIXED].model, prepared.model, name)
            else:
                self.families[MIXED] = Family(prepared.model, mixed=True)
            served = ServedModel(name, MIXED, name, str(prepared.folder), method.name)
            self.models[self.base_name] = ServedModel(self.base_name, MIXED, BASE_ROW)  # base rows join the LoRA rows' forward
        else:
            key = f"adapter:{name}"
            self.families[key] = Family(prepared.model)
            kind = virtual_token_type(prepared.model)
            count = int(getattr(prepared.model.active_peft_config, "num_virtual_tokens", 0) or 0) if kind else 0
            served = ServedModel(name, key, None, str(prepared.folder), method.name, kind, count)
        self.models[name] = served
        return served

    def remove_adapter(self, name: str) -> None:
        """Stop serving an adapter and free its weights (between steps, when none of its rows runs)."""
        served = self.models.pop(name)
        if served.family != MIXED:
            del self.families[served.family]
        elif any(other.family == MIXED and other.row_name != BASE_ROW for other in self.models.values()):
            self.families[MIXED].model.delete_adapter(name)
        else:  # the last LoRA adapter: the base decodes alone again
            del self.families[MIXED]
            self.models[self.base_name] = ServedModel(self.base_name, PLAIN)

    def decoding_family(self, served: ServedModel) -> tuple[str, str | None]:
        """The family whose forward decodes this model's rows, and their row name: soft prompts decode as the base does."""
        if served.virtual_tokens:
            base = self.models[self.base_name]
            return base.family, base.row_name
        return served.family, served.row_name

    def prompt_ids(self, text: str, chat_messages: list[dict[str, str]] | None = None) -> list[int]:
        """Token ids of a completion prompt, or of chat messages through the tokenizer's chat template (PeftlabError when
        the template refuses them).

        Without a chat template the message contents are joined by blank lines and fed like a
        plain prompt; either way one user message gives exactly the prompt `peftlab train` used.
        """
        from jinja2 import TemplateError

        tokenizer = self.loaded.tokenizer
        if chat_messages is not None and has_chat_template(tokenizer) and not self.loaded.is_seq2seq:
            try:
                return chat_prompt_ids(tokenizer, chat_messages)  # the renderer training and eval use
            except TemplateError as refused:  # the template's raise_exception(): roles out of order, no system message, ...
                raise PeftlabError(f"the model's chat template refuses these messages: {refused}") from None
        if chat_messages is not None:
            text = "\n\n".join(message["content"] for message in chat_messages)
        return source_ids(tokenizer, text, False, self.loaded.is_seq2seq)
