"""`peftlab check`: the adapter on its base and the merged model answer alike and the check passes; an adapter
folder whose chat template was changed fails it, saying which sides differ."""

from __future__ import annotations

import json
import shutil

from peftlab.cli import main
from peftlab.export.parity import Parity
from tests.conftest import TOY_ROWS, write_jsonl


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
