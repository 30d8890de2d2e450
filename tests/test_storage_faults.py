"""A database that fails under a running tune: a disk full or a file-size limit on a SQLite file, a PostgreSQL
server that stops answering mid-study. Each is one `error:` line (exit code 2, no traceback) naming the
database and what to do; every finished trial is kept and the same command resumes the study."""

from __future__ import annotations

import contextlib
import os
import resource
import shutil
import signal
import socket
import sqlite3
import subprocess
import sys
import threading
import time
import uuid
from dataclasses import dataclass
from pathlib import Path

import pytest

from tests.cli_helpers import flat, read_note, said_lines

HELPER = str(Path(__file__).parent / "tune_helpers.py")


def _worker(*args: str, **kwargs) -> subprocess.Popen:
    return subprocess.Popen([sys.executable, HELPER, *args], stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                            text=True, **kwargs)


def _complete(db: Path, study: str) -> int:
    with sqlite3.connect(db) as c:
        return c.execute("SELECT count(*) FROM trials JOIN studies USING (study_id) WHERE study_name = ? AND "
                         "state = 'COMPLETE'", (study,)).fetchone()[0]


def _one_error_line(err: str) -> str:
    assert "Traceback" not in err, err
    lines = [ln for ln in err.splitlines() if ln.strip()]
    assert lines and lines[-1].startswith("error: "), err
    return lines[-1]


def test_a_file_size_limit_mid_study_is_one_line_and_keeps_the_finished_trials(tmp_path):
    """`ulimit -f` (EFBIG; the same path as a full disk) reached while a tune writes its trials: it said
    `storage error: (sqlite3.OperationalError) disk I/O error; check --storage (a writable, valid database)`
    from the CLI, a traceback from `run_tune`."""
    db, study = tmp_path / "fsize.db", "fsize"
    args = ("--storage", f"sqlite:///{db}", "--study", study, "--heartbeat", "0", "--sampler", "random")
    out, err = _worker(*args, "--trials", "2").communicate(timeout=60)
    assert _complete(db, study) == 2, err
    limit = db.stat().st_size + 8192  # a few trials more, not 40

    def small_files() -> None:
        resource.setrlimit(resource.RLIMIT_FSIZE, (limit, resource.getrlimit(resource.RLIMIT_FSIZE)[1]))

    proc = _worker(*args, "--trials", "40", preexec_fn=small_files)
    out, err = proc.communicate(timeout=60)
    assert proc.returncode == 2, (out, err)
    line = _one_error_line(err)
    assert line.startswith(f"error: cannot write {db} (") and "ulimit -f" in line, line  # EFBIG: "disk I/O error"
    assert "run the same command again" in line, line
    readme = " ".join((Path(__file__).parents[1] / "README.md").read_text().split())
    assert "(for a SQLite file, `error: cannot write FILE (...)`)" in readme  # it quoted only PostgreSQL's line
    assert _complete(db, study) >= 2  # (the PostgreSQL test below resumes such a study)
    with sqlite3.connect(db) as c:
        assert c.execute("PRAGMA integrity_check").fetchone() == ("ok",)


def test_a_new_file_that_never_held_a_finished_trial_is_not_left_behind(tmp_path):
    """`ulimit -f` (or a full disk) reached by the tune that creates a SQLite file, before any trial finished:
    the file was left with a half-made study (settings, queued trials, no result), which `advisor studies`
    listed ('model ? ...') and the next run resumed, refusing another --budget although nothing had run. The
    run that created it removes it and says so; a file holding a finished trial is kept."""
    import optuna

    from advisor.results.storage import discard_unfinished

    args = ("--study", "s", "--heartbeat", "0", "--sampler", "random")
    ref = tmp_path / "ref.db"  # a study seeded without trials: the limited run fails before it is this big
    out, err = _worker("--storage", f"sqlite:///{ref}", *args, "--trials", "0").communicate(timeout=60)
    assert _complete(ref, "s") == 0, err
    limit = ref.stat().st_size - 4096

    def small_files() -> None:
        resource.setrlimit(resource.RLIMIT_FSIZE, (limit, resource.getrlimit(resource.RLIMIT_FSIZE)[1]))

    db = tmp_path / "new.db"
    proc = _worker("--storage", f"sqlite:///{db}", *args, "--trials", "2", preexec_fn=small_files)
    out, err = proc.communicate(timeout=60)
    assert proc.returncode == 2, (out, err)
    line = _one_error_line(err)
    assert line.startswith(f"error: cannot write {db} (") and "ulimit -f" in line, line
    assert f"this run created {db} and nothing in it had finished, so it was removed" in line, line
    assert not db.exists() and not Path(f"{db}-journal").exists()
    kept = f"sqlite:///{tmp_path / 'kept.db'}"  # one finished trial: kept, as a file of another worker's run
    optuna.create_study(study_name="k", storage=kept).optimize(lambda t: t.suggest_float("x", 0, 1), n_trials=1)
    assert not discard_unfinished(kept) and (tmp_path / "kept.db").exists()
    optuna.create_study(study_name="q", storage=f"sqlite:///{tmp_path / 'queued.db'}").enqueue_trial({"x": 0.5})
    assert discard_unfinished(f"sqlite:///{tmp_path / 'queued.db'}") and not (tmp_path / "queued.db").exists()


