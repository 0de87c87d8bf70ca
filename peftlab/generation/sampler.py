"""The one sampler of every generation path (continuous, static and uncached): greedy, or temperature with top-p.

transformers' `generate` samples with its own warpers; static batches instead run it greedily
behind `SampledToken`, a logits processor that lets this sampler pick the token, so that every
path draws from the same distribution with the same top-p boundary.
"""

from __future__ import annotations

from typing import Any

GREEDY_BELOW = 1e-3  # temperatures this close to 0 decode greedily: dividing logits by them overflows to inf


def nucleus(probabilities: Any, top_p: float) -> Any:
    """The probabilities with every token outside the smallest set whose mass reaches `top_p` set to 0 (the top token always stays).

    A token is kept while the mass ranked above it is still below top_p: at exactly top_p the set
    is complete (transformers' TopPLogitsWarper draws the same boundary).
    """
    if top_p >= 1:
        return probabilities
    ranked, order = probabilities.sort(dim=-1, descending=True)
    outside = ranked.cumsum(dim=-1) - ranked >= top_p
    outside[..., 0] = False
    return probabilities.scatter(-1, order, ranked.masked_fill(outside, 0.0))


def sample_token(logits: Any, temperature: float, top_p: float, generator: Any = None) -> int:
    """One row's next token from its logits (vocabulary): the argmax below GREEDY_BELOW, else a draw."""
    import torch

    if temperature < GREEDY_BELOW:
        return int(logits.argmax())
    probabilities = nucleus(torch.softmax(logits.float() / temperature, dim=-1), top_p)
    return int(torch.multinomial(probabilities, 1, generator=generator))


def choose(logits: Any, jobs: list[Any]) -> list[int]:
    """Each row's next token (logits: rows x vocabulary); a job gives `sampling` = (temperature, top_p) and may give a `generator`."""
    tokens = logits.argmax(dim=-1).tolist()
    for row, job in enumerate(jobs):
        temperature, top_p = job.sampling
        if temperature >= GREEDY_BELOW:
            tokens[row] = sample_token(logits[row], temperature, top_p, getattr(job, "generator", None))
    return tokens


class Sampling:
    """The same (temperature, top_p) for every row: what an offline or static batch asks for."""

    def __init__(self, temperature: float, top_p: float, generator: Any = None):
        self.sampling, self.generator = (temperature, top_p), generator


def sampling_of(config: Any) -> Sampling:
    """A transformers GenerationConfig's sampling request as this sampler's (greedy when do_sample is off)."""
    if not config.do_sample:
        return Sampling(0.0, 1.0)
    return Sampling(config.temperature if config.temperature is not None else 1.0,
                    config.top_p if config.top_p is not None else 1.0)


def sampled_token_processor(sampling: Sampling) -> Any:
    """A transformers LogitsProcessor that leaves only this sampler's choice: greedy `generate` then takes it."""
    from transformers import LogitsProcessor

    class SampledToken(LogitsProcessor):
        def __call__(self, input_ids: Any, scores: Any) -> Any:
            import torch

            chosen = choose(scores, [sampling] * scores.shape[0])
            picked = torch.full_like(scores, float("-inf"))
            picked[torch.arange(scores.shape[0]), torch.tensor(chosen, device=scores.device)] = 0.0
            return picked

    return SampledToken()
