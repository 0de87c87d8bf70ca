"""Tiny random models of every family (Llama, T5, Mistral, Qwen, Gemma, Phi-3, GPT-2, GPT-NeoX, OPT) with a small
byte-level BPE tokenizer, saved as local folders."""

from __future__ import annotations

from pathlib import Path

CORPUS = [
    "#Person1#: Hello, how are you today? #Person2#: I am fine, thank you. And you?",
    "Summarize the following conversation. Summary: Person1 and Person2 talk about the weather.",
    "The quick brown fox jumps over the lazy dog. 0123456789 !?.,:;'\"()[]{}<>-_/\\@#$%^&*+=~`|",
    "#Person1#: Can I book a table for two at seven? #Person2#: Sure, under what name?",
]


def tiny_tokenizer(eos: str = "</s>", pad: str = "<pad>", bos: str | None = "<s>"):
    from tokenizers import Tokenizer, decoders, models, pre_tokenizers, trainers
    from transformers import PreTrainedTokenizerFast

    specials = [pad, eos, "<unk>"] + ([bos] if bos else [])
    tokenizer = Tokenizer(models.BPE(unk_token="<unk>"))
    tokenizer.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
    tokenizer.decoder = decoders.ByteLevel()
    trainer = trainers.BpeTrainer(vocab_size=400, special_tokens=specials, initial_alphabet=pre_tokenizers.ByteLevel.alphabet())
    tokenizer.train_from_iterator(CORPUS * 4, trainer=trainer)
    kwargs = {"bos_token": bos} if bos else {}
    return PreTrainedTokenizerFast(tokenizer_object=tokenizer, eos_token=eos, pad_token=pad, unk_token="<unk>", **kwargs)


def save_tiny_llama(folder: Path, seed: int = 0, **config: object) -> Path:
    """A 2-layer Llama with random weights; `config` overrides LlamaConfig fields (hidden_size, attention_bias, ...)."""
    import torch
    from transformers import LlamaConfig, LlamaForCausalLM

    tokenizer = tiny_tokenizer()
    torch.manual_seed(seed)
    settings = dict(
        vocab_size=len(tokenizer), hidden_size=32, intermediate_size=64, num_hidden_layers=2,
        num_attention_heads=4, num_key_value_heads=2, max_position_embeddings=512, initializer_range=0.3,
        bos_token_id=tokenizer.bos_token_id, eos_token_id=tokenizer.eos_token_id, pad_token_id=tokenizer.pad_token_id,
    )
    LlamaForCausalLM(LlamaConfig(**{**settings, **config})).save_pretrained(folder)
    tokenizer.save_pretrained(folder)
    return folder


# transformers model_type -> its config fields for a 2-layer model of hidden size 64 (4 heads of 16; sizes whose
# rows fill whole quantization blocks, so llama.cpp takes them); the family's own defaults otherwise
FAMILY_CONFIGS = {
    "llama": {"num_key_value_heads": 2},
    "mistral": {"num_key_value_heads": 2, "sliding_window": None},  # llama.cpp runs Mistral without a window
    "qwen2": {"num_key_value_heads": 2},
    "qwen3": {"num_key_value_heads": 2, "head_dim": 16},
    # Gemma 2 and 3 with a window of 8 tokens, so test prompts reach past it; Gemma 3 with one sliding and one full
    # layer, as its checkpoints mix them; query_pre_attn_scalar = head_dim, the scale llama.cpp uses at these sizes
    "gemma2": {"num_key_value_heads": 2, "head_dim": 16, "query_pre_attn_scalar": 16, "sliding_window": 8},
    "gemma3_text": {"num_key_value_heads": 2, "head_dim": 16, "query_pre_attn_scalar": 16, "sliding_window": 8,
                    "layer_types": ["sliding_attention", "full_attention"]},
    "phi3": {"num_key_value_heads": 2, "original_max_position_embeddings": 512},
    "gpt2": {"n_embd": 64, "n_layer": 2, "n_head": 4, "n_positions": 512},
    "gpt_neox": {},
    "opt": {"ffn_dim": 128, "word_embed_proj_dim": 64},
}


def save_tiny_family(model_type: str, folder: Path, seed: int = 0, **config: object) -> Path:
    """A 2-layer causal LM of `model_type` (a FAMILY_CONFIGS key) with random weights; `config` overrides fields."""
    import torch
    from transformers import AutoConfig, AutoModelForCausalLM

    tokenizer = tiny_tokenizer()
    torch.manual_seed(seed)
    settings = dict(
        vocab_size=len(tokenizer), hidden_size=64, intermediate_size=128, num_hidden_layers=2, num_attention_heads=4,
        max_position_embeddings=512, initializer_range=0.3, bos_token_id=tokenizer.bos_token_id,
        eos_token_id=tokenizer.eos_token_id, pad_token_id=tokenizer.pad_token_id, tie_word_embeddings=model_type != "gpt_neox",
    )
    if model_type in ("gpt2", "opt"):
        del settings["intermediate_size"]  # they size the MLP by their own fields (n_inner, ffn_dim)
    family_config = AutoConfig.for_model(model_type, **{**settings, **FAMILY_CONFIGS[model_type], **config})
    model = AutoModelForCausalLM.from_config(family_config)
    with torch.no_grad():  # norm weights around 2, not all equal: a norm stored wrongly shows, and Gemma's scaled
        for name, parameter in model.named_parameters():  # embedding does not drown every layer's output
            if name.endswith(("norm.weight", "ln_1.weight", "ln_2.weight", "ln_f.weight")):
                parameter.normal_(2.0, 0.5)
    model.save_pretrained(folder)
    tokenizer.save_pretrained(folder)
    return folder


