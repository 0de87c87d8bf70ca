"""Reading JSONL / CSV / Parquet / hub sources, and the messages for bad files."""

import pytest

from peftlab.data.readers import read_rows
from peftlab.errors import PeftlabError


def test_jsonl_rows_keep_their_line_numbers(tmp_path):
    path = tmp_path / "train.jsonl"
    path.write_text('{"a": 1}\n\n{"a": 2}\n')
    rows = read_rows(str(path))
    assert [r.values["a"] for r in rows] == [1, 2]
    assert rows[1].where == "train.jsonl line 3"


def test_malformed_jsonl_line_is_named(tmp_path):
    path = tmp_path / "train.jsonl"
    path.write_text('{"a": 1}\n{"a": 2\n')
    with pytest.raises(PeftlabError, match=r"train.jsonl line 2: not valid JSON"):
        read_rows(str(path))


def test_jsonl_line_that_is_not_an_object(tmp_path):
    path = tmp_path / "train.jsonl"
    path.write_text('[1, 2]\n')
    with pytest.raises(PeftlabError, match=r"line 1: expected a JSON object"):
        read_rows(str(path))


def test_csv_rows_and_ragged_line(tmp_path):
    path = tmp_path / "d.csv"
    path.write_text('dialogue,summary\n"hi, there",greet\nbye,leave,extra\n')
    with pytest.raises(PeftlabError, match=r"d.csv line 3: number of fields differs"):
        read_rows(str(path))
    path.write_text('dialogue,summary\n"hi, there",greet\n')
    assert read_rows(str(path))[0].values == {"dialogue": "hi, there", "summary": "greet"}


def test_parquet_rows(tmp_path):
    import pyarrow as pa
    import pyarrow.parquet as pq

    path = tmp_path / "d.parquet"
    pq.write_table(pa.table({"dialogue": ["x", "y"], "summary": ["a", "b"]}), path)
    rows = read_rows(str(path))
    assert rows[1].values == {"dialogue": "y", "summary": "b"} and rows[1].where == "d.parquet row 2"


@pytest.mark.parametrize("content, message", [("", "holds no rows"), ("\n\n", "holds no rows")])
def test_empty_file(tmp_path, content, message):
    path = tmp_path / "empty.jsonl"
    path.write_text(content)
    with pytest.raises(PeftlabError, match=message):
        read_rows(str(path))


def test_missing_file_and_unknown_format(tmp_path):
    with pytest.raises(PeftlabError, match="does not exist"):
        read_rows(str(tmp_path / "nope.jsonl"))
    (tmp_path / "d.txt").write_text("x")
    with pytest.raises(PeftlabError, match="unknown format '.txt'"):
        read_rows(str(tmp_path / "d.txt"))


def test_hub_dataset_offline_is_one_clear_error():
    with pytest.raises(PeftlabError, match="cannot load hub dataset 'knkarthick/dialogsum' split 'train'"):
        read_rows("hub:knkarthick/dialogsum:train")
