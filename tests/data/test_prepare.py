"""Prepared training data: streamed into Arrow with the same tokens as row-by-row tokenizing, cached by content."""

import json

import pytest

from peftlab.config import DataConfig
from peftlab.data import prepare
from peftlab.data.examples import build_examples
from peftlab.data.readers import read_rows
from peftlab.data.tokenize import tokenize
from peftlab.errors import PeftlabError
from peftlab.models import load_tokenizer
from tests.conftest import TOY_ROWS, write_jsonl


@pytest.fixture
def cache(tmp_path, monkeypatch):
    monkeypatch.setenv("PEFTLAB_CACHE", str(tmp_path / "cache"))
    monkeypatch.setattr(prepare, "BATCH_ROWS", 3)  # several batches from a few rows
    return tmp_path / "cache" / "data"


def test_prepared_rows_equal_row_by_row_tokens_and_come_back_from_the_cache(tiny_llama, tmp_path, cache):
    tokenizer = load_tokenizer(tiny_llama)
    data = DataConfig(max_length=24)
    path = write_jsonl(tmp_path / "toy.jsonl", TOY_ROWS * 2)
    want = tokenize(build_examples(read_rows(str(path)), data), tokenizer, 24, False, chat=False)
    first = prepare.prepared_set(str(path), data, tokenizer, False, False)
    assert [dict(row) for row in first.features] == [{**f, "length": len(f["input_ids"])} for f in want.features]
    assert (first.rows, first.truncated, first.format) == (8, want.truncated, "template") and want.truncated > 0
    [arrow] = cache.glob("*.arrow")
    said = []
    again = prepare.prepared_set(str(path), data, tokenizer, False, False, said.append)
    assert "from the cache" in said[0] and [dict(r) for r in again.features] == [dict(r) for r in first.features]
    # another byte in the file, or another setting, is another key
    path.write_text(path.read_text() + json.dumps(TOY_ROWS[0]) + "\n")
    assert prepare.prepared_set(str(path), data, tokenizer, False, False).rows == 9
    prepare.prepared_set(str(path), DataConfig(max_length=32), tokenizer, False, False)
    assert len(list(cache.glob("*.arrow"))) == 3


def test_a_bad_row_leaves_no_cache_file(tiny_llama, tmp_path, cache):
    path = write_jsonl(tmp_path / "bad.jsonl", TOY_ROWS * 2 + [{"dialogue": ["a list"], "summary": "x"}])
    with pytest.raises(PeftlabError, match="bad.jsonl line 9: column 'dialogue' holds a list"):
        prepare.prepared_set(str(path), DataConfig(), load_tokenizer(tiny_llama), False, False)
    assert list(cache.iterdir()) == []