def _holding(lock: Path) -> subprocess.Popen:
    """Another process holding the file lock `lock` until its stdin is closed (returned once it holds it)."""
    holder = subprocess.Popen([sys.executable, "-c", "import sys\nfrom filelock import FileLock\n"
                               f"held = FileLock({str(lock)!r})\nheld.acquire()\nprint('held', flush=True)\n"
                               "sys.stdin.read()"], stdin=subprocess.PIPE, stdout=subprocess.PIPE, text=True)
    assert holder.stdout.readline().strip() == "held"
    return holder


def test_a_new_file_in_use_by_another_worker_is_kept_and_a_removed_one_takes_its_lock_files(tmp_path):
    """`advisor tune` under `ulimit -f` on a file it creates: the removal waited up to $ADVISOR_SQLITE_TIMEOUT_S
    (60 s) for the file's turn though its docstring said a second, took no seeding turn - so the file of a
    second worker that had opened it but not yet counted its run was deleted under it - and left
    `<file>.lock` and `<file>.seed.lock` behind it. Both turns are tried once: held, the file is kept."""
    import optuna

    from advisor.results.storage import discard_unfinished

    db = tmp_path / "new.db"
    url = f"sqlite:///{db}"
    optuna.create_study(study_name="q", storage=url).enqueue_trial({"x": 0.5})  # nothing finished in it
    for lock in (f"{db}.seed.lock", f"{db}.lock"):  # a worker seeding the study; one ending a trial
        holder = _holding(Path(lock))
        try:
            t0 = time.monotonic()
            assert not discard_unfinished(url) and db.exists(), lock  # its turn held: in use, kept at once
            assert time.monotonic() - t0 < 5
        finally:
            holder.communicate("", timeout=30)
    assert discard_unfinished(url)  # nobody's: removed, and its lock files with it
    assert sorted(p.name for p in tmp_path.iterdir() if p.name.startswith("new.db")) == []


def test_a_worker_that_opened_a_new_file_holds_its_seeding_turn_so_it_is_not_removed_under_it(tmp_path, monkeypatch):
    """A worker took the file's seeding turn only once it had opened the file and loaded its study: in between
    it held no turn and had no counted run, so a run that had created the file and then failed to write removed
    it (`discard_unfinished`) under the worker, which then wrote into a removed file. The turn is taken before
    the file is opened: the removal, tried then from another process, keeps the file."""
    from tune_helpers import FakeBackend, small_space

    from advisor.tune import study as study_mod
    from advisor.tune.study import TuneOptions, run_tune

    db = tmp_path / "t.db"
    url = f"sqlite:///{db}"
    tried: list[str] = []
    loaded = study_mod.create_or_load

    def create_or_load(*args, **kwargs):  # the window: the file opened, the study loaded, its run not counted
        study = loaded(*args, **kwargs)
        tried.append(subprocess.run([sys.executable, "-c", "from advisor.results.storage import discard_unfinished"
                                     f"\nprint(discard_unfinished({url!r}))"], capture_output=True, text=True,
                                    timeout=60).stdout.strip())
        return study

    monkeypatch.setattr(study_mod, "create_or_load", create_or_load)
    result = run_tune(FakeBackend(), small_space(), TuneOptions(study_name="s", storage=url, n_trials=2,
                                                                sampler="random", heartbeat_interval=None),
                      budget_bytes=None)
    assert tried == ["False"] and db.exists()  # (before: "True", the file removed under this worker)
    assert result.n_trials_run == 2



_SEEDING = """
import sys, time
from advisor.results.locks import sqlite_lock
with sqlite_lock(sys.argv[1], "seed"):  # a worker seeding the study (measuring the CPU expert times: minutes)
    print("HELD", flush=True)
    sys.stdin.readline() if sys.argv[2] == "until-told" else time.sleep(float(sys.argv[2]))
"""


def _seeding(url: str, seconds: float | str) -> subprocess.Popen:
    """Another worker holding the file's seeding turn for `seconds` (or "until-told": until a line on its stdin),
    beating (ADVISOR_SQLITE_TIMEOUT_S=1)."""
    holder = subprocess.Popen([sys.executable, "-c", _SEEDING, url, str(seconds)], stdin=subprocess.PIPE,
                              stdout=subprocess.PIPE, text=True, env={**os.environ, "ADVISOR_SQLITE_TIMEOUT_S": "1"})
    assert holder.stdout is not None and holder.stdout.readline() == "HELD\n"
    return holder


