"""Decoding by full forward passes without a cache: the fallback when a cache lies, and what the self-check compares with.

Each row is decoded on its own, unpadded, through the model's own forward pass, which is what
training optimised (for prompt-learning methods peft's forward adds the virtual tokens). It is
slow (every step re-reads the whole sequence) but depends on no cache and no generation hook:
peft's own `generate(use_cache=False)` is no substitute, as it misplaces the positions of
left-padded rows for soft prompts and loses prefix tuning's prefix after the first step.
Hand-written here because transformers' generate has no cache-free mode that bypasses those hooks.
"""

from __future__ import annotations

from typing import Any

from peftlab.errors import PeftlabError
from peftlab.generation.sampler import choose, sampling_of


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
    sampling = [sampling_of(config)] * len(prompts)
    generated = torch.empty((len(prompts), 0), dtype=torch.long)
    finished = torch.zeros(len(prompts), dtype=torch.bool)
    for _ in range(config.max_new_tokens):
        logits = torch.stack([last_logits(model, prompt, generated[row].tolist(), is_seq2seq,
                                          **({"adapter_names": [adapter_names[row]]} if adapter_names else {}))
                              for row, prompt in enumerate(prompts)])
        chosen = torch.tensor(choose(logits, sampling)).masked_fill(finished, config.pad_token_id)
        generated = torch.cat((generated, chosen[:, None]), dim=1)
        finished |= torch.isin(chosen, eos)
        if stopping_criteria is not None:  # serve's per-step hook: it sees every row's newest token
            finished |= stopping_criteria(generated, logits).cpu()
        if finished.all():
            break
    return generated
