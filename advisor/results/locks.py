"""The turns workers sharing one database take: a SQLite file's lock files (with a beat file while a slow
turn is held) and PostgreSQL advisory locks (with a beating lock session), the schema lock among them. A
wait is said in a note, ended by Ctrl-C, and given up on in one line once the holder has stopped - not
while it works, however long.
"""

from __future__ import annotations

import contextlib
import os
import re
import time
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import TYPE_CHECKING, Any

from advisor.errors import UserError
from advisor.results.connections import APPLICATION_NAME, engine_kwargs, sqlite_busy_timeout_s
from advisor.results.reconnect import answer_wait_s, notice_s, say_note, stopping
from advisor.results.storage_errors import locked_database
from advisor.results.urls import sqlite_path

if TYPE_CHECKING:
    from sqlalchemy.engine import URL, Engine


@contextmanager
def sqlite_lock(url: str | URL, purpose: str = "", *, wait: bool = True) -> Iterator[None]:
    """The turn workers on one SQLite file take (`<file>.lock` beside it, one for the whole file): for creating
    tables, claiming or ending a trial, writing a front - short database work only. A `purpose` takes a lock
    file of its own (`<file>.<purpose>.lock`), for work that must be serialised but is too slow to hold the
    file's turn: seeding a study may measure the CPU expert times (seconds for a real model), which workers
    of other studies ending their trials must not wait for; its holder beats meanwhile and its waiters give up
    on one that stops beating (`_wait_for_turn`). `wait=False`: one try, the `locked_database` line at once if
    another process holds it. Re-entrant within a process; a no-op for other databases and in-memory SQLite
    (one process)."""
    path = sqlite_path(url)
    if path is None:
        yield
        return
    from filelock import FileLock, Timeout

    if purpose:  # slow work of its own: waited for as long as its holder beats
        lock = FileLock(f"{path}.{purpose}.lock", is_singleton=True)
    else:  # short work: held for long, it belongs to a stopped process (waiting would hang without a word)
        lock = FileLock(f"{path}.lock", timeout=sqlite_busy_timeout_s(), is_singleton=True)
    outermost = not lock.is_locked  # (taken again inside itself: already beating)
    try:
        if purpose and wait and outermost:
            _wait_for_turn(lock, path, purpose)
        else:
            lock.acquire(blocking=wait)
    except Timeout as e:
        raise locked_database(path) from e
    try:
        with _beating_file(Path(f"{path}.{purpose}.beat")) if purpose and outermost else contextlib.nullcontext():
            yield
    finally:
        lock.release()


def _holder_line() -> str:
    """What the holder of a SQLite file's slow turn writes in its beat file, padded to one length per holder
    (each beat overwrites it in place): its process and host, and a count that changes with each beat."""
    import socket

    return f"pid={os.getpid()} host={socket.gethostname()} beat="


@contextmanager
def _beating_file(beat: Path) -> Iterator[None]:
    """While the block runs (a slow turn held), `beat` (`<file>.<purpose>.beat`) names this process and is
    written again every `beat_s()`, from a thread: a process stopped or paused (SIGSTOP, a suspended machine or
    container) writes no more, which its waiters see (`_wait_for_turn`). Removed before the turn is released,
    so a beat file is there only while a beating holder holds the turn - or was killed holding it (SIGKILL:
    the next holder writes it anew). A directory that cannot be written to, or a beat that cannot be written (a
    disk full): no beats and no beat file (waiters cannot judge, and wait), never an error of the holder's."""
    import threading

    head, done, every = _holder_line(), threading.Event(), beat_s(sqlite_busy_timeout_s())
    try:
        fd = os.open(beat, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o644)
    except OSError:
        yield
        return

    def write(n: int) -> None:  # (in place: one length per holder; only the beating thread writes once started)
        os.lseek(fd, 0, os.SEEK_SET)
        os.write(fd, f"{head}{n:012d}\n".encode())

    def unbeaten() -> None:  # (a file that stopped changing reads as a stopped holder: none is "cannot judge")
        with contextlib.suppress(OSError):
            beat.unlink()

    def beats() -> None:
        n = 1
        while not done.wait(every):
            try:
                write(n)
            except OSError:  # (a disk full: the holder's own work says what failed; beats stop, their file goes)
                unbeaten()
                return
            n += 1

    try:
        write(0)
    except OSError:  # (a disk full: the first write needs a block) no beats, as where the file cannot be made
        os.close(fd)
        unbeaten()
        yield
        return
    thread = threading.Thread(target=beats, name="advisor-turn-beat", daemon=True)
    try:
        thread.start()
        yield
    finally:
        done.set()
        if thread.is_alive():
            thread.join()
        os.close(fd)
        unbeaten()


