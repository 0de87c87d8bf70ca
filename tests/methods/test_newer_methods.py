"""The methods of issue 31 through `peftlab train`, `serve` and `merge` on the tiny Llama and the tiny T5: each trains
from the recipe, is served with the answers it gives alone (or refused by its capability), and merges where it says it can."""

from __future__ import annotations

import json

import pytest
import torch

from peftlab.cli import main
from peftlab.errors import PeftlabError
from peftlab.methods import get_method, saved_method
from tests.methods import alone, answer
from tests.serve.conftest import train_adapter
from tests.tiny_models import save_tiny_t5

# settings that fit the tiny Llama's and T5's 32-wide layers; VeRA, HiRA, Lily and trainable tokens train at 0.1 (after
# four steps at 0.01 their greedy answers were still the base's), trainable tokens on ids the prompts hold
NEWER = {
    "pissa": ["pissa.r=4"],
    "olora": ["olora.r=4"],
    "eva": ["eva.r=4", "eva.init_rows=8"],
    "corda": ["corda.r=4"],
    "lora-ga": ["lora-ga.r=4"],
    "loraplus": ["loraplus.r=4"],
    "loftq": ["loftq.r=4", "loftq.gradient_checkpointing=false"],
    "oft": ["oft.block_size=8"],
    "vera": ["vera.r=8", "train.lr=0.1"],
    "miss": ["miss.r=4"],
    "shira": ["shira.r=2"],
    "hira": ["hira.r=4", "train.lr=0.1"],
    "lily": ["lily.r=4", "train.lr=0.1"],
    "fourierft": ["fourierft.n_frequency=16"],
    "randlora": ["randlora.r=4"],
    "trainable-tokens": [f"trainable-tokens.tokens={','.join(map(str, range(200)))}", "train.lr=0.1"],
}
PROMPT = "Hello, how are you?"


@pytest.fixture(scope="module")
def lively_t5(tmp_path_factory) -> str:
    """A tiny T5 with larger random weights: the default one (initializer_factor 1) answers pad tokens to most prompts,
    adapter or not, so a served adapter could not show in its answers. (Merges of some methods on it exceed merge's
    fp32 bound of 1e-4 by rounding alone: measured 1.2e-4 for PiSSA, so merges are checked on the default T5.)"""
    return str(save_tiny_t5(tmp_path_factory.mktemp("lively-t5"), initializer_factor=1.5))


@pytest.fixture(params=["llama", "t5"])
def served_model(request, tiny_llama, lively_t5) -> str:
    """A model whose answers show an adapter: the tiny Llama or the lively T5."""
    return tiny_llama if request.param == "llama" else lively_t5


def relative_logit_difference(model: str, adapter: str, merged: str) -> float:
    from peftlab.export.merge import relative_difference
    from peftlab.generation import load_for_generation
    from peftlab.models import load_model

    ids = torch.tensor([[5, 17, 42, 99, 7, 3, 250, 11]])
    with torch.inference_mode():
        adapted = load_for_generation(model, "fp32", adapter)
        inputs = {"input_ids": ids, **({"decoder_input_ids": ids[:, :4]} if adapted.is_seq2seq else {})}
        expected = adapted.model(**inputs).logits
        got = load_model(merged, "fp32").model(**inputs).logits
    return relative_difference(got, expected)


@pytest.mark.parametrize("method_name", list(NEWER))
def test_trains_serves_and_merges_as_it_declares(method_name, tiny_model, tiny_llama, tmp_path, capsys):
    from peftlab.serve.launch import load_engine

    method = get_method(method_name)
    adapter = train_adapter(tiny_model, tmp_path, f"method={method_name}", "train.lr=0.01", *NEWER[method_name])
    assert saved_method(adapter) is method

    if not method.servable:
        with pytest.raises(PeftlabError, match=f"{method_name} cannot be served"):
            load_engine(tiny_model, [("x", adapter)], "fp32", "tiny")
    else:
        tuned, base = served_as_alone(adapter, tiny_model, mixable=method.mixable)
        if tiny_model == tiny_llama:  # the default tiny T5 answers pad tokens, adapter or not: see the lively T5's test
            assert tuned != base
    merged_as_declared(method, adapter, tiny_model, tmp_path, capsys)


@pytest.mark.parametrize("method_name", [name for name in NEWER if get_method(name).servable])
def test_served_on_a_t5_answers_as_the_adapter_alone(method_name, lively_t5, tmp_path):
    # at 0.01, MiSS and FourierFT answered as the base on this T5 after four steps
    adapter = train_adapter(lively_t5, tmp_path, f"method={method_name}", *NEWER[method_name], "train.lr=0.1")
    tuned, base = served_as_alone(adapter, lively_t5, mixable=get_method(method_name).mixable)
    assert tuned != base  # the adapter shows in what is served