def test_a_worker_waiting_for_a_stopped_holder_of_the_seeding_turn_says_so_and_gives_up(tmp_path):
    """The SQLite file's seeding turn (`<file>.seed.lock`) held by a worker stopped while seeding (SIGSTOP, a
    suspended machine): a worker waiting for it waited silently for ever. It says what it waits on, and gives up
    in one line (exit code 2) once the holder's beat file has not changed for ADVISOR_SQLITE_TIMEOUT_S."""
    db = tmp_path / "s.db"
    holder = _seeding(f"sqlite:///{db}", 60)
    try:
        holder.send_signal(signal.SIGSTOP)
        t0 = time.monotonic()
        out, err = _worker("--storage", f"sqlite:///{db}", "--study", "s", "--trials", "1",
                           env={**os.environ, "ADVISOR_SQLITE_TIMEOUT_S": "1"}).communicate(timeout=60)
        waited = time.monotonic() - t0
    finally:
        holder.kill()
        holder.send_signal(signal.SIGCONT)
        holder.wait()
    line = _one_error_line(err)
    held = f"the seeding turn of {db} ({db}.seed.lock), held by pid {holder.pid} on {socket.gethostname()}"
    assert said_lines(err)[0] == (f"note: waiting for {held}, for 0.5 s; still waiting as long as its holder beats "
                                   "(given up once it has not for 1 s, ADVISOR_SQLITE_TIMEOUT_S) - Ctrl-C stops the "
                                   "command"), err
    assert line.startswith(f"error: gave up waiting for {held}: its holder has not beaten for 1 s "
                           "(ADVISOR_SQLITE_TIMEOUT_S) - a worker stopped or paused while seeding the study"), line
    assert len(said_lines(err)) == 2 and waited < 15, (waited, err)
    assert "READY" in out and "STAGE" not in out, out


@pytest.mark.parametrize("beating", [True, False])
def test_a_holder_of_the_seeding_turn_at_work_is_waited_for_past_the_limit(tmp_path, beating):
    """A holder that beats (at work, here for 1.5 s after the waiting worker's note: past
    ADVISOR_SQLITE_TIMEOUT_S=1) is waited for, as one that does not beat at all (an advisor from before the beats:
    its silence says nothing) - the note says which. The turn is released after the note, not after a fixed time
    from the start: on a loaded host the worker's start took longer than a fixed hold, and it never waited."""
    from filelock import FileLock

    db = tmp_path / "s.db"
    if beating:
        holder = _seeding(f"sqlite:///{db}", "until-told")
    else:
        old = FileLock(f"{db}.seed.lock", thread_local=False)
        old.acquire()
    worker = _worker("--storage", f"sqlite:///{db}", "--study", "s", "--trials", "1",
                     env={**os.environ, "ADVISOR_SQLITE_TIMEOUT_S": "1"})
    assert worker.stderr is not None

    released = threading.Event()

    def release() -> None:
        if released.is_set():
            return
        released.set()
        if beating:
            assert holder.stdin is not None
            holder.stdin.write("release\n")
            holder.stdin.flush()
        else:
            old.release()

    guard = threading.Timer(60, release)  # a worker that never says it waits must not hang the suite
    guard.start()
    note = read_note(worker.stderr)  # the worker waits (0.5 s) and says so (wrapped: every line of it)
    time.sleep(1.5)  # still waiting, past its 1 s limit
    guard.cancel()
    release()
    out, err = worker.communicate(timeout=60)
    err = note + err
    assert '"n_trials_run": 1' in out, (out, err)
    if beating:
        holder.wait(timeout=10)
        assert flat(err) == (f"note: waiting for the seeding turn of {db} ({db}.seed.lock), held by pid {holder.pid} on "
                       f"{socket.gethostname()}, for 0.5 s; still waiting as long as its holder beats (given up once "
                       "it has not for 1 s, ADVISOR_SQLITE_TIMEOUT_S) - Ctrl-C stops the command"), err
    else:
        assert flat(err) == (f"note: waiting for the seeding turn of {db} ({db}.seed.lock), held by another process, for "
                       "0.5 s; still waiting for as long as it is held (its holder does not say that it works - an "
                       "advisor from before 2026-12-05, or one that cannot write s.db.seed.beat, on a full disk: if "
                       "it is stopped, end it) - Ctrl-C stops the command"), err
    assert sorted(p.name for p in tmp_path.iterdir()) == ["s.db", "s.db.lock", "s.db.seed.lock"]  # no beat file left


class _FullDisk:
    """`os` for `advisor.results.locks`, whose `write` fails as on a full disk from its `after`-th call on."""

    def __init__(self, after: int) -> None:
        self.calls, self.after = 0, after

    def __getattr__(self, name: str):
        return getattr(os, name)

    def write(self, fd: int, data: bytes) -> int:
        self.calls += 1
        if self.calls > self.after:
            raise OSError(28, "No space left on device")
        return os.write(fd, data)


def test_a_holder_that_cannot_write_its_first_beat_seeds_without_beats(tmp_path, monkeypatch):
    """A full disk at the seeding turn's first beat (a new file's first block) raised the OSError out of the turn -
    a traceback from `tune` where the docstring promised 'no beats' - or, written empty, would read to a waiter as
    a holder that stopped. The turn is taken and the work runs; no beat file is left (waiters cannot judge)."""
    from advisor.results import locks

    db = tmp_path / "s.db"
    monkeypatch.setattr(locks, "os", _FullDisk(after=0))
    ran = False
    with locks.sqlite_lock(f"sqlite:///{db}", "seed"):
        ran = True
        assert not Path(f"{db}.seed.beat").exists()
    assert ran


