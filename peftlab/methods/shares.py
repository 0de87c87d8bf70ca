"""The trainable share of every method on one model, for `peftlab methods --model`."""

from __future__ import annotations

import copy
from dataclasses import dataclass
from typing import Any

from peftlab.errors import PeftlabError
from peftlab.methods.base import BuildContext, get_method, method_names
from peftlab.methods.targets import describe_family, model_family
from peftlab.models.parameters import count_parameters

NOMINAL_STEPS = 100  # AdaLoRA's schedule needs a step count; its starting size does not depend on it
SAMPLE_ROWS, SAMPLE_TOKENS = 4, 128  # enough tokens for EVA's SVD at its default rank (r * rho = 64)


@dataclass
class Share:
    method: str
    trainable: int = 0
    total: int = 0
    problem: str | None = None  # why the method cannot apply to this model with its defaults

    @property
    def percent(self) -> float:
        return 100 * self.trainable / self.total if self.total else 0.0


def sample_batch(model: Any) -> dict:
    """Random tokens standing in for training data, for the methods initialised from data (their size may depend on it)."""
    import torch

    generator = torch.Generator().manual_seed(0)
    ids = torch.randint(0, model.get_input_embeddings().num_embeddings, (SAMPLE_ROWS, SAMPLE_TOKENS), generator=generator)
    return {"input_ids": ids, "attention_mask": torch.ones_like(ids), "labels": ids.clone()}


def projection_roles(model: object) -> str:
    """How the targets table reads this model: its family and the module of each role."""
    family = model_family(model)
    if family is None:
        return "no known family: roles (qv, ia3's default, adapters) cannot be found; name modules in *.target"
    return f"family {family.name} ({family.models}); {describe_family(family)}"


def trainable_shares(model_name: str | None, dtype: str = "fp32") -> tuple[str, list[Share]]:
    """Build every method with its default settings on (a copy of) the model and count parameters; also how the
    targets table reads the model (`projection_roles`)."""
    from peftlab.models import load_model

    bases = {}  # a model-loading error is the user's to fix once, so it is not caught here
    shares: list[Share] = []
    roles = ""
    for name in method_names():
        method = get_method(name)
        if method.quantization not in bases:
            bases[method.quantization] = load_model(model_name, dtype, quantization=method.quantization)
        loaded = bases[method.quantization]
        roles = roles or projection_roles(loaded.model)  # from the first base loaded (not yet adapted)
        # a quantized base is used once (its layers are prepared in place); the others are copied
        base = bases.pop(method.quantization).model if method.quantization else copy.deepcopy(loaded.model)
        context = BuildContext(loaded.is_seq2seq, NOMINAL_STEPS, training_batches=lambda rows: iter([sample_batch(base)]),
                               tokenizer=loaded.tokenizer)
        try:
            model = method.build(base, method.parse_settings({}), context)
            shares.append(Share(name, *count_parameters(model)))
        except PeftlabError as error:
            shares.append(Share(name, problem=str(error)))
    return roles, shares
