"""The methods of issue 31 through `peftlab train`, `serve` and `merge` on the tiny Llama: each trains from the recipe,
is served with the answers it gives alone (or refused by its capability), and merges where it says it can."""

from __future__ import annotations

import json

import pytest
import torch

from peftlab.cli import main
from peftlab.methods import get_method, saved_method
from tests.methods import alone, answer
from tests.serve.conftest import train_adapter

# settings that fit the tiny Llama's 32-wide layers
NEWER = {
    "pissa": ["pissa.r=4"],
    "olora": ["olora.r=4"],
    "eva": ["eva.r=4", "eva.init_rows=8"],
    "corda": ["corda.r=4"],
    "lora-ga": ["lora-ga.r=4"],
    "loraplus": ["loraplus.r=4"],
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
    from peftlab.inference import load_for_generation
    from peftlab.models import load_model

    ids = torch.tensor([[5, 17, 42, 99, 7, 3, 250, 11]])
    with torch.inference_mode():
        expected = load_for_generation(model, "fp32", adapter).model(input_ids=ids).logits
        got = load_model(merged, "fp32").model(input_ids=ids).logits
    return relative_difference(got, expected)


@pytest.mark.parametrize("method_name", list(NEWER))
def test_trains_serves_and_merges_as_it_declares(method_name, tiny_llama, tmp_path, capsys):
    from peftlab.serve.launch import load_engine

    method = get_method(method_name)
    adapter = train_adapter(tiny_llama, tmp_path, f"method={method_name}", "train.lr=0.01", *NEWER[method_name])
    assert saved_method(adapter) is method

    engine = load_engine(tiny_llama, [("x", adapter)], "fp32", "tiny")
    assert (engine.models["x"].row_name is not None) == method.mixable  # LoRA rows share batches; the others go per adapter
    ids = engine.prompt_ids(PROMPT)
    assert answer(engine, "x", ids) == alone(tiny_llama, adapter, ids)
    assert answer(engine, "tiny", ids) == alone(tiny_llama, None, ids)  # the shared base stays the base

    capsys.readouterr()
    code = main(["merge", "--adapter", adapter, "--output", str(tmp_path / "merged")])
    if not method.mergeable:
        assert code == 2 and f"{method_name} cannot be merged" in capsys.readouterr().err
        return
    assert code == 0
    assert relative_logit_difference(tiny_llama, adapter, str(tmp_path / "merged")) < 1e-4


def test_residual_initialisations_save_a_plain_lora_of_twice_the_rank(tiny_llama, tmp_path):
    """PiSSA trains on W - B0 A0; what it saves applies to the unmodified base, as any LoRA (vLLM, llama.cpp, peft)."""
    adapter = train_adapter(tiny_llama, tmp_path, "method=pissa", "pissa.r=4")
    config = json.loads((tmp_path / "run" / "adapter" / "adapter_config.json").read_text())
    assert config["peft_type"] == "LORA" and config["r"] == 8 and config["init_lora_weights"] is True
    from peft import PeftModel

    from peftlab.inference import load_for_generation
    from peftlab.models import load_model

    ids = torch.tensor([[5, 17, 42, 99, 7]])
    plain = PeftModel.from_pretrained(load_model(tiny_llama, "fp32").model, adapter).eval()
    with torch.inference_mode():
        torch.testing.assert_close(plain(input_ids=ids).logits, load_for_generation(tiny_llama, "fp32", adapter).model(input_ids=ids).logits)
        assert not torch.allclose(plain(input_ids=ids).logits, load_model(tiny_llama, "fp32").model(input_ids=ids).logits, atol=1e-4)


def test_loraplus_gives_the_trainer_b_at_ratio_times_the_rate(tiny_llama, tmp_path):
    from transformers import TrainerCallback

    seen = {}

    class Rates(TrainerCallback):
        def on_train_begin(self, args, state, control, optimizer=None, model=None, **kwargs):
            names = {id(p): n for n, p in model.named_parameters()}
            for group in optimizer.param_groups:
                for parameter in group["params"]:
                    seen[names[id(parameter)]] = group.get("initial_lr", group["lr"])  # before the schedule's warm-up

    from tests.conftest import TOY_ROWS, write_jsonl
    from tests.tiny_models import tiny_run_config
    from peftlab.train.recipe import run

    data = write_jsonl(tmp_path / "toy.jsonl", TOY_ROWS)
    run(tiny_run_config(tiny_llama, data, tmp_path / "run", "method=loraplus", "loraplus.lr_ratio=8", "train.lr=0.001"),
        callbacks=(Rates(),))
    a_rates = [rate for name, rate in seen.items() if "lora_A" in name]
    b_rates = [rate for name, rate in seen.items() if "lora_B" in name]
    assert a_rates and b_rates and set(a_rates) == {0.001} and b_rates == pytest.approx([0.008] * len(b_rates))


def test_eva_initialises_from_the_runs_data_and_says_so(tiny_llama, tmp_path):
    from tests.conftest import TOY_ROWS, write_jsonl
    from tests.tiny_models import tiny_run_config
    from peftlab.train.recipe import run

    said = []
    data = write_jsonl(tmp_path / "toy.jsonl", TOY_ROWS * 2)
    run(tiny_run_config(tiny_llama, data, tmp_path / "run", "method=eva", "eva.r=4", "eva.init_rows=6", "train.max_steps=1"),
        say=said.append)
    assert any(line.startswith("eva: initialising the adapter from 6 training rows") for line in said), said
    config = json.loads((tmp_path / "run" / "adapter" / "adapter_config.json").read_text())
    assert config["init_lora_weights"] == "eva" and sum(config["rank_pattern"].values()) == 4 * len(config["rank_pattern"])
