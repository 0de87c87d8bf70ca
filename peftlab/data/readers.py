"""Read rows from JSONL, CSV, Parquet or a hub split, keeping each row's line for error messages."""

from __future__ import annotations

import codecs
import csv
import io
import json
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from peftlab.errors import PeftlabError

FORMATS = ".jsonl, .json (JSON lines), .csv, .parquet, or hub:NAME[:SPLIT]"


@dataclass
class Row:
    values: dict[str, Any]
    where: str  # "train.jsonl line 17" - used in every message about this row


def read_rows(spec: str) -> list[Row]:
    """Read every row of a data source; a malformed row is an error naming file and line."""
    if spec.startswith("hub:"):
        rows = _read_hub(spec[4:])
    else:
        path = Path(spec)
        if path.is_dir():
            raise PeftlabError(f"data file {spec} is a folder, not a file; pass a {FORMATS}")
        if not path.is_file():
            raise PeftlabError(f"data file {spec} does not exist; pass a {FORMATS}")
        readers = {".jsonl": _read_jsonl, ".json": _read_jsonl, ".csv": _read_csv, ".parquet": _read_parquet}
        reader = readers.get(path.suffix.lower())
        if reader is None:
            raise PeftlabError(f"data file {spec}: unknown format '{path.suffix}'; use {FORMATS}")
        rows = reader(path)
    if not rows:
        raise PeftlabError(f"data file {spec} holds no rows; add examples or point at another file")
    return rows


def _read_text(path: Path) -> str:
    """The file as text: UTF-8 (a leading byte-order mark is dropped); other encodings are named with the fix."""
    data = path.read_bytes()
    if data.startswith((codecs.BOM_UTF16_LE, codecs.BOM_UTF16_BE)):
        raise PeftlabError(f"{path.name} is UTF-16 text; save it as UTF-8 (e.g. iconv -f UTF-16 -t UTF-8)")
    try:
        return data.decode("utf-8-sig")
    except UnicodeDecodeError as error:
        line = data[:error.start].count(b"\n") + 1
        raise PeftlabError(f"{path.name} line {line}: byte 0x{data[error.start]:02x} is not UTF-8 text; save the file as UTF-8 "
                           "(e.g. iconv -f latin1 -t UTF-8)") from None


def _read_jsonl(path: Path) -> list[Row]:
    rows = []
    # split on newlines only: str.splitlines would also split inside strings holding U+2028 and the like
    for number, line in enumerate(_read_text(path).split("\n"), start=1):
        if not line.strip():
            continue
        try:
            values = json.loads(line)
        except json.JSONDecodeError as error:
            raise PeftlabError(f"{path.name} line {number}: not valid JSON ({error.msg}); each line must be one JSON object") from None
        if not isinstance(values, dict):
            raise PeftlabError(f"{path.name} line {number}: expected a JSON object like {{\"dialogue\": ..., \"summary\": ...}}")
        rows.append(Row(values, f"{path.name} line {number}"))
    return rows


def _read_csv(path: Path) -> list[Row]:
    rows = []
    with io.StringIO(_read_text(path), newline="") as handle:
        reader = csv.DictReader(handle)
        header = reader.fieldnames or []
        for values in reader:
            where = f"{path.name} line {reader.line_num}"
            if None in values or any(v is None for v in values.values()):
                raise PeftlabError(f"{where}: number of fields differs from the header's {len(header)} ({', '.join(header)}); quote fields that hold commas")
            rows.append(Row(dict(values), where))
    return rows


def _read_parquet(path: Path) -> list[Row]:
    import pyarrow.parquet as pq

    try:
        table = pq.read_table(path)
    except Exception as error:  # pyarrow raises several types for a damaged file
        raise PeftlabError(f"{path.name}: not a readable Parquet file ({str(error).splitlines()[0]})") from None
    return [Row(values, f"{path.name} row {i + 1}") for i, values in enumerate(table.to_pylist())]


def _read_hub(name_split: str) -> list[Row]:
    name, _, split = name_split.partition(":")
    split = split or "train"
    try:
        import datasets

        dataset = datasets.load_dataset(name, split=split)
    except Exception as error:  # offline, unknown name, unknown split: all end the same way for the user
        first = str(error).strip().splitlines()[0][:200] if str(error).strip() else type(error).__name__
        raise PeftlabError(
            f"cannot load hub dataset '{name}' split '{split}' (offline, or a wrong name?): {first}; "
            "check the name and the network, or pass a local JSONL/CSV/Parquet file"
        ) from None
    return [Row(values, f"hub:{name}:{split} row {i + 1}") for i, values in enumerate(dataset)]