def test_a_holder_whose_beats_fail_leaves_no_beat_file_that_reads_as_stopped(tmp_path, monkeypatch):
    """A beat that fails while the turn is held (a disk full) stopped the beats but left the file: unchanged, it
    read to a waiter as a stopped holder, given up on in an error after ADVISOR_SQLITE_TIMEOUT_S though the holder
    was at work. The file goes with the beats."""
    from advisor.results import locks

    monkeypatch.setenv("ADVISOR_SQLITE_TIMEOUT_S", "0.25")  # a beat every 0.05 s
    db = tmp_path / "s.db"
    full = _FullDisk(after=1)
    monkeypatch.setattr(locks, "os", full)
    with locks.sqlite_lock(f"sqlite:///{db}", "seed"):
        assert Path(f"{db}.seed.beat").read_text().startswith(f"pid={os.getpid()} ")
        deadline = time.monotonic() + 5
        while full.calls < 2 and time.monotonic() < deadline:
            time.sleep(0.01)
        time.sleep(0.05)
        assert full.calls >= 2 and not Path(f"{db}.seed.beat").exists()


class _Proxy:
    """A TCP relay to the PostgreSQL server that can be cut (the server stopped or out of reach) and restored."""

    def __init__(self, host: str, port: int) -> None:
        self.upstream = (host, port)
        self.port = 0
        self.socks: list[socket.socket] = []
        self.listener: socket.socket | None = None
        self.cut_on: bytes | None = None  # cut instead of passing on a client packet holding these bytes
        # cut once the transaction of a client packet holding these bytes has committed, its answer held back
        self.cut_after_commit_of: bytes | None = None
        self._armed: socket.socket | None = None  # (the client connection whose next COMMIT is passed on, then cut)
        self._mute = False  # (the server's answers are not passed on)
        self.start()

    def start(self) -> None:
        ls = socket.socket()
        ls.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        ls.bind(("127.0.0.1", self.port))
        ls.listen(50)
        self.port, self.listener = ls.getsockname()[1], ls
        threading.Thread(target=self._accept, args=(ls,), daemon=True).start()

    def _accept(self, ls: socket.socket) -> None:
        while True:
            try:
                down, _ = ls.accept()
            except OSError:
                return
            up = socket.create_connection(self.upstream)
            self.socks += [down, up]
            for a, b in ((down, up), (up, down)):
                threading.Thread(target=self._pump, args=(a, b, a is down), daemon=True).start()

    def _pump(self, a: socket.socket, b: socket.socket, from_client: bool) -> None:
        try:
            while data := a.recv(65536):
                if from_client and self.cut_on and self.cut_on in data:  # the server gone with that query unanswered
                    self.cut_on = None
                    self.cut()
                    return
                if from_client and self.cut_after_commit_of and self.cut_after_commit_of in data:
                    self.cut_after_commit_of, self._armed = None, a
                elif from_client and self._armed is a and b"COMMIT" in data:  # the server commits, its answer lost
                    self._armed, self._mute = None, True
                    b.sendall(data)
                    time.sleep(0.3)
                    self.cut()
                    self._mute = False
                    return
                if not self._mute:
                    b.sendall(data)
        except OSError:
            pass
        for s in (a, b):
            try:
                s.shutdown(socket.SHUT_RDWR)
            except OSError:
                pass

    def cut(self) -> None:
        assert self.listener is not None
        try:  # wakes the accept() under way (a listener closed while accept() waits on it still takes one more)
            self.listener.shutdown(socket.SHUT_RDWR)
        except OSError:
            pass
        self.listener.close()
        for s in self.socks:
            try:
                s.shutdown(socket.SHUT_RDWR)
            except OSError:
                pass
            s.close()
        self.socks = []


def test_a_heartbeat_that_cannot_be_written_for_a_moment_is_retried_without_a_traceback(tmp_path):
    """Another process holds the SQLite file past the busy timeout while a trial measures (the same for a
    PostgreSQL server restarted then): Optuna's heartbeat thread died with `Exception in thread ...` and a
    traceback on stderr, and the trial beat no more. Now the next beat writes it and the tune ends as usual."""
    db, study = tmp_path / "beat.db", "beat"
    proc = _worker("--storage", f"sqlite:///{db}", "--study", study, "--trials", "1", "--delay", "2.2",
                   "--heartbeat", "1", "--grace", "3", "--sampler", "random",
                   env={**os.environ, "ADVISOR_SQLITE_TIMEOUT_S": "0.3"})
    assert proc.stdout is not None
    for line in proc.stdout:
        if line.startswith("STAGE accuracy"):  # its lease claimed: the next 2.2 s write only heartbeats
            break
    with sqlite3.connect(db, isolation_level=None) as c:
        time.sleep(0.2)
        c.execute("BEGIN EXCLUSIVE")
        time.sleep(1.6)  # a beat or two fail (each after 0.3 s)
        c.execute("ROLLBACK")
    out, err = proc.communicate(timeout=60)
    assert proc.returncode == 0, err
    assert "Traceback" not in err and "Exception in thread" not in err, err
    assert _complete(db, study) == 1


