"""The output rule (issue 25), its other side: a command's own earlier output IS replaced with --overwrite (peftlab
recognises every file it wrote), a file put into a folder while it is rebuilt survives, and a damaged file is named
as what it is. The refusals themselves are cases of the bad-input battery (tests/test_bad_input.py)."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from peftlab import artifacts
from peftlab.cli import main
from peftlab.errors import PeftlabError
from tests.conftest import TOY_ROWS, write_jsonl


def twice(argv: list[str], capsys) -> None:
    """Run a command, then again with --overwrite: the second replaces the first's output in one piece."""
    assert main(argv) == 0, capsys.readouterr().err
    capsys.readouterr()
    code = main([*argv, "--overwrite"])
    assert code == 0, capsys.readouterr().err


COMMANDS = {
    "eval": lambda d, lora, out: ["eval", "--adapter", lora, "--data", d, "--output", str(out / "eval"), "--max-new-tokens", "2",
                                  "--samples", "0", "--dtype", "fp32"],
    "generate": lambda d, lora, out: ["generate", "--adapter", lora, "--data", d, "--output", str(out / "answers.jsonl"),
                                      "--max-new-tokens", "2", "--dtype", "fp32"],
    "merge": lambda d, lora, out: ["merge", "--adapter", lora, "--output", str(out / "merged"), "--dtype", "fp32"],
    "export-gguf": lambda d, lora, out: ["export", lora, "--type", "f32", "--output", str(out / "model.gguf")],
    "export-ollama": lambda d, lora, out: ["export", lora, "--format", "ollama", "--type", "f32", "--output", str(out / "ollama")],
}


@pytest.mark.parametrize("command", list(COMMANDS))
def test_a_commands_own_earlier_output_is_replaced_with_overwrite(command, tiny_adapter, tmp_path, capsys):
    data = str(write_jsonl(tmp_path / "test.jsonl", TOY_ROWS[:2]))
    out = tmp_path / "out"
    out.mkdir()
    argv = COMMANDS[command](data, tiny_adapter, out)
    twice(argv, capsys)
    written = Path(argv[argv.index("--output") + 1])
    assert written.exists() and sorted(p.name for p in out.iterdir()) == [written.name]  # no staging or temporary left


def test_eval_without_overwrite_keeps_the_earlier_evaluation(tiny_adapter, tmp_path, capsys):
    data = str(write_jsonl(tmp_path / "test.jsonl", TOY_ROWS[:2]))
    argv = COMMANDS["eval"](data, tiny_adapter, tmp_path)
    assert main(argv) == 0
    before = (tmp_path / "eval" / "metrics.json").read_bytes()
    capsys.readouterr()
    assert main(argv) == 2
    assert "already holds an evaluation; pass --overwrite" in capsys.readouterr().err
    assert (tmp_path / "eval" / "metrics.json").read_bytes() == before


def test_a_file_put_into_the_folder_while_it_is_rebuilt_survives(tiny_llama, tmp_path):
    """The folder is checked again just before the new one takes its place: a file the user saved there meanwhile
    stops the swap instead of being deleted with the old output."""
    from peftlab import config as cfg
    from peftlab.evaluate.evaluation import evaluate

    data = str(write_jsonl(tmp_path / "test.jsonl", TOY_ROWS[:2]))
    config = cfg.load(None, [], {"model.name": tiny_llama, "model.dtype": "fp32"})
    out = tmp_path / "eval"
    evaluate(config, data, str(out))
    notes = out / "notes.txt"

    def meanwhile(text: str) -> None:
        if "generated" in text and not notes.exists():
            notes.write_text("written while the evaluation ran\n")

    with pytest.raises(PeftlabError, match="holds notes.txt, which peftlab did not write"):
        evaluate(config, data, str(out), say=meanwhile, overwrite=True)
    assert notes.read_text() == "written while the evaluation ran\n" and (out / "metrics.json").is_file()
    assert sorted(p.name for p in tmp_path.iterdir()) == ["eval", "test.jsonl"]  # the new folder was discarded


def test_a_damaged_summary_is_named_as_a_training_runs_summary(tmp_path):
    run = tmp_path / "compare" / "runs" / "lora" / "train"
    run.mkdir(parents=True)
    (run / "summary.json").write_text('{"steps": 4, "train_loss"')  # cut short, as a full disk leaves it
    with pytest.raises(PeftlabError) as raised:
        artifacts.read_summary(run)
    message = str(raised.value)
    assert f"{run}/summary.json is not readable JSON" in message and "training run's summary" in message
    assert "adapter folder" not in message


def test_the_corrected_rerun_after_a_bad_setting_is_not_a_different_run(tiny_llama, tmp_path, capsys):
    """A bad train.scheduler is refused before run.yaml is written, so the corrected command starts cleanly."""
    data = str(write_jsonl(tmp_path / "toy.jsonl", TOY_ROWS * 2))
    argv = ["train", "--model", tiny_llama, "--dtype", "fp32", "--data", data, "--output", str(tmp_path / "run"),
            "--max-steps", "1", "--batch-size", "2", "--set", "lora.r=4"]
    assert main([*argv, "--set", "train.scheduler=bogus"]) == 2
    assert not (tmp_path / "run").exists()
    assert main([*argv, "--set", "train.scheduler=cosine"]) == 0, capsys.readouterr().err
    assert json.loads((tmp_path / "run" / "summary.json").read_text())["steps"] == 1
