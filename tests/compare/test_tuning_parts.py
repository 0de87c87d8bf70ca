"""The pieces of a tuned comparison without training: validation split, search space, intervals, verdict, Pareto front."""

import json

import numpy as np
import pytest

from peftlab import config as cfg
from peftlab.compare.search_space import DEFAULT, HIGHER_LR, LOWER_LR, RANDOM, TASK_PROMPT, search_space
from peftlab.compare.split import carve_validation, write_split
from peftlab.compare.statistics import interval, paired_difference
from peftlab.errors import PeftlabError
from peftlab.report.plots import pareto_front
from peftlab.report.verdict import verdict
from tests.conftest import write_jsonl


def rows(count):
    return [{"dialogue": f"dialogue {i}", "summary": f"summary {i}"} for i in range(count)]


def read(path):
    return [json.loads(line) for line in open(path, encoding="utf-8")]


def test_validation_rows_are_carved_reproducibly_and_never_trained_on(tmp_path):
    data = str(write_jsonl(tmp_path / "train.jsonl", rows(500)))
    train, validation = carve_validation(data, 0.1, 42)
    assert len(validation) == 50 and len(train) == 450
    assert not {r["dialogue"] for r in train} & {r["dialogue"] for r in validation}
    assert {r["dialogue"] for r in train} | {r["dialogue"] for r in validation} == {r["dialogue"] for r in rows(500)}
    assert carve_validation(data, 0.1, 42) == (train, validation)  # the same rows on any machine
    assert carve_validation(data, 0.1, 7)[1] != validation
    train_file, validation_file = write_split((train, validation), tmp_path / "split")
    assert read(train_file) == train and read(validation_file) == validation


def test_small_data_keeps_at_least_16_validation_rows_or_says_why_not(tmp_path):
    _, validation = carve_validation(str(write_jsonl(tmp_path / "small.jsonl", rows(40))), 0.1, 1)
    assert len(validation) == 16
    with pytest.raises(PeftlabError, match="too few to keep 16 for validation"):
        carve_validation(str(write_jsonl(tmp_path / "tiny.jsonl", rows(20))), 0.1, 1)
    with pytest.raises(PeftlabError, match="--val-share must be between 0 and 1"):
        carve_validation(str(tmp_path / "small.jsonl"), 1.5, 1)


class FixedTrial:
    """Answers each suggestion with the lowest (or first) choice, recording what was asked."""

    def __init__(self):
        self.asked = {}

    def suggest_float(self, name, low, high, log=False):
        self.asked[name] = (low, high, log)
        return low

    def suggest_categorical(self, name, choices):
        self.asked[name] = list(choices)
        return choices[0]


@pytest.mark.parametrize("method, knobs", [("lora", {"r": [8, 16, 32, 64]}), ("ia3", {}), ("adapter", {"reduction_factor": [8, 16, 32]}),
                                           ("prompt-tuning", {"num_virtual_tokens": [10, 20, 40]})])
def test_each_method_searches_its_learning_rate_and_its_own_knobs(method, knobs):
    shared = cfg.load(None, ["data.train=x.jsonl"])
    space = search_space(method, shared)
    trial = FixedTrial()
    params = space.suggest(trial)
    default_lr = shared.train.lr or __import__("peftlab.methods", fromlist=["get_method"]).get_method(method).lr
    assert trial.asked["lr"] == (pytest.approx(default_lr / 10), pytest.approx(default_lr * 10), True)
    assert {k: v for k, v in trial.asked.items() if k not in ("lr", "init")} == knobs
    assert ("init" in trial.asked) == (method == "prompt-tuning")  # soft prompts: random or from the task's text
    config = cfg.load(None, ["data.train=x.jsonl", *space.overrides(params)])  # every suggestion is a valid config
    assert config.method == method and config.train.lr == pytest.approx(default_lr / 10)
    assert cfg.load(None, ["data.train=x.jsonl", *space.overrides(space.defaults)]).train.lr == pytest.approx(default_lr)


@pytest.mark.parametrize("method, knob", [
    ("pissa", "r"),
    ("olora", "r"),
    ("eva", "r"),
    ("corda", "r"),
    ("lora-ga", "r"),
    ("loraplus", "r"),
    ("loftq", "r"),
    ("oft", "block_size"),
    ("vera", "r"),
    ("miss", "r"),
    ("shira", "r"),
    ("hira", "r"),
    ("lily", "r"),
    ("fourierft", "n_frequency"),
    ("randlora", "r"),
])
def test_the_newer_methods_search_their_rate_and_main_capacity_setting(method, knob):
    from peftlab.methods import get_method

    space = search_space(method, cfg.load(None, ["data.train=x.jsonl"]))
    default = get_method(method).defaults()[knob]
    assert space.lr == get_method(method).lr and list(space.knobs) == [knob]
    assert default in space.knobs[knob] and min(space.knobs[knob]) < default < max(space.knobs[knob])


def test_a_soft_prompt_can_start_from_the_task_text_of_the_template():
    space = search_space("prompt-tuning", cfg.load(None, ["data.train=x.jsonl"]))
    assert space.init_text == "Summarize the following conversation."
    assert space.defaults["init"] == RANDOM
    config = cfg.load(None, ["data.train=x.jsonl", *space.overrides({**space.defaults, "init": TASK_PROMPT})])
    assert config.methods["prompt-tuning"]["init_text"] == "Summarize the following conversation."


