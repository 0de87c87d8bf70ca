"""The run config: YAML, flags and --set layering, and the errors for impossible settings."""

import pytest

from peftlab import config as cfg
from peftlab.errors import PeftlabError
from peftlab.methods import get_method


def test_layering_yaml_then_flags_then_set(tmp_path):
    path = tmp_path / "run.yaml"
    path.write_text("train:\n  lr: 0.5\n  batch_size: 4\nmethod: lora\n")
    config = cfg.load(str(path), ["train.batch_size=2", "lora.r=8"], {"train.lr": 0.1})
    assert (config.train.lr, config.train.batch_size, config.methods["lora"]["r"]) == (0.1, 2, 8)


def test_partial_columns_keep_the_other_defaults():
    config = cfg.load(None, ["data.columns.response=summary1"])
    assert config.data.columns == {"prompt": "dialogue", "response": "summary1"}


@pytest.mark.parametrize("override, message", [
    ("train.lr=-1", "train.lr must be positive"),
    ("train.batch_size=0", "batch_size must be at least 1"),
    ("train.lrr=1", "unknown setting 'train.lrr'"),
    ("train.epochs=abc", "'train.epochs' must be float"),
    ("data.max_length=2", "data.max_length must be at least 8"),
    ("model.dtype=fp8", "model.dtype 'fp8' is not one of"),
])
def test_impossible_settings(override, message):
    with pytest.raises(PeftlabError, match=message):
        cfg.load(None, [override])


def test_method_settings_are_checked():
    lora = get_method("lora")
    assert lora.parse_settings({"r": "8"}).r == 8
    with pytest.raises(PeftlabError, match="lora.r must be at least 1, got 0"):
        lora.parse_settings({"r": 0})
    with pytest.raises(PeftlabError, match="unknown setting 'lora.rank'"):
        lora.parse_settings({"rank": 4})


def test_unknown_method():
    with pytest.raises(PeftlabError, match="unknown method 'lorra'; choose one of: lora"):
        get_method("lorra")


def test_config_round_trips_through_yaml(tmp_path):
    config = cfg.load(None, ["lora.r=4", "data.max_samples=3"])
    path = tmp_path / "run.yaml"
    path.write_text(config.to_yaml())
    assert cfg.load(str(path)).to_dict() == config.to_dict()
