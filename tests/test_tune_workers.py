"""Worker failure and many workers: a SIGKILLed worker's trial is failed and retried on resume, nothing
finished is lost; four processes on a real PostgreSQL server run exactly 4 x N trials without duplicates."""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
import tempfile
import time
import uuid
from pathlib import Path

import optuna
import pytest
from tune_helpers import FIDELITY_SPACE

from advisor.results.evalcache import EvalCache
from advisor.results.store import engine_for, load_fronts
from advisor.results.urls import normalize_url

HELPER = str(Path(__file__).parent / "tune_helpers.py")


def _worker(*args: str) -> subprocess.Popen:
    return subprocess.Popen([sys.executable, HELPER, *args], stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)


def _result(out: str) -> dict:
    return json.loads(next(ln for ln in out.splitlines() if ln.startswith("RESULT "))[7:])


@pytest.fixture
def shm_dir():
    base = "/dev/shm" if os.access("/dev/shm", os.W_OK) else None
    d = Path(tempfile.mkdtemp(prefix="advisor-workers-", dir=base))
    yield d
    shutil.rmtree(d, ignore_errors=True)


def test_sigkilled_worker_trial_is_failed_and_retried_on_resume(shm_dir):
    url = f"sqlite:///{shm_dir}/k.db"
    proc = _worker("--storage", url, "--study", "k", "--trials", "50", "--delay", "0.5", "--no-staging",
                   "--heartbeat", "1", "--grace", "2", "--seed", "5")
    _kill_mid_trial(proc, url, "k", nth=3)  # kill -9 while the 3rd accuracy measurement runs
    assert proc.returncode == -9
    before = optuna.load_study(study_name="k", storage=url).trials
    finished = {t.number: t.values for t in before if t.state.name == "COMPLETE"}
    running = [t for t in before if t.state.name == "RUNNING"]
    assert len(finished) >= 2 and len(running) == 1
    killed = running[0]

    time.sleep(3.5)  # past the grace period: the killed worker's heartbeat is stale
    resumed = _worker("--storage", url, "--study", "k", "--trials", "8", "--no-staging", "--heartbeat", "1",
                      "--grace", "2")
    out, err = resumed.communicate(timeout=120)
    assert resumed.returncode == 0, err
    after = optuna.load_study(study_name="k", storage=url).trials
    by_number = {t.number: t for t in after}
    for n, values in finished.items():  # no finished trial lost or changed
        assert by_number[n].state.name == "COMPLETE" and by_number[n].values == values
    assert by_number[killed.number].state.name == "FAIL"
    retries = [t for t in after if t.system_attrs.get("failed_trial") == killed.number]
    assert len(retries) == 1 and retries[0].state.name == "COMPLETE"
    assert retries[0].params == killed.params
    assert sum(t.state.name == "COMPLETE" for t in after) == len(finished) + 8
    assert not [t for t in after if t.state.name == "RUNNING"]
    front = {p.trial_number for p in load_fronts(engine_for(url), "k")}
    assert front == set(_result(out)["front"])
    from advisor.results.registry import list_studies

    summary = list_studies(engine_for(url), "k")[0]  # what `advisor studies` shows: the failure was run again
    assert summary.n_failed == 1 and summary.n_retried == 1


def test_a_killed_workers_trial_is_failed_when_the_study_already_has_its_trials(shm_dir):
    """Two workers share `--trials N`; one is SIGKILLed mid-trial and the other finishes the N. The killed trial
    stayed RUNNING for ever: Optuna fails stale trials only when a worker starts another, and rerunning the same
    command had nothing to run (the study showed 'running 1' across resumes). Now the resume fails it and queues
    it again (for `--more`), and says so."""
    url = f"sqlite:///{shm_dir}/d.db"
    proc = _worker("--storage", url, "--study", "d", "--total", "50", "--delay", "0.5", "--no-staging",
                   "--heartbeat", "1", "--grace", "2", "--seed", "5")
    _kill_mid_trial(proc, url, "d", nth=3)
    before = optuna.load_study(study_name="d", storage=url).trials
    done = sum(t.state.name == "COMPLETE" for t in before)
    (killed,) = [t for t in before if t.state.name == "RUNNING"]
    time.sleep(3.5)  # past the grace period
    resumed = _worker("--storage", url, "--study", "d", "--total", str(done), "--no-staging", "--heartbeat", "1",
                      "--grace", "2")
    out, err = resumed.communicate(timeout=120)
    assert resumed.returncode == 0, err
    res = _result(out)
    assert res["n_trials_run"] == 0 and res["dead_workers"] == [killed.number]
    after = optuna.load_study(study_name="d", storage=url).trials
    assert not [t for t in after if t.state.name == "RUNNING"]
    assert {t.number: t.state.name for t in after}[killed.number] == "FAIL"
    retry = [t for t in after if t.system_attrs.get("failed_trial") == killed.number]
    assert len(retry) == 1 and retry[0].state.name == "WAITING" and retry[0].params == killed.params
    assert sum(t.state.name == "COMPLETE" for t in after) == done


