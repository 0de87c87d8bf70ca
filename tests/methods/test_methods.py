"""Every registered method on tiny Llama and T5, as wiring that cannot depend on the CPU's kernels.

For each method, in fp32 with every dropout at 0: it trains exactly the parameters it should
(no more, no fewer), one backward pass reaches every one of them and nothing else, a small step
against the gradient lowers the loss (true of any differentiable loss, so no per-method
threshold), and the saved result reloads to the same logits. A few real convergence runs (LoRA
on each architecture) keep a wide margin.
"""

from __future__ import annotations

import re
import types

import pytest
import torch

from peftlab.errors import PeftlabError
from peftlab.methods import BuildContext, count_parameters, get_method, load_trained, saved_method
from peftlab.methods.lora import save_as_plain_lora
from peftlab.models import load_model
from tests.methods import catalog_methods
from tests.tiny_models import logits, toy_batch, toy_context

QV = r"\.(q_proj|v_proj|q|v)"  # the query/value projections of Llama and T5
ALL_LINEAR = r"\.(q_proj|k_proj|v_proj|o_proj|gate_proj|up_proj|down_proj|q|k|v|o|wi|wo)"  # every linear layer but the head
# the added tokens (trainable-tokens' default) only reach the loss of T5 (the tiny Llama sees its eos last): the first 200 ids
FIRST_200 = ",".join(map(str, range(200)))
TOKEN_ROWS = r"(embed_tokens|shared)\.token_adapter\.trainable_tokens_delta\.default"  # LoRA's trainable_token_indices
ADAPTED_OUTPUTS = {"houlsby": r"\.(self_attn\.o_proj|mlp\.down_proj|SelfAttention\.o|DenseReluDense\.wo)",
                   "pfeiffer": r"\.(mlp\.down_proj|DenseReluDense\.wo)"}

