"""Inference for every command that generates (eval, generate, compare, serve): load base (+ adapter),
prompt -> token ids, generation settings, padding, and batched generation (sorted by length, restored in order),
guarded by a self-check of the generation cache, with decoding by full forward passes as reference and fallback."""

from __future__ import annotations

import copy
import logging
import weakref
from dataclasses import dataclass
from typing import Any, Callable

from peftlab.artifacts import adapter_folder, check_base, misfit_error
from peftlab.errors import PeftlabError
from peftlab.methods.virtual_tokens import generate_with_virtual_tokens, new_tokens, virtual_token_type
from peftlab.models.loading import LoadedModel, load_model

log = logging.getLogger(__name__)


@dataclass
class GenerationSettings:
    max_new_tokens: int = 128
    num_beams: int = 1  # 1 = greedy
    batch_size: int = 16
    continuous: bool = True  # greedy causal LMs: a finished row's place goes to the next prompt at once (decoding.py)

    def check(self) -> None:
        for name in ("max_new_tokens", "num_beams", "batch_size"):
            if getattr(self, name) < 1:
                raise PeftlabError(f"--{name.replace('_', '-')} must be at least 1, got {getattr(self, name)}")


def load_for_generation(model_name: str | None, dtype: str = "auto", adapter: str | None = None,
                        attn_implementation: str = "sdpa") -> LoadedModel:
    """Load `model_name` (None = the embedded default), with the trained result in `adapter` applied if given.

    Any method's result: the method registry knows how each is reloaded (PEFT adapters, bottleneck
    adapters, trained-parameter files, whole models) and how its base must be loaded (4/8-bit).
    """
    if not adapter:
        return load_model(model_name, dtype, attn_implementation)
    from peftlab.methods import load_trained, saved_method

    folder = adapter_folder(adapter)
    check_base(folder, model_name)
    loaded = load_model(model_name, dtype, attn_implementation, saved_method(folder).quantization)
    try:
        loaded.model = load_trained(loaded.model, folder)
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


def generation_config(model: Any, tokenizer: Any, settings: GenerationSettings) -> Any:
    config = copy.deepcopy(model.generation_config)
    # greedy or beam search, deterministic: drop any sampling defaults the checkpoint ships with
    config.update(
        do_sample=False, temperature=None, top_p=None, top_k=None, use_cache=True,
        max_new_tokens=settings.max_new_tokens, max_length=None, num_beams=settings.num_beams,
        pad_token_id=tokenizer.pad_token_id,
    )
    if config.eos_token_id is None:
        config.eos_token_id = tokenizer.eos_token_id
    return config


def eos_ids(model: Any, tokenizer: Any) -> set[int]:
    """Every token that ends an answer: the generation config's eos (one or several) and the tokenizer's (if given)."""
    eos = model.generation_config.eos_token_id
    return {*(eos if isinstance(eos, list) else [eos] if eos is not None else []), getattr(tokenizer, "eos_token_id", None)} - {None}


def pad_batch(batch: list[list[int]], pad_id: int, left: bool) -> tuple[Any, Any]:
    import torch

    width = max(len(ids) for ids in batch)
    ids = torch.full((len(batch), width), pad_id, dtype=torch.long)
    mask = torch.zeros((len(batch), width), dtype=torch.long)
    for row, tokens in enumerate(batch):
        span = slice(width - len(tokens), width) if left else slice(0, len(tokens))
        ids[row, span] = torch.tensor(tokens, dtype=torch.long)
        mask[row, span] = 1
    return ids, mask