def _kill_mid_trial(proc: subprocess.Popen, url: str, study: str, nth: int) -> None:
    """SIGKILL the worker while it measures a trial's accuracy, from its `nth` accuracy stage on, at the first
    such moment its running trial has a heartbeat row. Optuna writes a trial's first heartbeat from a thread,
    which on a busy host can lag the objective: killed before it, the trial has no heartbeat and no check can
    tell its worker died (these tests are about the trials that do)."""
    import signal

    from sqlalchemy import text

    seen = 0
    for line in proc.stdout:
        if not line.startswith("STAGE accuracy"):
            continue
        seen += 1
        if seen < nth:
            continue
        _stop_outside_database_work(proc)
        engine = engine_for(url)
        with engine.connect() as c:
            beating = c.execute(text(
                "SELECT COUNT(*) FROM trials t JOIN studies s ON s.study_id = t.study_id JOIN trial_heartbeats h "
                "ON h.trial_id = t.trial_id WHERE s.study_name = :s AND t.state = 'RUNNING'"), {"s": study}).scalar()
        engine.dispose()
        if beating:
            proc.kill()
            break
        proc.send_signal(signal.SIGCONT)
    proc.wait(timeout=30)
    assert proc.returncode == -9, "the worker ended before it could be killed mid-trial"


def test_a_trial_whose_worker_died_before_its_first_heartbeat_is_failed_too(shm_dir):
    """Optuna writes a trial's first heartbeat from a thread started after the trial is created. A worker killed
    in between (an OOM kill, a power cut) left a RUNNING trial with no heartbeat, which no stale check judges:
    every resume ran beside it and `studies` showed it running for ever. Now a resume stamps it, and once the
    grace period passes without its worker beating, it is failed and queued again like any dead worker's."""
    url = f"sqlite:///{shm_dir}/h.db"
    common = ["--storage", url, "--study", "h", "--no-staging", "--heartbeat", "1", "--grace", "2"]
    first = _worker(*common, "--trials", "1", "--seed", "3")
    assert first.wait(timeout=120) == 0, first.stderr.read()
    orphan = optuna.load_study(study_name="h", storage=url).ask()  # created; its worker dies before a beat
    time.sleep(1.1)  # found older than a heartbeat interval (younger, it may be a worker's without heartbeats)
    for dead in ([], [orphan.number]):  # the resume that stamps it, then one past the grace period
        resumed = _worker(*common, "--total", "1")
        out, err = resumed.communicate(timeout=120)
        assert resumed.returncode == 0, err
        assert _result(out)["dead_workers"] == dead
        time.sleep(3.5)
    after = {t.number: t for t in optuna.load_study(study_name="h", storage=url).trials}
    assert after[orphan.number].state.name == "FAIL"
    assert [t.state.name for t in after.values() if t.system_attrs.get("failed_trial") == orphan.number] == ["WAITING"]
    assert "running 0" in _studies(url)


