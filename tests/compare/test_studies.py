"""The shared work list on Optuna's storage, with real processes: no index twice, a killed worker's
trial taken over once stale, an interrupted one re-queued at once. The work is a sleep, not training."""

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]
WORKER = """
import faulthandler, json, signal, sys, time
faulthandler.dump_traceback_later(240, exit=True)  # a worker stuck this long prints where, into the test's message
from peftlab.compare import studies
# Ctrl-C as in a terminal: a test runner started in the background (`cmd &`) hands its children SIGINT ignored
signal.signal(signal.SIGINT, signal.default_int_handler)
url, name, total, delay, log, stale_after, slow_index = sys.argv[1:8]
study = studies.open_study(studies.open_storage(url, int(stale_after)), "work")
def work(trial, index):
    with open(log, "a") as handle:
        handle.write(json.dumps({"index": index, "worker": name, "trial": trial.number}) + "\\n")
    time.sleep(600 if index == int(slow_index) else float(delay))  # the slow one waits for its signal however busy the machine
    return float(index)
studies.settle(study, int(total), work, wait_limit=120)  # a trial waited for this long fails the worker, naming it
"""


CLAIMER = """
import sys, time
import optuna
from peftlab.compare import studies
url, starting, count = sys.argv[1], float(sys.argv[2]), int(sys.argv[3])
study = optuna.load_study(study_name="work", storage=studies.open_storage(url, 60))
while time.time() < starting:  # every claimer starts at once
    pass
print(" ".join(str(study.ask().number) for _ in range(count)))
"""


ASKED_AND_KILLED = """
import os, signal, sys
from peftlab.compare import studies
study = studies.open_study(studies.open_storage(sys.argv[1], 3), "work")
study.ask()  # running from here; Optuna records a trial's first heartbeat later, from a thread beside its objective
os.kill(os.getpid(), signal.SIGKILL)
"""


def start(tmp_path, name, total, delay=0.2, stale_after=60, slow_index=-1):
    url = f"sqlite:///{tmp_path / 'studies.db'}"
    env = {**os.environ, "PYTHONPATH": os.pathsep.join([str(ROOT), os.environ.get("PYTHONPATH", "")])}
    return subprocess.Popen([sys.executable, "-c", WORKER, url, name, str(total), str(delay), str(tmp_path / "log.jsonl"),
                             str(stale_after), str(slow_index)], env=env, stderr=subprocess.PIPE, text=True)


def started(tmp_path):
    path = tmp_path / "log.jsonl"
    return [json.loads(line) for line in path.read_text().splitlines()] if path.is_file() else []


def finished(tmp_path):
    from peftlab.compare import studies

    study = studies.open_study(studies.open_storage(f"sqlite:///{tmp_path / 'studies.db'}", 60), "work")
    return study, studies.done_trials(study)


def wait_until(condition, seconds=60):
    deadline = time.time() + seconds
    while not condition():
        assert time.time() < deadline, "timed out"
        time.sleep(0.05)


def test_two_workers_share_the_list_and_never_take_the_same_index(tmp_path):
    workers = [start(tmp_path, name, total=12) for name in ("a", "b")]
    for worker in workers:
        assert worker.wait(timeout=300) == 0, worker.stderr.read()[-4000:]
    runs = started(tmp_path)
    assert sorted(r["index"] for r in runs) == list(range(12))  # each index ran exactly once
    assert {r["worker"] for r in runs} == {"a", "b"}  # both worked
    study, done = finished(tmp_path)
    assert sorted(done) == list(range(12)) and all(t.value == i for i, t in done.items())


def test_an_enqueued_trial_is_claimed_by_one_worker_only(tmp_path):
    """Optuna locks a waiting trial with SELECT ... FOR UPDATE, which SQLite ignores; without our serialised
    transactions four claimers of 100 enqueued trials took about 12 of them twice (measured)."""
    from peftlab.compare import studies

    url = f"sqlite:///{tmp_path / 'studies.db'}"
    study = studies.open_study(studies.open_storage(url, 60), "work")
    for value in range(100):
        study.enqueue_trial({"x": value})
    env = {**os.environ, "PYTHONPATH": os.pathsep.join([str(ROOT), os.environ.get("PYTHONPATH", "")])}
    starting = time.time() + 5  # after the four interpreters have imported Optuna, on a busy machine too
    claimers = [subprocess.Popen([sys.executable, "-c", CLAIMER, url, str(starting), "25"], env=env, stdout=subprocess.PIPE,
                                 stderr=subprocess.PIPE, text=True) for _ in range(4)]
    claimed = []
    for claimer in claimers:
        out, err = claimer.communicate(timeout=120)
        assert claimer.returncode == 0, err[-2000:]
        claimed += [int(n) for n in out.split()]
    assert len(claimed) == 100 and sorted(claimed) == list(range(100))  # each enqueued trial went to one claimer