# (method, small settings for tiny models, the parameters it must train: a regex over the built model's
# parameter names, written from the method's definition, not read back from the code). Adding a method
# means adding its row here.
CASES = [
    ("lora", {"r": 4, "dropout": 0}, QV + r"\.lora_[AB]\.default\.weight$"),
    ("dora", {"r": 4, "dropout": 0}, QV + r"\.(lora_[AB]|lora_magnitude_vector)\.default\.weight$"),
    ("rslora", {"r": 4, "dropout": 0}, QV + r"\.lora_[AB]\.default\.weight$"),
    # lora.trainable_tokens: the chosen embedding rows train beside the low-rank matrices (tied heads share them)
    ("lora", {"r": 4, "dropout": 0, "trainable_tokens": FIRST_200}, rf"({QV}\.lora_[AB]\.default\.weight|{TOKEN_ROWS})$"),
    ("dora", {"r": 4, "dropout": 0, "trainable_tokens": FIRST_200},
     rf"({QV}\.(lora_[AB]|lora_magnitude_vector)\.default\.weight|{TOKEN_ROWS})$"),
    ("pissa", {"r": 4}, QV + r"\.lora_[AB]\.default\.weight$"),
    ("olora", {"r": 4, "dropout": 0}, QV + r"\.lora_[AB]\.default\.weight$"),
    ("eva", {"r": 4, "dropout": 0, "init_rows": 4}, QV + r"\.lora_[AB]\.default\.weight$"),
    ("corda", {"r": 4, "init_rows": 4}, QV + r"\.lora_[AB]\.default\.weight$"),
    ("lora-ga", {"r": 4, "dropout": 0, "init_rows": 4}, QV + r"\.lora_[AB]\.default\.weight$"),
    ("loraplus", {"r": 4, "dropout": 0}, QV + r"\.lora_[AB]\.default\.weight$"),
    ("adalora", {"init_r": 6, "target_r": 4, "dropout": 0}, QV + r"\.lora_[ABE]\.default$"),
    ("loha", {"r": 4}, QV + r"\.hada_w[12]_[ab]\.default$"),
    ("lokr", {"r": 4}, QV + r"\.lokr_w[12](_[ab])?\.default$"),
    ("qlora", {"r": 4, "dropout": 0, "gradient_checkpointing": False}, ALL_LINEAR + r"\.lora_[AB]\.default\.weight$"),
    ("loftq", {"r": 4, "dropout": 0, "gradient_checkpointing": False}, ALL_LINEAR + r"\.lora_[AB]\.default\.weight$"),
    ("lora-8bit", {"r": 4, "dropout": 0, "gradient_checkpointing": False}, QV + r"\.lora_[AB]\.default\.weight$"),
    ("ia3", {}, r"\.(k_proj|v_proj|down_proj|k|v|wo)\.ia3_l\.default$"),
    ("oft", {"block_size": 8}, QV + r"\.oft_R\.default\.weight$"),
    ("vera", {"r": 8}, QV + r"\.vera_lambda_[bd]\.default$"),
    ("miss", {"r": 4}, QV + r"\.miss_block\.default$"),
    ("shira", {"r": 2}, QV + r"\.shira_weight\.default$"),
    ("hira", {"r": 4}, QV + r"\.hira_[AB]\.default$"),
    ("lily", {"r": 4}, QV + r"\.lily_(A|B|router)\.default\.weight$"),
    ("fourierft", {"n_frequency": 16}, QV + r"\.fourierft_spectrum\.default$"),
    ("randlora", {"r": 4}, QV + r"\.randlora_(lambda|gamma)\.default$"),
    ("prompt-tuning", {"num_virtual_tokens": 4}, r"^prompt_encoder\.default\.embedding\.weight$"),
    ("prefix-tuning", {"num_virtual_tokens": 4}, r"^prompt_encoder\.default\.embedding\.weight$"),
    ("p-tuning", {"num_virtual_tokens": 4, "encoder_hidden_size": 16},
     r"^prompt_encoder\.default\.(embedding\.weight|mlp_head\.\d+\.(weight|bias))$"),
    ("adapter", {"reduction_factor": 4}, ADAPTED_OUTPUTS["houlsby"] + r"\.bottleneck_adapter\.(down|up)\.(weight|bias)$"),
    ("adapter", {"placement": "pfeiffer", "reduction_factor": 4},
     ADAPTED_OUTPUTS["pfeiffer"] + r"\.bottleneck_adapter\.(down|up)\.(weight|bias)$"),
    ("bitfit", {"add_missing_biases": True}, r"\.bias$"),
    ("ln-tuning", {}, r"(norm|layer_norm)\.ln_tuning_layers\.default\.weight$"),
    ("freeze", {"blocks": 1}, r"^(model\.layers\.1|decoder\.block\.1)\."),  # the last block (the decoder's, for T5)
    ("trainable-tokens", {"tokens": FIRST_200}, r"(embed_tokens|shared)\.trainable_tokens_delta\.default$"),
    ("full", {}, r""),
]
# PiSSA, OLoRA, CorDA and LoRA-GA train on W_res = W - B0 A0 and save a plain LoRA on W (B A - B0 A0): the same
# model up to fp32 rounding, which on the tiny models' large random weights (std 0.3) reaches about 4e-5 in a logit
CASE_IDS = [f"{name}-{settings['placement']}" if "placement" in settings else f"{name}-tokens" if "trainable_tokens" in settings
            else name for name, settings, _ in CASES]


def build(method_name: str, settings: dict, path: str, total_steps: int = 20):
    method = get_method(method_name)
    loaded = load_model(path, "fp32", quantization=method.quantization)
    torch.manual_seed(0)
    model = method.build(loaded.model, method.parse_settings(settings), toy_context(loaded, total_steps))
    return method, loaded, model


def deterministic(model):
    """Eval mode: every dropout off (the methods' modules, and T5's functional attention dropout that no
    module setting reaches), so the loss is a function of the weights alone; gradients still flow."""
    return model.eval()


def move_off_initialisation(model) -> None:
    """Nudge every trainable tensor: LoRA's B, adapters' up-projections and AdaLoRA's E start at zero,
    where the gradient of their partner is exactly zero."""
    generator = torch.Generator().manual_seed(1)
    with torch.no_grad():
        for parameter in model.parameters():
            if parameter.requires_grad:
                parameter.add_(0.05 * torch.randn(parameter.shape, generator=generator).to(parameter.dtype))