def generate_ids(model: Any, tokenizer: Any, prompts: list[list[int]], is_seq2seq: bool,
                 settings: GenerationSettings, progress: Callable[[int], None] = lambda done: None) -> list[list[int]]:
    """The new token ids (up to eos; pad tokens after it in static batches) generated for token-id prompts, in order.

    Greedy decoding of a causal LM batches continuously (peftlab/decoding.py); beam search and
    seq2seq models use static batches through `generate`. Static batches hold prompts of similar length (sorted, longest first, so memory peaks at once);
    causal LMs are padded on the left so every row's next token follows its own last prompt
    token, T5 on the right with an attention mask.
    """
    import torch

    settings.check()
    if any(not ids for ids in prompts):
        raise PeftlabError("a prompt is empty after tokenization; check the template and the prompt column")
    model.eval()
    if settings.continuous and not is_seq2seq and settings.num_beams == 1 and continuous_checked(model, tokenizer, prompts[0], settings):
        from peftlab.decoding import generate_continuously

        return generate_continuously(model, prompts, settings.max_new_tokens, eos_ids(model, tokenizer), settings.batch_size, progress)
    config = generation_config(model, tokenizer, settings)
    order = sorted(range(len(prompts)), key=lambda i: -len(prompts[i]))
    generated: list[list[int]] = [[] for _ in prompts]
    for start in range(0, len(order), settings.batch_size):
        chosen = order[start:start + settings.batch_size]
        ids, mask = pad_batch([prompts[i] for i in chosen], tokenizer.pad_token_id, left=not is_seq2seq)
        with torch.inference_mode():
            new_tokens = generate_new_tokens(model, ids.to(model.device), mask.to(model.device), config, is_seq2seq)
        for i, tokens in zip(chosen, new_tokens.tolist()):
            generated[i] = tokens
        progress(min(start + settings.batch_size, len(order)))
    return generated


def generate(model: Any, tokenizer: Any, prompts: list[list[int]], is_seq2seq: bool,
             settings: GenerationSettings, progress: Callable[[int], None] = lambda done: None) -> list[str]:
    """Decoded completions of token-id prompts, in the prompts' order (see generate_ids)."""
    return [tokenizer.decode(tokens, skip_special_tokens=True).strip()
            for tokens in generate_ids(model, tokenizer, prompts, is_seq2seq, settings, progress)]


# --- the self-check -------------------------------------------------------------------------------
# Generation guarded by a self-check: once per model and method, a few cached tokens are compared with uncached forward passes.
#
# Cached generation of prompt-learning methods has broken silently with several releases of
# peft and transformers (peft issues 1391 and 2123, transformers issue 36509); a broken cache
# gives fluent-looking garbage and wrong scores, not an error. So the first generation with a
# model and method decodes a short probe both ways; if they differ, that method generates
# without a cache (slower, but what the model learned) and one line says so.


PROBE_TOKENS = 4  # enough to cover the prefill and several cached steps
PROBE_LENGTHS = (12, 7)  # two prompts of different lengths, so the padded batch is checked too
# model object -> {method label: the cache agreed}; weak, so a freed model takes its verdicts along
_verdicts: weakref.WeakKeyDictionary = weakref.WeakKeyDictionary()


def method_label(model: Any) -> str:
    """The active adapter's peft type (LORA, PREFIX_TUNING...), or the model class for a model without an active PEFT adapter."""
    config = getattr(model, "active_peft_config", None)
    if config is None or getattr(model, "_adapters_disabled", False):
        base = model.get_base_model() if hasattr(model, "get_base_model") else model
        return type(base).__name__
    return str(getattr(config.peft_type, "value", config.peft_type))


def cached_generate(model: Any, ids: Any, mask: Any, config: Any, is_seq2seq: bool, **extra: Any) -> Any:
    """New tokens (rows x steps) for padded prompts, with the cache on: the fast path every method should take."""
    if virtual_token_type(model):
        return generate_with_virtual_tokens(model, ids, mask, config, is_seq2seq, **extra)
    out = model.generate(input_ids=ids, attention_mask=mask, generation_config=config, **extra)
    return new_tokens(out, ids, is_seq2seq)


def _probe_config(config: Any) -> Any:
    probe = copy.deepcopy(config)
    # greedy and blind to eos, so that the probe runs exactly PROBE_TOKENS steps
    probe.update(do_sample=False, temperature=None, top_p=None, top_k=None, num_beams=1,
                 max_new_tokens=PROBE_TOKENS, min_new_tokens=None, eos_token_id=None)
    return probe


def _rounding(model: Any) -> float:
    """Relative rounding of the model's arithmetic: fp32's, or bf16's when a weight is stored in fewer bits (bf16, int8, 4-bit)."""
    import torch

    exact = all(parameter.dtype in (torch.float32, torch.float64) for parameter in model.parameters())
    return torch.finfo(torch.float32 if exact else torch.bfloat16).eps


