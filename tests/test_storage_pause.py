"""A PostgreSQL server that stops answering, or restarts, under a running tune: its processes paused (SIGSTOP here; a suspended
VM or container, a network partition without a reset look the same to the client: the connection stays open,
no answer comes). The tune sat silent, and deaf to Ctrl-C and SIGTERM, until the server came back. Now a wait
past ADVISOR_PG_NOTICE_S is said in one line, Ctrl-C/SIGTERM stop the tune at once (exit 130, every finished
trial kept, the same command resumes) and a wait past ADVISOR_PG_WAIT_S ends it in one line (exit 2).

The server is a throwaway one started here (never the shared test server: others use it); the tests skip when
PostgreSQL's binaries are absent."""

from __future__ import annotations

import contextlib
import os
import selectors
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

import pytest

from tests.cli_helpers import flat, read_note, said_lines

HELPER = str(Path(__file__).parent / "tune_helpers.py")


def _bindir() -> Path | None:
    found = sorted(Path("/usr/lib/postgresql").glob("*/bin"), key=lambda p: int(p.parent.name)
                   if p.parent.name.isdigit() else 0)
    if found and (found[-1] / "initdb").exists():
        return found[-1]
    initdb = shutil.which("initdb")
    return Path(initdb).parent if initdb else None


class _Server:
    """A PostgreSQL server of its own in a temporary directory, whose processes the test can pause."""

    def __init__(self) -> None:
        bindir = _bindir()
        if bindir is None:
            pytest.skip("PostgreSQL's binaries (initdb, pg_ctl) are not installed")
        as_root = os.getuid() == 0
        if as_root:  # the server refuses to run as root
            try:
                import pwd

                pwd.getpwnam("postgres")
            except KeyError:
                pytest.skip("running as root without a `postgres` user to run the server as")
        self.dir = Path(tempfile.mkdtemp(prefix="advisor-pause-pg-"))
        if as_root:
            shutil.chown(self.dir, "postgres")
        with socket.socket() as s:
            s.bind(("127.0.0.1", 0))
            self.port = s.getsockname()[1]
        self.url = f"postgresql://postgres@127.0.0.1:{self.port}/postgres"
        self._pg = lambda *cmd: subprocess.run(
            (["su", "postgres", "-s", "/bin/sh", "-c", " ".join(map(str, cmd))] if as_root else list(map(str, cmd))),
            check=True, capture_output=True, timeout=60)
        self._pg(bindir / "initdb", "-D", self.dir / "data", "-U", "postgres", "--auth=trust", "-N", "-E", "UTF8")
        self._ctl = bindir / "pg_ctl"
        self._pg(self._ctl, "-D", self.dir / "data", "-l", self.dir / "log", "-w", "-o",
                 f"'-p {self.port} -k {self.dir} -c listen_addresses=127.0.0.1 -c fsync=off'", "start")
        self.postmaster = int((self.dir / "data" / "postmaster.pid").read_text().split()[0])

    def _pids(self) -> list[int]:
        children = Path(f"/proc/{self.postmaster}/task/{self.postmaster}/children").read_text().split()
        return [self.postmaster, *map(int, children)]

    def pause(self) -> None:
        for pid in self._pids():  # the postmaster first: it forks no backend that would answer
            with contextlib.suppress(ProcessLookupError):  # (a backend that ended, reaped meanwhile)
                os.kill(pid, signal.SIGSTOP)

    def resume(self) -> None:
        for pid in reversed(self._pids()):  # the postmaster last: it reaps the backends that ended
            with contextlib.suppress(ProcessLookupError):
                os.kill(pid, signal.SIGCONT)

    def restart(self) -> None:
        """`pg_ctl restart -m fast`: every session ended at once (a query in progress cut, its transaction rolled
        back unless its commit had reached the server), the server back a moment later."""
        self._pg(self._ctl, "-D", self.dir / "data", "-l", self.dir / "log", "-w", "-m", "fast", "restart")
        self.postmaster = int((self.dir / "data" / "postmaster.pid").read_text().split()[0])

    def close(self) -> None:
        with contextlib.suppress(Exception):
            self.resume()
        with contextlib.suppress(Exception):
            self._pg(self._ctl, "-D", self.dir / "data", "-m", "immediate", "-w", "stop")
        shutil.rmtree(self.dir, ignore_errors=True)

    def trials(self, study: str) -> list:
        import optuna

        from advisor.results.urls import normalize_url

        storage = optuna.storages.RDBStorage(normalize_url(self.url))
        try:
            return optuna.load_study(study_name=study, storage=storage).get_trials(deepcopy=False)
        finally:
            storage.engine.dispose()

    def count(self, state: str, study: str) -> int:
        return sum(t.state.name == state for t in self.trials(study))