@pytest.mark.parametrize(("command", "given"), [(["tune", "--trials", "1"], "postgresql:/advisor"),
                                                (["studies"], "postgres:user:secret@dbhost/advisor"),
                                                (["pareto", "s"], "sqlite:/x.db")])
def test_a_database_url_without_its_slashes_is_refused_not_read_as_a_file(tmp_path, command, given):
    """`postgresql:/db` has no `://`, so it was a SQLite path: `tune` made a directory `postgresql:` in the working
    directory and ran its study alone in a new file there (workers meant to share a server's study did not); the
    readers said "no advisor database at postgresql:/db"."""
    r = subprocess.run([sys.executable, "-m", "advisor", *command, "--storage", given], capture_output=True, text=True,
                       cwd=tmp_path, timeout=60)
    assert r.returncode == 2, r.stderr
    line = _one_error_line(r.stderr)
    scheme = given.split(":", 1)[0]
    assert line.startswith(f"error: --storage starts with '{scheme}:' but has no '//' after it"), line
    assert "secret" not in r.stderr + r.stdout
    assert list(tmp_path.iterdir()) == []  # no directory, no database


_LEAVE_HOT_JOURNAL = """
import os, sqlite3, sys
c = sqlite3.connect(sys.argv[1], isolation_level=None)
c.execute("PRAGMA cache_size=1")
c.execute("BEGIN IMMEDIATE")
c.execute("UPDATE notes SET x = x + 1")
os._exit(0)  # mid-transaction, as a worker killed in a write: its -journal stays
"""


@pytest.mark.parametrize("command", [["studies"], ["recommend", "--study", "s"]])
def test_an_unfinished_write_on_a_read_only_mount_says_so(tmp_path, command):
    """A `-journal` left by a process stopped mid-write, on a read-only mount (a backup, a shared volume): SQLite
    must roll it back to read the file and cannot. It said "x.db is not a readable advisor database (attempt to
    write a readonly database); point --storage at the file `advisor tune` wrote" - the very file it wrote."""
    if shutil.which("unshare") is None:
        pytest.skip("no unshare")
    src, ro = tmp_path / "src", tmp_path / "ro"
    src.mkdir()
    ro.mkdir()
    db = src / "x.db"
    with sqlite3.connect(db) as c:
        c.execute("CREATE TABLE notes (x INTEGER)")
        c.executemany("INSERT INTO notes VALUES (?)", [(i,) for i in range(2000)])
    subprocess.run([sys.executable, "-c", _LEAVE_HOT_JOURNAL, str(db)], check=True)
    assert (src / "x.db-journal").stat().st_size > 0
    mount = f"mount --bind {src} {ro} && mount -o remount,bind,ro {ro}"
    probe = subprocess.run(["unshare", "-m", "sh", "-c", f"{mount} && touch {ro}/y"], capture_output=True, text=True)
    if "Read-only file system" not in probe.stderr:
        pytest.skip(f"cannot make a read-only mount here: {probe.stderr.strip()[:80]}")
    args = " ".join(command)
    r = subprocess.run(["unshare", "-m", "sh", "-c", f"{mount} && exec {sys.executable} -m advisor {args} "
                        f"--storage {ro}/x.db"], capture_output=True, text=True, timeout=60, cwd=tmp_path)
    assert r.returncode == 2, r.stderr
    line = _one_error_line(r.stderr)
    assert line.startswith(f"error: {ro}/x.db holds a write that a stopped process left unfinished "
                           f"({ro}/x.db-journal beside it)"), line
    assert (src / "x.db-journal").exists()  # nothing was written


@pytest.mark.parametrize("command", [["studies"], ["pareto", "s"], ["export", "s", "0", "--to", "json"]])
def test_a_directory_given_to_a_reader_is_named_a_directory(tmp_path, command):
    """`--storage studies` (the folder, not the file in it): the readers said "no advisor database at studies;
    run `advisor tune` first" (as `tune` says: a directory, not a database file)."""
    (tmp_path / "studies").mkdir()
    (tmp_path / "studies" / "advisor.db").touch()
    r = subprocess.run([sys.executable, "-m", "advisor", *command, "--storage", "studies"], capture_output=True,
                       text=True, cwd=tmp_path, timeout=60)
    assert r.returncode == 2, r.stderr
    line = _one_error_line(r.stderr)
    assert line == ("error: --storage studies is a directory, not a database file; give the file `advisor tune` "
                    "wrote; here: studies/advisor.db"), line


