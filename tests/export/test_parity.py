"""`peftlab check`: the adapter on its base and the merged model answer alike and the check passes; an adapter
folder whose chat template was changed fails it, saying which sides differ."""

from __future__ import annotations

import json
import shutil

import pytest

from peftlab.cli import main
from peftlab.export.parity import Parity
from tests.conftest import TOY_ROWS, write_jsonl

KEY = "check-key"


def test_the_merged_model_answers_as_the_adapter_and_the_check_passes(adapter, tmp_path, capsys):
    data = write_jsonl(tmp_path / "rows.jsonl", TOY_ROWS)
    assert main(["check", adapter, "--data", str(data), "--max-new-tokens", "6"]) == 0
    printed = capsys.readouterr().out
    assert "merged: 100% of answers identical to the adapter's" in printed and "check passed" in printed
    assert sum(line.rstrip().endswith("same") for line in printed.splitlines()) == len(TOY_ROWS)


def test_a_changed_chat_template_in_the_adapter_folder_fails_the_check(adapter, tmp_path, capsys):
    changed = shutil.copytree(adapter, tmp_path / "adapter")
    settings = json.loads((changed / "tokenizer_config.json").read_text())
    settings["chat_template"] = "{% for m in messages %}<<{{ m['content'] }}>>{% endfor %}"
    (changed / "tokenizer_config.json").write_text(json.dumps(settings))
    data = write_jsonl(tmp_path / "rows.jsonl", TOY_ROWS[:2])
    assert main(["check", str(changed), "--data", str(data), "--max-new-tokens", "4"]) == 1
    printed = capsys.readouterr().out
    assert "check failed: the chat template differs between the base tokenizer and the adapter folder" in printed


def test_the_first_difference_is_where_the_answers_part():
    parity = Parity(["a", "b", "c"], {"adapter": [[1, 2, 3], [1, 2], [5]], "merged": [[1, 2, 3], [1, 2, 9], [6]]}, {})
    assert [parity.first_difference("merged", i) for i in range(3)] == [None, 2, 0]
    assert parity.agreement("merged") == 1 / 3


@pytest.fixture(scope="module")
def server(tiny_llama, adapter):
    """A real `peftlab serve` engine on loopback: the base 'tiny' and the adapter as 'mine'."""
    from peftlab.serve.http import start, stop
    from peftlab.serve.launch import load_engine
    from peftlab.serve.limits import Limits

    running = start(load_engine(tiny_llama, [("mine", adapter)], "fp32", "tiny"), "127.0.0.1", 0, KEY, Limits())
    yield f"http://127.0.0.1:{running.port}"
    stop(running)


def test_the_running_server_answers_as_the_adapter(adapter, server, tmp_path, capsys, monkeypatch):
    monkeypatch.setenv("PEFTLAB_API_KEY", KEY)
    data = write_jsonl(tmp_path / "rows.jsonl", TOY_ROWS)
    assert main(["check", adapter, "--data", str(data), "--max-new-tokens", "6", "--server", server]) == 0  # 'mine': the one adapter
    printed = capsys.readouterr().out
    assert "server mine: 100% of answers identical to the adapter's" in printed and "check passed" in printed


def test_a_server_answering_with_another_model_fails_the_check(adapter, server, tmp_path, capsys, monkeypatch):
    monkeypatch.setenv("PEFTLAB_API_KEY", KEY)
    data = write_jsonl(tmp_path / "rows.jsonl", TOY_ROWS)
    # the base alone answers otherwise than its adapter on these prompts (else this test could not fail)
    assert main(["check", adapter, "--data", str(data), "--max-new-tokens", "6", "--server", server, "--server-model", "tiny",
                 "--min-agreement", "1"]) == 1
    printed = capsys.readouterr().out
    assert "check failed: server tiny:" in printed and "first difference at token" in printed


def test_server_mistakes_are_one_line(adapter, server, tmp_path, capsys, monkeypatch):
    data = write_jsonl(tmp_path / "rows.jsonl", TOY_ROWS[:1])
    monkeypatch.delenv("PEFTLAB_API_KEY", raising=False)
    assert main(["check", adapter, "--data", str(data), "--server", server]) == 2
    error = capsys.readouterr().err
    assert "/v1/models answered 401" in error and "set $PEFTLAB_API_KEY" in error and len(error.strip().splitlines()) == 1
    monkeypatch.setenv("PEFTLAB_API_KEY", KEY)
    assert main(["check", adapter, "--data", str(data), "--server", server, "--server-model", "nobody"]) == 2
    assert "--server-model nobody: the server serves tiny, mine" in capsys.readouterr().err
    assert main(["check", adapter, "--data", str(data), "--server", "http://127.0.0.1:9"]) == 2
    assert "cannot reach http://127.0.0.1:9/v1/models" in capsys.readouterr().err


def test_a_seq2seq_adapter_is_checked_against_its_merged_model(tiny_t5, tmp_path, capsys):
    """T5: the adapter and the merged model answer alike; --gguf is refused in one line (no T5 GGUF export)."""
    from tests.serve.conftest import train_adapter

    (tmp_path / "t5").mkdir()
    adapter = train_adapter(tiny_t5, tmp_path / "t5")
    data = write_jsonl(tmp_path / "rows.jsonl", TOY_ROWS)
    assert main(["check", adapter, "--data", str(data), "--max-new-tokens", "6"]) == 0
    printed = capsys.readouterr().out
    assert "merged: 100% of answers identical to the adapter's" in printed and "check passed" in printed
    assert main(["check", adapter, "--data", str(data), "--gguf", str(tmp_path / "t5.gguf")]) == 2
    assert "encoder-decoder" in capsys.readouterr().err