@pytest.fixture(scope="module")
def pg():
    server = _Server()
    yield server
    server.close()


def _worker(pg: _Server, study: str, *args: str, **env: str) -> subprocess.Popen:
    return subprocess.Popen([sys.executable, HELPER, "--storage", pg.url, "--study", study, "--sampler", "random",
                             "--fingerprint", study, *args], stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                            text=True, env={**os.environ, **env})


def _wait_for_a_worker_waiting(look: Any, locktype: str, proc: subprocess.Popen) -> None:
    """Until a worker's session (our application_name) waits for a lock of `locktype` (pg_locks), seen through
    `look`; at most 30 s. (The worker is not waited for when it never does: it may be blocked on a lock this test
    holds, so only its exit code, if any, is said.)"""
    for _ in range(600):
        with look.cursor() as cur:
            cur.execute("SELECT count(*) FROM pg_locks l JOIN pg_stat_activity a USING (pid) WHERE NOT l.granted"
                        " AND l.locktype = %s AND a.application_name LIKE 'moe-advisor pid=%%'", (locktype,))
            if cur.fetchone()[0]:
                return
        time.sleep(0.05)
    raise AssertionError(f"the worker never waited for a {locktype} lock (exit code {proc.poll()})")


def _paused_while_measuring(pg: _Server, proc: subprocess.Popen, trial: int) -> None:
    """Pause the server once the worker measures trial `trial` or a later one (the ones before finished): its
    next write (a measurement, its tell) finds no answer, and neither does its heartbeat."""
    assert proc.stdout is not None
    for line in proc.stdout:
        if line.startswith("STAGE") and int(line.split()[-1]) >= trial:
            break
    else:
        raise AssertionError(f"the worker ended before trial {trial}: {proc.communicate()}")
    pg.pause()


def _paused_until_it_ends(pg: _Server, proc: subprocess.Popen, trial: int) -> tuple[str, str, float]:
    """Pause the server while the worker measures trial `trial` (`_paused_while_measuring`) until the worker
    ends: (its stdout, its stderr, its seconds from the pause); the server resumed after."""
    try:
        _paused_while_measuring(pg, proc, trial)
        t0 = time.monotonic()
        out, err = proc.communicate(timeout=60)
        return out, err, time.monotonic() - t0
    finally:
        pg.resume()


def _stderr_note(proc: subprocess.Popen, within: float) -> str:
    """The worker's next wait note on stderr, on one line (`flat`: it is wrapped at the terminal's width), "" if
    none comes `within` seconds."""
    assert proc.stderr is not None
    with selectors.DefaultSelector() as sel:
        sel.register(proc.stderr, selectors.EVENT_READ)
        if not sel.select(within):
            return ""
    return flat(read_note(proc.stderr))


