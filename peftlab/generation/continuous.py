"""Continuous batching on the model's own KV cache: a prompt is prefilled in chunks, then its row joins a running batch
and leaves it the step it ends. Used by `peftlab serve` (scheduler.py) and, offline, by eval, generate and compare.

A running batch is one left-padded cache ([rows, heads, length, head_dim] per layer), its
attention mask and each row's next position: exactly what `generate` holds for a left-padded
batch, so every row decodes as it would alone. A row joining pads the shorter side on the left;
rows leaving are cut out, and padding columns no row needs any more are dropped.

Sliding-window layers (Mistral, Qwen2 with use_sliding_window, Phi-3, Gemma 2 and 3, which mix
sliding and full layers) keep every key here, as full layers do, so all layers have one length
under one 2-D mask: the model still builds each layer type's own 4-D mask from the config's
window (transformers 5.24 masking_utils: the window is a distance between cache columns, and a
row's tokens are contiguous up to the newest column, so column distance is position distance).
transformers' own DynamicSlidingWindowLayer keeps only the window, a different length per layer
type; that saves memory but cannot be stitched to other rows under one mask. Caches with
recurrent state (linear-attention and state-space layers) cannot be left-padded at all: such
models generate in static batches through `generate` (`batches_continuously`).
"""

from __future__ import annotations

import functools
import logging
from dataclasses import dataclass, field
from typing import Any

from peftlab.generation.sampler import choose
from peftlab.generation.soft_prompts import PREFIXED, cache_keyword, virtual_token_type

log = logging.getLogger(__name__)
_static_layouts_said: set[str] = set()  # model types whose fallback to static batches was logged (once each)


def forward(model: Any, cache: Any, mask: Any, positions: Any, adapter_names: list[str] | None = None,
            input_ids: Any = None, inputs_embeds: Any = None) -> Any:
    """Next-token logits (rows x vocab) for the last input of each row; the cache grows in place."""
    extra = {"adapter_names": adapter_names} if adapter_names is not None else {}
    out = model(input_ids=input_ids, inputs_embeds=inputs_embeds, attention_mask=mask, position_ids=positions,
                use_cache=True, logits_to_keep=1, **{cache_keyword(model): cache}, **extra)
    return out.logits[:, -1].float()


def _config_cache(model: Any) -> Any:
    """The cache transformers builds for the model's layer types (full, sliding, linear attention...)."""
    from transformers import DynamicCache

    base = model.get_base_model() if hasattr(model, "get_base_model") else model
    return DynamicCache(config=base.config)


def _stitchable(layer: Any) -> bool:
    from transformers.cache_utils import DynamicLayer, DynamicSlidingWindowLayer

    return type(layer) in (DynamicLayer, DynamicSlidingWindowLayer)


def batches_continuously(model: Any) -> bool:
    """Whether every cache layer of the model holds keys and values only (full or sliding attention), so rows can be
    stitched; else (recurrent state) it generates in static batches, and one line says so per model type."""
    cache = _config_cache(model)
    if all(_stitchable(layer) for layer in cache.layers):
        return True
    kinds = sorted({type(layer).__name__ for layer in cache.layers if not _stitchable(layer)})
    model_type = str(getattr(getattr(model, "config", None), "model_type", type(model).__name__))
    if model_type not in _static_layouts_said:
        _static_layouts_said.add(model_type)
        log.info("%s has cache layers with recurrent state (%s): generating in static batches through transformers' "
                 "generate instead of continuous batching", model_type, ", ".join(kinds))
    return False


def empty_cache(model: Any) -> Any:
    """A cache whose every layer keeps all its keys, sliding-window layers too (see the module docstring)."""
    from transformers.cache_utils import DynamicLayer

    cache = _config_cache(model)
    cache.layers = [DynamicLayer() for _ in cache.layers]
    return cache


def full_length(cache: Any) -> Any:
    """The cache with each sliding-window layer as a full layer of the same length; the keys the window already
    dropped become zeros, which the model's sliding mask never attends to (they are out of the window)."""
    from transformers.cache_utils import DynamicLayer, DynamicSlidingWindowLayer

    for index, layer in enumerate(cache.layers):
        if isinstance(layer, DynamicSlidingWindowLayer) and layer.is_initialized:
            lost = layer.cumulative_length - layer.keys.shape[-2]
            full = DynamicLayer()
            full.update(_zeros_in_front(layer.keys, lost), _zeros_in_front(layer.values, lost))
            cache.layers[index] = full
    return cache


def _zeros_in_front(states: Any, width: int) -> Any:
    import torch.nn.functional as F

    return F.pad(states, [0, 0, width, 0])


