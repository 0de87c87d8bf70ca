"""One base model in memory serving several adapters: LoRA rows mixed in one forward, other methods per adapter."""

from __future__ import annotations

import copy
from collections import defaultdict
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from peftlab.artifacts import adapter_folder, check_base, misfit_error
from peftlab.errors import PeftlabError
from peftlab.inference import GenerationSettings, generate_new_tokens, generation_config, pad_batch, source_ids
from peftlab.models.loading import LoadedModel
from peftlab.serve.jobs import Job, StepHook

BASE_ROW = "__base__"  # peft's adapter name for "no adapter" in a mixed batch
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
    family: str
    row_name: str | None = None  # the name this model's rows carry in a mixed batch
    folder: str | None = None
    method: str | None = None


def shared_weights_copy(model: Any) -> Any:
    """A copy of the module tree whose parameters and buffers are the same tensors: no second set of weights.

    peft injects its layers into the module tree it is given, so each family gets its own tree;
    the base weights stay in memory once.
    """
    memo = {id(tensor): tensor for tensor in [*model.parameters(), *model.buffers()]}
    return copy.deepcopy(model, memo)


class Engine:
    """Loads adapters onto one base and generates for batches of jobs, each naming a model."""

    def __init__(self, loaded: LoadedModel, base_name: str, model_spec: str | None = None):
        loaded.model.eval()
        self.loaded = loaded
        self.model_spec = model_spec  # what --model said (None = the embedded default): adapters are checked against it
        self.families: dict[str, Family] = {PLAIN: Family(loaded.model)}
        self.models: dict[str, ServedModel] = {base_name: ServedModel(base_name, PLAIN)}
        self.base_name = base_name
        config = loaded.model.config
        self.context_tokens = int(getattr(config, "max_position_embeddings", 0) or getattr(config, "n_positions", 0) or 2048)
        eos = loaded.model.generation_config.eos_token_id
        self.eos_ids = {*(eos if isinstance(eos, list) else [eos] if eos is not None else []), loaded.tokenizer.eos_token_id} - {None}

    def add_adapter(self, name: str, path: str) -> ServedModel:
        from peftlab.methods import saved_method

        if not name or name in self.models or name == BASE_ROW:
            raise PeftlabError(f"adapter name '{name}' is empty or already taken; give each --adapter NAME=DIR a unique name")
        folder = adapter_folder(path)
        check_base(folder, self.model_spec)
        method = saved_method(folder)
        if not method.servable:
            raise PeftlabError(f"adapter {name}: method {method.name} cannot be served by `peftlab serve`; "
                               f"evaluate it with `peftlab eval --adapter {folder}` or merge it instead")
        if method.mixable:
            self._add_mixed(name, folder)
            served = ServedModel(name, MIXED, name, str(folder), method.name)
        else:
            key = f"adapter:{name}"
            try:
                self.families[key] = Family(method.load(shared_weights_copy(self.loaded.model), folder).eval())
            except (RuntimeError, ValueError, KeyError) as error:
                raise misfit_error(folder, self.loaded.spec, error) from None
            served = ServedModel(name, key, None, str(folder), method.name)
        self.models[name] = served
        if MIXED in self.families:  # base rows join the LoRA rows' forward pass
            self.models[self.base_name] = ServedModel(self.base_name, MIXED, BASE_ROW)
        return served

    def _add_mixed(self, name: str, folder: Path) -> None:
        from peft import PeftModel

        try:
            if MIXED in self.families:  # one more LoRA adapter on the shared PEFT model
                self.families[MIXED].model.load_adapter(str(folder), adapter_name=name, is_trainable=False)
                return
            model = PeftModel.from_pretrained(shared_weights_copy(self.loaded.model), str(folder), adapter_name=name, is_trainable=False)
        except (RuntimeError, ValueError, KeyError) as error:
            raise misfit_error(folder, self.loaded.spec, error) from None
        self.families[MIXED] = Family(model.eval(), mixed=True)

    def prompt_ids(self, text: str, chat_messages: list[dict[str, str]] | None = None) -> list[int]:
        """Token ids of a completion prompt, or of chat messages through the tokenizer's chat template.

        Without a chat template the message contents are joined by blank lines and fed like a
        plain prompt; either way one user message gives exactly the prompt `peftlab train` used.
        """
        tokenizer = self.loaded.tokenizer
        if chat_messages is not None and getattr(tokenizer, "chat_template", None) and not self.loaded.is_seq2seq:
            rendered = tokenizer.apply_chat_template(chat_messages, tokenize=False, add_generation_prompt=True)
            return tokenizer(rendered, add_special_tokens=False)["input_ids"]
        if chat_messages is not None:
            text = "\n\n".join(message["content"] for message in chat_messages)
        return source_ids(tokenizer, text, False, self.loaded.is_seq2seq)

    def run(self, jobs: list[Job]) -> None:
        """Generate for every job: one generate call per (family, sampling settings) group."""
        groups: dict[tuple, list[Job]] = defaultdict(list)
        for job in jobs:
            if job.cancelled:
                job.finish("cancelled")
                continue
            groups[(self.models[job.model].family, job.sampling)].append(job)
        for (family, sampling), group in groups.items():
            try:
                self._generate(self.families[family], group, sampling)
            except Exception as error:  # a failed batch answers its own requests with 500s; the server goes on
                for job in group:
                    job.fail(f"generation failed: {type(error).__name__}: {str(error)[:200]}")

    def _generate(self, family: Family, jobs: list[Job], sampling: tuple[float, float]) -> None:
        import torch
        from transformers import StoppingCriteriaList

        tokenizer, is_seq2seq = self.loaded.tokenizer, self.loaded.is_seq2seq
        settings = GenerationSettings(max_new_tokens=max(job.max_tokens for job in jobs), num_beams=1, batch_size=len(jobs))
        config = generation_config(family.model, tokenizer, settings)
        temperature, top_p = sampling
        if temperature > 0:
            config.update(do_sample=True, temperature=temperature, top_p=top_p)
        ids, mask = pad_batch([job.prompt_ids for job in jobs], tokenizer.pad_token_id, left=not is_seq2seq)
        extra = {"adapter_names": [self.models[job.model].row_name for job in jobs]} if family.mixed else {}
        hook = StepHook(jobs, self.eos_ids)
        device = family.model.device
        with torch.inference_mode():  # the checked path: prompt-learning adapters need its cache handling
            generate_new_tokens(family.model, ids.to(device), mask.to(device), config, is_seq2seq,
                                stopping_criteria=StoppingCriteriaList([hook]), **extra)
        for job in jobs:
            job.finish("length")  # rows the step hook did not end ran into max_new_tokens
