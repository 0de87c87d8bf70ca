"""The bad-input battery (issue 13): every command given bad input ends with exit 2 and one `error: ` line that
names the problem and the fix, without a traceback, and changes nothing on disk.

Each case builds its bad input in a fresh folder, checksums every file involved (the case's folder, which holds
the inputs and the output's parent, and the shared tiny models and adapters), runs the CLI in-process from the
case's work folder, and compares the checksums after. Tiny models only: nothing here loads the default model.
"""

from __future__ import annotations

import hashlib
import json
import shutil
import socket
from dataclasses import dataclass
from pathlib import Path
from typing import Callable

import pytest

from peftlab.cli import main
from tests.conftest import TOY_ROWS, write_jsonl
from tests.tiny_models import train_tiny


class MessageMissing(AssertionError):
    """The error line lacks what it must name (the problem, the path, the fix)."""


class OutputChanged(AssertionError):
    """A file or folder changed, appeared or vanished although the command failed."""


def checksum(path: Path) -> str | None:
    """sha256 over every entry's relative path and every file's bytes, recursively; None when nothing is there."""
    if not path.exists():
        return None
    digest = hashlib.sha256()
    for entry in [path] if path.is_file() else sorted(path.rglob("*")):
        digest.update(str(entry.relative_to(path)).encode() + b"\0")
        digest.update(entry.read_bytes() if entry.is_file() else b"<folder>")
        digest.update(b"\0")
    return digest.hexdigest()


# --- shared tiny results, trained once ---------------------------------------------------------------

@pytest.fixture(scope="module")
def trained(tiny_llama, tmp_path_factory) -> dict[str, str]:
    """A LoRA and a prompt-tuning adapter of the tiny Llama (a few steps each)."""
    folder = tmp_path_factory.mktemp("battery-adapters")
    data = write_jsonl(folder / "toy.jsonl", TOY_ROWS * 2)
    train_tiny(tiny_llama, data, folder / "lora", "train.max_steps=2")
    train_tiny(tiny_llama, data, folder / "prompt", "method=prompt-tuning", "prompt-tuning.num_virtual_tokens=4", "train.max_steps=2")
    return {"lora": str(folder / "lora" / "adapter"), "prompt": str(folder / "prompt" / "adapter")}


@dataclass
class Bench:
    """One case's world: `inputs/` for the bad files, `work/` (the current folder) holding the output path `out`."""

    root: Path
    llama: str
    t5: str
    lora: str  # a LoRA adapter of the tiny Llama
    prompt_tuning: str  # a prompt-tuning adapter of the tiny Llama

    @property
    def inputs(self) -> Path:
        return self.root / "inputs"

    @property
    def work(self) -> Path:
        return self.root / "work"

    @property
    def cache(self) -> Path:
        """$PEFTLAB_CACHE: hash memos may appear there, converted models may not."""
        return self.root.parent / f"{self.root.name}-cache"

    @property
    def out(self) -> str:
        return str(self.work / "out")

    def file(self, name: str, content: str | bytes) -> str:
        path = self.inputs / name
        path.write_bytes(content.encode("utf-8") if isinstance(content, str) else content)
        return str(path)

    def rows(self, name: str = "toy.jsonl", rows: list[dict] = TOY_ROWS) -> str:
        return str(write_jsonl(self.inputs / name, rows))

    def folder(self, name: str) -> str:
        (self.inputs / name).mkdir()
        return str(self.inputs / name)

    def lora_copy(self) -> Path:
        return Path(shutil.copytree(self.lora, self.inputs / "adapter"))

    def occupied_output(self) -> str:
        """An output folder peftlab did not create: someone's notes."""
        (self.work / "out").mkdir()
        (self.work / "out" / "notes.txt").write_text("my notes\n")
        return self.out

    def free_port(self) -> int:
        with socket.socket() as probe:
            probe.bind(("127.0.0.1", 0))
            return probe.getsockname()[1]

    def names(self) -> dict[str, str]:
        return {"inputs": str(self.inputs), "out": self.out, "llama": self.llama, "t5": self.t5}


# --- the commands, with everything that keeps a run tiny ----------------------------------------------

def train(b: Bench, *args: str, data: str | None = None, output: str | None = None) -> list[str]:
    return ["train", "--model", b.llama, "--dtype", "fp32", "--data", data or b.rows(), "--output", output or b.out,
            "--max-steps", "1", "--batch-size", "2", "--set", "lora.r=4", *args]


def evaluate(b: Bench, *args: str, data: str | None = None, model: str | None = None) -> list[str]:
    return ["eval", "--model", model or b.llama, "--dtype", "fp32", "--data", data or b.rows(), "--output", b.out,
            "--max-new-tokens", "2", "--samples", "0", *args]


def generate(b: Bench, *args: str) -> list[str]:
    return ["generate", "--model", b.llama, "--dtype", "fp32", "--max-new-tokens", "2", *args]


def merge(b: Bench, *args: str, adapter: str | None = None) -> list[str]:
    return ["merge", "--adapter", adapter or b.lora, "--output", b.out, "--dtype", "fp32", *args]


def export(b: Bench, *args: str, adapter: str | None = None, output: str | None = None) -> list[str]:
    return ["export", adapter or b.lora, "--type", "f32", "--output", output or str(b.work / "model.gguf"), *args]


