"""Read rows from JSONL, CSV, Parquet or a hub split, keeping each row's line for error messages."""

from __future__ import annotations

import codecs
import csv
import io
import json
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Iterator

from peftlab.config import DataConfig
from peftlab.errors import PeftlabError

FORMATS = ".jsonl, .json (JSON lines), .csv, .parquet, or hub:NAME[:SPLIT]"
MAX_ROW_BYTES = DataConfig.max_row_bytes  # a row's size is bounded before it is parsed or tokenized


@dataclass
class Row:
    values: dict[str, Any]
    where: str  # "train.jsonl line 17" - used in every message about this row


def read_rows(spec: str, max_row_bytes: int = MAX_ROW_BYTES) -> list[Row]:
    """Read every row of a data source; a malformed or oversized row is an error naming file and line."""
    return list(iter_rows(spec, max_row_bytes))


def iter_rows(spec: str, max_row_bytes: int = MAX_ROW_BYTES) -> Iterator[Row]:
    """The rows one at a time (a JSONL or Parquet file and a hub split are never held whole); the same checks as read_rows."""
    if spec.startswith("hub:"):
        rows = _read_hub(spec[4:], max_row_bytes)
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
        rows = reader(path, max_row_bytes)
    empty = True
    for row in rows:
        empty = False
        yield row
    if empty:
        raise PeftlabError(f"data file {spec} holds no rows; add examples or point at another file")


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


def too_large(where: str, size: int, limit: int) -> PeftlabError:
    return PeftlabError(f"{where}: the row holds {size:,} bytes, over the {limit:,}-byte limit on a row; shorten or split it, "
                        "or raise --set data.max_row_bytes")


def _utf8_size(text: str, limit: int) -> int:
    """The text's UTF-8 size, encoded only when its length leaves the answer open (1 to 4 bytes a character)."""
    return len(text) if len(text) > limit or 4 * len(text) <= limit else len(text.encode("utf-8"))


def _read_jsonl(path: Path, max_row_bytes: int) -> Iterator[Row]:
    # lines end at b"\n" only: str.splitlines would also split inside strings holding U+2028 and the like
    with path.open("rb") as handle:
        for number, raw in enumerate(handle, start=1):
            if number == 1:
                raw = _first_line(path, raw)
            if not raw.strip():
                continue
            where = f"{path.name} line {number}"
            if len(raw) > max_row_bytes:
                raise too_large(where, len(raw.rstrip(b"\r\n")), max_row_bytes)
            try:
                line = raw.decode("utf-8")
            except UnicodeDecodeError as error:
                raise PeftlabError(f"{where}: byte 0x{raw[error.start]:02x} is not UTF-8 text; save the file as UTF-8 "
                                   "(e.g. iconv -f latin1 -t UTF-8)") from None
            values = _parse_json_line(line, where)
            if not isinstance(values, dict):
                raise PeftlabError(f"{where}: expected a JSON object like {{\"dialogue\": ..., \"summary\": ...}}")
            yield Row(values, where)


def _first_line(path: Path, raw: bytes) -> bytes:
    """The first line without a UTF-8 byte-order mark; UTF-16 text is named with the fix."""
    if raw.startswith((codecs.BOM_UTF16_LE, codecs.BOM_UTF16_BE)):
        raise PeftlabError(f"{path.name} is UTF-16 text; save it as UTF-8 (e.g. iconv -f UTF-16 -t UTF-8)")
    return raw.removeprefix(codecs.BOM_UTF8)


def _parse_json_line(line: str, where: str) -> object:
    try:
        return json.loads(line)
    except json.JSONDecodeError as error:
        raise PeftlabError(f"{where}: not valid JSON ({error.msg}); each line must be one JSON object") from None
    except ValueError:  # Python refuses integers of over 4300 digits (int_max_str_digits)
        raise PeftlabError(f"{where}: a number of thousands of digits; write it as a string (in quotes)") from None
    except RecursionError:
        raise PeftlabError(f"{where}: the JSON is nested too deeply to read; flatten the row's lists and objects") from None


def _read_csv(path: Path, max_row_bytes: int) -> list[Row]:
    rows = []
    default_limit = csv.field_size_limit(max_row_bytes)  # the csv module's own limit is 128 KiB a field
    try:
        with io.StringIO(_read_text(path), newline="") as handle:
            reader = csv.DictReader(handle)
            try:
                header = reader.fieldnames or []
                for values in reader:
                    where = f"{path.name} line {reader.line_num}"
                    if None in values or any(v is None for v in values.values()):
                        raise PeftlabError(f"{where}: number of fields differs from the header's {len(header)} ({', '.join(header)}); quote fields that hold commas")
                    if (size := sum(_utf8_size(v, max_row_bytes) for v in values.values())) > max_row_bytes:
                        raise too_large(where, size, max_row_bytes)
                    rows.append(Row(dict(values), where))
            except csv.Error as error:  # a field over the limit, or an unclosed quote
                where = f"{path.name} line {reader.line_num + 1}"
                if "field larger than field limit" in str(error):
                    raise PeftlabError(f"{where}: a field over the {max_row_bytes:,}-byte limit on a row; shorten it, "
                                       "or raise --set data.max_row_bytes") from None
                raise PeftlabError(f"{where}: not valid CSV ({error}); check the quotes of the rows around it") from None
    finally:
        csv.field_size_limit(default_limit)
    return rows


def _read_parquet(path: Path, max_row_bytes: int) -> Iterator[Row]:
    import pyarrow.parquet as pq

    try:
        batches = pq.ParquetFile(path).iter_batches(batch_size=1024)
        number = 0
        for batch in batches:
            for values in batch.to_pylist():
                number += 1
                yield _bounded(Row(values, f"{path.name} row {number}"), max_row_bytes)
    except (OSError, ValueError, ArithmeticError) as error:  # pyarrow's errors for a damaged file derive from these
        raise PeftlabError(f"{path.name}: not a readable Parquet file ({str(error).splitlines()[0]})") from None


def _bounded(row: Row, max_row_bytes: int) -> Row:
    """A row whose text and binary values fit the row limit (lists and objects are refused later, as not text)."""
    size = sum(_utf8_size(v, max_row_bytes) if isinstance(v, str) else len(v) if isinstance(v, bytes) else 0
               for v in row.values.values())
    if size > max_row_bytes:
        raise too_large(row.where, size, max_row_bytes)
    return row


def _read_hub(name_split: str, max_row_bytes: int) -> Iterator[Row]:
    """A hub split streamed: rows arrive as they download, nothing is held whole (datasets' streaming mode)."""
    name, _, split = name_split.partition(":")
    split = split or "train"
    try:
        import datasets

        rows = iter(datasets.load_dataset(name, split=split, streaming=True))
        first = next(rows, None)  # a wrong name or split, or no network, shows at the first row
    except Exception as error:  # offline, unknown name, unknown split: all end the same way for the user
        first_line = str(error).strip().splitlines()[0][:200] if str(error).strip() else type(error).__name__
        raise PeftlabError(
            f"cannot load hub dataset '{name}' split '{split}' (offline, or a wrong name?): {first_line}; "
            "check the name and the network, or pass a local JSONL/CSV/Parquet file"
        ) from None
    if first is None:
        return
    yield _bounded(Row(first, f"hub:{name}:{split} row 1"), max_row_bytes)
    for number, values in enumerate(rows, start=2):
        yield _bounded(Row(values, f"hub:{name}:{split} row {number}"), max_row_bytes)