def test_tune_on_a_file_another_process_keeps_locked_stops_before_the_model_loads(tmp_path):
    """Another process in the middle of a write transaction on the file, past the busy timeout: `tune` loaded the
    model first (10-30 s for a real one) and only then waited and stopped."""
    db = tmp_path / "held.db"
    holder = sqlite3.connect(db, isolation_level=None)
    try:
        holder.execute("BEGIN IMMEDIATE")
        r = subprocess.run([sys.executable, "-m", "advisor", "tune", "--trials", "1", "--storage", str(db)],
                           capture_output=True, text=True, cwd=tmp_path, timeout=120,
                           env={**os.environ, "ADVISOR_SQLITE_TIMEOUT_S": "0.5"})
    finally:
        holder.close()
    assert r.returncode == 2, r.stderr
    line = _one_error_line(r.stderr)
    assert line.startswith(f"error: the SQLite database {db} stayed locked by another process for 0.5 s"), line
    assert "advisor tune bundled" not in r.stdout, r.stdout  # the header the tune prints once the model has loaded


@pytest.mark.parametrize("command", [["tune", "--trials", "1", "--study", "s"], ["report", "s", "-o", "r"]])
def test_a_study_database_of_a_newer_optuna_says_so(tmp_path, command):
    """Tables a newer Optuna set up (its schema revision unknown here): `tune` and `report` (which open it with
    Optuna) said "... is not a usable/readable Optuna study database (...); point --storage at the database
    `advisor tune` wrote" - the database `advisor tune` did write."""
    import optuna

    db = tmp_path / "newer.db"
    optuna.create_study(study_name="s", storage=f"sqlite:///{db}", directions=["minimize", "maximize"])
    with sqlite3.connect(db) as c:
        c.execute("UPDATE alembic_version SET version_num = 'v99.0.0.a'")
    r = subprocess.run([sys.executable, "-m", "advisor", *command, "--storage", str(db)], capture_output=True,
                       text=True, cwd=tmp_path, timeout=120)
    assert r.returncode == 2, r.stderr
    line = _one_error_line(r.stderr)
    assert line.startswith(f"error: sqlite:///{db} holds study tables of another Optuna version than this one "
                           f"({optuna.__version__}): "), line
    assert "pip install -U optuna" in line and "point --storage" not in line, line
    assert not (tmp_path / "r").exists()


@dataclass
class _Server:
    url: str  # the server's own URL, password and all
    via: str  # the same database through the proxy
    proxy: _Proxy
    study: str

    def complete(self) -> int:
        import optuna

        study = optuna.load_study(study_name=self.study, storage=self.url)
        return len(study.get_trials(states=(optuna.trial.TrialState.COMPLETE,)))

    def worker(self, *args: str, **kwargs) -> subprocess.Popen:
        """A tune_helpers worker on the study through the proxy (random sampler, its own accuracy cache)."""
        return _worker("--storage", self.via, "--study", self.study, "--sampler", "random", "--fingerprint",
                       self.study, *args, **kwargs)

    def cut_at(self, proc: subprocess.Popen, trial: int, stage: str | None = None, after: float = 0.0) -> None:
        """Cut the link `after` s after the worker reports a `stage` (any, if None) of a trial numbered `trial`
        or above: at "accuracy", the trial is measuring (the accuracy lease claimed, the next write its tell)."""
        assert proc.stdout is not None
        for line in proc.stdout:
            word = line.split()
            if word[:1] == ["STAGE"] and int(word[-1]) >= trial and stage in (None, word[1]):
                break
        else:
            raise AssertionError(f"the worker ended before trial {trial}: {proc.communicate()}")
        time.sleep(after)
        self.proxy.cut()


@pytest.fixture
def server():
    """The test PostgreSQL server behind a proxy the test can cut (the server stopped, restarted, out of reach)
    and restore; a study name of its own, deleted after."""
    base = os.environ.get("ADVISOR_TEST_POSTGRES_URL")
    if not base:
        pytest.skip("ADVISOR_TEST_POSTGRES_URL is not set (source .ci/start_postgres.sh to start a local server)")
    import optuna
    from sqlalchemy.engine import make_url

    from advisor.results.urls import normalize_url

    real = make_url(normalize_url(base))
    proxy = _Proxy(real.host or "127.0.0.1", real.port or 5432)
    via = real.set(host="127.0.0.1", port=proxy.port).render_as_string(hide_password=False)
    s = _Server(real.render_as_string(hide_password=False), via, proxy, f"faults-{uuid.uuid4().hex[:8]}")
    yield s
    proxy.cut()
    try:
        optuna.delete_study(study_name=s.study, storage=s.url)
    except KeyError:
        pass


