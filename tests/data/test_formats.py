"""Every dataset format: detected from the columns (or data.format), read into the right examples, trained on a tiny model."""

import json

import pytest

from peftlab.config import DataConfig
from peftlab.data.examples import CHAT, PAIR, TEXT, build_examples, file_format, generation_prompts
from peftlab.data.readers import Row, read_rows
from peftlab.data.tokenize import tokenize
from peftlab.errors import PeftlabError
from tests.conftest import write_jsonl
from tests.data.chat_templates import save_tiny_chat_llama
from tests.tiny_models import train_tiny

CHAT_ROW = {"messages": [
    {"role": "system", "content": "You summarize."},
    {"role": "user", "content": "#Person1#: Hello, how are you? #Person2#: Fine, thank you."},
    {"role": "assistant", "content": "They greet."},
    {"role": "user", "content": "And now?"},
    {"role": "assistant", "content": "A table is booked."},
]}
ROWS = {
    "template": {"dialogue": "#Person1#: Hello, how are you?", "summary": "They greet."},
    "text": {"text": "<s>[INST] Hello, how are you? [/INST] Fine, thank you. </s>"},
    "prompt-completion": {"prompt": "Hello, how are you?", "completion": "Fine, thank you."},
    "messages": CHAT_ROW,
    "sharegpt": {"conversations": [{"from": "human", "value": "Hello, how are you?"}, {"from": "gpt", "value": "Fine."}]},
    "alpaca": {"instruction": "Summarize.", "input": "#Person1#: Hello!", "output": "A greeting."},
}


def rows_of(name: str, count: int = 1) -> list[Row]:
    return [Row(ROWS[name], f"d.jsonl line {i + 1}") for i in range(count)]


@pytest.mark.parametrize("name", list(ROWS))
def test_the_format_is_detected_from_the_columns(name):
    assert file_format(rows_of(name, 2), DataConfig()) == name


@pytest.mark.parametrize("data", [DataConfig(), DataConfig(format="prompt-completion")])
def test_rows_to_answer_need_no_response_column(data):
    """`generate` answers a file of prompts alone (also with an adapter that learned prompt/completion rows)."""
    rows = [Row({"prompt": "Hello, how are you?"}, "p.jsonl line 1"), Row({"instruction": "Summarize.", "input": "Hi!"}, "a.jsonl line 1")]
    assert generation_prompts(rows[:1], data) == ["Hello, how are you?"]
    if data.format == "auto":
        assert generation_prompts(rows[1:], data) == ["Summarize.\n\nHi!"]
    with pytest.raises(PeftlabError, match="no column 'completion'"):
        build_examples(rows[:1], DataConfig(format="prompt-completion"))  # training still needs the answer


def test_conversational_prompt_completion():
    row = Row({"prompt": [{"role": "user", "content": "Hi?"}], "completion": [{"role": "assistant", "content": "Hello."}]}, "x")
    [example] = build_examples([row], DataConfig())
    assert (example.kind, example.trained, [m["role"] for m in example.messages]) == (CHAT, (1,), ["user", "assistant"])


def test_each_format_reads_into_its_example():
    data = DataConfig()
    [text] = build_examples(rows_of("text"), data)
    assert (text.kind, text.prompt, text.response) == (TEXT, "", ROWS["text"]["text"])
    [pair] = build_examples(rows_of("prompt-completion"), data)
    assert (pair.kind, pair.prompt, pair.response) == (PAIR, "Hello, how are you?", "Fine, thank you.")
    [alpaca] = build_examples(rows_of("alpaca"), data)
    assert (alpaca.prompt, alpaca.response) == ("Summarize.\n\n#Person1#: Hello!", "A greeting.")
    [share] = build_examples(rows_of("sharegpt"), data)
    assert share.messages == [{"role": "user", "content": "Hello, how are you?"}, {"role": "assistant", "content": "Fine."}]
    [chat] = build_examples(rows_of("messages"), data)
    assert chat.trained == (2, 4)
    [last] = build_examples(rows_of("messages"), DataConfig(train_on="last"))
    assert last.trained == (4,)


def test_the_template_format_is_unchanged_for_dialogsum_rows():
    [example] = build_examples(rows_of("template"), DataConfig())
    assert (example.kind, example.prompt, example.response) == (
        PAIR, "Summarize the following conversation.\n\n#Person1#: Hello, how are you?\n\nSummary: ", "They greet.")


def test_data_format_overrides_the_detection():
    row = Row({"prompt": "p", "completion": "c", "text": "t"}, "x")
    assert build_examples([row], DataConfig(format="text"))[0].response == "t"
    with pytest.raises(PeftlabError, match=r"x: no column 'messages' \(data.format=messages needs messages\)"):
        build_examples([row], DataConfig(format="messages"))


def test_text_rows_train_on_every_token(tiny_llama):
    from peftlab.models import load_tokenizer

    tokenizer = load_tokenizer(tiny_llama)
    [feature] = tokenize(build_examples(rows_of("text"), DataConfig()), tokenizer, 512, False, chat=True).features
    # every token of the text (its "<s>" read as the BOS it stands for) and the closing EOS; no chat template around it
    assert feature["labels"] == feature["input_ids"] and feature["input_ids"][-1] == tokenizer.eos_token_id
    assert tokenizer.decode(feature["input_ids"]) == ROWS["text"]["text"] + tokenizer.eos_token


@pytest.fixture(scope="module")
def chat_llama(tmp_path_factory) -> str:
    return save_tiny_chat_llama(tmp_path_factory.mktemp("tiny-chat-llama"))


@pytest.mark.parametrize("name", list(ROWS))
def test_train_runs_on_every_format_without_a_flag(name, chat_llama, tmp_path):
    data = tmp_path / "data.jsonl"
    data.write_text("".join(json.dumps(ROWS[name]) + "\n" for _ in range(4)))
    summary = train_tiny(chat_llama, data, tmp_path / "run")
    assert summary["steps"] == 3 and summary["train_loss"] > 0


def test_parquet_conversations(chat_llama, tmp_path):
    import pyarrow as pa
    import pyarrow.parquet as pq

    pq.write_table(pa.Table.from_pylist([CHAT_ROW] * 2), tmp_path / "chat.parquet")
    [example, _] = build_examples(read_rows(str(tmp_path / "chat.parquet")), DataConfig())
    assert example.messages == CHAT_ROW["messages"] and example.trained == (2, 4)


def test_a_jsonl_file_of_conversations(tmp_path):
    path = write_jsonl(tmp_path / "chat.jsonl", [CHAT_ROW, CHAT_ROW])
    assert [e.kind for e in build_examples(read_rows(str(path)), DataConfig())] == [CHAT, CHAT]


def test_a_long_conversation_keeps_its_first_tokens_and_is_counted(chat_llama):
    from peftlab.models import load_tokenizer

    tokenizer = load_tokenizer(chat_llama)
    examples = build_examples(rows_of("messages"), DataConfig())
    whole = tokenize(examples, tokenizer, 4096, False, chat=True).features[0]
    answers = [i for i, label in enumerate(whole["labels"]) if label != -100]
    cut_at = answers[0] + 3  # inside the first answer: the second is cut away
    short = tokenize(examples, tokenizer, cut_at, False, chat=True)
    assert short.truncated == 1 and short.features[0]["input_ids"] == whole["input_ids"][:cut_at]
    assert short.features[0]["labels"] == whole["labels"][:cut_at]
    gone = tokenize(examples, tokenizer, answers[0], False, chat=True)  # no answer token left: dropped, counted
    assert (gone.features, gone.no_labels, gone.first_dropped) == ([], 1, "d.jsonl line 1")