def test_a_paused_server_is_said_and_ctrl_c_stops_the_tune_at_once(pg):
    study = "paused-stop"
    proc = _worker(pg, study, "--trials", "40", "--delay", "0.2", "--heartbeat", "1", "--grace", "2",
                   ADVISOR_PG_NOTICE_S="0.5")
    try:
        _paused_while_measuring(pg, proc, 1)
        note = _stderr_note(proc, 10)
        assert note.startswith(f"note: PostgreSQL at 127.0.0.1:{pg.port} has not answered for 0.5 s; still waiting up "
                               "to 300 s (ADVISOR_PG_WAIT_S) - Ctrl-C stops the command, nothing finished is lost"), note
        t0 = time.monotonic()
        proc.send_signal(signal.SIGINT)
        out, err = proc.communicate(timeout=30)
        assert time.monotonic() - t0 < 5, err  # (it waited for the server, as long as it was paused)
    finally:
        pg.resume()
    assert proc.returncode == 130, (out, err)
    assert "Traceback" not in err and "Exception in thread" not in err, err
    assert pg.count("COMPLETE", study) >= 1  # trial 0, written before the pause
    # the same command resumes: the trial cut off is failed (its heartbeat stale by then) and run again; a
    # worker started within the 2 s grace found it still alive and finished its 3 trials beside it (seen in CI)
    # a heartbeat sent as the server paused can be stamped when it resumes (after the worker ended): the grace counts
    # from then; 2.5 s left under a loaded full suite (seen once, 2026-12-06) a resumed worker that found it alive
    # A trial cut off before its first heartbeat reached the server is stamped by the resumed worker as it starts
    # (`_first_heartbeats`) and failed once the grace passes; a worker done with its 2 trials within the 2 s left
    # it RUNNING (3 complete, 1 running: seen in a CI dry run, 2026-12-07). Its trials take 1.5 s each here, so the
    # check after its run comes past the grace, as a longer run's does.
    time.sleep(4.0)
    out, err = _worker(pg, study, "--total", "3", "--delay", "1.5", "--heartbeat", "1", "--grace", "2").communicate(
        timeout=60)
    assert "Traceback" not in err, err
    # A resumed worker that began within the grace (a loaded host: 3 complete, 1 running in the CI dry run of
    # 2026-12-07 even so) ends with the study's trials and leaves the cut-off trial to the next run, as README says
    # (test_tune_workers checks that rule): the same command once more, past the grace, fails it.
    time.sleep(2.5)
    out, err = _worker(pg, study, "--total", "3", "--heartbeat", "1", "--grace", "2").communicate(timeout=60)
    assert "Traceback" not in err, err
    assert pg.count("COMPLETE", study) == 3 and pg.count("RUNNING", study) == 0


def test_ctrl_c_while_a_tune_connects_to_a_paused_server_is_an_interrupt(pg):
    """Paused before the tune started: its first connection waits (the server's kernel takes it, nothing answers).
    Ctrl-C there waited out the 5 s connect timeout and then ended as a failed database (exit 2, "cannot connect
    to storage")."""
    pg.pause()
    try:
        proc = _worker(pg, "paused-connect", "--trials", "2")
        assert proc.stdout is not None and proc.stdout.readline().strip() == "READY"
        time.sleep(1.5)  # (the study's handler is in place within a few tenths of a second)
        t0 = time.monotonic()
        proc.send_signal(signal.SIGINT)
        out, err = proc.communicate(timeout=30)
        assert time.monotonic() - t0 < 2.5, err
    finally:
        pg.resume()
    assert proc.returncode == 130 and err.strip() == "INTERRUPTED", (out, err)


def test_a_server_paused_for_a_moment_is_waited_for_and_one_paused_too_long_ends_the_tune_in_one_line(pg):
    """A pause shorter than ADVISOR_PG_WAIT_S: the notice, then a line when it answers, and the tune finishes.
    A longer one: one error line naming the server, exit 2 (a server gone for good would hold the worker, and
    its machine, for ever); every finished trial is kept."""
    study = "paused-wait"
    proc = _worker(pg, study, "--trials", "3", "--delay", "0.2", "--heartbeat", "0",
                   ADVISOR_PG_NOTICE_S="0.5", ADVISOR_PG_WAIT_S="4")
    try:
        _paused_while_measuring(pg, proc, 0)
        assert "has not answered for 0.5 s; still waiting up to 4 s" in _stderr_note(proc, 10)
    finally:
        pg.resume()
    out, err = proc.communicate(timeout=30)
    assert proc.returncode == 0, err
    assert flat(err).startswith(f"note: PostgreSQL at 127.0.0.1:{pg.port} answered again after "), err
    assert pg.count("COMPLETE", study) == 3

    proc = _worker(pg, study, "--trials", "40", "--delay", "0.2", "--heartbeat", "0",
                   ADVISOR_PG_NOTICE_S="0.5", ADVISOR_PG_WAIT_S="1.5")
    out, err, waited = _paused_until_it_ends(pg, proc, 4)
    assert proc.returncode == 2, (out, err)
    assert "Traceback" not in err, err
    lines = said_lines(err)  # a wrapped note: one line
    assert len(lines) == 2 and "has not answered for 0.5 s; still waiting up to 1.5 s" in lines[0], err
    assert lines[1].startswith("error: the database postgresql://postgres@127.0.0.1:"), err  # as given
    assert f"(PostgreSQL at 127.0.0.1:{pg.port} has not answered for 1.5 s (ADVISOR_PG_WAIT_S)); nothing finished is " \
           "lost" in lines[1], err
    assert waited < 5, err
    assert pg.count("COMPLETE", study) >= 4


