"""`peftlab generate` from the terminal, and `peftlab serve` refusing what it cannot serve, in one line."""

from __future__ import annotations

import json

from peftlab.cli import main
from tests.conftest import TOY_ROWS, write_jsonl


def test_generate_a_file_equals_one_prompt_at_a_time(lora_a, tmp_path, capsys):
    data = write_jsonl(tmp_path / "rows.jsonl", [{"dialogue": row["dialogue"]} for row in TOY_ROWS])
    assert main(["generate", "--adapter", lora_a, "--data", str(data), "--output", str(tmp_path / "out.jsonl"),
                 "--max-new-tokens", "8", "--batch-size", "4"]) == 0
    records = [json.loads(line) for line in (tmp_path / "out.jsonl").read_text().splitlines()]
    assert [r["where"] for r in records] == [f"rows.jsonl line {i}" for i in range(1, 5)]
    assert records[0]["input"].startswith("Summarize the following conversation.")  # the adapter's training template
    capsys.readouterr()
    assert main(["generate", "--adapter", lora_a, TOY_ROWS[1]["dialogue"], "--max-new-tokens", "8"]) == 0
    assert capsys.readouterr().out.strip() == records[1]["output"]


def test_generate_needs_a_prompt_or_data(tiny_llama, capsys):
    assert main(["generate", "--model", tiny_llama]) == 2
    assert "give either a PROMPT or --data" in capsys.readouterr().err


def test_serve_refuses_an_adapter_of_another_base_in_one_line(lora_a, tiny_t5, capsys):
    assert main(["serve", "--model", tiny_t5, "--adapter", f"a={lora_a}", "--port", "0"]) == 2
    error = capsys.readouterr().err.strip()
    assert "was trained on" in error and tiny_t5 in error and len(error.splitlines()) == 1


def test_serve_refuses_a_malformed_adapter_flag(capsys):
    assert main(["serve", "--adapter", "no-name"]) == 2
    assert "is not NAME=DIR" in capsys.readouterr().err
