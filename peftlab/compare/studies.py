"""Optuna's storage as the comparison's shared work list: which trial runs where, exactly once.

Every piece of work (a tuning trial of one method, a final seed run, the base model's score) is an
Optuna trial, so any number of `peftlab compare --worker` processes, on any machines that reach the
storage, share it with no scheduler of ours:
- a new piece of work is a new trial; Optuna numbers trials uniquely, and a trial's index in the work
  list is the count of fresh (not retried) trials numbered below it, so two workers never take the
  same index; an index past the end makes the trial a surplus one (failed, marked, ignored);
- a worker's heartbeat (Optuna's, on RDB storages) marks its trials alive; a trial whose worker died
  (killed, machine lost) goes stale after `stale_after` seconds and Optuna re-queues it as a waiting
  trial with the same parameters, which the next worker to look takes over (resuming its checkpoint); a worker
  waiting for a trial records one heartbeat for it, so that one whose worker died before its first also goes stale;
- a trial interrupted with Ctrl-C, or whose work failed, is re-queued the same way at once (up to 3 times).
"""

from __future__ import annotations

import time
import warnings
from typing import Any, Callable

from peftlab.errors import PeftlabError

# trial user attributes: RECORD a scored run as JSON; START which enqueued starting point a trial is (retries keep it)
INDEX, SURPLUS, RECORD, START = "index", "surplus", "record", "start"
# a finished tuning trial's validation figures (its value is one of them, signed so that lower is better)
VALIDATION_LOSS, VALIDATION_SCORE = "validation_loss", "validation_score"
VALIDATION_ROUGE = "validation_rouge"  # what studies begun before --metric recorded as VALIDATION_SCORE
POLL_SECONDS = 2.0
SET_UP, SET_UP_SECONDS = "set_up", 60  # a study's creator marks it set up; others wait this long for that
# what a worker sees when another creates the same new database at the same moment (tables, alembic's version row)
CREATION_RACES = ("already exists", "UNIQUE constraint failed", "database is locked")
MAX_RETRIES = 3  # a piece of work that failed (or whose worker died) this often stays failed
# settle's bound on waiting for another worker's trial that neither finishes nor goes stale (a live but stuck worker):
# a day, far above any one trial's training that a comparison runs
WAIT_LIMIT_SECONDS = 24 * 3600


class Surplus(Exception):
    """The work list was complete when this trial was created: it does nothing."""


class GaveUp(Exception):
    """This piece of work failed in a way a retry would repeat (a tuning configuration that cannot train):
    recorded as failed, not re-queued; the work goes on without it."""


