"""`peftlab export --format ollama`: the chat template becomes an Ollama Go template only when its per-role pieces
reproduce the tokenizer's own rendering; the folder holds the GGUF file its Modelfile names."""

from __future__ import annotations

import pytest

from peftlab.cli import main
from peftlab.export.ollama import chat_pieces, modelfile, render_pieces
from tests.tiny_models import tiny_tokenizer

CHATML = ("{% if messages[0]['role'] != 'system' %}<|im_start|>system\nBe helpful.<|im_end|>\n{% endif %}"
          "{% for m in messages %}<|im_start|>{{ m['role'] }}\n{{ m['content'] }}<|im_end|>\n{% endfor %}"
          "{% if add_generation_prompt %}<|im_start|>assistant\n{% endif %}")
LLAMA3 = ("{{ bos_token }}{% for m in messages %}<|start_header_id|>{{ m['role'] }}<|end_header_id|>\n\n{{ m['content'] }}<|eot_id|>"
          "{% endfor %}{% if add_generation_prompt %}<|start_header_id|>assistant<|end_header_id|>\n\n{% endif %}")
SHOUTING = "{% for m in messages %}[{{ m['role'] }}] {{ m['content'] | upper }}\n{% endfor %}"


def tokenizer_with(template: str):
    tokenizer = tiny_tokenizer()
    tokenizer.chat_template = template
    return tokenizer


@pytest.mark.parametrize("template, default_system, begin", [(CHATML, "Be helpful.", ""), (LLAMA3, None, "<s>")])
def test_a_wrapping_template_becomes_pieces_that_render_as_the_tokenizer_does(template, default_system, begin):
    tokenizer = tokenizer_with(template)
    pieces = chat_pieces(tokenizer)
    assert pieces is not None and pieces.default_system == default_system and pieces.begin == begin
    chat = [("user", "What is 2+2?"), ("assistant", "4"), ("user", "And 3+3?")]
    expected = tokenizer.apply_chat_template([{"role": r, "content": c} for r, c in chat], tokenize=False, add_generation_prompt=True)
    assert render_pieces(pieces, chat, True) == expected
    text, templated = modelfile(tokenizer, "./model.gguf")
    assert templated and 'TEMPLATE """' in text and "{{ .Content }}" in text and "{{-" not in text
    assert (f'SYSTEM "{default_system}"' in text) == (default_system is not None)


def test_a_template_with_logic_gets_no_template_line():
    tokenizer = tokenizer_with(SHOUTING)
    assert chat_pieces(tokenizer) is None
    text, templated = modelfile(tokenizer, "./model.gguf")
    assert not templated and "TEMPLATE" not in text and 'PARAMETER stop "</s>"' in text


def test_the_folder_holds_the_file_its_modelfile_names(adapter, tmp_path):
    out = tmp_path / "ollama"
    assert main(["export", adapter, "--format", "ollama", "--output", str(out)]) == 0
    lines = (out / "Modelfile").read_text().splitlines()
    assert lines[0] == "FROM ./model-q8_0.gguf" and (out / "model-q8_0.gguf").stat().st_size > 0
    assert sorted(p.name for p in out.iterdir()) == ["Modelfile", "model-q8_0.gguf"]


def test_an_adapter_of_a_gguf_base_gets_a_modelfile_on_that_file_with_its_lora_file(tiny_llama, tmp_path, monkeypatch):
    from peftlab.export.gguf import write_gguf
    from peftlab.models import load_model
    from tests.conftest import TOY_ROWS, write_jsonl
    from tests.tiny_models import train_tiny

    base = load_model(tiny_llama, "fp32")
    write_gguf(base.model, base.tokenizer, tmp_path / "tiny.gguf", "f32", "tiny", None)
    monkeypatch.setenv("PEFTLAB_CACHE", str(tmp_path / "cache"))
    train_tiny(str(tmp_path / "tiny.gguf"), write_jsonl(tmp_path / "toy.jsonl", TOY_ROWS), tmp_path / "run", "train.max_steps=1")
    out = tmp_path / "ollama"
    assert main(["export", str(tmp_path / "run"), "--format", "ollama-lora", "--output", str(out)]) == 0
    lines = (out / "Modelfile").read_text().splitlines()
    assert lines[:2] == [f"FROM {(tmp_path / 'tiny.gguf').resolve()}", "ADAPTER ./adapter-lora.gguf"]
    assert sorted(p.name for p in out.iterdir()) == ["Modelfile", "adapter-lora.gguf"]
