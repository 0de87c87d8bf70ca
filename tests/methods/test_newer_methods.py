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

# settings that fit the tiny Llama's and T5's 32-wide layers
NEWER = {
    "pissa": ["pissa.r=4"],
    "olora": ["olora.r=4"],
    "eva": ["eva.r=4", "eva.init_rows=8"],
    "corda": ["corda.r=4"],
    "lora-ga": ["lora-ga.r=4"],
    "loraplus": ["loraplus.r=4"],
    "loftq": ["loftq.r=4", "loftq.gradient_checkpointing=false"],
    "oft": ["oft.block_size=8"],
    "vera": ["vera.r=8"],
    "miss": ["miss.r=4"],
    "shira": ["shira.r=2"],
    "hira": ["hira.r=4"],
    "lily": ["lily.r=4"],
    "fourierft": ["fourierft.n_frequency=16"],
    "randlora": ["randlora.r=4"],
    "trainable-tokens": [],
}
PROMPT = "Hello, how are you?"


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
def test_trains_serves_and_merges_as_it_declares(method_name, tiny_model, tmp_path, capsys):
    from peftlab.serve.launch import load_engine

    method = get_method(method_name)
    adapter = train_adapter(tiny_model, tmp_path, f"method={method_name}", "train.lr=0.01", *NEWER[method_name])
    assert saved_method(adapter) is method

    if not method.servable:
        with pytest.raises(PeftlabError, match=f"{method_name} cannot be served"):
            load_engine(tiny_model, [("x", adapter)], "fp32", "tiny")
    else:
        served_as_alone(method, adapter, tiny_model)
    merged_as_declared(method, adapter, tiny_model, tmp_path, capsys)


def served_as_alone(method, adapter: str, model: str) -> None:
    from peftlab.serve.launch import load_engine

    engine = load_engine(model, [("x", adapter)], "fp32", "tiny")
    assert (engine.models["x"].row_name is not None) == method.mixable  # LoRA rows share batches; the others go per adapter
    ids = engine.prompt_ids(PROMPT)
    assert answer(engine, "x", ids) == alone(model, adapter, ids)
    assert answer(engine, "tiny", ids) == alone(model, None, ids)  # the shared base stays the base


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