def loss_of(model, batch) -> float:
    with torch.no_grad():
        return model(**batch).loss.item()


@pytest.fixture(params=["llama", "t5"])
def method_model(request, tiny_llama, tiny_t5) -> str:
    return tiny_llama if request.param == "llama" else tiny_t5


@pytest.mark.parametrize("method_name, settings, expected", CASES, ids=CASE_IDS)
def test_method_wiring(method_name, settings, expected, method_model, tmp_path):
    method, loaded, model = build(method_name, settings, method_model)
    model = deterministic(model)
    names = [name for name, _ in model.named_parameters()]
    should_train = {name for name in names if re.search(expected, name)}
    trained = {name for name, parameter in model.named_parameters() if parameter.requires_grad}
    assert should_train, f"{method_name}: the expected pattern names no parameter of this model"
    assert trained == should_train, (sorted(trained - should_train)[:5], sorted(should_train - trained)[:5])
    trainable, total = count_parameters(model)
    assert 0 < trainable <= total

    # one backward pass: finite, non-zero gradients on every trained tensor and none on the frozen ones
    move_off_initialisation(model)
    batch = toy_batch(loaded.tokenizer, loaded.is_seq2seq)
    model(**batch).loss.backward()
    parameters = dict(model.named_parameters())
    for name in trained:
        grad = parameters[name].grad
        assert grad is not None and torch.isfinite(grad).all() and grad.abs().sum() > 0, name
    assert all(parameters[name].grad is None for name in set(names) - trained)

    # a small enough step against the gradient lowers the loss: the gradient is the loss's own
    before = loss_of(model, batch)
    gradients = {name: parameters[name].grad.clone() for name in trained}
    norm = torch.sqrt(sum((g.double() ** 2).sum() for g in gradients.values())).item()
    after = {}
    for step in (1e-1, 1e-2, 1e-3, 1e-4):
        with torch.no_grad():
            for name, gradient in gradients.items():
                parameters[name].sub_(step / norm * gradient)
            after[step] = loss_of(model, batch)
            for name, gradient in gradients.items():
                parameters[name].add_(step / norm * gradient)
    assert min(after.values()) < before, (before, after)

    # save -> reload on a fresh base gives the same logits, and they are not the base model's
    method.save(model, tmp_path)
    assert saved_method(tmp_path).load is method.load
    fresh_base = lambda: load_model(method_model, "fp32", quantization=method.quantization).model  # noqa: E731
    reloaded = load_trained(fresh_base(), tmp_path)
    atol = 1e-4 if method.save is save_as_plain_lora else 1e-5
    torch.testing.assert_close(logits(reloaded, batch), logits(model, batch), atol=atol, rtol=1e-4)
    base_logits = logits(fresh_base(), batch)
    trained_logits = logits(model, batch)[:, -base_logits.shape[1]:]  # soft prompts add virtual positions in front
    assert not torch.allclose(base_logits, trained_logits, atol=1e-3)


def test_every_registered_method_has_a_wiring_case():
    assert set(catalog_methods()) == {case[0] for case in CASES}


@pytest.mark.parametrize("arch", ["llama", "t5"])
def test_lora_converges(arch, tiny_llama, tiny_t5):
    """A real run: 120 AdamW steps on four memorisable rows at least halve the loss.

    Measured (mean of the last 5 losses / the first): Llama about 0.02, T5 about 0.35; the CPU kernels move these
    by a few hundredths at most.
    """
    method, loaded, model = build("lora", {"r": 8, "target": "all-linear"}, tiny_llama if arch == "llama" else tiny_t5)
    model.train()
    torch.manual_seed(0)  # after the model is built: the dropout masks start here, whatever building drew
    batch = toy_batch(loaded.tokenizer, loaded.is_seq2seq)
    optimizer = torch.optim.AdamW([p for p in model.parameters() if p.requires_grad], lr=5e-3)
    losses = []
    for _ in range(120):
        loss = model(**batch).loss
        loss.backward()
        optimizer.step()
        optimizer.zero_grad()
        losses.append(loss.item())
    assert sum(losses[-5:]) / 5 < 0.5 * losses[0], losses


