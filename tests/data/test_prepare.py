"""Prepared training data: streamed into Arrow with the same tokens as row-by-row tokenizing, cached by content."""

import json

import pytest

from peftlab.config import DataConfig
from peftlab.data import prepare
from peftlab.data.chat import IGNORE
from peftlab.data.examples import Example, build_examples
from peftlab.data.readers import read_rows
from peftlab.data.tokenize import chat_wrap, prompt_ids, response_ids, tokenize
from peftlab.errors import PeftlabError
from peftlab.models import load_tokenizer
from tests.conftest import TOY_ROWS, write_jsonl
from tests.data.chat_templates import TEMPLATES, chat_tokenizer


@pytest.fixture
def cache(tmp_path, monkeypatch):
    monkeypatch.setenv("PEFTLAB_CACHE", str(tmp_path / "cache"))
    monkeypatch.setattr(prepare, "BATCH_ROWS", 3)  # several batches from a few rows
    return tmp_path / "cache" / "data"


def prepared_as_row_by_row(model: str, tmp_path, is_seq2seq: bool):
    """The toy rows prepared into the Arrow set, checked equal to tokenizing them one by one; returns both."""
    tokenizer = load_tokenizer(model)
    data = DataConfig(max_length=24)
    path = write_jsonl(tmp_path / "toy.jsonl", TOY_ROWS * 2)
    want = tokenize(build_examples(read_rows(str(path)), data), tokenizer, 24, is_seq2seq, chat=False)
    prepared = prepare.prepared_set(str(path), data, tokenizer, is_seq2seq, False)
    assert [dict(row) for row in prepared.features] == [{**f, "length": len(f["input_ids"])} for f in want.features]
    return prepared, want, path, data, tokenizer


def test_prepared_rows_equal_row_by_row_tokens_and_come_back_from_the_cache(tiny_llama, tmp_path, cache):
    first, want, path, data, tokenizer = prepared_as_row_by_row(tiny_llama, tmp_path, False)
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


def test_an_unchanged_file_is_not_read_again_for_its_key_and_a_same_size_rewrite_is(tiny_llama, tmp_path, cache, monkeypatch):
    """The second run reads the data file's hash from the cache instead of the file (a 900 MB file cost seconds); a
    rewrite of the same size with its old mtime put back still changes the key (its ctime moved)."""
    import os

    from peftlab.models import gguf_cache

    tokenizer = load_tokenizer(tiny_llama)
    path = write_jsonl(tmp_path / "toy.jsonl", TOY_ROWS)
    first = prepare.cache_key(str(path), DataConfig(), tokenizer, False, False)
    opened = []
    monkeypatch.setattr(gguf_cache, "open", lambda *args, **kwargs: opened.append(args) or open(*args, **kwargs), raising=False)
    assert prepare.cache_key(str(path), DataConfig(), tokenizer, False, False) == first and opened == []
    before = path.stat()
    text = path.read_text()
    path.write_text(text.replace("greet", "GREET"))  # other bytes, the same size
    assert path.stat().st_size == before.st_size
    os.utime(path, ns=(before.st_atime_ns, before.st_mtime_ns))  # as `touch -r` or `cp -p` would leave it
    assert path.stat().st_mtime_ns == before.st_mtime_ns
    assert prepare.cache_key(str(path), DataConfig(), tokenizer, False, False) != first and opened


def test_a_bad_row_leaves_no_cache_file(tiny_llama, tmp_path, cache):
    path = write_jsonl(tmp_path / "bad.jsonl", TOY_ROWS * 2 + [{"dialogue": ["a list"], "summary": "x"}])
    with pytest.raises(PeftlabError, match="bad.jsonl line 9: column 'dialogue' holds a list"):
        prepare.prepared_set(str(path), DataConfig(), load_tokenizer(tiny_llama), False, False)
    assert list(cache.iterdir()) == []


TRIMMING = {"llama3", "gemma"}  # their templates trim the content: the text around it is not one constant wrap


@pytest.mark.parametrize("name", list(TEMPLATES))
def test_batched_prompt_completion_rows_equal_each_row_tokenized_alone(name):
    template, specials, _, _ = TEMPLATES[name]
    tokenizer = chat_tokenizer(template, specials)
    prompts = ["Summarize: #Person1#: Hi.", "  a prompt with spaces around it\n", "braces {x}, <tags> and\n\nbreaks", "x"]
    examples = [Example(prompt, f"answer {i}", f"rows.jsonl line {i + 1}") for i, prompt in enumerate(prompts)]
    batched = tokenize(examples, tokenizer, 4096, False, chat=True).features
    alone = [(prompt_ids(tokenizer, e.prompt, True), response_ids(tokenizer, e.response)) for e in examples]
    assert [f["input_ids"] for f in batched] == [prompt + answer for prompt, answer in alone]
    assert [f["labels"] for f in batched] == [[IGNORE] * len(prompt) + answer for prompt, answer in alone]
    assert (chat_wrap(tokenizer) is None) == (name in TRIMMING)  # the per-row fallback is what the trimming ones took


def test_rows_cut_to_their_prompt_are_dropped_and_counted_in_the_batched_path(tiny_llama):
    tokenizer = load_tokenizer(tiny_llama)
    examples = [Example("a long prompt " * 10, "yes", "f line 1"), Example("short", "yes", "f line 2")]
    prompt_length = len(prompt_ids(tokenizer, examples[0].prompt, False))
    kept = tokenize(examples, tokenizer, prompt_length, False, chat=False)
    assert (len(kept.features), kept.no_labels, kept.first_dropped, kept.truncated) == (1, 1, "f line 1", 1)
    assert tokenize(examples, tokenizer, prompt_length + 1, False, chat=False).no_labels == 0


def test_seq2seq_rows_keep_labels_of_their_own_length_in_the_arrow_file(tiny_t5, tmp_path, cache):
    """A T5 row's labels are the target, not as long as its input_ids (the source): each column needs its own offsets
    (sharing the input_ids' offsets failed every seq2seq run with 'iterator too short')."""
    prepared, want, *_ = prepared_as_row_by_row(tiny_t5, tmp_path, True)
    assert any(len(f["labels"]) != len(f["input_ids"]) for f in want.features)