def test_a_worker_without_heartbeats_keeps_its_trial_while_workers_with_them_run(shm_dir):
    """A worker started through the Python API with heartbeats off (`TuneOptions(heartbeat_interval=None)`) that
    shares the study: every `advisor tune` stamped its running trial with a first heartbeat (meant for a worker
    killed before its first beat), and once the grace period passed, failed it as stale and queued it again while
    it still ran. Its trials are marked now and never stamped."""
    url, release = f"sqlite:///{shm_dir}/q.db", shm_dir / "release"
    quiet = _worker("--storage", url, "--study", "q", "--no-staging", "--heartbeat", "0", "--trials", "1",
                    "--hold", str(release), "--seed", "1")  # its trial runs until the checks below are done
    for line in quiet.stdout:
        if line.startswith("STAGE accuracy 0"):
            break
    try:
        time.sleep(1.5)  # older than a heartbeat interval: a trial stamped had it no mark
        for seed in ("2", "3"):  # the first would stamp it, the second (past the grace period) fail it
            beating = _worker("--storage", url, "--study", "q", "--no-staging", "--heartbeat", "1", "--grace", "2",
                              "--trials", "1", "--seed", seed)
            out, err = beating.communicate(timeout=120)
            assert beating.returncode == 0, err
            assert _result(out)["dead_workers"] == []
            time.sleep(2.5)
        first = optuna.load_study(study_name="q", storage=url).trials[0]
        assert first.state.name == "RUNNING" and first.system_attrs.get("advisor:no_heartbeat") is True
    finally:
        release.touch()
        out, err = quiet.communicate(timeout=120)
    assert quiet.returncode == 0, err
    assert _result(out)["finished_elsewhere"] == [], out
    states = [t.state.name for t in optuna.load_study(study_name="q", storage=url).trials]
    assert states.count("COMPLETE") == 3 and "FAIL" not in states and "RUNNING" not in states, states


def _studies(url: str, *args: str, columns: int = 60) -> str:
    r = subprocess.run([sys.executable, "-m", "advisor", "studies", "--storage", url, *args], capture_output=True,
                       text=True, timeout=120, env={**os.environ, "COLUMNS": str(columns)})
    assert r.returncode == 0, r.stdout + r.stderr
    return r.stdout


def test_studies_tells_a_killed_workers_silent_trial_from_a_running_one(shm_dir):
    """A SIGKILLed worker's trial stays RUNNING until the next `advisor tune` on the study fails it: `advisor
    studies` showed it as running, as if a worker were busy with it. Now a running trial whose heartbeat is older
    than `SILENT_AFTER_S` is counted silent, with its age, in the wide and the fitted layout, and a footnote says
    what that means; the next tune (the CLI's default --heartbeat 10) indeed fails it."""
    _check_silent_trial(f"sqlite:///{shm_dir / 's.db'}")


@pytest.mark.postgres
def test_studies_tells_a_silent_trial_on_postgresql(pg_schema_url):
    """The same on PostgreSQL (its clock and timestamp types), in a fresh schema: no other study there."""
    _check_silent_trial(pg_schema_url)


def _check_silent_trial(url: str) -> None:
    import datetime as dt

    from sqlalchemy import DateTime, bindparam, text

    proc = _worker("--storage", url, "--study", "s", "--trials", "50", "--delay", "0.5", "--no-staging",
                   "--heartbeat", "1", "--grace", "2", "--seed", "5")
    _kill_mid_trial(proc, url, "s", nth=1)
    (killed,) = [t for t in optuna.load_study(study_name="s", storage=normalize_url(url)).trials
                 if t.state.name == "RUNNING"]
    fresh = _studies(url)  # killed a moment ago: not silent yet, as a live worker's trial
    assert "running 1" in fresh and "silent" not in fresh, fresh

    engine = engine_for(url)
    with engine.begin() as c:  # twelve minutes pass (on the database's clock, which the heartbeats use)
        beat = c.execute(text("SELECT heartbeat FROM trial_heartbeats WHERE trial_id = :t").columns(
            heartbeat=DateTime), {"t": killed._trial_id}).scalar_one()
        c.execute(text("UPDATE trial_heartbeats SET heartbeat = :b WHERE trial_id = :t").bindparams(
            bindparam("b", type_=DateTime)), {"b": beat - dt.timedelta(minutes=12), "t": killed._trial_id})
    note = "The next `advisor tune --study s` on this storage fails it and queues it again (a configuration is retried up to 3 times)."
    narrow, wide = (" ".join(_studies(url, *a).split()) for a in ((), ("--wide",)))  # the note wraps
    assert "running 1 (1 silent 12 min)" in narrow and note in narrow, narrow
    assert "│ 1 (1 silent 12 min) │" in wide and note in wide and "running 1" not in wide, wide
    assert "silent: a running trial whose worker has sent no heartbeat for over 90 s" in wide, wide

    done = sum(t.state.name == "COMPLETE" for t in optuna.load_study(study_name="s", storage=normalize_url(url)).trials)
    resumed = _worker("--storage", url, "--study", "s", "--total", str(done), "--no-staging", "--heartbeat", "10",
                      "--grace", "30")
    out, err = resumed.communicate(timeout=120)
    assert resumed.returncode == 0, err
    assert _result(out)["dead_workers"] == [killed.number]
    after = _studies(url)
    assert "running 0" in after and "silent" not in after, after