def test_adalora_reallocates_ranks_through_its_callback(tiny_llama):
    """AdaLoRA's schedule prunes ranks when the Trainer calls its callback; without the call nothing is pruned."""
    method, loaded, model = build("adalora", {"init_r": 6, "target_r": 2, "warmup_share": 0.0, "final_share": 0.1}, tiny_llama,
                                  total_steps=10)
    batch = toy_batch(loaded.tokenizer, False)
    optimizer = torch.optim.AdamW([p for p in model.parameters() if p.requires_grad], lr=1e-2)
    [callback] = method.callbacks(model)
    for step in range(10):
        model(**batch).loss.backward()
        optimizer.step()
        callback.on_optimizer_step(None, types.SimpleNamespace(global_step=step), None)
        optimizer.zero_grad()
    kept = sum(sum(map(bool, mask)) for mask in model.peft_config["default"].rank_pattern.values())
    assert kept < 6 * len(model.peft_config["default"].rank_pattern)


@pytest.mark.parametrize("method_name", ["ln-tuning", "ia3", "adapter", "loha", "prefix-tuning", "bitfit", "freeze"])
def test_trains_on_a_bf16_base(method_name, tiny_llama):
    method = get_method(method_name)
    loaded = load_model(tiny_llama, "bf16")
    settings = method.parse_settings({"add_missing_biases": True} if method_name == "bitfit" else {"blocks": 1} if method_name == "freeze" else {})
    model = method.build(loaded.model, settings, BuildContext(False, 2))
    trainable = [p for p in model.parameters() if p.requires_grad]
    optimizer = torch.optim.AdamW(trainable, lr=1e-2)
    for _ in range(2):
        loss = model(**toy_batch(loaded.tokenizer, False)).loss
        loss.backward()
        optimizer.step()
        optimizer.zero_grad()
        assert torch.isfinite(loss)
    assert all(p.dtype == torch.float32 for p in trainable)


# --- clear errors before training ----------------------------------------------------------------

def test_bitfit_refuses_a_model_without_biases_and_names_the_fix(tiny_model):
    with pytest.raises(PeftlabError, match="has none.*bitfit.add_missing_biases=true"):
        build("bitfit", {}, tiny_model)


def test_bitfit_trains_only_the_existing_biases(tmp_path):
    from tests.tiny_models import save_tiny_llama

    biased = str(save_tiny_llama(tmp_path / "biased", attention_bias=True, mlp_bias=True))
    method, loaded, model = build("bitfit", {}, biased)
    trained = {name for name, p in model.named_parameters() if p.requires_grad}
    assert trained == {name for name, _ in model.named_parameters() if name.endswith(".bias")} and trained
    move_off_initialisation(model)
    batch = toy_batch(loaded.tokenizer, False)
    method.save(model, tmp_path / "saved")
    reloaded = load_trained(load_model(biased, "fp32").model, tmp_path / "saved")
    torch.testing.assert_close(logits(reloaded, batch), logits(model, batch))


def test_adalora_needs_the_step_count(tiny_llama):
    with pytest.raises(PeftlabError, match="adalora needs the number of training steps"):
        build("adalora", {}, tiny_llama, total_steps=None)


@pytest.mark.parametrize("method_name, settings, message", [
    ("freeze", {"blocks": 5}, "freeze.blocks=5 but the model has 2 blocks"),
    ("freeze", {"blocks": 0, "modules": "nonexistent"}, "freeze.modules names no parameter"),
    ("lora", {"target": "nonexistent"}, "lora.target names no projection"),
    ("lora", {"trainable_tokens": "zzqq"}, "lora.trainable_tokens: 'zzqq' is not one token of this tokenizer"),
    ("dora", {"trainable_tokens": "5,100000"}, "dora.trainable_tokens names no token of this model's"),
    ("ia3", {"target": "q_proj", "feedforward": "down_proj"}, "feedforward must be among ia3.target"),
])
def test_impossible_settings_are_named(method_name, settings, message, tiny_llama):
    with pytest.raises(PeftlabError, match=message):
        build(method_name, settings, tiny_llama)