class Prefill:
    """One prompt (a job: anything with prompt_ids and sampling) going into its own cache, a chunk at a time; its last chunk gives the first new token's logits.

    Soft-prompt adapters are prefilled as their forward pass sees them: prompt tuning and
    P-tuning put the virtual token embeddings in front of the prompt's, prefix tuning starts from
    a cache holding the prefix (the prompt's positions then start after it, as in peft's forward).
    """

    def __init__(self, job: Any, model: Any, row_name: str | None, virtual_tokens: str | None, empty_cache: Any):
        import torch

        self.job = job
        self.model, self.row_name = model, row_name
        ids = torch.tensor([job.prompt_ids], device=model.device)  # inputs follow the model (--device)
        self.cache, self.cached, self.position = empty_cache, 0, 0
        self.inputs, self.embedded = ids, False
        if virtual_tokens in PREFIXED:
            self.cache = full_length(model.get_prompt(batch_size=1))  # peft builds Gemma's prefix with windows
            self.cached = self.position = self.cache.get_seq_length()
            self.model = model.get_base_model()
        elif virtual_tokens:
            with torch.inference_mode():
                embeds = model.word_embeddings(ids)
                virtual = model.get_prompt(batch_size=1)[:, :model.active_peft_config.num_virtual_tokens].to(embeds.dtype)
                self.inputs, self.embedded = torch.cat((virtual, embeds), dim=1), True
            self.model = model.get_base_model()
        self.done = 0  # inputs prefilled so far
        self.logits: Any = None

    @property
    def remaining(self) -> int:
        return self.inputs.shape[1] - self.done

    def run_chunk(self, tokens: int) -> None:
        import torch

        piece = self.inputs[:, self.done:self.done + tokens]
        width = piece.shape[1]
        positions = torch.arange(self.position, self.position + width, device=piece.device)[None]
        mask = torch.ones(1, self.cached + width, dtype=torch.long, device=piece.device)
        names = [self.row_name] if self.row_name is not None else None
        inputs = {"inputs_embeds": piece} if self.embedded else {"input_ids": piece}
        self.logits = forward(self.model, self.cache, mask, positions, names, **inputs)
        self.done, self.cached, self.position = self.done + width, self.cached + width, self.position + width


