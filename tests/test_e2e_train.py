"""Real runs on the embedded default model and DialogSum (marked e2e: `pytest -m e2e` runs them alone)."""

import json

import pytest
import torch
from transformers import TrainerCallback

from peftlab import config as cfg

pytestmark = pytest.mark.e2e


def test_length_grouped_batches_are_at_least_95_percent_real_on_dialogsum(dialogsum):
    from peftlab.config import RunConfig
    from peftlab.data.tokenize import uses_chat_template
    from peftlab.models import load_tokenizer, resolve_source
    from peftlab.train.recipe import load_tokenized
    from peftlab.train.trainer import LengthGroupedOrder

    tokenizer = load_tokenizer(resolve_source(None)[1])
    chat = uses_chat_template(tokenizer, "auto", False)
    lengths = [len(f["input_ids"]) for f in load_tokenized(str(dialogsum / "train.jsonl"), RunConfig(), tokenizer, False, chat).features]
    order = list(LengthGroupedOrder(lengths, batch_size=8, seed=42))
    assert sorted(order) == list(range(len(lengths)))
    batches = [[lengths[i] for i in order[k:k + 8]] for k in range(0, len(order), 8)]
    share = sum(map(sum, batches)) / sum(max(b) * len(b) for b in batches)
    assert share >= 0.95


def test_lora_on_the_default_model_trains_and_reloads_in_plain_peft(dialogsum, tmp_path):
    from peft import PeftModel
    from transformers import AutoModelForCausalLM

    from peftlab.models.device import resolve_dtype
    from peftlab.train.recipe import run

    trained, said = [], []

    class Keep(TrainerCallback):
        def on_train_end(self, args, state, control, model=None, **kwargs):
            trained.append(model)

    out = tmp_path / "run"
    config = cfg.load(None, [], {"data.train": str(dialogsum / "train.jsonl"), "data.eval": str(dialogsum / "test.jsonl"),
                                 "data.max_samples": 16, "train.max_steps": 2, "output": str(out)})
    summary = run(config, callbacks=(Keep(),), say=said.append)
    assert any(line.startswith("trainable parameters: 1,843,200 of") for line in said), said
    # --dtype auto: bf16 only where this CPU computes it natively (AVX-512 BF16 / AMX), else fp32
    auto = resolve_dtype("auto")
    assert 0 < summary["eval_loss"] < 10 and summary["steps"] == 2 and summary["dtype"] == auto
    on_disk = json.loads((out / "summary.json").read_text())
    assert on_disk["real_tokens"] == summary["real_tokens"] > 0
    # the adapter loads with peft alone (no peftlab) and gives the logits of the trained model
    reloaded = PeftModel.from_pretrained(AutoModelForCausalLM.from_pretrained(summary["model_path"], dtype=torch.bfloat16 if auto == "bf16" else torch.float32), out / "adapter").eval()
    ids = torch.tensor([[1, 2, 3, 4, 5, 6]])
    with torch.no_grad():
        assert torch.equal(trained[0].eval()(input_ids=ids).logits, reloaded(input_ids=ids).logits)
    assert cfg.load(str(out / "adapter" / "run.yaml")).data.max_samples == 16