_IN_A_THREAD = """
import sys, threading
sys.path.insert(0, sys.argv[1])
from tune_helpers import SMALL_SPACE, FakeBackend, small_space
from advisor.errors import UserError
from advisor.tune.study import TuneOptions, run_tune

def work():
    opts = TuneOptions(study_name=sys.argv[3], storage=sys.argv[2], sampler="random", n_trials=40,
                       heartbeat_interval=None)
    try:
        run_tune(FakeBackend(delay=0.2, fingerprint=sys.argv[3]), small_space(SMALL_SPACE), opts, budget_bytes=None,
                 on_stage=lambda stage, n: print(f"STAGE {stage} {n}", flush=True))
    except UserError as e:
        print(f"error: {e}", flush=True)

thread = threading.Thread(target=work)
thread.start()
thread.join()
"""


def test_a_run_tune_in_a_worker_thread_that_gave_up_on_the_server_ends_then(pg):
    """A program's `run_tune` in a thread of its own: once its wait for a paused server reached ADVISOR_PG_WAIT_S,
    the give-up was kept only for the main thread's waits, so each of the run's last writes on its way out (its
    trial failed, the front, ...) waited the whole limit again - 300 s each - before its one line."""
    proc = subprocess.Popen([sys.executable, "-c", _IN_A_THREAD, str(Path(HELPER).parent), pg.url, "thread-gave-up"],
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
                            env={**os.environ, "ADVISOR_PG_WAIT_S": "1"})
    out, err, waited = _paused_until_it_ends(pg, proc, 1)
    assert proc.returncode == 0, (out, err)
    assert f"(PostgreSQL at 127.0.0.1:{pg.port} has not answered for 1 s (ADVISOR_PG_WAIT_S)); nothing finished is " \
           "lost" in out, (out, err)
    assert waited < 3, (waited, out, err)  # (1.1 s here; each last write waited 1 s again before)


def test_a_worker_waiting_for_the_study_lock_is_not_a_silent_server(pg):
    """A worker waits for the study's seed lock while another one seeds (seconds, measuring the CPU expert times
    of a real model): that wait was one query, `SELECT pg_advisory_lock`, which the server answers once the lock
    is free - to the client, a server that does not answer, said as such and given up on after
    ADVISOR_PG_WAIT_S. It waits a fifth of a second at a time instead, and says so as a wait for the lock."""
    import zlib

    from sqlalchemy import create_engine, text
    from sqlalchemy.exc import ProgrammingError

    from advisor.results.urls import normalize_url

    study = "seed-lock"
    engine = create_engine(normalize_url(pg.url))
    with engine.connect() as holder:  # another worker seeding the study
        holder.execute(text("SELECT pg_advisory_lock(:k)"), {"k": zlib.crc32(f"advisor_seed:{study}".encode())})
        holder.commit()
        proc = _worker(pg, study, "--trials", "2", "--heartbeat", "0", ADVISOR_PG_NOTICE_S="0.5",
                       ADVISOR_PG_WAIT_S="3")
        for _ in range(300):  # the worker creates the study, then takes the lock to seed it
            try:
                if holder.execute(text("SELECT 1 FROM studies WHERE study_name = :s"), {"s": study}).first():
                    break
            except ProgrammingError:  # no tables yet
                pass
            holder.rollback()
            time.sleep(0.05)
        time.sleep(2)  # the worker waits for the lock, past ADVISOR_PG_NOTICE_S (each query answered at once)
    engine.dispose()  # (the lock is released with its session)
    out, err = proc.communicate(timeout=60)
    assert proc.returncode == 0, err
    assert flat(err).startswith(f"note: waiting for the seed lock of study {study!r} (held by PostgreSQL pid "), err
    assert "has not answered" not in err, err
    assert pg.count("COMPLETE", study) == 2