def check(b: Bench, *args: str) -> list[str]:
    return ["check", b.lora, "--data", b.rows(), "--max-new-tokens", "2", *args]


def gguf_header(b: Bench, name: str, kind: str) -> str:
    """A GGUF file of the tiny Llama's architecture holding only its header: general.type `kind` ("model", or "adapter"
    for a llama.cpp LoRA file), no tensors; enough for what check reads before it runs llama.cpp."""
    import gguf

    writer = gguf.GGUFWriter(b.inputs / name, "llama")
    writer.add_type(kind)
    writer.write_header_to_file()
    writer.write_kv_data_to_file()
    writer.write_tensors_to_file()
    writer.close()
    return str(b.inputs / name)


def serve(b: Bench, *args: str) -> list[str]:
    return ["serve", "--model", b.llama, "--dtype", "fp32", "--port", str(b.free_port()), *args]


def compare(b: Bench, *args: str, data: str | None = None, test: str | None = None) -> list[str]:
    return ["compare", "--model", b.llama, "--dtype", "fp32", "--data", data or b.rows(), "--eval-data", test or b.rows("test.jsonl"),
            "--output", b.out, "--budget-steps", "1", "--batch-size", "2", "--max-new-tokens", "2", *args]


# --- bad inputs -------------------------------------------------------------------------------------

def broken_jsonl(b: Bench) -> str:
    lines = [json.dumps(row) for row in TOY_ROWS]
    lines[2] = '{"dialogue": "#Person1#: Hi", "summary": '  # a line cut short, in the middle of the file
    return b.file("bad.jsonl", "\n".join(lines) + "\n")


def ragged_csv(b: Bench) -> str:
    return b.file("bad.csv", 'dialogue,summary\n"#Person1#: Hi, you",A greeting.\n#Person1#: Bye,They part,extra\n')


def latin1_jsonl(b: Bench) -> str:
    good = json.dumps(TOY_ROWS[0]) + "\n"
    return b.file("latin1.jsonl", good.encode() + '{"dialogue": "#Person1#: Un café?", "summary": "Coffee."}\n'.encode("latin-1"))


def utf16_jsonl(b: Bench) -> str:
    return b.file("utf16.jsonl", "".join(json.dumps(row) + "\n" for row in TOY_ROWS).encode("utf-16"))