def test_a_study_starts_at_the_default_then_brackets_its_learning_rate():
    space = search_space("lora", cfg.load(None, ["data.train=x.jsonl", "train.lr=1e-3", "lora.r=8"]))
    points = space.starting_points(4)
    assert [role for role, _ in points] == [DEFAULT, HIGHER_LR, LOWER_LR]  # the fourth trial is TPE's
    assert [params["lr"] for _, params in points] == [1e-3, pytest.approx(10 ** -2.5), pytest.approx(10 ** -3.5)]
    assert all(params["r"] == 8 for _, params in points)  # only the rate moves
    assert [role for role, _ in space.starting_points(1)] == [DEFAULT]
    for _, params in points:  # each lies inside the searched span, so TPE can model it
        assert space.lr / 10 <= params["lr"] <= space.lr * 10


def test_the_selection_guide_is_part_of_the_setup_and_older_setups_still_match():
    loss = cfg.CompareSetup(["data.train=x.jsonl"], "test.jsonl", trials=2).to_dict()
    rouge = cfg.CompareSetup(["data.train=x.jsonl"], "test.jsonl", trials=2, select_by="rouge").to_dict()
    assert "select_by" not in loss  # as recorded before the option existed: those comparisons resume
    assert {k: v for k, v in rouge.items() if k != "select_by"} == loss and rouge["select_by"] == "rouge"


def test_the_users_settings_are_the_centre_of_the_search():
    space = search_space("lora", cfg.load(None, ["data.train=x.jsonl", "train.lr=2e-4", "lora.r=8"]))
    assert space.defaults == {"lr": 2e-4, "r": 8} and space.knobs == {"r": [2, 4, 8, 16]}


def test_the_interval_covers_the_mean_and_narrows_with_more_examples():
    rng = np.random.default_rng(0)
    few, many = rng.normal(0.3, 0.1, (2, 16)), rng.normal(0.3, 0.1, (2, 1024))
    low, high = interval(few)
    assert low < few.mean() < high
    assert interval(many)[1] - interval(many)[0] < (high - low) / 4
    assert interval(few) == [low, high]  # the same scores give the same interval


def test_seed_to_seed_spread_widens_the_interval():
    rng = np.random.default_rng(1)
    examples = rng.normal(0.3, 0.05, 64)
    agreeing = np.stack([examples, examples + 0.001])
    disagreeing = np.stack([examples, examples + 0.1])
    width = lambda scores: interval(scores)[1] - interval(scores)[0]
    assert width(disagreeing) > 2 * width(agreeing)


def test_paired_differences_tell_a_real_gap_from_noise():
    rng = np.random.default_rng(2)
    a = rng.uniform(0.1, 0.6, (2, 64))
    better = paired_difference(a + 0.03 + rng.normal(0, 0.01, a.shape), a)
    assert better["significant"] and better["interval"][0] > 0 and better["p_value"] < 0.01
    noise = paired_difference(a + rng.normal(0, 0.05, a.shape), a)
    assert not noise["significant"] and noise["interval"][0] < 0 < noise["interval"][1] and noise["p_value"] > 0.05


def record(name, rouge_l, memory_gib=None, forgetting=0.0, tokens=None, interval_l=None):
    method = "base" if name == "base" else name
    return {"name": name, "method": method, "scores": {"rougeL": rouge_l}, "primary": "rougeL", "score_labels": {"rougeL": "ROUGE-L"},
            "forgetting": forgetting, "train_tokens": tokens,
            "peak_memory_bytes": memory_gib * 2**30 if memory_gib else None,
            "score_interval": {"rougeL": interval_l} if interval_l else None}


def test_the_verdict_names_best_ties_cheapest_harm_and_short_budgets():
    records = [record("base", 0.20), record("full", 0.36, 9.0, forgetting=0.3, tokens=1000, interval_l=[0.34, 0.38]),
               record("lora", 0.35, 5.0, tokens=1000), record("ia3", 0.25, 4.8, tokens=1000),
               record("prompt-tuning", 0.18, 4.9, tokens=700)]
    tests = [{"first": "full", "second": "lora", "significant": False}, {"first": "full", "second": "ia3", "significant": True},
             {"first": "base", "second": "prompt-tuning", "significant": True}]
    lines = verdict(records, tests)
    assert lines[0] == "Best quality: full, ROUGE-L 36.0 (95% interval 34.0-38.0)."
    assert "Cannot be told apart from full: lora" in lines[1]
    assert "full is better than ia3 beyond doubt" in lines[2]
    assert "Best within the memory of the cheapest method (ia3, 4.80 GiB peak): lora, ROUGE-L 35.0." in lines
    assert "Below the untrained base model on ROUGE-L: prompt-tuning (significant)." in lines
    assert "Hurt general text (loss up by more than 0.1 nats/token): full (+0.300)." in lines
    assert any(line.startswith("Unequal budget") and "prompt-tuning 70%" in line for line in lines)


def test_untuned_single_runs_say_how_to_get_confidence():
    lines = verdict([record("base", 0.2), record("lora", 0.3, 5.0)], [])
    assert "rerun with --trials N --seeds K" in lines[1]


def test_the_pareto_front_keeps_only_runs_nothing_beats_on_both_axes():
    points = [(1.0, 20.0, "ia3"), (2.0, 30.0, "lora"), (3.0, 25.0, "adapter"), (9.0, 35.0, "full"), (2.0, 10.0, "prompt")]
    assert [name for _, _, name in pareto_front(points)] == ["ia3", "lora", "full"]


def test_two_workers_do_not_draw_the_same_configurations():
    """The sampler is seeded by the trial's number: reruns repeat a trial's draw, other trials (in any worker) differ."""
    import optuna

    from peftlab.compare.tuned import sampler_for

    def first_draw(number):
        study = optuna.create_study(sampler=sampler_for(42, 4, number))
        return study.ask().suggest_float("lr", 1e-4, 1e-2, log=True)

    assert first_draw(1) == first_draw(1)
    assert len({first_draw(number) for number in range(4)}) == 4