def test_prefix_initialised_from_text_acts_as_that_text_in_front_of_the_prompt(tiny_llama):
    from transformers import AutoTokenizer

    text = "Summarize the conversation now"
    ids = AutoTokenizer.from_pretrained(tiny_llama)(text, add_special_tokens=False)["input_ids"]
    model = build("prefix-tuning", {"init_text": text, "num_virtual_tokens": len(ids)}, tiny_llama)[2].eval()
    prompt = torch.tensor([[5, 6, 7, 8, 9]])
    with torch.no_grad():
        prefixed = model(input_ids=prompt).logits
        written = model.get_base_model()(input_ids=torch.cat([torch.tensor([ids]), prompt], dim=1)).logits[:, len(ids):]
    assert torch.allclose(prefixed, written, atol=1e-4)
    assert not torch.allclose(prefixed, model.get_base_model()(input_ids=prompt).logits, atol=1e-2)


@pytest.mark.parametrize("settings, message", [
    ({"init_text": "Summarize.", "prefix_projection": "true"}, "use one of the two"),
])
def test_prefix_init_text_refuses_what_it_cannot_do(settings, message, tiny_llama, tiny_t5):
    with pytest.raises(PeftlabError, match=message):
        build("prefix-tuning", settings, tiny_llama)
    with pytest.raises(PeftlabError, match="causal LMs only"):
        build("prefix-tuning", {"init_text": "Summarize."}, tiny_t5)


def test_unknown_setting_is_named():
    with pytest.raises(PeftlabError, match="unknown setting 'prompt-tuning.target'"):
        get_method("prompt-tuning").parse_settings({"target": "qv"})


def test_quantized_methods_refuse_an_unquantized_base(tiny_llama):
    method = get_method("qlora")
    model = load_model(tiny_llama, "fp32").model
    with pytest.raises(PeftlabError, match="qlora needs the base model loaded in 4-bit"):
        method.build(model, method.parse_settings({}), BuildContext(False, 4))


def test_quantized_loading_without_bitsandbytes_names_the_install(tiny_llama, monkeypatch):
    import importlib.util

    real = importlib.util.find_spec
    monkeypatch.setattr(importlib.util, "find_spec", lambda name, *a: None if name == "bitsandbytes" else real(name, *a))
    with pytest.raises(PeftlabError, match="pip install bitsandbytes"):
        load_model(tiny_llama, "fp32", quantization="4bit")


def test_loftq_starts_closer_to_the_unquantized_model_than_qlora(tiny_llama):
    """LoftQ's B A cancels part of W - Q(W): before training, its logits are nearer the fp32 model's than the bare 4-bit base's."""
    method, loaded, model = build("loftq", {"r": 16, "gradient_checkpointing": False}, tiny_llama)
    batch = toy_batch(loaded.tokenizer, False)
    full = logits(load_model(tiny_llama, "fp32").model, batch)
    with model.disable_adapter():
        bare_error = (logits(model, batch) - full).abs().max()
    assert (logits(model, batch) - full).abs().max() < 0.75 * bare_error  # measured: 2.96 against 6.07


def test_loftq_refuses_a_base_without_its_unquantized_weights(tiny_llama, tmp_path):
    import shutil

    copy = tmp_path / "no-safetensors"
    shutil.copytree(tiny_llama, copy)
    loaded = load_model(str(copy), "fp32", quantization="4bit")
    (copy / "model.safetensors").unlink()
    method = get_method("loftq")
    with pytest.raises(PeftlabError, match="loftq reads the unquantized weights .* choose qlora"):
        method.build(loaded.model, method.parse_settings({"r": 4}), BuildContext(False, 4))


def test_4bit_base_is_smaller(tiny_llama):
    fp32 = load_model(tiny_llama, "fp32").model.get_memory_footprint()
    nf4 = load_model(tiny_llama, "fp32", quantization="4bit").model.get_memory_footprint()
    assert nf4 < fp32
