"""Column mapping, templates, sub-sampling, answer-only labels and truncation accounting."""

import pytest

from peftlab.config import DataConfig
from peftlab.data.examples import build_examples, subsample
from peftlab.data.readers import Row
from peftlab.data.tokenize import IGNORE, check_trainable, tokenize
from peftlab.errors import PeftlabError
from peftlab.models import load_tokenizer


def rows(n=4, **extra):
    return [Row({"dialogue": f"talk {i}", "summary": f"sum {i}", **extra}, f"t.jsonl line {i + 1}") for i in range(n)]


def test_default_template_and_columns():
    [example] = build_examples(rows(1), DataConfig())
    assert example.prompt == "Summarize the following conversation.\n\ntalk 0\n\nSummary: "
    assert example.response == "sum 0"


def test_column_mapping_and_raw_columns_in_template():
    data = DataConfig(columns={"prompt": "text", "response": "label"}, template="{prompt} / {topic}")
    [example] = build_examples([Row({"text": "hi", "label": "x", "topic": "t"}, "f line 1")], data)
    assert (example.prompt, example.response) == ("hi / t", "x")


def test_missing_column_lists_the_columns():
    data = DataConfig(columns={"prompt": "dialogue", "response": "summery"})
    with pytest.raises(PeftlabError, match=r"t.jsonl line 1: no column 'summery' \(needed for response\); columns are: dialogue, summary"):
        build_examples(rows(1), data)


def test_numbered_references_fall_back_to_the_first():
    [example] = build_examples([Row({"dialogue": "d", "summary1": "a", "summary2": "b"}, "x")], DataConfig())
    assert example.response == "a"


def test_subsampling_every_then_first_n():
    kept = subsample(rows(10), every=3, max_samples=2)
    assert [r.values["dialogue"] for r in kept] == ["talk 0", "talk 3"]


@pytest.fixture(scope="module")
def tokenizer(tiny_llama):
    return load_tokenizer(tiny_llama)


def test_answer_only_labels_mask_the_prompt(tokenizer):
    [example] = build_examples(rows(1), DataConfig())
    tokenized = tokenize([example], tokenizer, 512, is_seq2seq=False, chat=False)
    feature = tokenized.features[0]
    prompt_length = feature["labels"].count(IGNORE)
    assert prompt_length > 0 and feature["labels"][prompt_length:] == feature["input_ids"][prompt_length:]
    assert feature["input_ids"][-1] == tokenizer.eos_token_id
    full = tokenize([example], tokenizer, 512, is_seq2seq=False, chat=False, answer_only=False)
    assert full.features[0]["labels"] == full.features[0]["input_ids"]


def test_truncation_is_counted_and_responses_cut_away_are_dropped(tokenizer):
    examples = build_examples(rows(3), DataConfig())
    prompt_tokens = tokenize(examples, tokenizer, 10_000, False, False).features[0]["labels"].count(IGNORE)
    cut = tokenize(examples, tokenizer, prompt_tokens + 1, False, False)
    assert cut.truncated == 3 and len(cut.features) == 3 and cut.no_labels == 0
    gone = tokenize(examples, tokenizer, prompt_tokens - 1, False, False)
    assert gone.no_labels == 3 and gone.first_dropped == "t.jsonl line 1"
    with pytest.raises(PeftlabError, match="lost every response token to truncation"):
        check_trainable(gone, "t.jsonl", prompt_tokens - 1)


def test_seq2seq_keeps_source_and_target_apart(tiny_t5):
    tokenizer = load_tokenizer(tiny_t5)
    [example] = build_examples(rows(1), DataConfig())
    feature = tokenize([example], tokenizer, 512, is_seq2seq=True, chat=False).features[0]
    assert tokenizer.decode(feature["labels"], skip_special_tokens=True) == "sum 0"
    assert "talk 0" in tokenizer.decode(feature["input_ids"], skip_special_tokens=True)
