"""One sampler for every generation path: continuous (serve's scheduler), static (transformers' generate) and uncached."""

import math

import pytest

from peftlab.generation.sampler import Sampling, choose, nucleus

# exact binary fractions, so the mass above the third token is exactly top_p
PROBABILITIES = [0.5, 0.25, 0.25]
TOP_P = 0.75
DRAWS = 96  # with a boundary that keeps the third token, P(it is never drawn) = (2/3)^96 < 1e-16


def test_the_nucleus_is_the_smallest_set_reaching_top_p():
    import torch

    kept = nucleus(torch.tensor([0.25, 0.5, 0.25]), 0.75)
    assert kept.tolist() == [0.25, 0.5, 0.0]  # the first 0.25 (ranked second) completes 0.75; the rest goes
    assert nucleus(torch.tensor([0.5, 0.5]), 0.1).tolist() == [0.5, 0.0]  # the top token always stays
    assert nucleus(torch.tensor([0.5, 0.5]), 1.0).tolist() == [0.5, 0.5]


class FixedHead:
    """An lm_head whose next-token logits are log(PROBABILITIES) at every position, whatever the input."""

    def __init__(self, vocabulary: int):
        import torch

        self.logits = torch.full((vocabulary,), -math.inf)
        self.logits[:len(PROBABILITIES)] = torch.tensor(PROBABILITIES).log()

    def __call__(self, hidden):
        return self.logits.expand(*hidden.shape[:-1], -1).clone()


@pytest.fixture
def fixed_model(tiny_llama):
    from peftlab.models import load_model

    loaded = load_model(tiny_llama, "fp32")
    loaded.model.lm_head.forward = FixedHead(loaded.model.config.vocab_size)
    return loaded


def sampled_tokens(path: str, loaded) -> set[int]:
    import torch

    from peftlab.generation import GenerationSettings, generate_new_tokens, generation_config, pad_batch
    from peftlab.generation.uncached import uncached_generate

    if path == "continuous":
        logits = torch.tensor(PROBABILITIES).log().expand(DRAWS, -1)
        return set(choose(logits, [Sampling(1.0, TOP_P)] * DRAWS))
    config = generation_config(loaded.model, loaded.tokenizer, GenerationSettings(max_new_tokens=2, batch_size=DRAWS // 2))
    config.update(do_sample=True, temperature=1.0, top_p=TOP_P, eos_token_id=None)
    ids, mask = pad_batch([[5, 6, 7]] * (DRAWS // 2), loaded.tokenizer.pad_token_id, left=True)
    generate = generate_new_tokens if path == "static" else uncached_generate
    with torch.inference_mode():
        return set(generate(loaded.model, ids, mask, config, False).flatten().tolist())


@pytest.mark.parametrize("path", ["continuous", "static", "uncached"])
def test_every_path_stops_at_the_same_top_p_boundary(path, fixed_model):
    """The third token lies just past the boundary: no path may ever draw it, and both tokens inside are drawn."""
    assert sampled_tokens(path, fixed_model) == {0, 1}