@pytest.mark.postgres
def test_a_postgresql_server_lost_mid_study_is_one_line_and_the_study_resumes(server):
    """The server stopped while a tune ran: Optuna's tell failed to write, then to read the trial back, and
    ended in `UnboundLocalError: cannot access local variable 'updated_state'`, a traceback with exit code 1.
    The wait for the server is one per outage: each new connection waited its own (8 s for two, not 4)."""
    proc = server.worker("--heartbeat", "0", "--delay", "0.2", "--trials", "40",
                         env={**os.environ, "ADVISOR_PG_RECONNECT_S": "4"})  # (not 15 s) for a server gone for good
    server.cut_at(proc, 3)  # trials 0-2 finished
    t0 = time.monotonic()
    out, err = proc.communicate(timeout=60)
    assert 4 <= time.monotonic() - t0 < 7, err
    assert proc.returncode == 2, (out, err)
    line = _one_error_line(err)
    assert line.startswith("error: the database postgresql+") and f":***@127.0.0.1:{server.proxy.port}/" in line, line
    assert "failed during the run" in line and "run the same command again" in line, line
    kept = server.complete()
    assert kept >= 3
    server.proxy.start()  # the server back: the same command resumes
    out, err = server.worker("--heartbeat", "0", "--delay", "0.2", "--total", str(kept + 2)).communicate(timeout=60)
    assert "Traceback" not in err, err
    assert server.complete() == kept + 2


@pytest.mark.postgres
def test_a_postgresql_server_lost_while_optuna_reads_trials_is_one_line(server):
    """The server went down while Optuna read a study's trials (`pg_ctl stop` under a tune on the bundled model):
    the run printed Optuna's warning "Caught an error from sqlalchemy: (psycopg2.OperationalError) server closed
    the connection unexpectedly ... [SQL: SELECT trial_system_attributes... WHERE ... IN (...)] ... Falling back
    to a slower alternative." - nine lines with the SQL - before its one `error:` line."""
    proc = server.worker("--heartbeat", "0", "--delay", "0.2", "--trials", "40",
                         env={**os.environ, "ADVISOR_PG_RECONNECT_S": "1"})
    assert proc.stdout is not None
    for line in proc.stdout:
        if line.split()[:1] == ["STAGE"] and int(line.split()[-1]) >= 2:
            break
    server.proxy.cut_on = b"WHERE trial_system_attributes.trial_id IN ("  # Optuna's _get_trials, its eager load
    out, err = proc.communicate(timeout=60)
    assert proc.returncode == 2, (out, err)
    assert server.proxy.cut_on is None, err  # the cut came where it was meant to
    assert "failed during the run" in _one_error_line(err)
    assert "Caught an error from sqlalchemy" not in err and "[SQL:" not in err, err


@pytest.mark.postgres
@pytest.mark.parametrize("committed", [False, True])
def test_a_restart_that_cuts_a_tell_in_flight_keeps_the_trial(server, committed):
    """A server restart (here: the link cut and back half a second later) under the tell of trial 2 - before its
    commit reached the server, or after it (the server committed, its answer was lost): the run stopped with its
    one line, and the rerun ran the trial again once its heartbeat was stale. The tell is redone once the server
    is back: written now, or found written with these values - not told twice, no trial failed or duplicated."""
    import optuna

    proc = server.worker("--heartbeat", "1", "--grace", "1", "--delay", "0.2", "--trials", "4")
    assert proc.stdout is not None
    for out in proc.stdout:  # trial 2 measuring: its tell is the next write of trial values
        if out.split()[:2] == ["STAGE", "accuracy"] and int(out.split()[-1]) >= 2:
            number = int(out.split()[-1])
            break
    if committed:
        server.proxy.cut_after_commit_of = b"INSERT INTO trial_values"
    else:
        server.proxy.cut_on = b"INSERT INTO trial_values"
    deadline = time.monotonic() + 10
    while (server.proxy.cut_on or server.proxy.cut_after_commit_of or server.proxy._armed) is not None \
            and time.monotonic() < deadline:
        time.sleep(0.01)
    time.sleep(0.5)
    server.proxy.start()
    out, err = proc.communicate(timeout=60)
    assert (server.proxy.cut_on or server.proxy.cut_after_commit_of or server.proxy._armed) is None, err  # cut there
    assert proc.returncode == 0, (out, err)
    assert err == "", err
    assert '"finished_elsewhere": []' in out, out
    trials = optuna.load_study(study_name=server.study, storage=server.url).trials
    done = [t for t in trials if t.state != optuna.trial.TrialState.WAITING]
    assert [t.state for t in done] == [optuna.trial.TrialState.COMPLETE] * 4, [(t.number, t.state) for t in trials]
    assert trials[number].values is not None


@pytest.mark.postgres
def test_a_postgresql_server_restarted_between_writes_is_waited_for(server):
    """The server restarted (here: out of reach for a second) while a trial measured: the tune's next write
    found the pooled connection dead and a new one refused, and the tune stopped; now it connects again once
    the server is back and ends as usual."""
    proc = server.worker("--heartbeat", "1", "--delay", "0.6", "--trials", "4")
    server.cut_at(proc, 1, "accuracy", 0.15)  # measuring: the next write is its tell
    time.sleep(1.0)
    server.proxy.start()
    out, err = proc.communicate(timeout=60)
    assert proc.returncode == 0, err
    assert "Traceback" not in err and "Exception in thread" not in err, err
    assert server.complete() == 4


