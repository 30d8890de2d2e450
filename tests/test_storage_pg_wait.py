"""How advisor waits for a PostgreSQL server, seen from a program that uses it: its psycopg2 wait callback is
in place only while advisor runs (the `advisor` command, a `run_tune` call), never left set for the program's
own connections. Against the shared test server (nothing here pauses it: tests/test_storage_pause.py starts a
server of its own for that)."""

from __future__ import annotations

import io
import os
import signal
import uuid

import pytest

from tests.cli_helpers import said_lines

pytestmark = pytest.mark.postgres


@pytest.fixture
def pg_url():
    url = os.environ.get("ADVISOR_TEST_POSTGRES_URL")
    if not url:
        pytest.skip("ADVISOR_TEST_POSTGRES_URL is not set (source .ci/start_postgres.sh to start a local server)")
    return url


@pytest.fixture
def study(pg_url):
    """A study name of its own, deleted after."""
    import optuna

    from advisor.results.urls import normalize_url

    name = f"pgwait-{uuid.uuid4().hex[:8]}"
    yield name
    try:
        optuna.delete_study(study_name=name, storage=normalize_url(pg_url))
    except KeyError:
        pass


def _tune(pg_url: str, study: str) -> None:
    from tune_helpers import main

    handler = signal.getsignal(signal.SIGTERM)
    try:
        assert main(["--storage", pg_url, "--study", study, "--trials", "1", "--heartbeat", "0"]) == 0
    finally:
        signal.signal(signal.SIGTERM, handler)


def test_run_tune_gives_the_program_its_own_psycopg2_waits_back(pg_url, study, capsys):
    """Once an advisor engine opened PostgreSQL, its wait callback stayed set for the whole process: a program's
    own `copy_expert` failed ("cannot be used with an asynchronous callback"), its own callback (psycogreen's)
    was replaced without a word, and its long queries got advisor's notes and were cut after 300 s."""
    import psycopg2
    from psycopg2 import extensions, extras

    def own(conn):  # a program's own callback, as psycogreen installs one
        extras.wait_select(conn)

    assert extensions.get_wait_callback() is None
    try:
        extensions.set_wait_callback(own)
        _tune(pg_url, study)
        assert extensions.get_wait_callback() is own
        extensions.set_wait_callback(None)
        _tune(pg_url, study)  # (a second run: resumes the study)
        assert extensions.get_wait_callback() is None
    finally:
        extensions.set_wait_callback(None)
    conn = psycopg2.connect(pg_url)
    try:
        out = io.StringIO()
        conn.cursor().copy_expert("COPY (SELECT 1) TO STDOUT", out)
        assert out.getvalue() == "1\n"
    finally:
        conn.close()


def _reading_fronts(pg_url: str, study: str, monkeypatch, fail: bool) -> tuple[object, list, list]:
    """`read_fronts` with the program's own wait callback set: (its callback, the callbacks set while the read
    queried PostgreSQL, the waits the program's own callback was asked for). `fail`: the read raises after."""
    from psycopg2 import extensions, extras

    from advisor.results import read, store
    from advisor.results.urls import normalize_url

    own_waits: list[object] = []

    def own(conn):  # a program's own callback, as psycogreen installs one
        own_waits.append(conn)
        extras.wait_select(conn)

    seen: list[object] = []
    loaded = store.load_fronts

    def load_fronts(engine, study_name=None):
        seen.append(extensions.get_wait_callback())
        points = loaded(engine, study_name)  # (its queries: through the callback set now)
        seen.append(extensions.get_wait_callback())
        if fail:
            raise RuntimeError("the read failed")
        return points

    monkeypatch.setattr(store, "load_fronts", load_fronts)
    extensions.set_wait_callback(own)
    try:
        if fail:
            with pytest.raises(RuntimeError, match="the read failed"):
                read.read_fronts(normalize_url(pg_url), study)
        else:
            assert read.read_fronts(normalize_url(pg_url), study) == []
        return extensions.get_wait_callback(), seen, own_waits
    finally:
        extensions.set_wait_callback(None)