@functools.cache  # one class for the process: a class made per call would defeat isinstance checks and caches
def spare_layer_type() -> type:
    from transformers.cache_utils import DynamicLayer

    class SpareLayer(DynamicLayer):
        """A cache layer with spare room on the sequence axis: a step writes its keys and values in place.

        transformers' DynamicLayer concatenates the whole cache at every step (40% of a 32-row step
        on the default model); here the cache is copied only when its room runs out, which grows
        by a quarter each time.
        """

        def __init__(self, key_parts: list[Any], value_parts: list[Any]):
            """Rows of several caches stacked, each left-padded with zeros to the longest."""
            super().__init__()
            width = max(part.shape[-2] for part in key_parts)
            self.key_room = self._stack(key_parts, width)
            self.value_room = self._stack(value_parts, width)
            self.length, self.dtype, self.device, self.is_initialized = width, key_parts[0].dtype, key_parts[0].device, True
            self.keys, self.values = self.key_room[..., :width, :], self.value_room[..., :width, :]

        @staticmethod
        def _stack(parts: list[Any], width: int) -> Any:
            rows, heads, _, dim = parts[0].shape
            room = parts[0].new_zeros(sum(part.shape[0] for part in parts), heads, width + max(64, width // 4), dim)
            row = 0
            for part in parts:
                room[row:row + part.shape[0], :, width - part.shape[-2]:width] = part
                row += part.shape[0]
            return room

        def update(self, key_states: Any, value_states: Any, *args: Any, **kwargs: Any) -> tuple[Any, Any]:
            new = key_states.shape[-2]
            if self.length + new > self.key_room.shape[-2]:
                self.key_room = self._stack([self.keys], self.length)
                self.value_room = self._stack([self.values], self.length)
            self.key_room[..., self.length:self.length + new, :] = key_states
            self.value_room[..., self.length:self.length + new, :] = value_states
            self.length += new
            self.keys, self.values = self.key_room[..., :self.length, :], self.value_room[..., :self.length, :]
            return self.keys, self.values

    return SpareLayer


@dataclass
class Row:
    job: Any
    token: int  # the newest token: fed at the next step
    position: int  # its position id


class RunningBatch:
    """The rows of one family decoding together, one token per row per step."""

    def __init__(self, model: Any, mixed: bool = False):
        self.model, self.mixed = model, mixed  # mixed: rows pick their LoRA adapter through peft's adapter_names
        self.rows: list[Row] = []
        self.row_names: list[str | None] = []
        self.cache: Any = None
        self.mask: Any = None

    def __len__(self) -> int:
        return len(self.rows)

    def admit(self, prefill: Prefill, token: int, row_name: str | None) -> None:
        """Add a prefilled row whose first new token is `token`."""
        import torch

        row_mask = torch.ones(1, prefill.cached, dtype=torch.long, device=prefill.inputs.device)
        if self.cache is None:
            self.cache, self.mask = prefill.cache, row_mask
            self._replace_layers([([layer.keys], [layer.values]) for layer in self.cache.layers])
        else:
            width = max(self.mask.shape[1], prefill.cached)
            self._replace_layers([([mine.keys, theirs.keys], [mine.values, theirs.values])
                                  for mine, theirs in zip(self.cache.layers, prefill.cache.layers)])
            self.mask = torch.cat((_pad_left(self.mask, width), _pad_left(row_mask, width)))
        self.rows.append(Row(prefill.job, token, prefill.position))
        self.row_names.append(row_name)

    def step(self) -> Any:
        """One decoding step for every row: the logits of each row's next token."""
        import torch

        device = self.mask.device
        tokens = torch.tensor([[row.token] for row in self.rows], device=device)
        positions = torch.tensor([[row.position] for row in self.rows], device=device)
        self.mask = torch.cat((self.mask, torch.ones(len(self.rows), 1, dtype=torch.long, device=device)), dim=1)
        names = self.row_names if self.mixed else None
        logits = forward(self.model, self.cache, self.mask, positions, names, input_ids=tokens)
        for row in self.rows:
            row.position += 1
        return logits

    def keep(self, keep: list[int]) -> None:
        """Keep only the rows at these indices; drop padding columns none of them needs."""
        import torch

        if len(keep) == len(self.rows):
            return
        self.rows = [self.rows[i] for i in keep]
        self.row_names = [self.row_names[i] for i in keep]
        if not keep:
            self.cache = self.mask = None
            return
        index = torch.tensor(keep, device=self.mask.device)
        self.mask = self.mask[index]
        first = int(self.mask.any(dim=0).long().argmax())  # the first column some row attends to
        self._replace_layers([([layer.keys[index, :, first:]], [layer.values[index, :, first:]]) for layer in self.cache.layers])
        self.mask = self.mask[:, first:]

    def _replace_layers(self, parts: list[tuple[list[Any], list[Any]]]) -> None:
        spare_layer = spare_layer_type()
        self.cache.layers = [spare_layer(keys, values) for keys, values in parts]


def _pad_left(mask: Any, width: int) -> Any:
    """Zeros in front of an attention mask up to `width` columns."""
    import torch.nn.functional as F

    return F.pad(mask, [width - mask.shape[1], 0])


@dataclass
class Sequence:
    """One prompt of an offline run: greedy, ends at eos or after max_new_tokens."""

    prompt_ids: list[int]
    max_new_tokens: int
    eos_ids: set[int]
    sampling: tuple[float, float] = (0.0, 1.0)
    tokens: list[int] = field(default_factory=list)

    def on_token(self, token: int) -> bool:
        self.tokens.append(token)
        return token in self.eos_ids or len(self.tokens) >= self.max_new_tokens


def generate_continuously(model: Any, prompts: list[list[int]], max_new_tokens: int, eos_ids: set[int], batch_size: int,
                          progress: Any = lambda done: None) -> list[list[int]]:
    """Greedy new tokens for each prompt of a decoder-only model (base, or base + one adapter of any method), in order.

    Up to `batch_size` rows decode together and a finished row's place goes to the next prompt
    at once, so no row waits for the longest answer of its batch (static batches do).
    """
    import torch

    virtual = virtual_token_type(model)
    batch = RunningBatch(model.get_base_model() if virtual else model)
    sequences = [Sequence(ids, max_new_tokens, eos_ids) for ids in prompts]
    waiting = sorted(range(len(prompts)), key=lambda i: -len(prompts[i]))  # longest first: memory peaks early
    done = 0

    def finished() -> None:
        nonlocal done
        done += 1
        if done % batch_size == 0 or done == len(prompts):
            progress(done)

    with torch.inference_mode():
        while waiting or batch.rows:
            while waiting and len(batch) < batch_size:
                sequence = sequences[waiting.pop(0)]
                prefill = Prefill(sequence, model, None, virtual, empty_cache(model))
                prefill.run_chunk(prefill.remaining)
                token = choose(prefill.logits, [sequence])[0]
                if sequence.on_token(token):
                    finished()
                else:
                    batch.admit(prefill, token, None)
            if not batch.rows:
                continue
            tokens = choose(batch.step(), [row.job for row in batch.rows])
            keep = []
            for i, (row, token) in enumerate(zip(batch.rows, tokens)):
                if row.job.on_token(token):
                    finished()
                else:
                    row.token = token
                    keep.append(i)
            batch.keep(keep)
    return [sequence.tokens for sequence in sequences]
