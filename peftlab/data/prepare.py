"""Training data at scale: rows streamed through batched tokenization into a memory-mapped Arrow file, cached by content.

A million rows never sit in Python lists: each batch of rows is tokenized and written, and the Trainer reads the
Arrow file through `datasets` (memory-mapped). The file is kept under $PEFTLAB_CACHE/data, named by the data file's
bytes, the tokenizer, the chat template and every data setting, so a second run with the same inputs starts at once.
"""

from __future__ import annotations

import dataclasses
import hashlib
import itertools
import json
import os
import time
from pathlib import Path
from typing import Any, Callable, Iterator

from peftlab.config import DataConfig
from peftlab.data.examples import FormatCheck, iter_examples
from peftlab.data.readers import Row, iter_rows
from peftlab.data.tokenize import TokenizedSet, tokenize
from peftlab.errors import PeftlabError

BATCH_ROWS = 1024  # rows tokenized per call (the fast tokenizer spreads a batch over the cores)
PROGRESS_ROWS = 100_000  # a progress line every this many rows
LAYOUT = 1  # raise when the cached file's layout or the tokenization rules change


def prepared_set(spec: str, data: DataConfig, tokenizer: Any, is_seq2seq: bool, chat: bool,
                 say: Callable[[str], None] = lambda text: None) -> TokenizedSet:
    """The tokenized rows of `spec`, from the cache when the same inputs were prepared before."""
    key = cache_key(spec, data, tokenizer, is_seq2seq, chat)
    if key is not None and (cached := _load(cached_path(key))) is not None:
        say(f"data: {spec}: tokenized rows from the cache ({cached_path(key)})")
        return cached
    # a hub split is streamed and not cached (its content has no cheap fingerprint): its file is named by the process
    path = cached_path(key) if key is not None else cache_root() / f"hub-{os.getpid()}-{time.time_ns()}.arrow"
    partial, counts_partial = path.with_suffix(f".{os.getpid()}.partial"), path.with_suffix(f".{os.getpid()}.json.partial")
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
        result = _tokenize_stream(spec, data, tokenizer, is_seq2seq, chat, partial, say)
        counts_partial.write_text(json.dumps(dataclasses.asdict(result)))
        os.replace(partial, path)  # the counts land last: a file with counts beside it is complete
        os.replace(counts_partial, path.with_suffix(".json"))
    except OSError as error:
        raise PeftlabError(f"cannot write the data cache {path.parent}: {error.strerror}; set PEFTLAB_CACHE to a writable folder") from None
    finally:
        partial.unlink(missing_ok=True)  # a bad row ends the stream: nothing half-written stays behind
        counts_partial.unlink(missing_ok=True)
    loaded = _load(path)
    if key is None:  # the open memory map keeps a removed file readable until the run ends
        path.unlink()
        path.with_suffix(".json").unlink()
    return loaded


def _tokenize_stream(spec: str, data: DataConfig, tokenizer: Any, is_seq2seq: bool, chat: bool, sink_path: Path,
                     say: Callable[[str], None]) -> TokenizedSet:
    """Tokenize the rows a batch at a time, each batch written to `sink_path` (Arrow IPC stream) as it is made."""
    import pyarrow as pa

    check = FormatCheck(data)
    rows = _subsampled(iter_rows(spec, data.max_row_bytes), data)
    result, start = TokenizedSet(features=[]), time.perf_counter()
    with pa.OSFile(str(sink_path), "wb") as sink, pa.ipc.new_stream(sink, _schema()) as writer:  # the layout datasets reads
        for chunk in _chunks(iter_examples(rows, data, check), BATCH_ROWS):
            part = tokenize(chunk, tokenizer, data.max_length, is_seq2seq, chat, data.answer_only, data.train_on, data.chat_template)
            result.rows += part.rows
            result.truncated += part.truncated
            result.no_labels += part.no_labels
            result.first_dropped = result.first_dropped or part.first_dropped
            writer.write_batch(_record_batch(part.features))
            if result.rows // PROGRESS_ROWS != (result.rows - part.rows) // PROGRESS_ROWS:
                say(f"  tokenized {result.rows:,} rows ({result.rows / (time.perf_counter() - start):,.0f} rows/s)")
    result.format = check.name or "template"
    return result


