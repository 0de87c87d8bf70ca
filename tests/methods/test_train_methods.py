"""Methods through `peftlab train`'s recipe: quantized loading, AdaLoRA's schedule, each save format, early errors."""

from __future__ import annotations

import json
import re

import pytest
import torch

from peftlab.cli import main
from peftlab.errors import PeftlabError
from peftlab.methods import load_trained, saved_method
from peftlab.models import load_model
from peftlab.train.recipe import run
from tests.tiny_models import logits, tiny_run_config, toy_batch


def make_config(model, data, out, method, *extra):
    return tiny_run_config(model, data, out, f"method={method}", "train.batch_size=4", "train.lr=0.03", *extra)


@pytest.mark.parametrize("method, files, extra, standard_loader", [
    ("adalora", {"adapter_config.json", "adapter_model.safetensors"}, ["adalora.init_r=4", "adalora.target_r=2"], "peft"),
    ("qlora", {"adapter_config.json", "adapter_model.safetensors"}, ["qlora.r=4"], "peft"),
    ("adapter", {"adapter_config.json", "adapter_model.safetensors"}, [], None),
    ("bitfit", {"trained_parameters.json", "trained_parameters.safetensors"}, ["bitfit.add_missing_biases=true"], None),
    ("full", {"config.json", "model.safetensors"}, [], "transformers"),
])
def test_train_saves_the_method_format_and_reloads(method, files, extra, standard_loader, tiny_model, toy_data, tmp_path):
    summary = run(make_config(tiny_model, toy_data, tmp_path / "out", method, *extra))
    assert summary["steps"] == 3 and 0 < summary["trainable_parameters"] <= summary["total_parameters"]
    adapter = tmp_path / "out" / "adapter"
    assert files <= {p.name for p in adapter.iterdir()}
    assert json.loads((adapter / "peftlab.json").read_text())["method"] == method
    found = saved_method(tmp_path / "out")
    assert found.name == method

    fresh = lambda: load_model(tiny_model, "fp32", quantization=found.quantization)  # noqa: E731
    loaded = fresh()
    batch = toy_batch(loaded.tokenizer, loaded.is_seq2seq)
    reloaded = logits(load_trained(loaded.model, tmp_path / "out"), batch)
    assert not torch.allclose(reloaded, logits(fresh().model, batch), atol=1e-4)  # what was trained is applied
    if standard_loader == "peft":  # the standard PEFT format: plain peft reads it to the same model
        from peft import PeftModel

        torch.testing.assert_close(logits(PeftModel.from_pretrained(fresh().model, str(adapter)), batch), reloaded)
    elif standard_loader == "transformers":  # a complete transformers model folder
        torch.testing.assert_close(logits(type(loaded.model).from_pretrained(str(adapter)), batch), reloaded)


def test_adalora_schedule_follows_the_run_length(tiny_llama, toy_data, tmp_path):
    run(make_config(tiny_llama, toy_data, tmp_path / "out", "adalora", "train.max_steps=-1", "train.epochs=2"))
    saved = json.loads((tmp_path / "out" / "adapter" / "adapter_config.json").read_text())
    assert saved["total_step"] == 4  # 8 rows / batch 4 = 2 steps per epoch, 2 epochs


def test_bitfit_on_a_model_without_biases_stops_before_training(tiny_llama, toy_data, tmp_path):
    with pytest.raises(PeftlabError, match="bitfit.add_missing_biases=true"):
        run(make_config(tiny_llama, toy_data, tmp_path / "out", "bitfit"))
    assert not (tmp_path / "out" / "log.jsonl").exists() and not (tmp_path / "out" / "adapter").exists()


def test_soft_prompts_refuse_packed_batches(tiny_llama, toy_data, tmp_path):
    with pytest.raises(PeftlabError, match="use train.batching=length"):
        run(make_config(tiny_llama, toy_data, tmp_path / "out", "prompt-tuning", "train.batching=packed"))


def test_methods_command_lists_every_method_with_its_share(tiny_t5, capsys):
    """On the tiny T5 every method applies or says why not in one line naming the setting to change (its defaults are
    sized for real models: a rank or block above the tiny model's 32-wide layers)."""
    from tests.methods import catalog_methods

    assert main(["methods", "--model", tiny_t5]) == 0
    out = capsys.readouterr().out
    blocks = {line.split(" ")[0]: [] for line in out.splitlines() if line and not line.startswith(" ")}
    for line in out.splitlines():
        if line and not line.startswith(" "):
            name = line.split(" ")[0]
        elif f"on {tiny_t5}:" in line:
            blocks[name].append(line.split(f"on {tiny_t5}: ", 1)[1])
    assert set(catalog_methods()) <= set(blocks)
    refused = {}
    for name in catalog_methods():
        [verdict] = blocks[name]  # one line per method
        if not re.fullmatch(r"[\d,]+ of [\d,]+ parameters trainable \([\d.]+%\)", verdict):
            assert verdict.startswith("cannot apply with defaults: "), verdict
            refused[name] = verdict
    assert set(refused) == {"eva", "lora-ga", "miss", "shira", "bitfit"}, refused
    for name, verdict in refused.items():
        assert f"{name}." in verdict, verdict  # names the setting to change (eva.r, lora-ga.r, ...)
    assert "bitfit trains bias terms" in refused["bitfit"]