def served_as_alone(adapter: str, model: str, mixable: bool) -> tuple[str, str]:
    """The answers `peftlab serve` gives to PROMPT from the adapter and from the base beside it, each checked equal to
    what that model answers alone."""
    from peftlab.serve.launch import load_engine

    engine = load_engine(model, [("x", adapter)], "fp32", "tiny")
    assert (engine.models["x"].row_name is not None) == mixable  # LoRA rows share batches; the others go per adapter
    ids = engine.prompt_ids(PROMPT)
    tuned, base = answer(engine, "x", ids), answer(engine, "tiny", ids)
    assert tuned == alone(model, adapter, ids)
    assert base == alone(model, None, ids)  # the shared base stays the base
    return tuned, base


def merged_as_declared(method, adapter: str, model: str, tmp_path, capsys) -> None:
    method_name = method.name
    capsys.readouterr()
    code = main(["merge", "--adapter", adapter, "--output", str(tmp_path / "merged")])
    if not method.mergeable:
        assert code == 2 and f"{method_name} cannot be merged" in capsys.readouterr().err
        return
    assert code == 0
    if method.quantization:  # merged into the dequantized base, checked there by merge itself (4-bit matmuls round in bf16)
        info = json.loads((tmp_path / "merged" / "peftlab-merge.json").read_text())
        assert info["dequantized_from"] == method.quantization and info["relative_logit_difference"] < 1e-4
        return
    assert relative_logit_difference(model, adapter, str(tmp_path / "merged")) < 1e-4


# --- LoRA with trainable tokens (lora.trainable_tokens) ---------------------------------------------------------

def changed_rows(weight, base_weight) -> list[int]:
    return (weight - base_weight).abs().sum(dim=-1).nonzero().flatten().tolist()


def test_lora_with_trainable_tokens_trains_serves_and_merges_only_the_chosen_rows(tiny_model, tmp_path, capsys):
    """`lora.trainable_tokens` trains the chosen embedding rows beside the LoRA matrices: the reloaded, the served and
    the merged model change those rows of the embedding and no other, and vLLM's check names the extra tensors."""
    from peftlab.generation import load_for_generation
    from peftlab.models import load_model
    from peftlab.serve.vllm_compat import check
    from tests.conftest import TOY_ROWS

    base = load_model(tiny_model, "fp32")
    chosen = sorted(set(base.tokenizer(TOY_ROWS[0]["dialogue"])["input_ids"][:4]))  # tokens the training rows hold
    adapter = train_adapter(tiny_model, tmp_path, f"lora.trainable_tokens={','.join(map(str, chosen))}")
    rows = torch.arange(base.model.get_input_embeddings().num_embeddings)
    with torch.inference_mode():
        reloaded = load_for_generation(tiny_model, "fp32", adapter).model
        assert changed_rows(reloaded.get_input_embeddings()(rows), base.model.get_input_embeddings()(rows)) == chosen

    served_as_alone(adapter, tiny_model, mixable=False)
    merged_as_declared(get_method("lora"), adapter, tiny_model, tmp_path, capsys)
    merged = load_model(str(tmp_path / "merged"), "fp32").model
    assert changed_rows(merged.get_input_embeddings().weight, base.model.get_input_embeddings().weight) == chosen
    verdict = check(adapter)
    assert "trainable_tokens_delta" in verdict and len(verdict.splitlines()) == 1
    capsys.readouterr()
    assert main(["export", adapter, "--format", "gguf-lora", "--output", str(tmp_path / "a.gguf")]) == 2
    error = capsys.readouterr().err
    assert "holds only LoRA matrices" in error and len(error.strip().splitlines()) == 1
    assert not (tmp_path / "a.gguf").exists()


def test_lora_with_trainable_tokens_is_served_beside_plain_lora(served_model, tmp_path):
    """An adapter with token rows decodes in its own batches (peft 0.21.2's mixed batches raise KeyError for the plain
    LoRA rows beside it), the plain LoRA in the mixed ones: every row answers as its adapter alone."""
    from peftlab.serve.launch import load_engine
    from peftlab.serve.scheduler import Scheduler
    from tests.serve.test_continuous import PROMPTS, run_jobs

    (tmp_path / "t").mkdir()
    (tmp_path / "p").mkdir()
    tokens = train_adapter(served_model, tmp_path / "t", "lora.trainable_tokens=5,17,42,99,250", "train.lr=0.3")
    plain = train_adapter(served_model, tmp_path / "p", "train.seed=7")
    engine = load_engine(served_model, [("t", tokens), ("p", plain)], "fp32", "tiny")
    assert engine.models["t"].row_name is None and engine.models["p"].row_name is not None
    requests = [(name, text, 6) for text in PROMPTS for name in ("t", "p", "tiny")]
    scheduler = Scheduler(engine)
    try:
        jobs = run_jobs(scheduler, engine, requests)
    finally:
        scheduler.close()
    folders = {"t": tokens, "p": plain, "tiny": None}
    answers = {(name, text): "".join(job.output) for job, (name, text, _) in zip(jobs, requests)}
    for (name, text), got in answers.items():
        assert got == alone(served_model, folders[name], engine.prompt_ids(text)), (name, text)
    assert any(answers["t", text] != answers["tiny", text] for text in PROMPTS)  # the adapter shows in what is served