def _read_beat(beat: Path) -> str | None:
    """The content of a beat file, None where there is none."""
    try:
        return beat.read_text(errors="replace")
    except OSError:
        return None


def _wait_for_turn(lock: Any, path: Path, purpose: str) -> None:
    """Take `lock` (`<path>.<purpose>.lock`, a slow turn: the seeding of a study), waiting while another process
    holds it. A wait past `notice` (30 s, or half of ADVISOR_SQLITE_TIMEOUT_S where that is shorter) is said in
    one `note:` line naming the turn and its holder; Ctrl-C or SIGTERM ends it (a KeyboardInterrupt: nothing is
    written yet). A holder that beats (`_beating_file`) is waited for as long as it holds the turn; one whose beat
    file has not changed for ADVISOR_SQLITE_TIMEOUT_S (60 s) of this wait - stopped, paused, or cut off from a
    shared filesystem - is given up on in one line (a `UserError`). Changes are timed by this process's clock,
    not by the file's modification time (another host's clock). A holder without a beat file - an advisor from
    before 2026-12-05, or one that cannot write it (a full disk) - cannot be judged: waited for, as the note says."""
    from filelock import Timeout

    try:
        lock.acquire(blocking=False)
        return
    except Timeout:
        pass
    beat = Path(f"{path}.{purpose}.beat")
    what = f"the seeding turn of {path} ({lock.lock_file})" if purpose == "seed" else f"the turn {lock.lock_file}"
    start = time.monotonic()
    limit = sqlite_busy_timeout_s()
    notice = min(30.0, limit / 2)
    seen, changed = _read_beat(beat), start
    said = False
    while True:
        try:
            lock.acquire(timeout=min(0.2, limit / 5))
            return
        except Timeout:
            pass
        if stopping():
            raise KeyboardInterrupt from None
        now, content = time.monotonic(), _read_beat(beat)
        if content != seen:
            seen, changed = content, now
        holder = re.match(r"pid=(\d+) host=(.*?) beat=", seen or "")
        by = f"pid {holder[1]} on {holder[2]}" if holder else "another process"
        if seen is not None and now - changed >= limit:
            raise UserError(f"gave up waiting for {what}, held by {by}: its holder has not beaten for {limit:g} s "
                            "(ADVISOR_SQLITE_TIMEOUT_S) - a worker stopped or paused while seeding the study "
                            f"(SIGSTOP, a suspended machine or container); resume or end it (`fuser {lock.lock_file}` "
                            "names it) and run the command again; finished trials are kept")
        if not said and now - start >= notice:
            said = True
            upto = (f"as long as its holder beats (given up once it has not for {limit:g} s, "
                    "ADVISOR_SQLITE_TIMEOUT_S)" if seen is not None else
                    "for as long as it is held (its holder does not say that it works - an advisor from before "
                    f"2026-12-05, or one that cannot write {beat.name}, on a full disk: if it is stopped, end it)")
            say_note(f"waiting for {what}, held by {by}, for {notice:g} s; still waiting {upto} - Ctrl-C stops "
                     "the command")


SCHEMA_LOCK_KEY = 727401
"""The PostgreSQL advisory lock that serialises table creation: workers starting together on a fresh database
would otherwise race in CREATE TABLE (a duplicate-type IntegrityError for all but one)."""