def test_a_reader_installs_advisors_wait_for_the_call_and_gives_the_programs_back(pg_url, study, monkeypatch):
    """The readers (`read_fronts`, the trials' and the report's) are each a `watch_answers` block, so a
    program's read through them is watched (a paused server said, Ctrl-C taken) and the program's own callback
    is its own again on return; no test held them to it."""
    from advisor.results import reconnect

    after, seen, own_waits = _reading_fronts(pg_url, study, monkeypatch, fail=False)
    assert seen == [reconnect._wait_for_answer] * 2
    assert own_waits == []  # (every wait of the read was advisor's)
    assert after.__name__ == "own", after


def test_a_reader_that_raises_gives_the_programs_wait_back(pg_url, study, monkeypatch):
    from advisor.results import reconnect

    after, seen, _ = _reading_fronts(pg_url, study, monkeypatch, fail=True)
    assert seen == [reconnect._wait_for_answer] * 2
    assert after.__name__ == "own", after


def _waiting_for(pg_url: str, study: str, lock: str, held_s: float, capsys, monkeypatch, *,
                 process: str | None = None, working: bool = False) -> tuple[int, list, float, int]:
    """A worker (1 trial, in this process; ADVISOR_PG_NOTICE_S=0.3, ADVISOR_PG_WAIT_S=1) on the study while
    another session holds the study's advisory `lock` ('seed', 'front') for `held_s`, idle: (its exit code, its
    stderr lines, its seconds, the holder's PostgreSQL pid). `process`: the holder is the advisor process of
    that `application_name`; `working`: which works meanwhile - another session of it runs a query every 0.1 s."""
    import threading
    import time
    import zlib

    import psycopg2
    from tune_helpers import main

    monkeypatch.setenv("ADVISOR_PG_NOTICE_S", "0.3")
    monkeypatch.setenv("ADVISOR_PG_WAIT_S", "1")
    named = {"application_name": process} if process else {}
    holder = psycopg2.connect(pg_url, **named)
    holder.autocommit = True
    holder.cursor().execute("SELECT pg_advisory_lock(%s)", (zlib.crc32(f"advisor_{lock}:{study}".encode()),))
    pid = holder.get_backend_pid()
    released = threading.Event()

    def work() -> None:  # the holder's process at work: its queries (reading trials, storing a front)
        with psycopg2.connect(pg_url, **named) as other:
            while not released.wait(0.1):
                other.cursor().execute("SELECT 1")
        other.close()

    if working:
        threading.Thread(target=work, daemon=True).start()
    release = threading.Timer(held_s, lambda: (released.set(), holder.close()))
    release.start()
    handler = signal.getsignal(signal.SIGTERM)
    t0 = time.monotonic()
    try:
        code = main(["--storage", pg_url, "--study", study, "--trials", "1", "--heartbeat", "0"])
    finally:
        signal.signal(signal.SIGTERM, handler)
        release.cancel()
        released.set()
        holder.close()
    return code, said_lines(capsys.readouterr().err), time.monotonic() - t0, pid  # a wrapped note: one line


