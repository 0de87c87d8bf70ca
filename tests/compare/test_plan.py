"""Planning the comparison's runs from --methods and --sweep."""

import pytest

from peftlab.compare.comparison import plan_runs
from peftlab.errors import PeftlabError


def test_one_run_per_method_and_sweep_value():
    runs = plan_runs(["base", "lora", "ia3"], ["lora.r=8,32", "lora.target=qv,all-linear"])
    assert [r.name for r in runs] == [
        "lora r=8 target=qv", "lora r=8 target=all-linear", "lora r=32 target=qv", "lora r=32 target=all-linear", "ia3"]
    assert runs[1].overrides() == ["method=lora", "lora.r=8", "lora.target=all-linear"]
    assert len({r.folder for r in runs}) == len(runs)


def test_a_shared_sweep_applies_to_every_trained_run():
    runs = plan_runs(["base", "lora", "full"], ["train.lr=1e-4,1e-3"])
    assert [r.name for r in runs] == ["lora lr=1e-4", "lora lr=1e-3", "full lr=1e-4", "full lr=1e-3"]


@pytest.mark.parametrize("methods, sweeps, message", [
    (["lora", "lorra"], [], "unknown method"),
    (["lora"], ["dora.r=4,8"], "'dora' is neither a method in --methods"),
    (["lora"], ["lora.r"], "expected SECTION.KEY=V1,V2"),
])
def test_bad_plans(methods, sweeps, message):
    with pytest.raises(PeftlabError, match=message):
        plan_runs(methods, sweeps)