def _stop_outside_database_work(proc: subprocess.Popen) -> None:
    """SIGSTOP `proc` at a moment it holds no file lock (`/proc/locks`): stopped inside a SQLite write (the
    accuracy lease it claims right after "STAGE accuracy"), it would keep the file locked and the other worker
    would wait for it; SQLite cannot do otherwise, and that is not what this test is about."""
    import signal

    for _ in range(200):
        proc.send_signal(signal.SIGSTOP)
        time.sleep(0.02)  # the stop is delivered
        with open("/proc/locks") as f:
            holders = {ln.split()[5 if ln.split()[1] == "->" else 4] for ln in f}
        if str(proc.pid) not in holders:
            return
        proc.send_signal(signal.SIGCONT)
        time.sleep(0.01)
    raise AssertionError("the worker held a database lock at every try")


def test_a_paused_worker_whose_trial_another_failed_and_retried_goes_on(shm_dir):
    """A worker stopped (SIGSTOP: a suspended laptop, a paused container) past the grace period while it
    measures trial 0: a second worker fails that trial as stale and queues its retry. The first, continued,
    finishes trial 0 and tells Optuna, which refuses a finished trial (an AssertionError in Optuna's tell path:
    a traceback, exit 1). Now it says so in its result, keeps the other worker's outcome and runs its other
    trials."""
    import signal

    url = f"sqlite:///{shm_dir}/p.db"
    common = ["--storage", url, "--study", "p", "--no-staging", "--heartbeat", "1", "--grace", "2", "--seed", "1"]
    paused = _worker(*common, "--trials", "3", "--delay", "1.0")
    for line in paused.stdout:
        if line.startswith("STAGE accuracy 0"):
            _stop_outside_database_work(paused)
            break
    try:
        time.sleep(3.5)  # past the grace period: its heartbeat is stale
        other = _worker(*common, "--trials", "1")
        out, err = other.communicate(timeout=120)
        assert other.returncode == 0, err
    finally:
        paused.send_signal(signal.SIGCONT)
    out, err = paused.communicate(timeout=120)
    assert paused.returncode == 0 and "Traceback" not in err, err
    res = _result(out)
    assert res["finished_elsewhere"] == [0] and res["n_trials_run"] == 2, res
    trials = optuna.load_study(study_name="p", storage=url).trials
    assert trials[0].state.name == "FAIL"
    retries = [t for t in trials if t.system_attrs.get("failed_trial") == 0]
    assert len(retries) == 1 and retries[0].params == trials[0].params  # queued again (or run): nothing lost
    assert not [t for t in trials if t.state.name == "RUNNING"]


@pytest.mark.postgres
def test_four_workers_on_postgresql_run_exactly_4n_trials():
    base = os.environ.get("ADVISOR_TEST_POSTGRES_URL")
    if not base:
        pytest.skip("ADVISOR_TEST_POSTGRES_URL is not set (source .ci/start_postgres.sh to start a local server)")
    n, name = 5, f"workers-{uuid.uuid4().hex[:8]}"
    procs = [_worker("--storage", base, "--study", name, "--trials", str(n), "--heartbeat", "2", "--grace", "6",
                     "--seed", str(i), "--delay", "0.3", "--fingerprint", name) for i in range(4)]
    outs = [p.communicate(timeout=300) for p in procs]
    for p, (_, err) in zip(procs, outs, strict=True):
        assert p.returncode == 0, err
    url = normalize_url(base)
    try:
        study = optuna.load_study(study_name=name, storage=url)
        trials = study.trials
        assert len(trials) == 4 * n
        assert all(t.state.name == "COMPLETE" for t in trials)
        assert sorted(t.number for t in trials) == list(range(4 * n))
        assert len({t._trial_id for t in trials}) == 4 * n
        assert sum(_result(o)["n_trials_run"] for o, _ in outs) == 4 * n
        stored = sorted(p.trial_number for p in load_fronts(engine_for(url), name))
        assert stored == sorted(t.number for t in study.best_trials)  # last writer saw every worker's trials
        # the accuracy lease: no plan measured twice, however the four workers overlapped
        measured = [fp for o, _ in outs for fp in _result(o)["accuracy_plans"]]
        cached = EvalCache(engine_for(url)).count(name, "fake")
        assert len(measured) == len(set(measured)) == cached > 0, (measured, cached)
        assert sum(_result(o)["counters"].get("accuracy_evaluations", 0) for o, _ in outs) == cached
    finally:
        optuna.delete_study(study_name=name, storage=url)
        from advisor.results.store import save_front

        save_front(engine_for(url), name, [])