def continuous_generate(model: Any, ids: Any, mask: Any, config: Any, is_seq2seq: bool) -> Any:
    """New tokens (rows x steps) for padded prompts through continuous batching: the probe's view of decoding.py."""
    import torch

    from peftlab.decoding import generate_continuously

    eos = set() if config.eos_token_id is None else eos_ids(model, None)
    prompts = [row[row_mask.bool()].tolist() for row, row_mask in zip(ids, mask)]
    tokens = generate_continuously(model, prompts, config.max_new_tokens, eos, len(prompts))
    return torch.tensor(tokens, device=ids.device)


def cache_agrees(model: Any, prompt: list[int], config: Any, is_seq2seq: bool, generate: Callable = cached_generate) -> bool:
    """Whether every token cached generation picks for prefixes of `prompt` (batched, padded) is the uncached argmax.

    The uncached logits come from one teacher-forced forward pass per probe. A cached step and
    a full pass round differently, so a token counts as the argmax when its logit is within a
    few units in the last place of the top one: in fp32 that is an exact-equality test in all
    but ties; in bf16 or quantized models it keeps rounding from flagging a working cache,
    while a broken cache picks tokens whole logits below the top.
    """
    import torch

    probes = list({tuple(prompt[:length]): None for length in PROBE_LENGTHS})  # distinct, longest first
    ids, mask = pad_batch([list(p) for p in probes], config.pad_token_id, left=not is_seq2seq)
    got = generate(model, ids.to(model.device), mask.to(model.device), _probe_config(config), is_seq2seq)
    for probe, tokens in zip(probes, got[:, -PROBE_TOKENS:].tolist()):
        logits = forward_logits(model, list(probe), tokens[:-1], is_seq2seq)
        picked = logits.gather(1, torch.tensor(tokens, device=logits.device)[:, None])[:, 0]
        slack = 8 * _rounding(model) * logits.abs().max()
        if bool((logits.max(dim=1).values - picked > slack).any()):
            return False
    return True


def _checked(model: Any, label: str, prompt: list[int], config: Any, is_seq2seq: bool, generate: Callable, fallback: str) -> bool:
    """This process's verdict on `generate` for the model's method: checked once, a warning when it fails."""
    verdicts = _verdicts.setdefault(model, {})
    if label not in verdicts:
        verdicts[label] = cache_agrees(model, prompt, config, is_seq2seq, generate)
        if not verdicts[label]:
            log.warning("self-check: %s differs from uncached forward passes; %s for this method", label, fallback)
    return verdicts[label]


def generate_new_tokens(model: Any, ids: Any, mask: Any, config: Any, is_seq2seq: bool, **extra: Any) -> Any:
    """New tokens (rows x steps) for padded prompts: cached unless this process's self-check caught the cache lying."""
    label = f"cached generation of {method_label(model)}"
    if _checked(model, label, ids[0][mask[0].bool()].tolist(), config, is_seq2seq, cached_generate,
                "generating without a cache (slower, but correct)"):
        return cached_generate(model, ids, mask, config, is_seq2seq, **extra)
    return uncached_generate(model, ids, mask, config, is_seq2seq, **extra)


def continuous_checked(model: Any, tokenizer: Any, prompt: list[int], settings: GenerationSettings) -> bool:
    """Whether continuous batching decodes this model's method as its forward pass does (checked once per process)."""
    config = generation_config(model, tokenizer, settings)
    return _checked(model, f"continuous batching of {method_label(model)}", prompt, config, False, continuous_generate,
                    "generating in static batches")


# --- decoding by full forward passes --------------------------------------------------------------
# Decoding by full forward passes without a cache: the reference that generation must equal, and the fallback when a cache lies.
#
# Each row is decoded on its own, unpadded, through the model's own forward pass, which is what
# training optimised (for prompt-learning methods peft's forward adds the virtual tokens). It is
# slow (every step re-reads the whole sequence) but depends on no cache and no generation hook:
# peft's own `generate(use_cache=False)` is no substitute, as it misplaces the positions of
# left-padded rows for soft prompts and loses prefix tuning's prefix after the first step.
# Hand-written here because transformers' generate has no cache-free mode that bypasses those hooks.


