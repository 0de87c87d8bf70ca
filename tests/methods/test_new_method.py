"""A method defined outside peftlab (tests/methods/final_norm.py), added by one import line: it trains, saves,
reloads, evaluates, and `serve` / `merge` treat it by the capabilities it declares, without any change to peftlab."""

from __future__ import annotations

import dataclasses
from pathlib import Path

import pytest
import torch

from peftlab.errors import PeftlabError
from peftlab.methods import get_method, load_trained, register, saved_method, unregister
from peftlab.models import load_model
from tests.conftest import TOY_ROWS, write_jsonl
from tests.methods import alone, answer
from tests.methods.final_norm import FINAL_NORM, WEIGHTS  # the one line that adds the method "final-norm"
from tests.tiny_models import train_tiny


def test_registering_a_name_twice_raises():
    with pytest.raises(ValueError, match="'final-norm' is already registered"):
        register(dataclasses.replace(FINAL_NORM, description="another method under the same name"))
    assert get_method("final-norm") is FINAL_NORM  # the first stays
    with pytest.raises(ValueError, match="'lora' is already registered"):
        register(dataclasses.replace(get_method("lora")))


@pytest.fixture(scope="module")
def trained(tiny_llama, tmp_path_factory) -> Path:
    tmp_path = tmp_path_factory.mktemp("final-norm")
    data = write_jsonl(tmp_path / "toy.jsonl", TOY_ROWS * 2)
    summary = train_tiny(tiny_llama, data, tmp_path / "run", "method=final-norm", "final-norm.scale=1.5", "train.batch_size=4")
    hidden = load_model(tiny_llama, "fp32").model.config.hidden_size
    assert summary["method"] == "final-norm" and summary["trainable_parameters"] == hidden
    return tmp_path / "run"


def test_trains_saves_reloads_and_evaluates(trained, tiny_llama, tmp_path):
    from peftlab.evaluate.evaluation import evaluate
    from peftlab.evaluate.settings import eval_config

    assert saved_method(trained) is get_method("final-norm")
    reloaded = load_trained(load_model(tiny_llama, "fp32").model, trained)
    from safetensors.torch import load_file

    saved = load_file(str(trained / "adapter" / WEIGHTS))["weight"]
    torch.testing.assert_close(reloaded.get_decoder().norm.weight, saved)
    assert not torch.equal(saved, load_model(tiny_llama, "fp32").model.get_decoder().norm.weight)  # it trained

    data = write_jsonl(tmp_path / "test.jsonl", TOY_ROWS)
    config = eval_config(str(trained), [], {"model.name": tiny_llama})
    result = evaluate(config, str(data), str(tmp_path / "eval"), adapter=str(trained))
    assert set(result["results"]) == {"base", "tuned"} and (tmp_path / "eval" / "metrics.json").is_file()


def test_serve_follows_the_declared_capabilities(trained, tiny_llama, capsys):
    from peftlab.cli import main
    from peftlab.serve.launch import load_engine

    engine = load_engine(tiny_llama, [("norm", str(trained))], "fp32", "tiny")
    served = engine.models["norm"]
    assert served.method == "final-norm" and served.row_name is None  # not mixable: batched per adapter
    ids = engine.prompt_ids("Hello, how are you?")
    assert answer(engine, "norm", ids) == alone(tiny_llama, str(trained), ids)
    assert answer(engine, "tiny", ids) == alone(tiny_llama, None, ids)  # the shared base weights are untouched

    unregister(FINAL_NORM.name)
    register(dataclasses.replace(FINAL_NORM, servable=False))
    try:
        with pytest.raises(PeftlabError, match="final-norm cannot be served"):
            load_engine(tiny_llama, [("norm", str(trained))], "fp32", "tiny")
    finally:
        unregister(FINAL_NORM.name)
        register(FINAL_NORM)
    assert main(["merge", "--adapter", str(trained), "--output", str(trained.parent / "merged")]) == 2
    assert "final-norm cannot be merged" in capsys.readouterr().err