@pytest.mark.parametrize("process", [None, "moe-advisor pid=1 host=elsewhere"])
def test_a_wait_for_a_study_lock_is_said_and_given_up_on(pg_url, study, capsys, monkeypatch, process):
    """A worker waits for the study's front lock, which another session holds (a worker storing its front, or
    one stopped or paused while it held the lock): the wait was silent and had no end, 0.2 s at a time for ever.
    Past ADVISOR_PG_NOTICE_S it is said, naming the lock and its holder; once the holder has sent the server
    nothing for ADVISOR_PG_WAIT_S (here: idle since it took the lock) the command ends in one line, which said
    the holder 'has held it for 1 s' - how long this worker had waited. The holder: a session of its own, or
    an advisor process (named as advisor names its connections) paused with all its sessions idle."""
    held = 8  # s; the worker gives up long before (its own start + 1 s of silence: 2-4 s on a loaded 2-core host)
    code, err, took, pid = _waiting_for(pg_url, study, "front", held, capsys, monkeypatch, process=process)
    err = [ln for ln in err if ln.startswith(("note: ", "error: "))]
    by = f"PostgreSQL pid {pid}" + (f" of {process}" if process else "")
    assert code == 2, err
    assert took < held, took  # gave up, not waited until the holder let go
    assert err[0] == (f"note: waiting for the front lock of study {study!r} (held by {by}) for 0.3 s; still waiting as "
                      "long as its holder works (given up once it has sent the server nothing for 1 s, "
                      "ADVISOR_PG_WAIT_S) - Ctrl-C stops the command"), err
    assert err[1].startswith(f"error: gave up waiting for the front lock of study {study!r} (held by {by}): its "
                             "holder has sent the server nothing for 1 s (ADVISOR_PG_WAIT_S) - "), err
    assert len(err) == 2, err


def test_a_lock_held_by_a_worker_at_work_is_waited_for_past_the_limit(pg_url, study, capsys, monkeypatch):
    """The front lock held longer than ADVISOR_PG_WAIT_S by a worker that is alive and working (its other
    sessions querying): the waiting worker gave up after ADVISOR_PG_WAIT_S of its own wait, so one busy worker
    (a large study's front, a slow link) stopped the others. Waiting for a lock is not a silent server: it
    waits while the holder's process works, and its note names that process."""
    code, err, took, pid = _waiting_for(pg_url, study, "front", 2.2, capsys, monkeypatch,
                                        process="moe-advisor pid=1 host=elsewhere", working=True)
    assert code == 0, err
    assert took >= 2.2
    assert err[0] == (f"note: waiting for the front lock of study {study!r} (held by PostgreSQL pid {pid} of "
                      "moe-advisor pid=1 host=elsewhere) for 0.3 s; still waiting as long as its holder works "
                      "(given up once it has sent the server nothing for 1 s, ADVISOR_PG_WAIT_S) - Ctrl-C stops "
                      "the command"), err
    assert not any(ln.startswith("error: ") for ln in err), err


def test_a_wait_for_a_silent_seed_lock_holder_is_given_up_on(pg_url, study, capsys, monkeypatch):
    """The seed lock had no time limit - its holder measures the CPU expert times without the server, idle
    whether busy or paused - so a worker stopped or paused while it seeded kept every other worker waiting for
    ever. A seeding worker beats on its lock session now: a holder that sends nothing is given up on as one of
    the front lock is."""
    code, err, took, pid = _waiting_for(pg_url, study, "seed", 5, capsys, monkeypatch)  # (5 s)
    err = [ln for ln in err if ln.startswith(("note: ", "error: "))]
    assert code == 2, err
    assert took < 4
    assert err[0] == (f"note: waiting for the seed lock of study {study!r} (held by PostgreSQL pid {pid}) for 0.3 s; "
                      "still waiting as long as its holder works (given up once it has sent the server nothing for "
                      "1 s, ADVISOR_PG_WAIT_S) - Ctrl-C stops the command"), err
    assert err[1].startswith(f"error: gave up waiting for the seed lock of study {study!r} (held by PostgreSQL pid "
                             f"{pid}): its holder has sent the server nothing for 1 s (ADVISOR_PG_WAIT_S) - "), err