def _schema() -> Any:
    import pyarrow as pa

    return pa.schema([("input_ids", pa.list_(pa.int32())), ("labels", pa.list_(pa.int32())), ("length", pa.int32())])


def _record_batch(features: list[dict[str, list[int]]]) -> Any:
    """The rows as one Arrow batch, built from flat NumPy arrays and offsets (3x faster than pa.array on lists of lists,
    measured with pyarrow on 1,024 rows of a few hundred tokens). Each column has its own offsets: a seq2seq row's
    labels (the target) are not as long as its input_ids (the source)."""
    import numpy as np
    import pyarrow as pa

    def column(name: str) -> tuple[Any, Any]:
        lengths = np.fromiter((len(f[name]) for f in features), dtype=np.int32, count=len(features))
        offsets = pa.array(np.concatenate([[0], np.cumsum(lengths, dtype=np.int32)]).astype(np.int32))
        flat = np.fromiter(itertools.chain.from_iterable(f[name] for f in features), dtype=np.int32, count=int(lengths.sum()))
        return pa.ListArray.from_arrays(offsets, pa.array(flat)), lengths

    input_ids, lengths = column("input_ids")
    return pa.RecordBatch.from_arrays([input_ids, column("labels")[0], pa.array(lengths)], schema=_schema())


def _subsampled(rows: Iterator[Row], data: DataConfig) -> Iterator[Row]:
    kept = itertools.islice(rows, 0, None, data.every)
    return itertools.islice(kept, data.max_samples) if data.max_samples else kept


def _chunks(items: Iterator[Any], size: int) -> Iterator[list[Any]]:
    while chunk := list(itertools.islice(items, size)):
        yield chunk


def cache_root() -> Path:
    from peftlab.models.gguf_cache import cache_root as peftlab_cache

    return peftlab_cache() / "data"


def cached_path(key: str) -> Path:
    return cache_root() / f"{key}.arrow"


def cache_key(spec: str, data: DataConfig, tokenizer: Any, is_seq2seq: bool, chat: bool) -> str | None:
    """sha256 over the file's bytes (their own sha256), the tokenizer (vocabulary, merges, special tokens, chat
    template) and the settings.

    The file's sha256 is remembered beside its stamp (path, device, inode, size, mtime and ctime in nanoseconds) and
    computed again only when the stamp differs: hashing a 900 MB file took about a second of CPU, and far longer from
    disk, on every run. Any write or `touch` moves mtime and ctime; what escapes the stamp is a same-size rewrite
    within one tick of the filesystem's clock.
    """
    from peftlab.models.gguf_cache import file_sha256

    if spec.startswith("hub:"):
        return None
    path = Path(spec)
    if not path.is_file():
        return None  # iter_rows names the problem
    digest = hashlib.sha256(file_sha256(path).encode())
    settings = {k: v for k, v in dataclasses.asdict(data).items() if k not in ("train", "eval")}
    backend = getattr(tokenizer, "backend_tokenizer", None)
    digest.update(json.dumps({
        "layout": LAYOUT, "settings": settings, "seq2seq": is_seq2seq, "chat": chat, "suffix": path.suffix.lower(),
        "tokenizer": type(tokenizer).__name__, "chat_template": getattr(tokenizer, "chat_template", None),
        "specials": [tokenizer.bos_token_id, tokenizer.eos_token_id, tokenizer.pad_token_id, sorted(tokenizer.all_special_ids)],
    }, sort_keys=True, default=str).encode())
    digest.update(backend.to_str().encode() if backend is not None else repr(tokenizer.get_vocab()).encode())
    return digest.hexdigest()[:32]


def _load(path: Path) -> TokenizedSet | None:
    import datasets

    counts_file = path.with_suffix(".json")
    if not path.is_file() or not counts_file.is_file():
        return None
    counts = {k: v for k, v in json.loads(counts_file.read_text()).items() if k != "features"}
    return TokenizedSet(features=datasets.Dataset.from_file(str(path)), **counts)