@pytest.mark.postgres
def test_the_study_storage_waits_for_a_server_restarted_after_its_first_connection(server, monkeypatch):
    """Optuna's storage connects to set up its tables inside `open_storage`, before the wait is installed: that
    connection did not count as "has connected", so a restart before the storage opened a second one (no
    heartbeat or lease write between: a tune's tell, its trial's next state) failed at once, not after a wait."""
    import optuna

    from advisor.results.storage import open_storage

    monkeypatch.setenv("ADVISOR_PG_RECONNECT_S", "10")
    storage = open_storage(server.via, heartbeat_interval=None)
    study = optuna.create_study(storage=storage, study_name=server.study)
    server.proxy.cut()
    back = threading.Timer(1.0, server.proxy.start)
    back.start()
    t0 = time.monotonic()
    study.set_user_attr("written", "after the restart")  # its pooled connection is dead: a new one is refused
    assert 0.5 < time.monotonic() - t0 < 8
    back.join()
    assert optuna.load_study(study_name=server.study, storage=server.url).user_attrs["written"] == "after the restart"
    storage.engine.dispose()


@pytest.mark.postgres
def test_sigterm_while_a_tune_waits_for_its_server_stops_it_at_once(server):
    """SIGTERM (or Ctrl-C) while the tune waited for a server that stopped: the study's handler only noted it
    (the tune was writing), and the tune went on waiting the whole 15 s. It stops as an interrupt anywhere else
    does (exit code 130; the CLI's line "interrupted; finished trials (if any) are kept"), not as a failed
    database (exit 2), which it said once the wait was cut short."""
    proc = server.worker("--heartbeat", "0", "--delay", "0.3", "--trials", "40",
                         env={**os.environ, "ADVISOR_PG_RECONNECT_S": "30"})
    server.cut_at(proc, 1, "accuracy", 0.1)
    time.sleep(1.0)  # its trial measured; its tell waits for the server
    t0 = time.monotonic()
    proc.send_signal(signal.SIGTERM)
    out, err = proc.communicate(timeout=60)
    assert time.monotonic() - t0 < 5, err
    assert proc.returncode == 130, (out, err)
    assert err.strip() == "INTERRUPTED", err  # run_tune raised KeyboardInterrupt, as the CLI takes it


def test_a_tiny_pg_wait_does_not_make_a_lock_holder_beat_in_a_busy_loop(monkeypatch):
    """`beat_s` was a fifth of ADVISOR_PG_WAIT_S with no floor: at 0.001 s a lock holder's beating thread sent the
    server a `SELECT 1` every 0.2 ms, thousands a second. Its interval is now floored at 0.05 s."""
    import time

    from advisor.results import locks

    monkeypatch.setenv("ADVISOR_PG_WAIT_S", "0.001")
    assert locks.beat_s() == 0.05

    class Session:  # counts the beats a holder's lock session is sent
        beats = 0

        def execute(self, _query):
            self.beats += 1

        def rollback(self):
            pass

    session = Session()
    with locks._beating(session):
        time.sleep(0.3)
    assert 1 <= session.beats <= 7, session.beats  # every 0.05 s; unfloored, hundreds
    monkeypatch.setenv("ADVISOR_PG_WAIT_S", "20")
    assert locks.beat_s() == 4.0  # a fifth of the wait, as before
    monkeypatch.setenv("ADVISOR_PG_WAIT_S", "inf")
    assert locks.beat_s() == 5.0


@pytest.mark.postgres
def test_a_restart_that_cuts_a_measurement_being_cached_keeps_it(server):
    """A server restart (the link cut, back half a second later) while a worker stored what it had just measured
    (`advisor_eval_cache`: a plan's fidelity or accuracy - minutes of a real model's evaluation): the trial failed
    and the worker stopped with one line; the rerun measured that plan again. The row is written once the server
    is back (a second insert of a row whose commit had landed is a duplicate key, taken as written)."""
    import json

    import optuna

    proc = server.worker("--heartbeat", "1", "--grace", "1", "--delay", "0.2", "--trials", "3")
    server.proxy.cut_on = b"INSERT INTO advisor_eval_cache"
    deadline = time.monotonic() + 20
    while server.proxy.cut_on is not None and time.monotonic() < deadline:
        time.sleep(0.01)
    time.sleep(0.5)
    server.proxy.start()
    out, err = proc.communicate(timeout=60)
    assert server.proxy.cut_on is None, err  # the cut came where it was meant to
    assert proc.returncode == 0, (out, err)
    assert err == "", err
    trials = optuna.load_study(study_name=server.study, storage=server.url).trials
    done = [t.state for t in trials if t.state != optuna.trial.TrialState.WAITING]
    assert done == [optuna.trial.TrialState.COMPLETE] * 3, [(t.number, t.state) for t in trials]
    calls = json.loads(out.split("RESULT ", 1)[1])["calls"]
    import psycopg2

    with contextlib.closing(psycopg2.connect(server.url.replace("+psycopg2", ""))) as c, c.cursor() as cur:
        cur.execute("SELECT count(*) FROM advisor_eval_cache WHERE model_fingerprint = %s", (server.study,))
        assert cur.fetchone()[0] == calls["fidelity"] + calls["accuracy"], calls  # each measurement stored