def truncated_weights(b: Bench) -> str:
    adapter = b.lora_copy()
    weights = adapter / "adapter_model.safetensors"
    weights.write_bytes(weights.read_bytes()[: weights.stat().st_size // 2])
    return str(adapter)


def corrupt_adapter_config(b: Bench) -> str:
    adapter = b.lora_copy()
    config = adapter / "adapter_config.json"
    config.write_text(config.read_text()[:40])  # cut off mid-object, as a full disk leaves it
    return str(adapter)


USER = {"role": "user", "content": "#Person1#: Hello, how are you?"}
ANSWER = {"role": "assistant", "content": "They greet."}


def chat(b: Bench, messages: list[dict]) -> str:
    """A conversations file whose second row is `messages` (the first is a good one)."""
    return b.rows("chat.jsonl", [{"messages": [USER, ANSWER]}, {"messages": messages}])


def parquet(b: Bench, columns: dict[str, list]) -> str:
    import pyarrow as pa
    import pyarrow.parquet as pq

    pq.write_table(pa.table(columns), b.inputs / "v.parquet")
    return str(b.inputs / "v.parquet")


def yaml_file(b: Bench, text: str) -> str:
    return b.file("run.yaml", text)


def adapter_with_config(b: Bench, change: Callable[[dict], dict]) -> str:
    adapter = b.lora_copy()
    config = adapter / "adapter_config.json"
    config.write_text(json.dumps(change(json.loads(config.read_text()))))
    return str(adapter)


def adapter_without_weights(b: Bench) -> str:
    adapter = b.lora_copy()
    (adapter / "adapter_model.safetensors").unlink()
    return str(adapter)


# --- earlier outputs, with files peftlab did not write beside them (issue 25) ------------------------------

def earlier_output(b: Bench, own: dict[str, str], name: str = "out", notes: bool = True) -> Path:
    """work/NAME as an earlier run of a command left it (its own files `own`), plus the user's notes."""
    folder = b.work / name
    for relative, text in own.items():
        (folder / relative).parent.mkdir(parents=True, exist_ok=True)
        (folder / relative).write_text(text)
    if notes:
        (folder / "my-notes.txt").write_text("my notes\n")
    return folder


def earlier_eval(b: Bench, notes: bool = True) -> Path:
    return earlier_output(b, {"metrics.json": '{"rows": 1}\n', "predictions.jsonl": '{"input": "x"}\n'}, notes=notes)


def earlier_run(b: Bench) -> Path:
    return earlier_output(b, {"run.yaml": "method: lora\n", "log.jsonl": '{"step": 1}\n', "adapter/peftlab.json": "{}"})


def earlier_merge(b: Bench) -> Path:
    return earlier_output(b, {"peftlab-merge.json": "{}", "config.json": "{}", "model.safetensors": "x"})


def earlier_comparison(b: Bench) -> Path:
    return earlier_output(b, {"compare.yaml": "overrides: []\n", "results.json": "[]\n", "runs/base/result.json": "{}"})


def earlier_answers(b: Bench) -> str:
    return b.file("answers.jsonl", json.dumps({"where": "PROMPT", "input": "hi", "output": "hello"}) + "\n")


def data_inside(folder: Path, name: str = "mydata.jsonl") -> str:
    return str(write_jsonl(folder / name, TOY_ROWS))


def config_inside(folder: Path) -> str:
    (folder / "my.yaml").write_text("train:\n  lr: 1.0e-3\n")
    return str(folder / "my.yaml")


# --- the cases --------------------------------------------------------------------------------------

@dataclass
class Case:
    id: str
    argv: Callable[[Bench], list[str]]
    expect: tuple[str, ...]  # substrings of the error line; {inputs}, {out}, {llama} and {t5} are filled in
    marks: tuple = ()


CASES = [
    # train: data files
    Case("train-jsonl-broken-line", lambda b: train(b, data=broken_jsonl(b)),
         ("bad.jsonl line 3", "not valid JSON", "one JSON object")),
    Case("train-csv-ragged-line", lambda b: train(b, data=ragged_csv(b)),
         ("bad.csv line 3", "number of fields", "quote fields")),
    Case("train-parquet-not-parquet", lambda b: train(b, data=b.file("bad.parquet", b"not a parquet file at all\n" * 8)),
         ("bad.parquet", "not a readable Parquet file")),
    Case("train-latin1-bytes-in-jsonl", lambda b: train(b, data=latin1_jsonl(b)),
         ("latin1.jsonl line 2", "UTF-8")),
    Case("train-empty-file", lambda b: train(b, data=b.file("empty.jsonl", "")),
         ("empty.jsonl", "holds no rows")),
    Case("train-missing-column", lambda b: train(b, data=b.rows("nosummary.jsonl", [{"dialogue": "#Person1#: Hi", "label": "x"}])),
         ("nosummary.jsonl line 1", "no column 'summary'", "dialogue, label", "--columns response=")),
    Case("train-misspelled-column", lambda b: train(b, "--columns", "prompt=dialog,response=summary"),
         ("toy.jsonl line 1", "no column 'dialog'", "dialogue", "--columns prompt=")),
    Case("compare-columns-not-a-mapping", lambda b: compare(b, "--columns", "prompt"), ("columns: 'prompt' is not NAME=COLUMN",)),
    Case("train-template-unknown-field", lambda b: train(b, "--template", "Summarize: {conversation}"),
         ("toy.jsonl line 1", "no column 'conversation'", "--template")),
    # train: conversations (issue 28)
    Case("train-chat-unknown-role", lambda b: train(b, data=chat(b, [USER, {"role": "bot", "content": "Hi."}])),
         ("chat.jsonl line 2, messages message 2", "unknown role 'bot'", "system, user, assistant, tool")),
    Case("train-chat-empty-content", lambda b: train(b, data=chat(b, [USER, {"role": "assistant", "content": "  "}])),
         ("chat.jsonl line 2, messages message 2", "empty content", "write its text")),
    Case("train-chat-no-assistant-turn", lambda b: train(b, data=chat(b, [{"role": "system", "content": "Be brief."}, USER])),
         ("chat.jsonl line 2", "no assistant turn", "add the assistant's answer")),
    Case("train-chat-tool-without-call", lambda b: train(b, data=chat(b, [USER, {"role": "tool", "content": "21 C"}, ANSWER])),
         ("chat.jsonl line 2, messages message 2", "tool message without a call", "tool_calls")),
    Case("train-chat-row-of-another-format", lambda b: train(b, data=b.rows("chat.jsonl", [{"messages": [USER, ANSWER]}, TOY_ROWS[0]])),
         ("chat.jsonl line 2", "template (columns filled into data.template) row", "first row is messages", "one format per file")),
    Case("train-chat-model-without-template", lambda b: train(b, data=chat(b, [USER, ANSWER])),
         ("chat.jsonl line 1", "model's chat template", "has none", "prompt/completion")),
    Case("train-sharegpt-unknown-speaker", lambda b: train(b, data=b.rows("sg.jsonl", [{"conversations": [{"from": "bob", "value": "x"}]}])),
         ("sg.jsonl line 1", "unknown speaker", "human, user, gpt")),
    # train: values that are not text, rows too large to read (issue 25)
    Case("train-json-list-value", lambda b: train(b, data=b.rows("v.jsonl", [{"dialogue": ["a", "b"], "summary": "x"}])),
         ("v.jsonl line 1", "column 'dialogue' holds a list, not text", "write it as a string")),
    Case("train-json-object-value", lambda b: train(b, data=b.rows("v.jsonl", [{"dialogue": "d", "summary": {"x": 1}}])),
         ("v.jsonl line 1", "column 'summary' holds an object, not text")),
    Case("train-json-boolean-value", lambda b: train(b, data=b.rows("v.jsonl", [{"dialogue": True, "summary": "x"}])),
         ("v.jsonl line 1", "column 'dialogue' holds a boolean (true), not text")),
    Case("train-json-nan-value", lambda b: train(b, data=b.file("v.jsonl", '{"dialogue": "d", "summary": NaN}\n')),
         ("v.jsonl line 1", "column 'summary' holds a number that is not finite (nan)")),
    Case("train-parquet-binary-column", lambda b: train(b, data=parquet(b, {"dialogue": [b"\xff\xfe"], "summary": ["x"]})),
         ("v.parquet row 1", "column 'dialogue' holds binary data, not text")),
    Case("train-parquet-list-column", lambda b: train(b, data=parquet(b, {"dialogue": [["a"]], "summary": ["x"]})),
         ("v.parquet row 1", "column 'dialogue' holds a list")),
    Case("train-parquet-struct-column", lambda b: train(b, data=parquet(b, {"dialogue": ["d"], "summary": [{"x": 1}]})),
         ("v.parquet row 1", "column 'summary' holds an object")),
    Case("train-parquet-date-column", lambda b: train(b, data=parquet(b, {"dialogue": [__import__("datetime").date(2026, 1, 2)], "summary": ["x"]})),
         ("v.parquet row 1", "column 'dialogue' holds a date value, not text")),
    Case("train-json-5000-digit-integer", lambda b: train(b, data=b.file("v.jsonl", '{"dialogue": ' + "7" * 5000 + ', "summary": "x"}\n')),
         ("v.jsonl line 1", "thousands of digits", "as a string")),
    Case("train-json-deep-nesting", lambda b: train(b, data=b.file("v.jsonl", '{"dialogue": ' + "[" * 100_000 + "]" * 100_000 + "}\n")),
         ("v.jsonl line 1", "nested too deeply", "flatten")),
    Case("train-csv-field-over-the-row-limit", lambda b: train(b, data=b.file("v.csv", "dialogue,summary\nhi,x\n" + "a" * 1_100_000 + ",x\n")),
         ("v.csv line 3", "over the 1,048,576-byte limit", "data.max_row_bytes")),
    Case("train-jsonl-row-over-the-limit", lambda b: train(b, data=b.rows("v.jsonl", [TOY_ROWS[0], {"dialogue": "a" * 10_000_000, "summary": "x"}])),
         ("v.jsonl line 2", "10,000,032 bytes", "over the 1,048,576-byte limit", "--set data.max_row_bytes")),
    Case("eval-metric-on-text-rows", lambda b: evaluate(b, "--metric", "exact", data=b.rows("t.jsonl", [{"text": "Hello there."}])),
         ("t.jsonl", "text rows have no reference", "--metric exact", "drop --metric")),
    Case("eval-jsonl-row-over-the-limit", lambda b: evaluate(b, data=b.rows("v.jsonl", [{"dialogue": "a" * 10_000_000, "summary": "x"}])),
         ("v.jsonl line 1", "over the 1,048,576-byte limit")),
    Case("generate-jsonl-row-over-the-limit", lambda b: generate(b, "--data", b.rows("v.jsonl", [{"dialogue": "a" * 10_000_000}])),
         ("v.jsonl line 1", "over the 1,048,576-byte limit")),
    Case("generate-text-rows-have-no-prompt", lambda b: generate(b, "--data", b.rows("t.jsonl", [{"text": "Hello there."}])),
         ("t.jsonl line 1", "text row has no prompt to answer", "prompt/completion")),
    Case("train-model-folder-missing", lambda b: train(b, "--model", f"{b.inputs}/no-such-model"),
         ("{inputs}/no-such-model", "does not exist")),
    # train: settings, flags and the config file
    Case("train-unknown-method", lambda b: train(b, "--method", "lorax"), ("unknown method 'lorax'", "lora, dora")),
    Case("train-batch-size-zero", lambda b: train(b, "--set", "train.batch_size=0"), ("train.batch_size must be at least 1, got 0",)),
    Case("train-lora-r-negative", lambda b: train(b, "--set", "lora.r=-1"), ("lora.r must be at least 1, got -1",)),
    Case("train-lr-not-a-number", lambda b: train(b, "--set", "train.lr=fast"), ("'train.lr' must be float", "'fast'")),
    Case("train-set-unknown-key", lambda b: train(b, "--set", "train.batchsize=4"), ("unknown setting 'train.batchsize'", "batch_size")),
    Case("train-set-unknown-method-key", lambda b: train(b, "--set", "lora.rank=4"), ("unknown setting 'lora.rank'", "r, target")),
    Case("train-max-samples-zero", lambda b: train(b, "--max-samples", "0"), ("max_samples must be at least 1, got 0",)),
    Case("config-unknown-key", lambda b: train(b, "--config", yaml_file(b, "train:\n  batchsize: 4\n")),
         ("{inputs}/run.yaml", "unknown setting 'train.batchsize'", "batch_size")),
    Case("config-malformed-yaml", lambda b: train(b, "--config", yaml_file(b, "train:\n  lr: [1e-4\n  batch_size: 4\n")),
         ("{inputs}/run.yaml", "not valid YAML", "line 3")),
    Case("config-not-a-mapping", lambda b: train(b, "--config", yaml_file(b, "- lora\n- dora\n")),
         ("{inputs}/run.yaml", "mapping", "list")),
    Case("config-file-missing", lambda b: train(b, "--config", f"{b.inputs}/nope.yaml"), ("{inputs}/nope.yaml", "does not exist")),
    # train: the output folder
    Case("train-output-is-a-file", lambda b: train(b, output=b.file("taken.txt", "a file\n")),
         ("{inputs}/taken.txt is a file", "another --output")),
    Case("train-output-foreign-folder", lambda b: train(b, output=b.occupied_output()),
         ("{out}", "holds notes.txt", "another --output")),
    Case("train-output-foreign-folder-overwrite", lambda b: train(b, "--overwrite", output=b.occupied_output()),
         ("{out}", "holds notes.txt", "another --output")),
    # eval: data files, adapters, models, settings
    Case("eval-jsonl-broken-line", lambda b: evaluate(b, data=broken_jsonl(b)), ("bad.jsonl line 3", "not valid JSON")),
    Case("eval-csv-ragged-line", lambda b: evaluate(b, data=ragged_csv(b)), ("bad.csv line 3", "quote fields")),
    Case("eval-parquet-not-parquet", lambda b: evaluate(b, data=b.file("bad.parquet", b"PAR1 but not really")),
         ("bad.parquet", "not a readable Parquet file")),
    Case("eval-latin1-bytes-in-jsonl", lambda b: evaluate(b, data=latin1_jsonl(b)), ("latin1.jsonl line 2", "0xe9", "save the file as UTF-8")),
    Case("eval-utf16-jsonl", lambda b: evaluate(b, data=utf16_jsonl(b)), ("utf16.jsonl", "UTF-16", "save it as UTF-8")),
    Case("eval-only-blank-lines", lambda b: evaluate(b, data=b.file("blank.jsonl", "\n  \n\t\n\n")), ("blank.jsonl", "holds no rows")),
    Case("eval-adapter-of-another-base", lambda b: evaluate(b, "--adapter", b.lora, model=b.t5),
         ("was trained on", "{llama}", "not on {t5}", "--model")),
    Case("eval-adapter-weights-truncated", lambda b: evaluate(b, "--adapter", truncated_weights(b)),
         ("{inputs}/adapter/adapter_model.safetensors", "damaged", "train it again")),
    Case("eval-adapter-config-corrupt", lambda b: evaluate(b, "--adapter", corrupt_adapter_config(b)),
         ("{inputs}/adapter/adapter_config.json", "not readable JSON", "train it again")),
    Case("eval-adapter-missing", lambda b: evaluate(b, "--adapter", f"{b.inputs}/no-adapter"),
         ("adapter folder {inputs}/no-adapter does not exist",)),
    Case("eval-gguf-not-gguf", lambda b: evaluate(b, model=b.file("model.gguf", b"\x00junk, not a model\n" * 64)),
         ("{inputs}/model.gguf", "not a GGUF file")),
    Case("eval-gguf-damaged", lambda b: evaluate(b, model=b.file("model.gguf", b"GGUF\x03\x00\x00\x00" + b"\xff" * 256)),
         ("cannot convert {inputs}/model.gguf", "damaged or truncated")),
    Case("eval-model-folder-missing", lambda b: evaluate(b, model=f"{b.inputs}/no-such-model"),
         ("model path {inputs}/no-such-model does not exist",)),
    Case("eval-num-beams-zero", lambda b: evaluate(b, "--num-beams", "0"), ("--num-beams must be at least 1, got 0",)),
    Case("eval-output-is-a-file", lambda b: evaluate(b, "--output", b.file("taken.txt", "x")), ("{inputs}/taken.txt is a file",)),
    # generate
    Case("generate-prompt-file-not-text", lambda b: generate(b, "--data", b.file("prompts.jsonl", bytes(range(128, 256)) * 4)),
         ("prompts.jsonl line 1", "UTF-8")),
    Case("generate-prompt-file-is-a-folder", lambda b: generate(b, "--data", b.folder("prompts.jsonl")),
         ("{inputs}/prompts.jsonl is a folder",)),
    Case("generate-empty-prompt-file", lambda b: generate(b, "--data", b.file("prompts.csv", "")), ("prompts.csv", "holds no rows")),
    Case("generate-misspelled-column", lambda b: generate(b, "--data", b.rows(), "--columns", "prompt=dialog"),
         ("toy.jsonl line 1", "no column 'dialog'", "dialogue", "--columns prompt=")),
    Case("generate-template-unknown-field", lambda b: generate(b, "--data", b.rows(), "--template", "TL;DR {conversation}"),
         ("toy.jsonl line 1", "no column 'conversation'", "--template")),
    # merge
    Case("merge-prompt-tuning", lambda b: merge(b, adapter=b.prompt_tuning), ("prompt-tuning cannot be merged", "serve it as an adapter")),
    Case("merge-output-is-a-file", lambda b: merge(b, "--output", b.file("taken.txt", "x")), ("{inputs}/taken.txt is a file",)),
    Case("merge-output-foreign-folder-overwrite", lambda b: merge(b, "--overwrite", "--output", b.occupied_output()),
         ("{out}", "notes.txt")),
    # export
    Case("export-prompt-tuning", lambda b: export(b, adapter=b.prompt_tuning), ("prompt-tuning cannot be merged", "serve it as an adapter")),
    Case("export-output-not-gguf", lambda b: export(b, output=b.out), ("--output {out}", "must name a .gguf file")),
    Case("export-lora-file-of-prompt-tuning", lambda b: export(b, "--format", "gguf-lora", adapter=b.prompt_tuning),
         ("no LoRA layers", "--format gguf")),
    Case("export-ollama-lora-of-a-folder-base", lambda b: export(b, "--format", "ollama-lora", output=b.out),
         ("ollama-lora needs a base that came from a GGUF file", "--format ollama")),
    Case("export-output-exists", lambda b: export(b, output=b.file("model.gguf", "GGUF mine")), ("{inputs}/model.gguf already exists", "--overwrite")),
    # check: a converted LoRA folder and a llama.cpp LoRA file compared with the adapter (issue 31)
    Case("check-lora-is-not-a-lora", lambda b: check(b, "--lora", b.prompt_tuning),
         ("--lora", "is a prompt-tuning adapter, not a LoRA one", "--format lora")),
    Case("check-lora-missing", lambda b: check(b, "--lora", f"{b.inputs}/as-lora"),
         ("--lora {inputs}/as-lora does not exist", "--format lora --output")),
    Case("check-gguf-lora-not-gguf", lambda b: check(b, "--gguf-lora", b.file("lora.gguf", b"\x00junk, not a GGUF file\n" * 8)),
         ("--gguf-lora {inputs}/lora.gguf is not a GGUF file",)),
    Case("check-gguf-lora-damaged", lambda b: check(b, "--gguf-lora", b.file("lora.gguf", b"GGUF\x03\x00\x00\x00" + b"\xff" * 256)),
         ("--gguf-lora {inputs}/lora.gguf is a damaged or truncated GGUF file", "export it again")),
    Case("check-gguf-lora-without-a-base-gguf", lambda b: check(b, "--gguf-lora", gguf_header(b, "lora.gguf", "adapter")),
         ("--gguf-lora {inputs}/lora.gguf needs the base as a GGUF file", "--base-gguf FILE")),
    Case("check-gguf-lora-is-a-model", lambda b: check(b, "--gguf-lora", gguf_header(b, "model.gguf", "model")),
         ("--gguf-lora {inputs}/model.gguf is a whole model, not a llama.cpp LoRA file", "--gguf {inputs}/model.gguf")),
    Case("check-base-gguf-is-a-lora-file", lambda b: check(b, "--gguf-lora", gguf_header(b, "lora.gguf", "adapter"),
                                                           "--base-gguf", gguf_header(b, "base.gguf", "adapter")),
         ("--base-gguf {inputs}/base.gguf is a llama.cpp LoRA file, not the base model",)),
    Case("check-base-gguf-not-gguf", lambda b: check(b, "--gguf-lora", gguf_header(b, "lora.gguf", "adapter"),
                                                     "--base-gguf", b.file("base.gguf", "not a model\n")),
         ("--base-gguf {inputs}/base.gguf is not a GGUF file",)),
    Case("check-base-gguf-without-gguf-lora", lambda b: check(b, "--base-gguf", gguf_header(b, "base.gguf", "model")),
         ("--base-gguf names the base file a --gguf-lora file is applied to", "--gguf-lora FILE")),
    Case("check-gguf-is-a-lora-file", lambda b: check(b, "--gguf", gguf_header(b, "lora.gguf", "adapter")),
         ("--gguf {inputs}/lora.gguf is a llama.cpp LoRA file, not a model", "--gguf-lora {inputs}/lora.gguf")),
    # trackers
    Case("train-tracker-unknown", lambda b: train(b, "--set", "train.report_to=neptune"), ("train.report_to 'neptune'", "tensorboard, mlflow")),
    Case("train-tracker-not-installed", lambda b: train(b, "--set", "train.report_to=tensorboard,wandb"),
         ("train.report_to wandb", "pip install wandb")),
    # hub upload: checked before any work
    Case("train-public-without-push", lambda b: train(b, "--public"), ("--public works with --push-to-hub",)),
    Case("train-push-repo-without-owner", lambda b: train(b, "--push-to-hub", "dialogsum-lora"), ("--push-to-hub dialogsum-lora", "OWNER/NAME")),
    # serve start-up: refused before a socket is bound
    Case("serve-adapter-spec-without-name", lambda b: serve(b, "--adapter", b.lora), ("is not NAME=DIR",)),
    Case("serve-port-out-of-range", lambda b: serve(b, "--adapter", f"a={b.lora}", "--port", "70000"), ("--port 70000", "65535")),
    Case("serve-adapter-missing", lambda b: serve(b, "--adapter", f"a={b.inputs}/gone"), ("adapter folder {inputs}/gone does not exist",)),
    # compare
    Case("compare-unknown-method", lambda b: compare(b, "--methods", "base,lora,lorax"), ("lorax", "--methods", "choose from")),
    Case("compare-sweep-unknown-key", lambda b: compare(b, "--sweep", "lora.rank=4,8"), ("lora.rank", "r, target")),
    Case("compare-test-data-broken", lambda b: compare(b, test=broken_jsonl(b)), ("bad.jsonl line 3", "not valid JSON")),
    Case("compare-seeds-without-trials", lambda b: compare(b, "--seeds", "3"), ("--seeds", "work with --trials N")),
    Case("compare-trials-and-sweep", lambda b: compare(b, "--trials", "2", "--sweep", "lora.r=4,8"), ("--sweep and --trials do not mix",)),
    Case("compare-select-by-without-trials", lambda b: compare(b, "--select-by", "rouge"), ("--select-by", "work with --trials N")),
    Case("compare-zero-seeds", lambda b: compare(b, "--trials", "2", "--seeds", "0"), ("--seeds must be at least 1",)),
    Case("compare-val-share-too-large", lambda b: compare(b, "--trials", "2", "--val-share", "1.5"), ("--val-share", "between 0 and 1")),
    Case("compare-too-few-rows-to-validate", lambda b: compare(b, "--trials", "2"), ("too few to keep 16 for validation", "--val-share")),
    Case("compare-storage-unreachable", lambda b: compare(b, "--trials", "2", "--storage", "nosuchdb://x/y",
                                                          data=b.rows("many.jsonl", TOY_ROWS * 10)),
         ("--storage nosuchdb://x/y", "cannot open it", "postgresql://")),
    # issue 25: never over an input, never over a file peftlab did not write, with or without --overwrite
    Case("generate-output-is-its-data", lambda b: generate(b, "--data", b.rows(), "--output", f"{b.inputs}/toy.jsonl"),
         ("--output {inputs}/toy.jsonl is this command's --data file", "another --output")),
    Case("generate-output-is-its-data-overwrite", lambda b: generate(b, "--data", b.rows(), "--output", f"{b.inputs}/toy.jsonl", "--overwrite"),
         ("--output {inputs}/toy.jsonl is this command's --data file",)),
    Case("generate-output-in-the-adapter", lambda b: generate(b, "--adapter", str(b.lora_copy()), "--data", b.rows(), "--output",
                                                              f"{b.inputs}/adapter/adapter_config.json", "--overwrite"),
         ("--output {inputs}/adapter/adapter_config.json", "adapter folder {inputs}/adapter")),
    Case("generate-output-exists", lambda b: generate(b, "--data", b.rows(), "--output", earlier_answers(b)),
         ("{inputs}/answers.jsonl already exists", "--overwrite")),
    Case("generate-output-foreign-file-overwrite", lambda b: generate(b, "--data", b.rows(), "--output", b.file("notes.txt", "mine\n"),
                                                                      "--overwrite"),
         ("{inputs}/notes.txt already exists and is not an answers file peftlab wrote", "never overwrites")),
    Case("eval-output-exists", lambda b: evaluate(b, "--output", str(earlier_eval(b, notes=False))),
         ("{out} already holds an evaluation", "--overwrite")),
    Case("eval-data-inside-output", lambda b: evaluate(b, data=data_inside(earlier_eval(b), "test.jsonl")),
         ("--data file {out}/test.jsonl is inside --output {out}", "move the input")),
    Case("eval-data-inside-output-overwrite", lambda b: evaluate(b, "--overwrite", data=data_inside(earlier_eval(b), "test.jsonl")),
         ("--data file {out}/test.jsonl is inside --output {out}",)),
    Case("eval-overwrite-foreign-files", lambda b: evaluate(b, "--overwrite", "--output", str(earlier_eval(b))),
         ("{out} holds my-notes.txt, which peftlab did not write", "move them out")),
    Case("eval-output-inside-the-adapter", lambda b: evaluate(b, "--adapter", str(b.lora_copy()), "--output", f"{b.inputs}/adapter/eval"),
         ("--output {inputs}/adapter/eval is inside this command's adapter folder",)),
    Case("train-data-inside-output-overwrite", lambda b: train(b, "--overwrite", data=data_inside(earlier_run(b))),
         ("--data file {out}/mydata.jsonl is inside --output {out}, which it would replace",)),
    Case("train-overwrite-foreign-files", lambda b: train(b, "--overwrite", output=str(earlier_run(b))),
         ("{out} holds my-notes.txt, which peftlab did not write",)),
    Case("train-output-inside-the-model", lambda b: train(b, output=f"{b.llama}/run"), ("--output {llama}/run is inside this command's --model",)),
    Case("train-config-inside-output-overwrite", lambda b: train(b, "--overwrite", "--config", config_inside(earlier_run(b))),
         ("--config file {out}/my.yaml is inside --output {out}, which it would replace",)),
    Case("merge-overwrite-foreign-files", lambda b: merge(b, "--overwrite", "--output", str(earlier_merge(b))),
         ("{out} holds my-notes.txt, which peftlab did not write",)),
    Case("merge-output-inside-the-adapter", lambda b: merge(b, "--output", f"{b.inputs}/adapter/merged", adapter=str(b.lora_copy())),
         ("--output {inputs}/adapter/merged is inside this command's adapter folder",)),
    Case("export-output-inside-the-adapter", lambda b: export(b, adapter=str(b.lora_copy()), output=f"{b.inputs}/adapter/model.gguf"),
         ("--output {inputs}/adapter/model.gguf is inside this command's adapter folder",)),
    Case("export-overwrite-foreign-gguf", lambda b: export(b, "--overwrite", output=b.file("model.gguf", b"GGUF\x03\x00\x00\x00not peftlab's")),
         ("{inputs}/model.gguf already exists and is not a GGUF file peftlab wrote", "never overwrites")),
    Case("export-ollama-overwrite-foreign-files", lambda b: export(b, "--format", "ollama", "--overwrite",
                                                                   output=str(earlier_output(b, {"Modelfile": "FROM ./model-q8_0.gguf\n"}))),
         ("{out} holds my-notes.txt, which peftlab did not write",)),
    Case("compare-overwrite-foreign-files", lambda b: (earlier_comparison(b), compare(b, "--overwrite"))[1],
         ("{out} holds my-notes.txt, which peftlab did not write",)),
    Case("compare-data-inside-output-overwrite", lambda b: compare(b, "--overwrite", data=data_inside(earlier_comparison(b))),
         ("--data file {out}/mydata.jsonl is inside --output {out}",)),
    Case("demo-overwrite-foreign-files", lambda b: ["demo", "--model", b.llama, "--dtype", "fp32", "--max-steps", "1", "--overwrite",
                                                    "--output", str(earlier_output(b, {"demo.json": "{}", "report.html": "<p>"}))],
         ("{out} holds my-notes.txt, which peftlab did not write",)),
    # issue 25: errors that were "unexpected ..." with exit 1
    Case("train-scheduler-unknown", lambda b: train(b, "--set", "train.scheduler=bogus"), ("train.scheduler 'bogus'", "cosine")),
    Case("train-column-given-a-section", lambda b: train(b, "--set", "data.columns.prompt.x=y"),
         ("'data.columns.prompt' must be a column name", "--set data.columns.prompt=")),
    Case("train-output-name-too-long", lambda b: train(b, output=str(b.work / ("n" * 300))), ("300 bytes long", "shorter --output")),
    Case("eval-output-name-too-long", lambda b: evaluate(b, "--output", str(b.work / ("n" * 250))), ("250 bytes long",)),
    Case("export-merge-record-damaged", lambda b: (b.folder("merged"), export(b, adapter=b.file("merged/peftlab-merge.json", '{"base": ')
                                                                              .removesuffix("/peftlab-merge.json")))[1],
         ("{inputs}/merged/peftlab-merge.json is not readable JSON", "merge it again")),
    Case("eval-adapter-without-weights", lambda b: evaluate(b, "--adapter", adapter_without_weights(b)),
         ("adapter {inputs}/adapter has no weights file", "train it again")),
    Case("eval-adapter-rank-not-a-number", lambda b: evaluate(b, "--adapter", adapter_with_config(b, lambda c: {**c, "r": "four"})),
         ("{inputs}/adapter/adapter_config.json is not a valid PEFT adapter config", "r is 'four'", "train it again")),
    Case("eval-adapter-config-empty", lambda b: evaluate(b, "--adapter", adapter_with_config(b, lambda c: {})),
         ("{inputs}/adapter/adapter_config.json is not a valid PEFT adapter config", "peft_type None")),
    Case("merge-adapter-config-unknown-type", lambda b: merge(b, adapter=adapter_with_config(b, lambda c: {**c, "peft_type": "BOGUS"})),
         ("{inputs}/adapter/adapter_config.json is not a valid PEFT adapter config", "peft_type 'BOGUS'")),
    Case("compare-overwrite-shared-storage", lambda b: compare(b, "--trials", "2", "--overwrite", "--storage", f"sqlite:///{b.inputs}/s.db"),
         ("--overwrite does not clear a shared --storage", "--study")),
]


@pytest.fixture
def bench(tmp_path, tiny_llama, tiny_t5, trained, monkeypatch) -> Bench:
    b = Bench(tmp_path, tiny_llama, tiny_t5, trained["lora"], trained["prompt"])
    b.inputs.mkdir()
    b.work.mkdir()
    monkeypatch.chdir(b.work)  # a stray relative write lands in the checksummed folder
    monkeypatch.setenv("PEFTLAB_CACHE", str(b.cache))
    return b


@pytest.fixture
def no_socket_bound(monkeypatch) -> list:
    """Fail loudly (instead of serving forever) if `peftlab serve` binds its socket."""
    from peftlab.serve import http

    bound = []

    def refuse(host, port):
        bound.append((host, port))
        raise AssertionError(f"a socket was bound to {host}:{port}")

    monkeypatch.setattr(http, "listening_socket", refuse)
    return bound


@pytest.mark.parametrize("case", [pytest.param(c, id=c.id, marks=c.marks) for c in CASES])
def test_bad_input_is_one_line_exit_2_and_changes_nothing(case, bench, no_socket_bound, capsys):
    argv = case.argv(bench)
    watched = [bench.root, Path(bench.llama), Path(bench.t5), Path(bench.lora).parent.parent]
    before = {path: checksum(path) for path in watched}
    ports = [int(value) for flag, value in zip(argv, argv[1:]) if flag == "--port"]
    capsys.readouterr()

    code = main(argv)

    out, err = capsys.readouterr()
    assert "Traceback" not in err + out, err + out
    lines = [line for line in err.splitlines() if line.strip()]
    assert code == 2, f"exit {code}: {err}"
    assert len(lines) == 1 and lines[0].startswith("error: "), err
    for wanted in (text.format(**bench.names()) for text in case.expect):
        if wanted not in lines[0]:
            raise MessageMissing(f"{wanted!r} not in: {lines[0]}")
    changed = [str(path) for path in watched if checksum(path) != before[path]]
    changed += [str(path) for path in (bench.cache / "models").rglob("*") if path.is_file()]  # no half-converted model
    if changed:
        raise OutputChanged(f"changed although {argv[0]} failed: {changed}; now {sorted(p.name for p in bench.work.rglob('*'))}")
    assert not no_socket_bound
    for port in (p for p in ports if 0 < p <= 65535):  # still free: nothing listens on it
        with socket.socket() as probe:
            probe.bind(("127.0.0.1", port))
