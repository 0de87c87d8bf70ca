"""`peftlab export --format lora`: adapters peft converts become LoRA adapters that reload to the same model up to the
rank cut, whose error is measured and recorded; others are refused in one line."""

from __future__ import annotations

import json

import pytest
import torch

from peftlab.cli import main
from peftlab.export.to_lora import parse_rank
from tests.serve.conftest import train_adapter


def logits_of(model_path: str, adapter: str) -> torch.Tensor:
    from peftlab.generation import load_for_generation

    ids = torch.tensor([[5, 17, 42, 99, 7, 3, 250, 11]])
    with torch.inference_mode():
        return load_for_generation(model_path, "fp32", adapter).model(input_ids=ids).logits


@pytest.mark.parametrize("method, settings", [("vera", ["vera.r=8"]), ("loha", ["loha.r=4"])])
def test_a_converted_adapter_is_a_lora_with_the_same_logits_at_full_rank(method, settings, tiny_llama, tmp_path, capsys):
    from peftlab.methods import saved_method

    adapter = train_adapter(tiny_llama, tmp_path, f"method={method}", *settings)
    full, cut = tmp_path / "full", tmp_path / "cut"
    assert main(["export", adapter, "--format", "lora", "--rank", "1.0", "--output", str(full)]) == 0  # all the energy: full rank
    assert main(["export", adapter, "--format", "lora", "--rank", "1", "--output", str(cut)]) == 0
    assert f"against the {method} adapter with: peftlab check {adapter} --data " in capsys.readouterr().out

    config = json.loads((full / "adapter_config.json").read_text())
    assert config["peft_type"] == "LORA" and saved_method(full).name == "lora"
    info = json.loads((full / "peftlab.json").read_text())
    assert info["converted_from"] == method and info["relative_logit_difference"] < 1e-4
    torch.testing.assert_close(logits_of(tiny_llama, str(full)), logits_of(tiny_llama, adapter), atol=1e-4, rtol=1e-4)
    cut_info = json.loads((cut / "peftlab.json").read_text())
    assert cut_info["lora_rank"] == 1 and cut_info["relative_logit_difference"] > info["relative_logit_difference"]


def test_what_peft_cannot_convert_is_refused_in_one_line(tiny_llama, tmp_path, capsys):
    (tmp_path / "lora").mkdir(), (tmp_path / "ia3").mkdir()
    lora_a = train_adapter(tiny_llama, tmp_path / "lora", "train.max_steps=1")
    ia3_c = train_adapter(tiny_llama, tmp_path / "ia3", "method=ia3", "train.max_steps=1")
    capsys.readouterr()
    assert main(["export", lora_a, "--format", "lora", "--output", str(tmp_path / "a")]) == 2
    assert "already a LoRA adapter" in capsys.readouterr().err
    assert main(["export", ia3_c, "--format", "lora", "--output", str(tmp_path / "c")]) == 2
    error = capsys.readouterr().err
    assert "ia3 is not one" in error and "vera" in error and len(error.strip().splitlines()) == 1
    assert not (tmp_path / "a").exists() and not (tmp_path / "c").exists()


@pytest.mark.parametrize("text, rank", [("16", 16), ("0.95", 0.95), ("1.0", 1.0)])
def test_rank_is_a_whole_rank_or_an_energy_share(text, rank):
    assert parse_rank(text) == rank and type(parse_rank(text)) is type(rank)


@pytest.mark.parametrize("text", ["0", "1.5", "-2", "many"])
def test_a_rank_that_is_neither_is_named(text):
    from peftlab.errors import PeftlabError

    with pytest.raises(PeftlabError, match=f"--rank {text}"):
        parse_rank(text)


def test_methods_lists_vllm_via_conversion(capsys):
    assert main(["methods"]) == 0
    listing = capsys.readouterr().out
    vera = listing[listing.index("\nvera "):listing.index("\nmiss ")]
    assert "vLLM via conversion to LoRA" in vera