_OPEN_AT = """
import sys, time
from advisor.results.storage import open_storage
import optuna  # imported before the start times, so that every worker reaches the database at the same moment
for url, at in zip(sys.argv[1::2], sys.argv[2::2]):
    time.sleep(max(0.0, float(at) - time.time()))
    open_storage(url, heartbeat_interval=None)
"""


@pytest.mark.postgres
def test_workers_starting_together_on_a_fresh_postgresql_database_all_open_it():
    """The README's many-workers recipe on a database no study has used yet: every worker creates Optuna's
    tables at the same moment (a fresh schema stands for a fresh database), and none may die of the CREATE
    TABLE race (it did: IntegrityError on pg_type_typname_nsp_index, one line, exit 2)."""
    base = os.environ.get("ADVISOR_TEST_POSTGRES_URL")
    if not base:
        pytest.skip("ADVISOR_TEST_POSTGRES_URL is not set (source .ci/start_postgres.sh to start a local server)")
    from sqlalchemy import create_engine, text

    schemas = [f"fresh_{uuid.uuid4().hex[:8]}" for _ in range(3)]  # three rounds: the race is not every time
    admin = create_engine(normalize_url(base))
    with admin.begin() as c:
        for schema in schemas:
            c.execute(text(f"CREATE SCHEMA {schema}"))
    start = time.time() + 4.0
    args = [a for i, schema in enumerate(schemas) for a in (f"{base}?options=-csearch_path%3D{schema}", str(start + i))]
    try:
        procs = [subprocess.Popen([sys.executable, "-c", _OPEN_AT, *args], stdout=subprocess.PIPE,
                                  stderr=subprocess.STDOUT, text=True) for _ in range(6)]
        outs = [p.communicate(timeout=120)[0] for p in procs]
        assert [p.returncode for p in procs] == [0] * 6, [o.strip().splitlines()[-1:] for o in outs]
    finally:
        with admin.begin() as c:
            for schema in schemas:
                c.execute(text(f"DROP SCHEMA {schema} CASCADE"))
        admin.dispose()


_RUN_QUEUED_MEETING = """
import os, sys, time
from advisor.results.storage import open_storage
import optuna
from optuna.storages._rdb import models
from optuna.trial import TrialState
optuna.logging.set_verbosity(optuna.logging.ERROR)
url, meet, n = sys.argv[1], sys.argv[2], int(sys.argv[3])
me = os.path.join(meet, str(os.getpid()))
storage = open_storage(url, heartbeat_interval=None)
claim, find, met = storage.set_trial_state_values, models.TrialModel.find_or_raise_by_id, []


def others(what):
    return [f for f in os.listdir(meet) if f.endswith(what) and not f.startswith(str(os.getpid()) + ".")]


def claiming(trial_id, state, values=None):  # a claim begins (before any lock it takes)
    if state == TrialState.RUNNING and not met:
        open(me + ".claiming", "w").close()
    return claim(trial_id, state, values)


def meet_at_the_read(trial_id, session, for_update=False):
    # the first claim has read its queued trial: it waits there for the other worker's first claim to read one
    # too (both then write: the race), or to wait 0.5 s for a lock this claim holds (no race to make)
    trial = find(trial_id, session, for_update=for_update)
    if trial.state == TrialState.WAITING and not met:
        met.append(True)
        open(me + ".read", "w").close()
        deadline, blocked = time.monotonic() + 60, None
        while not others(".read") and time.monotonic() < deadline:
            blocked = blocked or (time.monotonic() if others(".claiming") else None)
            if blocked and time.monotonic() - blocked > 0.5:
                break
            time.sleep(0.01)
    return trial


storage.set_trial_state_values, models.TrialModel.find_or_raise_by_id = claiming, meet_at_the_read
study = optuna.load_study(study_name="q", storage=storage)
open(me + ".ready", "w").close()  # both past opening the database (its lock): only the claims take it from here
deadline = time.monotonic() + 60
while not others(".ready") and time.monotonic() < deadline:
    time.sleep(0.01)
study.optimize(lambda t: print("RAN", t.suggest_int("x", 0, 99), flush=True) or 0.0, n_trials=n)
"""


