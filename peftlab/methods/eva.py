"""EVA (Explained Variance Adaptation): LoRA whose A starts from the principal directions of each layer's inputs on
the training data, with ranks redistributed to the layers whose inputs need them, via peft."""

from __future__ import annotations

import time
from dataclasses import dataclass
from typing import Any

from peftlab.errors import PeftlabError
from peftlab.methods.base import BuildContext, Method, get_peft_model_checked, register
from peftlab.methods.lora import LORA_CAPABILITIES, LoraSettings, initialisation_batches, lora_config


@dataclass
class EvaSettings(LoraSettings):
    """Paischer et al. 2024; peft's EvaConfig defaults (rho 2, tau 0.99, answer tokens only)."""

    rho: float = 2.0  # a layer may get up to rho * r ranks (1: no redistribution)
    tau: float = 0.99  # the SVD of a layer stops when its components move less than this (cosine similarity)
    init_rows: int = 64  # training rows fed through the model for the SVD (cycled until it converges)
    max_passes: int = 4  # passes over init_rows at most; then the components reached are kept (see BoundedPasses)

    def check(self) -> None:
        super().check()
        if self.rho < 1:
            raise PeftlabError(f"eva.rho must be at least 1, got {self.rho}")
        if not 0 < self.tau <= 1:
            raise PeftlabError(f"eva.tau must be in (0, 1], got {self.tau}")
        if self.init_rows < 1:
            raise PeftlabError(f"eva.init_rows must be at least 1, got {self.init_rows}")
        if self.max_passes < 1:
            raise PeftlabError(f"eva.max_passes must be at least 1, got {self.max_passes}")


class BoundedPasses:
    """peft's forward step for EVA's SVD pass, which ends the pass after `limit` forward calls.

    peft 0.21.2 cycles the batches until every layer's components move less than tau (cosine similarity) between two
    batches. Its SVD is randomized (low-rank), and with few answer tokens per batch the weakest components keep moving:
    on SmolLM2-135M with 64 DialogSum rows in batches of 4 and r 32, the pass ran over 15 minutes without ending.
    peft has no bound of its own, so after the limit the layers still moving are marked converged: their components
    are the incremental SVD of every batch seen so far, the estimate a longer pass would keep refining.
    """

    def __init__(self, limit: int):
        self.limit, self.calls, self.stopped_layers = limit, 0, 0

    def __call__(self, model: Any, inputs: dict) -> Any:
        from peft.tuners.lora.eva import SVDHook, forward_fn_dict

        output = forward_fn_dict(model, inputs)
        self.calls += 1
        if self.calls >= self.limit:  # the hooks still attached are the layers that have not converged
            for module in model.modules():
                for hook in module._forward_hooks.values():
                    if isinstance(hook, SVDHook) and hasattr(hook.svd, "components_") and not bool(hook.converged.all()):
                        hook.converged[:] = True
                        self.stopped_layers += 1
        return output


def answer_positions(batch: dict, config: Any) -> dict:
    """What peft's EVA hooks read to pick each layer's tokens: the masks of the source and (seq2seq) target side."""
    source = batch["attention_mask"].bool() if "attention_mask" in batch else batch["input_ids"] != -1
    labels = batch.get("labels")
    if labels is None or labels.shape != source.shape:  # seq2seq: the decoder's tokens are the labels'
        return {"source": source, "target": labels != -100 if labels is not None else None}
    return {"source": source & (labels != -100), "target": None}  # causal: the answer tokens, as peft does by default


def layer_tokens(layer_input: Any, positions: dict, layer_name: str) -> Any:
    """A layer's input rows at the chosen positions: the side (encoder or decoder) is the one whose length matches.

    peft's default reads the attention mask and the labels together, which only fits a decoder-only model.
    """
    states = layer_input[0] if isinstance(layer_input, (tuple, list)) else layer_input
    target = positions["target"]
    decoder_side = target is not None and states.shape[1] == target.shape[1] and (
        states.shape[1] != positions["source"].shape[1] or ".decoder." in f".{layer_name}")
    mask = target if decoder_side else positions["source"]
    return states[mask]


def build_eva(model: Any, settings: EvaSettings, context: BuildContext) -> Any:
    from peft import EvaConfig
    from peft.tuners.lora.eva import initialize_lora_eva_weights

    batches = initialisation_batches(model, context, "eva", settings.init_rows)
    components = round(settings.r * settings.rho)
    if all(int((b["labels"] != -100).sum()) < components for b in batches if "labels" in b):
        # peft skips a batch with fewer tokens than components, and would cycle over such batches forever
        raise PeftlabError(f"eva needs at least r * rho = {components} answer tokens in a batch for its SVD; "
                           "raise train.batch_size, or lower eva.r or eva.rho")
    eva = EvaConfig(rho=settings.rho, tau=settings.tau)
    peft_model = get_peft_model_checked(model, lora_config(model, settings, context, "eva", init_lora_weights="eva", eva_config=eva), "eva")
    start = time.perf_counter()
    bounded = BoundedPasses(settings.max_passes * len(batches))
    try:
        initialize_lora_eva_weights(peft_model, dataloader=batches, forward_fn=bounded, prepare_model_inputs_fn=answer_positions,
                                    prepare_layer_inputs_fn=layer_tokens, show_progress_bar=False)
    except ValueError as error:  # e.g. peft's IncrementalPCA: more components (r * rho) than a layer's input width
        raise PeftlabError(f"eva cannot initialise on this model: {str(error).splitlines()[0]}; lower eva.r or eva.rho") from None
    stopped = (f"; {bounded.stopped_layers} layer(s) had not converged after {settings.max_passes} passes and keep the "
               "components reached (raise eva.max_passes to refine them)") if bounded.stopped_layers else ""
    context.say(f"eva: initialised in {time.perf_counter() - start:.1f} s ({bounded.calls} batches){stopped}")
    return peft_model


register(Method("eva", "LoRA whose A starts from the principal directions of each layer's inputs on the training data, "
                "ranks redistributed by explained variance (Paischer et al. 2024)", EvaSettings, build_eva,
                mixable=True, **LORA_CAPABILITIES))
