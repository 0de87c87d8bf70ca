"""`peftlab check ADAPTER --lora DIR --gguf-lora FILE`: the adapter a LoRA was converted from is the reference, and the
converted LoRA folder (torch) and its llama.cpp LoRA file (llama.cpp, on the base's GGUF file) are checked against it,
answers and logits; a runtime that answers otherwise fails the check."""

from __future__ import annotations

import re
import shlex

import pytest

from peftlab.cli import main
from tests.conftest import TOY_ROWS, write_jsonl
from tests.serve.conftest import train_adapter

AGREEMENT = re.compile(r"^(?P<runtime>.+?): (?P<share>\d+)% of answers identical to the adapter's \((?P<same>\d+)/(?P<total>\d+)\); "
                       r"logits at the adapter's (?P<choices>\d+) token choices: relative difference (?P<difference>\S+), "
                       r"same top token (?P<top>[\d.]+)%$", re.MULTILINE)


def agreements(printed: str) -> dict[str, dict[str, str]]:
    return {match["runtime"]: match.groupdict() for match in AGREEMENT.finditer(printed)}


@pytest.fixture(scope="module")
def loha(tiny_llama, tmp_path_factory):
    """A LoHa adapter of the tiny Llama, converted to LoRA at full rank (all the energy) and cut to rank 1."""
    folder = tmp_path_factory.mktemp("check-loha")
    adapter = train_adapter(tiny_llama, folder, "method=loha", "loha.r=4")
    assert main(["export", adapter, "--format", "lora", "--rank", "1.0", "--output", str(folder / "full")]) == 0
    assert main(["export", adapter, "--format", "lora", "--rank", "1", "--output", str(folder / "cut")]) == 0
    return adapter, folder


def printed_command(printed: str) -> list[str]:
    """The `peftlab check ...` command line an export printed, as argv for main()."""
    line = next(line for line in printed.splitlines() if "peftlab check " in line)
    return shlex.split(line[line.index("peftlab check "):].split("; ")[0])[1:]


def test_a_converted_loha_is_checked_against_the_loha_it_came_from(loha, tmp_path, capsys):
    adapter, folder = loha
    data = write_jsonl(tmp_path / "rows.jsonl", TOY_ROWS)
    assert main(["export", adapter, "--format", "lora", "--rank", "1.0", "--output", str(tmp_path / "full")]) == 0
    command = printed_command(capsys.readouterr().out)  # the check the export names, run as printed
    assert command[:3] == ["check", adapter, "--data"] and command[-2:] == ["--lora", str(tmp_path / "full")]
    assert main([*command, "--max-new-tokens", "6"]) == 0
    assert "LoRA full: 100% of answers identical to the adapter's" in capsys.readouterr().out

    assert main(["check", adapter, "--data", str(data), "--max-new-tokens", "6", "--lora", str(folder / "full")]) == 0
    full = agreements(capsys.readouterr().out)
    assert full["LoRA full"]["same"] == full["LoRA full"]["total"] == str(len(TOY_ROWS))
    assert float(full["LoRA full"]["difference"]) < 1e-4 and full["LoRA full"]["top"] == "100.00"
    assert float(full["merged"]["difference"]) < 1e-4  # the merged LoHa, beside it, as before

    # the rank-1 cut is what runs under --lora: its logits are measurably further from the LoHa's
    main(["check", adapter, "--data", str(data), "--max-new-tokens", "6", "--lora", str(folder / "cut"), "--min-agreement", "0"])
    cut = agreements(capsys.readouterr().out)["LoRA cut"]
    assert float(cut["difference"]) > 10 * float(full["LoRA full"]["difference"])
    assert int(cut["choices"]) == int(full["LoRA full"]["choices"])  # the same adapter answers, the same choices compared


@pytest.fixture(scope="module")
def base_gguf(tiny_llama, tmp_path_factory):
    """The tiny base as an f32 GGUF file, as llama.cpp's converter would write it."""
    from peftlab.export.gguf import write_gguf
    from peftlab.models import load_model

    path = tmp_path_factory.mktemp("check-base") / "base.gguf"
    base = load_model(tiny_llama, "fp32")
    write_gguf(base.model, base.tokenizer, path, "f32", "base", None)
    return path


def test_the_llama_cpp_lora_file_of_the_converted_loha_runs_on_the_base_file_as_the_loha_answers(loha, base_gguf, adapter, tmp_path, capsys):
    pytest.importorskip("llama_cpp", reason="llama-cpp-python is not installed: pip install -c constraints.txt -e '.[test]' builds it")
    loha_adapter, folder = loha
    assert main(["export", str(folder / "full"), "--format", "gguf-lora", "--output", str(tmp_path / "loha-lora.gguf")]) == 0
    # the check it names: the LoHa it was converted from, the LoRA folder and the file (the tiny base has no GGUF file)
    assert printed_command(capsys.readouterr().out) == ["check", loha_adapter, "--data", str(folder / "toy.jsonl"),
                                                         "--lora", str(folder / "full"), "--gguf-lora", str(tmp_path / "loha-lora.gguf"),
                                                         "--base-gguf", "BASE.gguf"]
    assert main(["export", adapter, "--format", "gguf-lora", "--output", str(tmp_path / "other-lora.gguf")]) == 0
    data = write_jsonl(tmp_path / "rows.jsonl", TOY_ROWS)
    capsys.readouterr()
    check = ["check", loha_adapter, "--data", str(data), "--max-new-tokens", "6", "--base-gguf", str(base_gguf)]
    assert main([*check, "--lora", str(folder / "full"), "--gguf-lora", str(tmp_path / "loha-lora.gguf"), "--min-agreement", "0"]) == 0
    ours = agreements(capsys.readouterr().out)["llama.cpp base.gguf + loha-lora.gguf"]
    # llama.cpp keeps its attention cache in f16 by default: 2.3e-3 here (2.1e-6 with an f32 cache), far below a wrong file's
    assert float(ours["difference"]) < 1e-2 and float(ours["top"]) >= 90

    # another adapter's LoRA file on the same base answers otherwise: the check fails and names it
    assert main([*check, "--gguf-lora", str(tmp_path / "other-lora.gguf"), "--min-agreement", "1"]) == 1
    printed = capsys.readouterr().out
    assert "check failed: llama.cpp base.gguf + other-lora.gguf:" in printed
    assert float(agreements(printed)["llama.cpp base.gguf + other-lora.gguf"]["difference"]) > 10 * float(ours["difference"])