def test_a_postgresql_url_gets_psycopg2_whose_waits_are_watched_where_psycopg_3_is_installed_too(monkeypatch):
    """`postgresql://` took psycopg 3 whenever it was installed (beside psycopg2, which advisor installs): a
    driver that waits inside itself, so a paused server held a tune silent and deaf to Ctrl-C again."""
    import importlib.util

    from typer.testing import CliRunner

    from advisor.cli import app
    from advisor.errors import UserError

    real = importlib.util.find_spec
    monkeypatch.setattr(importlib.util, "find_spec", lambda name, *a: object() if name == "psycopg" else real(name, *a))
    with socket.socket() as s:  # a port nothing listens on
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    res = CliRunner().invoke(app, ["studies", "--storage", f"postgresql://u@127.0.0.1:{port}/db"])
    assert isinstance(res.exception, UserError), (res.output, res.exception)  # (`advisor` prints it, exit code 2)
    assert str(res.exception).startswith(f"cannot read advisor results from postgresql+psycopg2://u@127.0.0.1:{port}/db ")


@pytest.mark.parametrize("command", ["studies", "tune"])
def test_a_url_naming_psycopg_3_is_refused_in_one_line_that_gives_the_url_to_write(command):
    """`postgresql+psycopg://` picked psycopg 3, which waits for the server inside itself: a paused server held
    the command without a word and Ctrl-C did not end the wait (psycopg 3 cancels the query, then waits for
    its answer again) - none of the notice, the give-up or the interrupt the README promises. Refused in one
    line before anything connects, naming the URL that gets psycopg2."""
    from typer.testing import CliRunner

    from advisor.cli import app
    from advisor.errors import UserError

    res = CliRunner().invoke(app, [command, "--storage", "postgresql+psycopg://u:secret@127.0.0.1:9/db"])
    assert isinstance(res.exception, UserError), (res.output, res.exception)
    said = str(res.exception)
    assert said.startswith("--storage postgresql+psycopg://u:***@127.0.0.1:9/db: advisor talks to PostgreSQL "
                           "through psycopg2"), said
    # a URL to paste: `u:***@` would send '***' as the password, so it says what to change instead
    assert said.endswith(" - write the URL you gave with postgresql:// in place of postgresql+psycopg:// (not "
                         "repeated here: its password is not printed)") and "secret" not in said, said
    res = CliRunner().invoke(app, [command, "--storage", "postgresql+psycopg://u@127.0.0.1:9/db"])
    assert str(res.exception).endswith(" - write postgresql://u@127.0.0.1:9/db"), res.exception


def test_ctrl_c_while_a_watch_begins_leaves_no_callback_installed(monkeypatch):
    """A KeyboardInterrupt after `watch_answers` counted its block and before its `try:` (here: while the
    callback was being installed) left the count up and advisor's wait callback installed for the rest of the
    process - a notebook's kernel, whose later blocks then kept it too, and whose own `copy_expert` failed."""
    from psycopg2 import extensions

    from advisor.results import reconnect

    installed = reconnect._install

    def interrupted() -> None:
        installed()
        raise KeyboardInterrupt

    assert extensions.get_wait_callback() is None and reconnect._watching == 0
    monkeypatch.setattr(reconnect, "_install", interrupted)
    try:
        with pytest.raises(KeyboardInterrupt), reconnect.watch_answers():
            raise AssertionError("the block ran")
        assert reconnect._watching == 0
        assert extensions.get_wait_callback() is None
    finally:
        reconnect._watching = 0
        reconnect._replaced = reconnect._NOT_INSTALLED
        extensions.set_wait_callback(None)


def test_a_run_after_one_that_gave_up_on_the_server_waits_for_it_afresh(pg, monkeypatch):
    """After a wait given up (ADVISOR_PG_WAIT_S), every later wait for that server in the process ended at once,
    so that a tune's last writes on its way out do not each wait again: in a process that runs again (a
    notebook, the Python API), the next run failed at once though the server was back. A new run waits."""
    import optuna
    from optuna.exceptions import StorageInternalError

    from advisor.results.reconnect import watch_answers
    from advisor.results.storage import open_storage

    monkeypatch.setenv("ADVISOR_PG_WAIT_S", "1")
    with watch_answers():  # (one run, as `run_tune` is)
        storage = open_storage(pg.url, heartbeat_interval=None)
        pg.pause()
        try:
            with pytest.raises(StorageInternalError) as failed:
                storage.get_all_studies()
            assert "has not answered for 1 s (ADVISOR_PG_WAIT_S)" in str(failed.value.__cause__)
        finally:
            pg.resume()
        storage.engine.dispose()
    with watch_answers():
        again = open_storage(pg.url, heartbeat_interval=None)
        optuna.create_study(storage=again, study_name="after-a-pause").set_user_attr("written", True)
        again.engine.dispose()


