"""llama.cpp itself (llama-cpp-python, a runtime we did not write) loads the exported files and answers as peftlab's
merged model: the merged GGUF file, and the base's GGUF file with the llama.cpp LoRA file applied."""

from __future__ import annotations

import pytest

from peftlab.cli import main
from tests.conftest import TOY_ROWS

llama_cpp = pytest.importorskip("llama_cpp", reason="llama-cpp-python is not installed: pip install -c constraints.txt -e '.[test]' builds it")


@pytest.fixture(scope="module")
def exported(adapter, tiny_llama, tmp_path_factory):
    """The tiny adapter merged as an f32 GGUF file, the tiny base as one, and the adapter as a LoRA file."""
    from peftlab.export.gguf import write_gguf
    from peftlab.models import load_model

    folder = tmp_path_factory.mktemp("llama-cpp")
    assert main(["export", adapter, "--type", "f32", "--output", str(folder / "merged.gguf")]) == 0
    assert main(["export", adapter, "--format", "gguf-lora", "--output", str(folder / "lora.gguf")]) == 0
    base = load_model(tiny_llama, "fp32")
    write_gguf(base.model, base.tokenizer, folder / "base.gguf", "f32", "base", None)
    return folder


def prompts_and_reference(adapter, tiny_llama):
    from peftlab.export.merge import merged_model
    from peftlab.export.parity import until_end
    from peftlab.generation import GenerationSettings, eos_ids, generate_ids

    merged, loaded, _ = merged_model(adapter, tiny_llama, "fp32")
    prompts = [loaded.tokenizer(row["dialogue"])["input_ids"] for row in TOY_ROWS]
    answers = generate_ids(merged, loaded.tokenizer, prompts, False, GenerationSettings(8, 1, 8))
    return loaded.tokenizer, prompts, [until_end(a, eos_ids(merged, loaded.tokenizer)) for a in answers]


def test_llama_cpp_answers_as_the_merged_model_from_the_exported_file(adapter, tiny_llama, exported):
    from peftlab.export.llama_cpp_runtime import llama_cpp_answers

    _, prompts, reference = prompts_and_reference(adapter, tiny_llama)
    assert llama_cpp_answers(str(exported / "merged.gguf"), prompts, 8) == reference


def test_llama_cpp_applies_the_lora_file_to_the_base_file_as_the_merge_does(adapter, tiny_llama, exported):
    from peftlab.export.llama_cpp_runtime import llama_cpp_answers

    _, prompts, reference = prompts_and_reference(adapter, tiny_llama)
    with_lora = llama_cpp_answers(str(exported / "base.gguf"), prompts, 8, lora=str(exported / "lora.gguf"))
    base_alone = llama_cpp_answers(str(exported / "base.gguf"), prompts, 8)
    assert with_lora == reference and base_alone != reference  # the LoRA file is what makes the difference


def test_llama_cpp_tokenizes_as_transformers_does(adapter, tiny_llama, exported):
    tokenizer, _, _ = prompts_and_reference(adapter, tiny_llama)
    llm = llama_cpp.Llama(model_path=str(exported / "merged.gguf"), vocab_only=True, verbose=False)
    for row in TOY_ROWS:
        text = row["dialogue"] + " " + row["summary"]
        assert llm.tokenize(text.encode(), add_bos=False, special=True) == tokenizer(text, add_special_tokens=False)["input_ids"]