def test_two_workers_on_one_sqlite_file_claim_each_queued_trial_once(tmp_path):
    """Two processes on one SQLite study of 40 queued trials (what --budgets and the warm start enqueue), each
    running 20 trials through `open_storage` (the storage `advisor tune` uses): Optuna's claim of a queued trial
    is a SELECT ... FOR UPDATE that SQLite ignores, so both ran some trials and the later one's tell crashed
    ("Cannot tell a COMPLETE trial"). Now every queued trial runs exactly once. The workers' first claims meet
    where each has read its queued trial and not yet written it (both read the same one unless the claim's lock
    keeps the second out): with the lock removed it fails every time, not only when the timing overlaps."""
    from advisor.results.storage import open_storage

    url = f"sqlite:///{tmp_path / 's.db'}"
    study = optuna.create_study(study_name="q", storage=open_storage(url, heartbeat_interval=None))
    for x in range(40):
        study.enqueue_trial({"x": x})
    (tmp_path / "meet").mkdir()
    procs = [subprocess.Popen([sys.executable, "-c", _RUN_QUEUED_MEETING, url, str(tmp_path / "meet"), "20"],
                              stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True) for _ in range(2)]
    outs = [p.communicate(timeout=120)[0] for p in procs]
    assert len(list((tmp_path / "meet").glob("*.read"))) == 2, outs  # both first claims reached the meeting
    assert [p.returncode for p in procs] == [0, 0] and "Traceback" not in "".join(outs), outs
    ran = sorted(int(ln.split()[1]) for o in outs for ln in o.splitlines() if ln.startswith("RAN "))
    assert ran == list(range(40)), ran


def test_front_writer_that_waited_for_the_lock_keeps_the_trial_another_worker_finished(tmp_path, monkeypatch):
    """Worker A ends a trial and waits for the front's lock while worker B, holding it, ends another trial and
    stores the front: A's front, written after B's, must hold B's trial too (it must be read under the lock)."""
    from contextlib import contextmanager

    from optuna.trial import create_trial

    from advisor.results import locks
    from advisor.results import storage as st
    from advisor.results.read import read_fronts
    from advisor.results.registry import register_study
    from advisor.results.store import create_tables
    from advisor.tune.study import save_study_front

    url = f"sqlite:///{tmp_path}/w.db"
    worker_a = optuna.create_study(study_name="w", storage=st.open_storage(url, heartbeat_interval=None),
                                   directions=["minimize", "maximize"])
    worker_a.set_metric_names(["h2d_bytes_per_token", "accuracy"])
    worker_b = optuna.load_study(study_name="w", storage=st.open_storage(url, heartbeat_interval=None))
    worker_a.add_trial(create_trial(values=[1.0, 0.5]))  # A's trial: cheap, less accurate
    engine = engine_for(url)
    create_tables(engine)
    register_study(engine, "w", model="m", model_fingerprint="f", task="toy", space="s", space_fingerprint="s",
                   budget_bytes=None, device="cpu", hardware={}, objectives={}, sampler="tpe")  # as `run_tune` does
    real_lock, waited = locks.sqlite_lock, []

    @contextmanager
    def lock(u, purpose=""):
        if not waited:  # A asks for the turn while B holds it: B finishes its trial and stores the front
            waited.append(True)
            worker_b.add_trial(create_trial(values=[2.0, 0.9]))  # B's trial: dearer, more accurate
            save_study_front(worker_b, engine)
        with real_lock(u, purpose):
            yield

    monkeypatch.setattr(locks, "sqlite_lock", lock)
    save_study_front(worker_a, engine)
    assert waited
    assert sorted(p.trial_number for p in read_fronts(url, "w")) == [0, 1]