def test_a_seed_lock_holder_that_measures_is_waited_for_past_the_limit(pg_url, study, capsys, monkeypatch):
    """A `run_tune` seeding the study holds its seed lock while it measures the CPU expert times (here 2.5 s,
    ADVISOR_PG_WAIT_S=1), sending the server nothing of its own: its lock session's beats keep the other worker
    waiting for it, which then goes on."""
    import threading
    import time

    from tune_helpers import FakeBackend, main, small_space

    from advisor.tune import study as study_module
    from advisor.tune.study import TuneOptions, run_tune

    monkeypatch.setenv("ADVISOR_PG_NOTICE_S", "0.3")
    monkeypatch.setenv("ADVISOR_PG_WAIT_S", "1")
    real, measuring = study_module._price_cpu, threading.Event()

    def price_cpu(*a, **k):  # the holder measuring, under the seed lock
        if threading.current_thread() is holder:
            measuring.set()
            time.sleep(2.5)
        return real(*a, **k)

    monkeypatch.setattr(study_module, "_price_cpu", price_cpu)
    opts = TuneOptions(study_name=study, storage=pg_url, sampler="random", n_trials=1, heartbeat_interval=None)
    holder = threading.Thread(target=lambda: run_tune(FakeBackend(), small_space(), opts, budget_bytes=None))
    holder.start()
    handler = signal.getsignal(signal.SIGTERM)
    try:
        assert measuring.wait(30)
        t0 = time.monotonic()
        code = main(["--storage", pg_url, "--study", study, "--trials", "1", "--heartbeat", "0"])
        took = time.monotonic() - t0
    finally:
        signal.signal(signal.SIGTERM, handler)
        holder.join(30)
    err = said_lines(capsys.readouterr().err)  # a wrapped note: one line
    assert code == 0, err
    assert took >= 1.8, (took, err)
    assert err[0].startswith(f"note: waiting for the seed lock of study {study!r} (held by PostgreSQL pid "), err
    assert err[0].endswith("for 0.3 s; still waiting as long as its holder works (given up once it has sent the "
                           "server nothing for 1 s, ADVISOR_PG_WAIT_S) - Ctrl-C stops the command"), err
    assert not any(ln.startswith("error: ") for ln in err), err


def test_a_query_the_server_answers_looks_nothing_up(pg_url, monkeypatch):
    """Every query of the process goes through advisor's wait: it read the settings from the environment, the
    server from the connection's parameters and made a selector per poll for each one (30 us a `select 1`
    against 17.6 us without it). The settings are read once per engine now, the rest once a wait has lasted."""
    from sqlalchemy import create_engine, text

    from advisor.results import reconnect
    from advisor.results.connections import engine_kwargs
    from advisor.results.urls import normalize_url

    url = normalize_url(pg_url)
    with reconnect.watch_answers():
        engine = create_engine(url, **engine_kwargs(url))  # (the settings checked here)

        def read(*_: object) -> float:
            raise AssertionError("a setting read for a query the server answered")

        def silence(*_: object) -> None:
            raise AssertionError("a wait's server and limits looked up for a query the server answered")

        monkeypatch.setattr(reconnect, "answer_wait_s", read)  # (also hidden by the settings the engine read)
        monkeypatch.setattr(reconnect, "notice_s", read)
        monkeypatch.setattr(reconnect._Silence, "__init__", silence)  # a _Silence made on every wait
        try:
            from psycopg2 import extensions

            assert extensions.get_wait_callback() is reconnect._wait_for_answer
            with engine.connect() as c:
                assert [c.execute(text("SELECT 1")).scalar() for _ in range(50)] == [1] * 50
        finally:
            engine.dispose()