def test_a_server_given_up_on_is_tried_briefly_and_an_engine_kept_works_once_it_is_back(pg, monkeypatch):
    """After a wait given up, each later wait for that server in the run was to end "at once ... until it
    answers" - but it was checked after the query's first poll, which is never an answer, so it never answered:
    an engine kept (a notebook) stayed refused after the server came back. A wait right after ends at once (a
    tune's last writes on its way out), a later one tries for a second (STOP_AFTER_S): refused with the same
    reason while the server is still silent, answered once it is back."""
    from optuna.exceptions import StorageInternalError

    from advisor.results.reconnect import STOP_AFTER_S, watch_answers
    from advisor.results.storage import open_storage

    monkeypatch.setenv("ADVISOR_PG_WAIT_S", "2")
    with watch_answers():
        storage = open_storage(pg.url, heartbeat_interval=None)
        try:
            pg.pause()
            with pytest.raises(StorageInternalError) as failed:
                storage.get_all_studies()
            assert "has not answered for 2 s (ADVISOR_PG_WAIT_S)" in str(failed.value.__cause__)
            t0 = time.monotonic()
            with pytest.raises(StorageInternalError) as again:  # right after: at once, the same reason
                storage.get_all_studies()
            assert time.monotonic() - t0 < STOP_AFTER_S / 2
            assert "has not answered for 2 s (ADVISOR_PG_WAIT_S)" in str(again.value.__cause__)
            time.sleep(STOP_AFTER_S)
            t0 = time.monotonic()
            with pytest.raises(StorageInternalError) as later:  # later, still silent: tried, the same reason
                storage.get_all_studies()
            assert STOP_AFTER_S <= time.monotonic() - t0 < STOP_AFTER_S + 1
            assert "has not answered for 2 s (ADVISOR_PG_WAIT_S)" in str(later.value.__cause__)
            pg.resume()
            time.sleep(STOP_AFTER_S)
            assert isinstance(storage.get_all_studies(), list)  # back: the engine kept works
        finally:
            pg.resume()
            storage.engine.dispose()


def test_a_reader_command_connecting_to_a_paused_server_says_its_own_limit_and_stops_on_ctrl_c(pg):
    """`advisor studies` connecting to a paused server: the note said "up to 300 s (ADVISOR_PG_WAIT_S)" though
    a connection waits for its 5 s connect timeout, and "Ctrl-C stops the run" in a command that runs nothing."""
    pg.pause()
    try:
        proc = subprocess.Popen([sys.executable, "-m", "advisor", "studies", "--storage", pg.url],
                                stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
                                env={**os.environ, "ADVISOR_PG_NOTICE_S": "0.5"})
        note = _stderr_note(proc, 10)
        proc.send_signal(signal.SIGINT)
        out, err = proc.communicate(timeout=30)
    finally:
        pg.resume()
    assert note == (f"note: PostgreSQL at 127.0.0.1:{pg.port} has not answered for 0.5 s; still waiting up to 5 s "
                    "(the connect timeout) - Ctrl-C stops the command, nothing finished is lost"), (note, err)
    assert proc.returncode == 130, (out, err)


def _restarted_under(pg: _Server, tmp_path: Path, study: str, hold_sql: str, lock: str) -> int:
    """A worker (3 trials) on `study` whose first accuracy is held (`--hold`) while the test's session runs
    `hold_sql` (its `%(study)s` and `%(number)s`: the study and the trial measured), taking a lock the worker's
    next writes wait for; then the worker goes on and, once its session waits for that lock (`lock`: its
    `pg_locks.locktype`), the server restarts (`pg_ctl restart -m fast`): the write it is in the middle of is cut.
    The worker ends as usual (exit code 0, nothing on stderr) with its 3 trials COMPLETE; returns the trial held."""
    import psycopg2

    hold = tmp_path / "hold"
    proc = _worker(pg, study, "--trials", "3", "--hold", str(hold))
    assert proc.stdout is not None
    number = next((int(ln.split()[-1]) for ln in proc.stdout if ln.startswith("STAGE accuracy ")), None)
    assert number is not None, f"the worker ended before measuring: {proc.communicate()}"
    with contextlib.closing(psycopg2.connect(pg.url)) as c:
        with c.cursor() as cur:
            cur.execute(hold_sql, {"study": study, "number": number})
        hold.touch()
        _wait_for_a_worker_waiting(c, lock, proc)
        pg.restart()
    out, err = proc.communicate(timeout=60)
    assert proc.returncode == 0, (out, err)
    assert err == "", err
    trials = pg.trials(study)  # (and the warm start's queued trials)
    assert [t.state.name for t in trials if t.state.name != "WAITING"] == ["COMPLETE"] * 3, trials
    assert trials[number].state.name == "COMPLETE" and trials[number].values is not None
    return number