def forward_logits(model: Any, prompt: list[int], tokens: list[int], is_seq2seq: bool, **forward_extra: Any) -> Any:
    """Logits (len(tokens) + 1 rows) predicting each of `tokens` and then the next, from one forward pass over the whole sequence."""
    import torch

    device = model.device
    if is_seq2seq:
        source = torch.tensor([prompt], device=device)
        decoder = torch.tensor([[model.config.decoder_start_token_id, *tokens]], device=device)
        logits = model(input_ids=source, attention_mask=torch.ones_like(source), decoder_input_ids=decoder,
                       use_cache=False, **forward_extra).logits
    else:
        sequence = torch.tensor([prompt + tokens], device=device)
        logits = model(input_ids=sequence, attention_mask=torch.ones_like(sequence), use_cache=False, **forward_extra).logits
    # counted from the end: soft-prompt methods return logits for their virtual tokens too
    return logits[0, -(len(tokens) + 1):].float()


def last_logits(model: Any, prompt: list[int], tokens: list[int], is_seq2seq: bool, **forward_extra: Any) -> Any:
    """The next-token logits after `prompt` + `tokens`."""
    return forward_logits(model, prompt, tokens, is_seq2seq, **forward_extra)[-1]


def reference_greedy(model: Any, prompt: list[int], steps: int, is_seq2seq: bool) -> list[int]:
    """Greedy tokens from full forward passes without a cache: the definition generation must meet; eos does not stop it."""
    import torch

    tokens: list[int] = []
    with torch.inference_mode():
        for _ in range(steps):
            tokens.append(int(last_logits(model, prompt, tokens, is_seq2seq).argmax()))
    return tokens


def _choose(logits: Any, config: Any) -> Any:
    """Next tokens (rows) from next-token logits (rows x vocabulary): greedy, or sampling with temperature and top-p."""
    import torch

    if not config.do_sample:
        return logits.argmax(dim=-1)
    probabilities = torch.softmax(logits / (config.temperature or 1.0), dim=-1)
    ranked, order = probabilities.sort(dim=-1, descending=True)
    # keep the smallest set of tokens whose probability reaches top_p (the first token always)
    outside = ranked.cumsum(dim=-1) - ranked >= (config.top_p if config.top_p is not None else 1.0)
    ranked[outside] = 0
    return order.gather(-1, torch.multinomial(ranked, 1)).squeeze(-1)


def uncached_generate(model: Any, ids: Any, mask: Any, config: Any, is_seq2seq: bool,
                      stopping_criteria: Any = None, adapter_names: list[str] | None = None) -> Any:
    """New tokens (rows x steps) for padded prompts, every step a full forward pass per row; pad after a row ends."""
    import torch

    if (config.num_beams or 1) > 1:
        raise PeftlabError("beam search needs a working generation cache, and this method's failed the self-check; "
                           "use --num-beams 1")
    prompts = [row[keep.bool()].tolist() for row, keep in zip(ids, mask)]
    eos = config.eos_token_id if isinstance(config.eos_token_id, list) else [config.eos_token_id]
    eos = torch.tensor([token for token in eos if token is not None], dtype=torch.long)
    generated = torch.empty((len(prompts), 0), dtype=torch.long)
    finished = torch.zeros(len(prompts), dtype=torch.bool)
    for _ in range(config.max_new_tokens):
        logits = torch.stack([last_logits(model, prompt, generated[row].tolist(), is_seq2seq,
                                          **({"adapter_names": [adapter_names[row]]} if adapter_names else {}))
                              for row, prompt in enumerate(prompts)])
        chosen = _choose(logits, config).cpu().masked_fill(finished, config.pad_token_id)
        generated = torch.cat((generated, chosen[:, None]), dim=1)
        finished |= torch.isin(chosen, eos)
        if stopping_criteria is not None:  # serve's per-step hook: it sees every row's newest token
            finished |= stopping_criteria(generated, logits).cpu()
        if finished.all():
            break
    return generated
