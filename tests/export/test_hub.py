"""--push-to-hub: checked before any work (offline: one line, nothing trained), then the result uploaded to a
private repository; the Hub client is replaced at its boundary (huggingface_hub.HfApi), nothing reaches a network."""

from __future__ import annotations

from pathlib import Path

import pytest

from peftlab.cli import main
from tests.conftest import TOY_ROWS, write_jsonl


class RecordingApi:
    """Stands in for huggingface_hub.HfApi: records each call and what the output folder held at that moment."""

    calls: list = []
    watched: Path | None = None

    def __init__(self, token=None):
        self.token = token

    def whoami(self):
        RecordingApi.calls.append(("whoami", self.watched is not None and self.watched.exists()))
        return {"name": "me"}

    def create_repo(self, repo_id, private=None, exist_ok=False, repo_type=None):
        RecordingApi.calls.append(("create_repo", repo_id, private, exist_ok))
        return f"https://huggingface.co/{repo_id}"

    def upload_folder(self, repo_id, folder_path, commit_message=None, repo_type=None):
        RecordingApi.calls.append(("upload_folder", repo_id, sorted(p.name for p in Path(folder_path).iterdir())))

    def upload_file(self, path_or_fileobj, path_in_repo, repo_id, commit_message=None, repo_type=None):
        RecordingApi.calls.append(("upload_file", repo_id, path_in_repo, Path(path_or_fileobj).stat().st_size > 0))


@pytest.fixture
def hub(monkeypatch):
    import huggingface_hub

    monkeypatch.setenv("HF_TOKEN", "hf_test_token")
    monkeypatch.setattr(huggingface_hub, "HfApi", RecordingApi)
    RecordingApi.calls = []
    return RecordingApi


def train_argv(tiny_llama, tmp_path, *extra):
    data = write_jsonl(tmp_path / "toy.jsonl", TOY_ROWS * 2)
    return ["train", "--model", tiny_llama, "--dtype", "fp32", "--data", str(data), "--output", str(tmp_path / "run"),
            "--max-steps", "2", "--batch-size", "2", "--set", "lora.r=4", *extra]


def test_offline_the_push_fails_in_one_line_before_training(tiny_llama, tmp_path, monkeypatch, capsys):
    monkeypatch.setenv("HF_TOKEN", "hf_test_token")  # HF_HUB_OFFLINE=1 comes from the test session
    assert main(train_argv(tiny_llama, tmp_path, "--push-to-hub", "me/toy-lora")) == 2
    error = capsys.readouterr().err.strip()
    assert len(error.splitlines()) == 1 and "cannot reach the Hugging Face Hub" in error and "--push-to-hub" in error
    assert not (tmp_path / "run").exists()  # nothing trained, nothing written


def test_train_checks_the_hub_first_then_uploads_the_adapter_privately(tiny_llama, tmp_path, hub):
    hub.watched = tmp_path / "run"
    assert main(train_argv(tiny_llama, tmp_path, "--push-to-hub", "me/toy-lora")) == 0
    assert hub.calls[0] == ("whoami", False)  # asked before the run folder existed
    assert hub.calls[1] == ("create_repo", "me/toy-lora", True, True)  # private by default
    assert hub.calls[2][:2] == ("upload_folder", "me/toy-lora") and "adapter_config.json" in hub.calls[2][2]


def test_export_uploads_the_file_and_public_is_asked_for(adapter, tmp_path, hub):
    out = tmp_path / "model.gguf"
    assert main(["export", adapter, "--type", "f32", "--output", str(out), "--push-to-hub", "me/toy-gguf", "--public"]) == 0
    assert hub.calls[1] == ("create_repo", "me/toy-gguf", False, True)
    assert hub.calls[2] == ("upload_file", "me/toy-gguf", "model.gguf", True)