@contextmanager
def schema_lock(target: str | Engine) -> Iterator[None]:
    """Hold `SCHEMA_LOCK_KEY` on PostgreSQL (`sqlite_lock` on a SQLite file) while the body creates tables (a
    no-op for other databases): `target` a URL (an engine of its own, disposed after) or the engine the body uses."""
    own = isinstance(target, str)
    if not (target if own else target.dialect.name).startswith("postgresql"):
        with sqlite_lock(target if own else target.url):
            yield
        return
    from sqlalchemy import create_engine

    engine = create_engine(target, **engine_kwargs(target)) if own else target
    try:
        with engine.connect() as c, advisory_lock(c, SCHEMA_LOCK_KEY, "the schema lock (tables being created)"):
            yield
    finally:
        if own:
            engine.dispose()


@contextmanager
def advisory_lock(c: Any, key: int, what: str, *, beat: bool = False) -> Iterator[None]:
    """Hold PostgreSQL's advisory lock `key` (`what`, as a note names it) for the block on the SQLAlchemy
    connection `c`, waited for 0.2 s at a time (`lock_timeout`) while another session holds it: one query that
    waits seconds for a lock (another worker seeding the study) is, to the client, a server that does not
    answer, which `reconnect.watch_answers` says and gives up on. A wait past `notice_s` is said in one `note:`
    (`reconnect.say_note`, wrapped at the terminal's width), naming the lock and its holder (its PostgreSQL pid, and
    the advisor process and run it belongs to, `application_name`); Ctrl-C or SIGTERM ends it at once (a
    KeyboardInterrupt: nothing is written yet).

    A wait for a lock is not a wait for a silent server: the server answers, and a worker holding the lock may
    be busy for long. So the wait ends (one line, a `UserError`) only once the holder's run has sent the
    server nothing - none of the sessions of its `application_name` (one per process start and `run_tune`
    call: `named_run`) ran a query - for `answer_wait_s`: stopped, paused, or cut off while it held the lock.
    A live holder is waited for however long it holds the lock; where its run cannot be told (another
    `application_name`, or no right to read its sessions' activity), its lock session's own silence, else this
    wait's length, counts. `beat`: for a lock held through work that sends nothing (a study's seed lock, held
    while a worker measures the CPU expert times: minutes for a big model on a slow CPU, its connections idle
    whether it is busy or paused), the holder's lock session runs a `SELECT 1` every `beat_s()` while the block
    runs (`_beating`), so a holder at work is told from a stopped, paused or cut-off one, as any other."""
    from sqlalchemy import text
    from sqlalchemy.exc import OperationalError

    start = notice = limit = look = 0.0
    said = False
    while True:
        c.execute(text("SET LOCAL lock_timeout = '200ms'"))
        try:
            c.execute(text("SELECT pg_advisory_lock(:k)"), {"k": key})
            break
        except OperationalError as e:
            if _LOCK_NOT_AVAILABLE not in (getattr(e.orig, "pgcode", None), getattr(e.orig, "sqlstate", None)):
                raise
            c.rollback()
            if stopping():
                raise KeyboardInterrupt from None
        now = time.monotonic()
        if not start:  # (the first try waited its 0.2 s)
            start, notice, limit = now - 0.2, notice_s(), answer_wait_s()
        waited = now - start
        if (waited >= limit and now >= look) or (waited >= notice and not said):
            holder, process, silent = c.execute(text(_HOLDER), {"hi": key >> 32, "lo": key & 0xFFFFFFFF,
                                                                "advisor": f"{APPLICATION_NAME}%"}).first() \
                or (None, None, None)
            c.rollback()
            by = f"PostgreSQL pid {holder}" if holder is not None else "another session"
            if process and process.startswith(APPLICATION_NAME):
                by += f" of {process}"
            if waited >= limit and holder is not None:  # (none: released since the last try, which comes next)
                quiet = waited if silent is None else float(silent)  # (how long this worker waited: a last resort)
                if quiet >= limit:
                    raise UserError(f"gave up waiting for {what} (held by {by}): its holder has sent the server "
                                    f"nothing for {limit:g} s (ADVISOR_PG_WAIT_S) - a worker stopped or paused while "
                                    "holding it, or cut off from the server; end that one (or set "
                                    "ADVISOR_PG_WAIT_S=inf to wait for ever) and run the command again")
                look = now + min(1.0, limit - quiet)  # a live holder: looked at again in a second at most
            if not said:
                said = True
                upto = ("" if limit == float("inf") else " as long as its holder works (given up once it has "
                        f"sent the server nothing for {limit:g} s, ADVISOR_PG_WAIT_S)")
                say_note(f"waiting for {what} (held by {by}) for {notice:g} s; still waiting{upto} - Ctrl-C stops "
                         "the command")
    c.commit()  # (the lock is the session's; the transaction ends)
    try:
        with _beating(c) if beat else contextlib.nullcontext():
            yield
    finally:
        c.execute(text("SELECT pg_advisory_unlock(:k)"), {"k": key})
        c.commit()