@pytest.mark.filterwarnings("ignore:Heartbeat of storage:UserWarning")  # ask(), not optimize(): no beat of its own
@pytest.mark.parametrize("backend", ["sqlite", "postgresql"])
def test_a_trial_younger_than_a_heartbeat_interval_is_not_stamped(shm_dir, backend):
    """The age rule of the first-heartbeat stamp: a worker without heartbeats marks its trial just after Optuna
    creates it, so a trial with neither a beat nor the mark is stamped only once older than a heartbeat interval
    (Optuna's `datetime_start` is the reader's local time, as `datetime.now()` is); younger, it is left alone."""
    from sqlalchemy import text

    from advisor.results.storage import open_storage
    from advisor.tune.study import fail_dead_workers_trials

    url = f"sqlite:///{shm_dir}/age.db" if backend == "sqlite" else os.environ.get("ADVISOR_TEST_POSTGRES_URL")
    if not url:
        pytest.skip("ADVISOR_TEST_POSTGRES_URL is not set (source .ci/start_postgres.sh to start a local server)")
    storage = open_storage(url, heartbeat_interval=2, grace_period=60)
    name = f"age-{uuid.uuid4().hex[:8]}"
    study = optuna.create_study(study_name=name, storage=storage)
    trial = study.ask()  # no beat, no mark: its worker may be one without heartbeats that has yet to mark it

    def stamped() -> bool:
        with storage.engine.connect() as c:
            rows = c.execute(text("SELECT trial_id FROM trial_heartbeats WHERE trial_id = :i"), {"i": trial._trial_id})
            return rows.first() is not None

    try:
        assert fail_dead_workers_trials(study, storage) == [] and not stamped()
        time.sleep(2.5)  # older than the interval now: a worker with heartbeats would have beaten
        assert fail_dead_workers_trials(study, storage) == [] and stamped()
    finally:
        optuna.delete_study(study_name=name, storage=storage)


def test_the_queued_trials_note_counts_the_study_as_it_stands_and_names_a_running_worker(tmp_path, monkeypatch):
    """`advisor tune` ending with queued trials said they "did not run" and that `--more N` runs them, from the
    count read when its run ended, also while another worker ran the study (and could take them): the note
    counts the trials waiting when it is printed and says that a running worker may take them."""
    from typer.testing import CliRunner

    from advisor.cli import app
    from advisor.results.storage import open_storage

    monkeypatch.chdir(tmp_path)
    (tmp_path / "space.toml").write_text(FIDELITY_SPACE)
    url = f"sqlite:///{tmp_path / 'q.db'}"
    base = ["tune", "tiny:llada2", "--space", "space.toml", "--budgets", "50%,100%", "--storage", url, "--study", "q"]
    first = CliRunner().invoke(app, [*base, "--trials", "1"], terminal_width=80)
    assert first.exit_code == 0, first.output
    text = " ".join(first.output.split())
    study = optuna.load_study(study_name="q", storage=open_storage(url, heartbeat_interval=None))
    waiting = sum(t.state.name == "WAITING" for t in study.get_trials())
    assert waiting > 2 and f"note: {waiting} queued trials (warm start, --budgets points, baselines) " \
        f"did not run: the run reached its trial count first; `--more {waiting}` runs them" in text, text
    study.ask()  # another worker takes a queued trial and runs it
    again = CliRunner().invoke(app, [*base, "--more", "1", "--heartbeat", "60"], terminal_width=80)
    assert again.exit_code == 0, again.output
    text = " ".join(again.output.split())
    left = sum(t.state.name == "WAITING" for t in study.get_trials())
    assert left == waiting - 2, (left, waiting)
    assert f"note: {left} queued trials (warm start, --budgets points, baselines) have not run yet (the " \
        "run reached its trial count first); 1 trial of the study is running in another worker, which may take " \
        "them - `advisor studies --storage " in text, text
    # the URL itself may be broken across lines where the console wraps a long temporary path
    assert "counts those still waiting, `--more N` runs N here" in text and url[-20:] in text.replace(" ", ""), text
    assert "did not run" not in text, text