def save_tiny_t5(folder: Path, seed: int = 0, **config: object) -> Path:
    """A 2-layer T5 with random weights; `config` overrides T5Config fields (initializer_factor, ...)."""
    import torch
    from transformers import T5Config, T5ForConditionalGeneration

    tokenizer = tiny_tokenizer(bos=None)
    torch.manual_seed(seed)
    settings = dict(
        vocab_size=len(tokenizer), d_model=32, d_kv=8, d_ff=64, num_layers=2, num_decoder_layers=2, num_heads=4,
        eos_token_id=tokenizer.eos_token_id, pad_token_id=tokenizer.pad_token_id,
        decoder_start_token_id=tokenizer.pad_token_id,
    )
    T5ForConditionalGeneration(T5Config(**{**settings, **config})).save_pretrained(folder)
    tokenizer.save_pretrained(folder)
    return folder


def tiny_run_config(model: str | None, data: str | Path, out: str | Path, *settings: str):
    """A `peftlab train` run for tests: fp32, LoRA r=4, 2 rows a batch, 3 steps; `settings` (key=value) override.

    model=None trains the embedded default model.
    """
    from peftlab import config as cfg

    return cfg.load(None, [*([f"model.name={model}"] if model else []), "model.dtype=fp32", f"data.train={data}",
                           f"output={out}", "train.batch_size=2", "train.max_steps=3", "lora.r=4", *settings])


def train_tiny(model: str | None, data: str | Path, out: str | Path, *settings: str) -> dict:
    """Train a tiny run (see tiny_run_config) and return its summary."""
    from peftlab.train.recipe import run

    return run(tiny_run_config(model, data, out, *settings))


def toy_batch(tokenizer, is_seq2seq: bool) -> dict:
    """The toy rows as one batch, loss on the summaries only."""
    import torch

    from tests.conftest import TOY_ROWS

    prompts = [row["dialogue"] + " Summary:" for row in TOY_ROWS]
    answers = [" " + row["summary"] for row in TOY_ROWS]
    if is_seq2seq:
        batch = tokenizer(prompts, padding=True, return_tensors="pt")
        labels = tokenizer(answers, padding=True, return_tensors="pt")["input_ids"]
        labels[labels == tokenizer.pad_token_id] = -100
        return {**batch, "labels": labels}
    rows = [(tokenizer(p)["input_ids"], tokenizer(a, add_special_tokens=False)["input_ids"] + [tokenizer.eos_token_id])
            for p, a in zip(prompts, answers)]
    width = max(len(p) + len(a) for p, a in rows)
    pad = [width - len(p) - len(a) for p, a in rows]
    input_ids = [p + a + [tokenizer.pad_token_id] * n for (p, a), n in zip(rows, pad)]
    labels = [[-100] * len(p) + a + [-100] * n for (p, a), n in zip(rows, pad)]
    mask = [[1] * (len(p) + len(a)) + [0] * n for (p, a), n in zip(rows, pad)]
    return {"input_ids": torch.tensor(input_ids), "attention_mask": torch.tensor(mask), "labels": torch.tensor(labels)}


def toy_context(loaded, total_steps: int = 20):
    """What `peftlab train` tells a method when building, with the toy rows as the training data."""
    from peftlab.methods import BuildContext

    return BuildContext(loaded.is_seq2seq, total_steps, training_batches=lambda rows: iter([toy_batch(loaded.tokenizer, loaded.is_seq2seq)]),
                        tokenizer=loaded.tokenizer)


def logits(model, batch):
    """The model's logits for a toy batch in eval mode (T5 gets four decoder positions)."""
    import torch

    model.eval()
    inputs = {k: v for k, v in batch.items() if k != "labels"}
    if "decoder_input_ids" not in inputs and model.config.is_encoder_decoder:
        inputs["decoder_input_ids"] = torch.zeros_like(batch["labels"][:, :4])
    with torch.no_grad():
        return model(**inputs).logits


# Sliding windows of 8 tokens for the families that have one, so a test prompt reaches past it (FAMILY_CONFIGS keeps
# Mistral's off for llama.cpp): Qwen2 slides from layer 1 on (max_window_layers), so its two layers mix full and sliding
WINDOWED_CONFIGS = {
    "mistral": {"sliding_window": 8},
    "qwen2": {"use_sliding_window": True, "sliding_window": 8, "max_window_layers": 1},
    "phi3": {"sliding_window": 8},
}
FAMILIES = [*FAMILY_CONFIGS, "t5"]  # every family the tests cover; t5 is the one encoder-decoder


def save_tiny_any(family: str, folder: Path, windowed: bool = True) -> Path:
    """A tiny random model of any family in FAMILIES; `windowed` gives the families that can have one a window of 8."""
    if family == "t5":
        return save_tiny_t5(folder)
    return save_tiny_family(family, folder, **(WINDOWED_CONFIGS.get(family, {}) if windowed else {}))