BEAT_FLOOR_S = 0.05
"""The shortest interval between a lock holder's beats (`beat_s`)."""


def beat_s(limit: float | None = None) -> float:
    """How often a lock's holder that works without the server (`advisory_lock(beat=True)`) tells it it is alive:
    every 5 s, or a fifth of `answer_wait_s` where that is shorter, so its waiters see it answer well within it -
    but never more often than every `BEAT_FLOOR_S` (0.05 s): a tiny $ADVISOR_PG_WAIT_S (0.001) had the beating
    thread query the server in a busy loop. Below 0.25 s its waiters may therefore find a live holder silent for
    longer than ADVISOR_PG_WAIT_S and give up on it, as such a short wait asks. `limit`: another waiters' limit
    than `answer_wait_s` (a SQLite file's slow turn: `sqlite_busy_timeout_s`)."""
    return max(BEAT_FLOOR_S, min(5.0, (answer_wait_s() if limit is None else limit) / 5))


@contextmanager
def _beating(c: Any) -> Iterator[None]:
    """A thread that runs `SELECT 1` on the SQLAlchemy connection `c` (the lock's session, which nothing else
    uses while the block runs) every `beat_s()` until the block ends, each in a transaction of its own; it
    stops at the first error (the session lost: the holder's waiters then see it silent, as it is), and the
    block's end waits for it, so `c` is the caller's again. A stopped or paused process beats no more, as it
    sends nothing else; its queries wait for the server as Optuna's heartbeat thread's do (`watch_answers`)."""
    import threading

    from sqlalchemy import text

    done, every = threading.Event(), beat_s()

    def beat() -> None:
        while not done.wait(every):
            try:
                c.execute(text("SELECT 1"))
                c.rollback()
            except Exception:  # (the holder's own work says what failed; a beat only stops)
                with contextlib.suppress(Exception):
                    c.rollback()
                return

    thread = threading.Thread(target=beat, name="advisor-lock-beat", daemon=True)
    thread.start()
    try:
        yield
    finally:
        done.set()
        thread.join()


_HOLDER = """
SELECT h.pid, h.application_name,
       extract(epoch FROM clock_timestamp() - max(
           CASE WHEN s.state = 'active' AND s.wait_event IS DISTINCT FROM 'ClientWrite' THEN clock_timestamp()
                ELSE s.state_change END))
FROM (SELECT l.pid, a.application_name FROM pg_locks l LEFT JOIN pg_stat_activity a ON a.pid = l.pid
      WHERE l.locktype = 'advisory' AND l.granted AND l.classid::bigint = :hi AND l.objid::bigint = :lo
        AND l.objsubid = 1
      ORDER BY l.pid LIMIT 1) h
LEFT JOIN pg_stat_activity s ON s.pid <> pg_backend_pid() AND (s.pid = h.pid OR (
    h.application_name LIKE :advisor AND s.application_name = h.application_name))
GROUP BY h.pid, h.application_name
"""
"""The holder of an advisory lock: its PostgreSQL pid, its `application_name`, and for how many seconds its
run (every session of that `application_name`, where it is advisor's, `:advisor` = `APPLICATION_NAME` + '%':
one name per process start and `run_tune` call) has run no query - 0 while one runs, unless it is stuck
sending its result to a client that reads nothing (paused mid-read); NULL where the activity cannot be read
(another role's sessions)."""


_LOCK_NOT_AVAILABLE = "55P03"
"""PostgreSQL's error code for a lock not granted within `lock_timeout`."""