def test_a_restart_that_cuts_a_trials_result_in_flight_keeps_the_trial(pg, tmp_path):
    """`pg_ctl restart -m fast` while a worker wrote a finished trial's result (its tell: the state and values,
    one transaction): the worker stopped with one line, and the measured result was lost - the rerun ran the
    trial again. The write is redone once the server is back: not committed, it is written now; committed
    before the cut (its answer lost), the trial is found finished with these values, not told twice."""
    # the trial's row held, as another transaction would: its tell (SELECT ... FOR UPDATE) waits there
    _restarted_under(pg, tmp_path, "restart-tell", "SELECT t.trial_id FROM trials t JOIN studies s USING (study_id) "
                     "WHERE s.study_name = %(study)s AND t.number = %(number)s FOR NO KEY UPDATE OF t", "transactionid")


def test_a_restart_that_cuts_the_front_being_stored_is_redone(pg, tmp_path):
    """`pg_ctl restart -m fast` while a worker stored the study's front after a trial (here: waiting for the front
    lock another worker held): the worker stopped with one line though its trial was kept. The front - taken
    under the lock, replaced in one transaction - is stored again once the server is back, and the run goes on."""
    import zlib

    import psycopg2

    study = "restart-front"
    # another worker storing the front: this one's waits for it, after its tell
    _restarted_under(pg, tmp_path, study, f"SELECT pg_advisory_lock({zlib.crc32(f'advisor_front:{study}'.encode())})",
                     "advisory")
    with contextlib.closing(psycopg2.connect(pg.url)) as c, c.cursor() as cur:
        cur.execute("SELECT count(*) FROM advisor_front WHERE study_name = %s", (study,))
        assert cur.fetchone()[0] >= 1


@pytest.mark.parametrize("table", ["studies", "study_user_attributes"])
def test_a_restart_that_cuts_the_creation_or_seeding_of_a_new_study_is_redone(pg, table):
    """`pg_ctl restart -m fast` while a worker created a new study (`studies`) or seeded it (stored what it is
    tuned on and for, under the study's seed lock: `study_user_attributes`) - here waiting for a lock on that
    table another session held: the worker stopped with one line before its first trial. The write is done again
    once the server is back (the seeding whole: its attributes stored, its warm-start points queued once) and the
    run goes on."""
    import optuna
    import psycopg2

    from advisor.results.urls import normalize_url

    study = f"restart-seed-{table}"
    optuna.storages.RDBStorage(normalize_url(pg.url)).engine.dispose()  # Optuna's tables (a fresh server has none)
    with contextlib.closing(psycopg2.connect(pg.url)) as c, contextlib.closing(psycopg2.connect(pg.url)) as look:
        with c.cursor() as cur:  # (a transaction left open: the lock held until the restart ends it)
            cur.execute(f"LOCK TABLE {table} IN EXCLUSIVE MODE")
        look.autocommit = True  # (a transaction reads pg_stat_activity as it was at its start)
        proc = _worker(pg, study, "--trials", "3")
        _wait_for_a_worker_waiting(look, "relation", proc)  # (for the table)
        pg.restart()
    out, err = proc.communicate(timeout=60)
    assert proc.returncode == 0, (out, err)
    assert err == "", err
    trials = pg.trials(study)
    assert [t.state.name for t in trials if t.state.name != "WAITING"] == ["COMPLETE"] * 3, trials
    seeded = [repr(sorted(t.system_attrs["fixed_params"].items())) for t in trials if "seeded" in t.user_attrs]
    assert seeded and len(seeded) == len(set(seeded)), seeded  # each warm-start point queued once
    storage = optuna.storages.RDBStorage(normalize_url(pg.url))
    try:
        attrs = optuna.load_study(study_name=study, storage=storage).user_attrs
    finally:
        storage.engine.dispose()
    assert {"model_fingerprint", "space_fingerprint", "hardware", "evaluation"} <= attrs.keys(), attrs