def test_a_killed_workers_trial_is_taken_over_once_it_goes_stale(tmp_path):
    doomed = start(tmp_path, "doomed", total=4, slow_index=0, stale_after=3)
    wait_until(lambda: any(r["index"] == 0 for r in started(tmp_path)))
    doomed.send_signal(signal.SIGKILL)  # no goodbye: its trial stays "running" until its heartbeat is stale
    doomed.wait()
    survivor = start(tmp_path, "survivor", total=4, delay=0.1, stale_after=3)
    # about 6 s here; once, beside six other torch processes on 2 cores, it passed 120 s: the bound is for a hang
    assert survivor.wait(timeout=300) == 0, survivor.stderr.read()[-4000:]
    runs = started(tmp_path)
    assert [r["worker"] for r in runs if r["index"] == 0] == ["doomed", "survivor"]  # redone once, by the survivor
    assert sorted(r["index"] for r in runs if r["index"] != 0) == [1, 2, 3]
    study, done = finished(tmp_path)
    assert sorted(done) == [0, 1, 2, 3]
    assert done[0].system_attrs["failed_trial"] == 0  # Optuna's retry of the stale trial, same index


def test_a_trial_whose_worker_died_before_its_first_heartbeat_is_taken_over(tmp_path):
    """Under load a worker was once killed after Optuna marked its trial running but before the first heartbeat
    was written: Optuna never counts such a trial stale, and the other worker waited for it forever."""
    url = f"sqlite:///{tmp_path / 'studies.db'}"
    env = {**os.environ, "PYTHONPATH": os.pathsep.join([str(ROOT), os.environ.get("PYTHONPATH", "")])}
    killed = subprocess.run([sys.executable, "-c", ASKED_AND_KILLED, url], env=env, capture_output=True, text=True, timeout=120)
    assert killed.returncode == -signal.SIGKILL, killed.stderr[-2000:]
    survivor = start(tmp_path, "survivor", total=2, delay=0.1, stale_after=3)
    assert survivor.wait(timeout=300) == 0, survivor.stderr.read()[-4000:]
    assert sorted(r["index"] for r in started(tmp_path)) == [0, 1]  # the dead trial's item done once, by its retry
    study, done = finished(tmp_path)
    assert sorted(done) == [0, 1] and done[0].system_attrs["failed_trial"] == 0


def test_a_wait_for_a_live_but_stuck_trial_is_bounded_and_names_it(tmp_path):
    from peftlab.compare import studies
    from peftlab.errors import PeftlabError

    url = f"sqlite:///{tmp_path / 'studies.db'}"
    study = studies.open_study(studies.open_storage(url, 60), "work")
    stuck = study.ask()  # another worker's trial: its heartbeat would stay fresh for the whole (short) wait
    said = []
    with pytest.raises(PeftlabError, match=f"waited 1 s for trial {stuck.number} \\(its work item not yet taken\\)"):
        studies.settle(study, 1, lambda trial, index: 0.0, said.append, wait_limit=1)
    assert said == [f"[work] waiting for trial {stuck.number} (its work item not yet taken) running elsewhere (or its going stale)"]


def test_an_interrupted_trial_is_requeued_at_once(tmp_path):
    interrupted = start(tmp_path, "interrupted", total=3, slow_index=0, stale_after=600)  # staleness would take 10 minutes
    wait_until(lambda: any(r["index"] == 0 for r in started(tmp_path)))
    time.sleep(0.5)
    interrupted.send_signal(signal.SIGINT)  # Ctrl-C
    assert interrupted.wait(timeout=60) != 0
    survivor = start(tmp_path, "survivor", total=3, delay=0.1, stale_after=600)
    assert survivor.wait(timeout=300) == 0, survivor.stderr.read()[-4000:]
    assert [r["worker"] for r in started(tmp_path) if r["index"] == 0] == ["interrupted", "survivor"]
    assert sorted(finished(tmp_path)[1]) == [0, 1, 2]


def test_a_worker_opening_a_new_study_waits_until_its_creator_has_set_it_up(tmp_path):
    import threading

    import optuna

    from peftlab.compare import studies

    url = f"sqlite:///{tmp_path / 'studies.db'}"
    go = threading.Event()

    def set_up(study):  # the creator is slow between creating the study and enqueueing its starting points
        go.wait(30)
        for lr in (1.0, 2.0):
            study.enqueue_trial({"lr": lr})

    creator = threading.Thread(target=studies.open_study, args=(studies.open_storage(url, 60), "work"), kwargs={"on_create": set_up})
    creator.start()
    other = studies.open_storage(url, 60)  # a second worker: its own storage
    wait_until(lambda: [s.study_name for s in optuna.get_all_study_summaries(other)] == ["work"])
    opened = []
    loader = threading.Thread(target=lambda: opened.append(studies.open_study(other, "work")))
    loader.start()
    time.sleep(1.0)
    assert not opened, "the second worker went ahead before the starting points were enqueued"
    go.set()
    loader.join(60), creator.join(60)
    assert [t.system_attrs["fixed_params"] for t in opened[0].get_trials()] == [{"lr": 1.0}, {"lr": 2.0}]