def test_a_programs_own_query_in_another_thread_is_not_cut_while_run_tune_runs(pg_url, study, capsys, monkeypatch):
    """advisor's wait callback is the process's: while `run_tune` ran, a program's own psycopg2 query in another
    thread went through advisor's wait, so a long query of its own (here 1.5 s, ADVISOR_PG_WAIT_S=1) got
    advisor's note on stderr and was cut as a server that "has not answered". Only advisor's connections get
    that wait now; the program's waits as it would without advisor."""
    import threading
    import time

    import psycopg2
    from psycopg2 import extensions
    from tune_helpers import main

    from advisor.results import reconnect

    monkeypatch.setenv("ADVISOR_PG_NOTICE_S", "0.3")
    monkeypatch.setenv("ADVISOR_PG_WAIT_S", "1")
    own = psycopg2.connect(pg_url)
    got: list[object] = []

    def long_query() -> None:
        for _ in range(400):  # once run_tune has installed its wait
            if extensions.get_wait_callback() is reconnect._wait_for_answer:
                break
            time.sleep(0.01)
        try:
            cur = own.cursor()
            cur.execute("SELECT pg_sleep(1.5), 7")
            got.append(cur.fetchone()[1])
        except Exception as e:  # (the test says what it was)
            got.append(e)

    thread = threading.Thread(target=long_query)
    thread.start()
    handler = signal.getsignal(signal.SIGTERM)
    try:
        code = main(["--storage", pg_url, "--study", study, "--trials", "4", "--delay", "0.6", "--heartbeat", "0"])
    finally:
        signal.signal(signal.SIGTERM, handler)
        thread.join(10)
        own.close()
    assert code == 0
    assert got == [7], got
    assert "has not answered" not in capsys.readouterr().err


def _gives_up_beside_work(pg_url: str, study: str, monkeypatch, held) -> tuple[str, float]:
    """A `run_tune` worker (1 trial; ADVISOR_PG_NOTICE_S=0.3, ADVISOR_PG_WAIT_S=1) waits for the study's front lock
    while `held()` (a context manager: the lock held by a holder that sends nothing, released on leaving it, 6 s
    at most) holds it, and another thread of this process works on the server (a query every 0.1 s through an
    advisor engine): (the UserError it gave up with, its seconds)."""
    import threading
    import time

    from sqlalchemy import text
    from tune_helpers import FakeBackend, small_space

    from advisor.errors import UserError
    from advisor.results.store import engine_for
    from advisor.tune.study import TuneOptions, run_tune

    monkeypatch.setenv("ADVISOR_PG_NOTICE_S", "0.3")
    monkeypatch.setenv("ADVISOR_PG_WAIT_S", "1")
    done = threading.Event()
    engine = engine_for(pg_url)

    def work() -> None:  # the process at work elsewhere (a reader, a run on another study)
        with engine.connect() as c:
            while not done.wait(0.1):
                c.execute(text("SELECT 1")).scalar()
                c.rollback()

    worker = threading.Thread(target=work, daemon=True)
    opts = TuneOptions(study_name=study, storage=pg_url, sampler="random", n_trials=1, heartbeat_interval=None)
    try:
        with held():
            worker.start()
            t0 = time.monotonic()
            with pytest.raises(UserError) as e:
                run_tune(FakeBackend(), small_space(), opts, budget_bytes=None)
            return str(e.value), time.monotonic() - t0
    finally:
        done.set()
        worker.join(5)
        engine.dispose()


def test_a_run_tune_thread_waiting_on_a_stuck_one_is_not_kept_waiting_by_its_process(pg_url, study, monkeypatch):
    """Two `run_tune` threads of one program: one holds the study's front lock and sends nothing (stuck), the
    other waits for it. Both named their connections `moe-advisor pid=P host=H`, so the waiter counted every
    query of its process - the program's other work, its own other sessions - as the holder's activity and
    waited for as long as the process worked. Each run has a name of its own now: the holder's silence counts."""
    import contextlib
    import os
    import threading

    from tune_helpers import FakeBackend, small_space

    from advisor.tune import study as study_module
    from advisor.tune.study import TuneOptions, run_tune

    real, holding, release = study_module.save_front, threading.Event(), threading.Event()

    def save_front(engine, name, points, **kw):  # the holder run, under its front lock: stuck
        if threading.current_thread() is holder:
            holding.set()
            release.wait(6)
        return real(engine, name, points, **kw)

    monkeypatch.setattr(study_module, "save_front", save_front)
    opts = TuneOptions(study_name=study, storage=pg_url, sampler="random", n_trials=1, heartbeat_interval=None)
    holder = threading.Thread(target=lambda: run_tune(FakeBackend(), small_space(), opts, budget_bytes=None))

    @contextlib.contextmanager
    def held():
        holder.start()
        try:
            assert holding.wait(30)
            yield
        finally:
            release.set()
            holder.join(30)

    error, took = _gives_up_beside_work(pg_url, study, monkeypatch, held)
    assert error.startswith(f"gave up waiting for the front lock of study {study!r} (held by PostgreSQL pid "), error
    assert f" of moe-advisor pid={os.getpid()} id=" in error, error
    assert took < 4, (took, error)