@pytest.mark.parametrize("write", ["claim", "register"])
def test_a_restart_that_cuts_a_claim_of_a_queued_trial_or_the_study_row_is_redone(pg, write):
    """`pg_ctl restart -m fast` while a worker resuming a study claimed a queued trial (its WAITING rows held by
    another session: the claim's `SELECT ... FOR UPDATE` waits) or wrote the study's row (`advisor_study`, held
    too): the worker stopped with one line. The write is done again once the server is back and the run goes on."""
    import psycopg2

    study = f"restart-{write}"
    first = _worker(pg, study, "--trials", "1")  # the study, its row and its queued warm start
    out, err = first.communicate(timeout=120)
    assert first.returncode == 0 and pg.count("WAITING", study) >= 2, (out, err)
    hold = ("SELECT t.trial_id FROM trials t JOIN studies s USING (study_id) WHERE s.study_name = %(study)s AND "
            "t.state = 'WAITING' FOR NO KEY UPDATE OF t" if write == "claim" else
            "SELECT study_name FROM advisor_study WHERE study_name = %(study)s FOR NO KEY UPDATE")
    with contextlib.closing(psycopg2.connect(pg.url)) as c, contextlib.closing(psycopg2.connect(pg.url)) as look:
        with c.cursor() as cur:  # (a transaction left open: the rows held until the restart ends it)
            cur.execute(hold, {"study": study})
            assert cur.rowcount >= 1
        look.autocommit = True  # (a transaction reads pg_stat_activity as it was at its start)
        proc = _worker(pg, study, "--trials", "2")
        _wait_for_a_worker_waiting(look, "transactionid", proc)  # (for the rows held)
        pg.restart()
    out, err = proc.communicate(timeout=60)
    assert proc.returncode == 0, (out, err)
    assert err == "", err
    trials = pg.trials(study)
    assert sum(t.state.name == "COMPLETE" for t in trials) == 3, trials
    assert not [t for t in trials if t.state.name == "RUNNING"], trials



def test_a_restart_that_cuts_the_seeding_of_a_new_study_after_its_attributes_keeps_its_cpu_note(pg, tmp_path):
    """`pg_ctl restart -m fast` while `advisor tune` seeded the study it had just created - its attributes (its CPU
    expert times among them) committed, its first warm-start point being queued (here waiting for the `trials`
    table another session locked): the seeding is done again whole (its seed lock went with the cut), and the redo
    found the attributes stored - so the run said it priced with "the study's stored measurement", of a study it
    had created and measured itself. It says what it did: measured by this run, stored with the study."""
    import optuna
    import psycopg2

    from advisor.results.urls import normalize_url

    study = "restart-seed-cpu"
    optuna.storages.RDBStorage(normalize_url(pg.url)).engine.dispose()  # Optuna's tables (a fresh server has none)
    with contextlib.closing(psycopg2.connect(pg.url)) as c, contextlib.closing(psycopg2.connect(pg.url)) as look:
        with c.cursor() as cur:  # (a transaction left open: inserts wait until the restart ends it; reads go on)
            cur.execute("LOCK TABLE trials IN EXCLUSIVE MODE")
        look.autocommit = True
        proc = subprocess.Popen([sys.executable, "-m", "advisor", "tune", "tiny:qwen3_moe", "--space", "quick",
                                 "--trials", "1", "--storage", pg.url, "--study", study], cwd=tmp_path,
                                stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
                                env={**os.environ, "COLUMNS": "400"})
        _wait_for_a_worker_waiting(look, "relation", proc)  # (its first queued point's insert)
        with look.cursor() as cur:  # the new study's attributes are committed
            cur.execute("SELECT count(*) FROM study_user_attributes a JOIN studies s USING (study_id) "
                        "WHERE s.study_name = %s AND a.key = 'cpu_experts'", (study,))
            assert cur.fetchone()[0] == 1
        pg.restart()
    out, err = proc.communicate(timeout=300)
    assert proc.returncode == 0, (out, err)
    note = next((ln for ln in out.splitlines() if ln.startswith("CPU expert times:")), "")
    assert note.endswith(", measured by this run, stored with the study (a resume and `advisor report` reuse them)"), out
    assert pg.count("COMPLETE", study) == 1
