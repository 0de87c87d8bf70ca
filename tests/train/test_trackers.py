"""train.report_to: TensorBoard's curves land in the run folder; a run recorded before a setting existed resumes."""

from __future__ import annotations

import json

import pytest
import yaml

from peftlab import artifacts
from peftlab.errors import PeftlabError
from tests.conftest import TOY_ROWS, write_jsonl
from tests.tiny_models import tiny_run_config, train_tiny


def test_tensorboard_gets_every_training_step_in_the_run_folder(tiny_llama, tmp_path):
    from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

    data = write_jsonl(tmp_path / "toy.jsonl", TOY_ROWS * 2)
    summary = train_tiny(tiny_llama, data, tmp_path / "run", "train.report_to=tensorboard", "train.max_steps=3")
    folder = tmp_path / "run" / "tensorboard"
    assert summary["trackers"] == {"tensorboard": str(folder)}
    assert json.loads((tmp_path / "run" / "summary.json").read_text())["trackers"] == {"tensorboard": str(folder)}
    events = EventAccumulator(str(folder))
    events.Reload()
    assert [event.step for event in events.Scalars("train/loss")] == [1, 2, 3]


def test_a_run_recorded_before_a_setting_existed_still_resumes(tiny_llama, tmp_path):
    data = write_jsonl(tmp_path / "toy.jsonl", TOY_ROWS * 2)
    train_tiny(tiny_llama, data, tmp_path / "run", "train.max_steps=2")
    recorded = yaml.safe_load((tmp_path / "run" / artifacts.RUN_FILE).read_text())
    del recorded["train"]["report_to"]  # as an older peftlab wrote it
    (tmp_path / "run" / artifacts.RUN_FILE).write_text(yaml.safe_dump(recorded))
    same = tiny_run_config(tiny_llama, data, tmp_path / "run", "train.max_steps=2")
    with pytest.raises(PeftlabError, match="already holds this finished run"):  # recognised as this run: the default held then
        artifacts.check_run_output(same, resume=True, overwrite=False)
    other = tiny_run_config(tiny_llama, data, tmp_path / "run", "train.max_steps=2", "train.report_to=tensorboard")
    with pytest.raises(PeftlabError, match=r"holds a different run \(differs in train.report_to\)"):
        artifacts.check_run_output(other, resume=True, overwrite=False)