def open_storage(url: str, stale_after: int) -> Any:
    import optuna
    from optuna.storages import RDBStorage, RetryHeartbeatStaleTrialCallback

    optuna.logging.set_verbosity(optuna.logging.ERROR)  # our own lines say what happens
    warnings.filterwarnings("ignore", category=optuna.exceptions.ExperimentalWarning)
    engine = {"connect_args": {"timeout": 60}} if url.startswith("sqlite") else {}  # SQLite: wait for a writer instead of failing
    for attempt in range(5):  # workers creating the same new database race on its tables: the loser tries again
        try:
            storage = RDBStorage(url, engine_kwargs=engine, heartbeat_interval=max(1, stale_after // 6), grace_period=stale_after,
                                 heartbeat_stale_trial_callback=RetryHeartbeatStaleTrialCallback(max_retry=MAX_RETRIES))
            if url.startswith("sqlite"):
                _serialize_sqlite(storage.engine)
            return storage
        except Exception as error:  # sqlalchemy raises many kinds (driver missing, refused, bad URL)
            if any(race in str(error) for race in CREATION_RACES) and attempt < 4:
                time.sleep(0.5 * (attempt + 1))
                continue
            first = str(error).strip().splitlines()[0] if str(error).strip() else type(error).__name__
            raise PeftlabError(f"--storage {url}: cannot open it ({first[:200]}); pass a database URL Optuna supports, "
                               "e.g. sqlite:////shared/studies.db or postgresql://user@host/db") from None
    raise AssertionError("unreachable")


def _serialize_sqlite(engine: Any) -> None:
    """Make every SQLite transaction take the write lock when it begins (SQLAlchemy's documented pysqlite recipe).
    Optuna claims an enqueued (waiting) trial by reading its state and then writing it, locked with SELECT ... FOR
    UPDATE, which SQLite ignores: two workers could both read "waiting" and run the same trial (Optuna issue 4621).
    PostgreSQL and MySQL honour the row lock and are left as they are."""
    from sqlalchemy import event

    @event.listens_for(engine, "connect")
    def _no_implicit_begin(dbapi_connection: Any, _record: Any) -> None:
        dbapi_connection.isolation_level = None  # the driver's own BEGIN (deferred, before the first write) is off

    @event.listens_for(engine, "begin")
    def _begin_immediate(connection: Any) -> None:
        connection.exec_driver_sql("BEGIN IMMEDIATE")

    engine.dispose()  # connections opened while Optuna created its tables reconnect with the listeners


def open_study(storage: Any, name: str, sampler: Any = None, pruner: Any = None,
               on_create: Callable[[Any], None] | None = None, direction: str = "minimize") -> Any:
    """Create the study, or load it when another worker (or an earlier run) made it; `on_create` runs once.
    A worker that loads a study another has just created waits until its creator has set it up: else it could
    sample a trial before the starting points are enqueued, or miss the recorded setup."""
    import optuna

    try:
        study = optuna.create_study(storage=storage, study_name=name, direction=direction, sampler=sampler, pruner=pruner)
    except optuna.exceptions.DuplicatedStudyError:
        study = optuna.load_study(study_name=name, storage=storage, sampler=sampler, pruner=pruner)
        _wait_until_set_up(study)
        return study
    if on_create:
        on_create(study)
    study.set_user_attr(SET_UP, True)
    return study


def _wait_until_set_up(study: Any) -> None:
    deadline = time.monotonic() + SET_UP_SECONDS
    # the marker, or (studies made before it existed, and one whose creator is still enqueueing) any attribute or trial:
    # an enqueued trial is taken before a sampled one, so the first one enqueued is enough
    while not (study.user_attrs or study.get_trials(deepcopy=False)):
        if time.monotonic() > deadline:
            raise PeftlabError(f"study {study.study_name} was created but never set up (its creator stopped at once); "
                               "pass another --study, or delete it from the storage")
        time.sleep(0.1)


def _is_fresh(trial: Any) -> bool:
    return "failed_trial" not in trial.system_attrs  # set by Optuna's retry callback on a re-queued trial


def work_index(study: Any, trial: Any) -> int:
    """The trial's place in the work list: inherited by a retry, else counted from creation order."""
    index = trial.user_attrs.get(INDEX)
    if index is None:  # a retry of a trial killed before it took its index counts from the original's number
        trials = study.get_trials(deepcopy=False)
        origin = next(t for t in trials if t.number == trial.number).system_attrs.get("failed_trial", trial.number)
        index = sum(_is_fresh(t) for t in trials if t.number < origin)
        trial.set_user_attr(INDEX, index)
    return index


def claimable(study: Any, total: int) -> bool:
    from optuna.trial import TrialState

    trials = study.get_trials(deepcopy=False)
    return any(t.state == TrialState.WAITING for t in trials) or sum(_is_fresh(t) for t in trials) < total


def run_one(study: Any, total: int, work: Callable[[Any, int], float]) -> None:
    """Take one piece of work from the study (a re-queued one first) and run `work(trial, index)`."""
    from optuna.storages import RetryHeartbeatStaleTrialCallback

    mine: list[int] = []

    def objective(trial: Any) -> float:
        mine.append(trial.number)
        index = work_index(study, trial)
        if index >= total:
            trial.set_user_attr(SURPLUS, True)
            raise Surplus()
        return work(trial, index)

    try:
        study.optimize(objective, n_trials=1, catch=(Surplus, GaveUp))
    except BaseException:  # Ctrl-C, or the work failed: re-queued (up to 3 times), the next run or another worker retries it
        for trial in study.get_trials(deepcopy=False):
            if trial.number in mine and not trial.user_attrs.get(SURPLUS):
                RetryHeartbeatStaleTrialCallback(max_retry=MAX_RETRIES)(study, trial)
        raise


def settle(study: Any, total: int, work: Callable[[Any, int], float], say: Callable[[str], None] = lambda text: None,
           wait_limit: float = WAIT_LIMIT_SECONDS) -> None:
    """Work on the study until every index is done, waiting for other workers' trials (or their going stale).
    A trial that neither finishes nor goes stale within `wait_limit` seconds of our first seeing it is an error
    naming it: its worker lives (its heartbeat goes on) but its work is stuck."""
    from optuna.storages import fail_stale_trials
    from optuna.trial import TrialState

    first_seen: dict[int, float] = {}  # trial number -> when this process began waiting for it
    while True:
        fail_stale_trials(study)
        if claimable(study, total):
            run_one(study, total, work)
            continue
        running = study.get_trials(deepcopy=False, states=(TrialState.RUNNING,))
        if not running:
            return
        now = time.monotonic()
        for trial in running:
            if trial.number not in first_seen:
                first_seen[trial.number] = now
                start_heartbeat_clock(study, trial)
                say(f"[{study.study_name}] waiting for {describe_trial(trial)} running elsewhere (or its going stale)")
            elif now - first_seen[trial.number] > wait_limit:
                raise PeftlabError(f"[{study.study_name}] waited {wait_limit:.0f} s for {describe_trial(trial)}: it neither "
                                   "finished nor went stale, so its worker lives but is stuck; stop that worker, then rerun")
        time.sleep(POLL_SECONDS)


def describe_trial(trial: Any) -> str:
    index = trial.user_attrs.get(INDEX)
    return f"trial {trial.number}" + (f" (work item {index})" if index is not None else " (its work item not yet taken)")


def start_heartbeat_clock(study: Any, trial: Any) -> None:
    """Record one heartbeat for a running trial of another worker, so that it goes stale if that worker is gone.

    Optuna (5.0) marks a trial running in `ask()` and records its first heartbeat afterwards, from a thread started
    beside the objective; its stale check skips a running trial with no heartbeat at all. A worker killed between
    the two left a trial that no other worker would ever take over: beside four busy processes on 2 cores, 1 of 10
    workers killed after their objective had begun had no heartbeat recorded yet. One heartbeat from the waiting
    side starts the clock: a live owner keeps it fresh, a dead one goes stale after the grace period (an owner
    that had a heartbeat is delayed by at most one period, once)."""
    storage = study._storage  # Optuna has no public handle to a study's storage or a trial's id (5.0)
    if hasattr(storage, "record_heartbeat") and storage.get_heartbeat_interval() is not None:
        storage.record_heartbeat(trial._trial_id)


def done_trials(study: Any) -> dict[int, Any]:
    """index -> the finished (complete or pruned) trial holding it; surplus and failed trials left out."""
    from optuna.trial import TrialState

    done = {}
    for trial in study.get_trials(deepcopy=False, states=(TrialState.COMPLETE, TrialState.PRUNED)):
        if INDEX in trial.user_attrs and not trial.user_attrs.get(SURPLUS):
            done[trial.user_attrs[INDEX]] = trial
    return dict(sorted(done.items()))