def test_a_process_of_the_same_pid_and_host_is_not_taken_for_the_holder(pg_url, study, monkeypatch):
    """The front lock is held by another process with this one's pid on this host (two containers on the host
    network, both pid 1), stopped: its name `moe-advisor pid=P host=H` was this process's too, so this process's
    own work counted as the holder's activity and the waiter waited for as long as it worked. A random token per
    process start tells them apart."""
    import contextlib
    import os
    import subprocess
    import sys
    import zlib

    twin = ("import os, select, sys\n"
            "os.getpid = lambda: int(sys.argv[2])\n"
            "from sqlalchemy import text\n"
            "from advisor.results.store import engine_for\n"
            "with engine_for(sys.argv[1]).connect() as c:\n"
            "    c.execute(text('SELECT pg_advisory_lock(:k)'), {'k': int(sys.argv[3])})\n"
            "    c.commit()\n"
            "    print('HELD', flush=True)\n"
            "    select.select([sys.stdin], [], [], 6)\n")  # (6 s at most)

    @contextlib.contextmanager
    def held():
        key = zlib.crc32(f"advisor_front:{study}".encode())
        proc = subprocess.Popen([sys.executable, "-c", twin, pg_url, str(os.getpid()), str(key)], text=True,
                                stdin=subprocess.PIPE, stdout=subprocess.PIPE)
        try:
            assert proc.stdout.readline() == "HELD\n"
            yield
        finally:
            proc.stdin.close()  # (it lets go)
            proc.wait(10)

    error, took = _gives_up_beside_work(pg_url, study, monkeypatch, held)
    assert error.startswith(f"gave up waiting for the front lock of study {study!r} (held by PostgreSQL pid "), error
    assert f" of moe-advisor pid={os.getpid()} id=" in error, error
    assert took < 4, (took, error)


def test_engines_made_outside_a_run_do_not_take_each_others_work_for_the_holders(pg_url, study, monkeypatch):
    """A program's engines made outside a `run_tune` call (`engine_for`, `open_storage`: a reader, a check, its
    own use) all named themselves `moe-advisor pid=P id=TOKEN host=H`: one that held a lock and was stuck was
    judged by the queries of every other such engine of its process - a worker waiting for it waited for as long
    as the program worked. Each engine made outside a run has a number of its own now."""
    import contextlib
    import os
    import threading
    import zlib

    from sqlalchemy import text

    from advisor.results.store import engine_for

    @contextlib.contextmanager
    def held():  # an engine of this program holding the study's front lock, idle (stuck; 6 s at most)
        engine = engine_for(pg_url)
        c = engine.connect()
        c.execute(text("SELECT pg_advisory_lock(:k)"), {"k": zlib.crc32(f"advisor_front:{study}".encode())})
        c.commit()
        release = threading.Timer(6, c.invalidate)  # (its session ends: the lock goes with it)
        release.start()
        try:
            yield
        finally:
            release.cancel()
            c.invalidate()
            engine.dispose()

    error, took = _gives_up_beside_work(pg_url, study, monkeypatch, held)
    assert error.startswith(f"gave up waiting for the front lock of study {study!r} (held by PostgreSQL pid "), error
    assert f" of moe-advisor pid={os.getpid()} id=" in error, error
    assert took < 4, (took, error)
