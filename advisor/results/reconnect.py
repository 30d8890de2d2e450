"""Waiting for a PostgreSQL server: one that restarts under a running tune, and one that stops answering.

A connection refused after the process has once connected is tried again for a while (`ride_out_restarts`),
so a restart or failover between two database writes does not end the study, while a wrong URL or a server
that never ran still fails at once. A server that accepts the connection but does not answer - its processes
paused (SIGSTOP, a suspended VM or container; its kernel still acknowledges every packet, so TCP keepalives
never fire), or a network partition without a reset - is waited for in Python, not inside libpq
(`watch_answers`): Ctrl-C and SIGTERM stop the command at once, a wait past `notice_s` says so in one line,
and one past `answer_wait_s` ends the command with one line."""

from __future__ import annotations

import logging
import os
import re
import selectors
import sys
import threading
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from typing import TYPE_CHECKING, Any, TypeVar

from advisor.errors import UserError

if TYPE_CHECKING:
    from sqlalchemy.engine import Engine


def env_seconds(name: str, default: str, *, zero: bool = False, forever: bool = False) -> float:
    """$`name` in seconds (`default` unset); one `UserError` for anything else than a number of seconds (0 only
    with `zero`; `inf` only with `forever`). Every advisor setting in seconds is read with it."""
    raw = os.environ.get(name, default)
    try:
        seconds = float(raw)
    except ValueError:
        seconds = -1.0
    if not (0 <= seconds if zero else 0 < seconds) or (seconds == float("inf") and not forever):
        raise UserError(f"{name}={raw!r} is not a number of seconds; set it to e.g. {default} or unset it")
    return seconds


def reconnect_s() -> float:
    """How long a PostgreSQL engine that has connected once retries a new connection the server refuses (a
    restart, a failover): 15 s, or $ADVISOR_PG_RECONNECT_S (0: fail at once)."""
    return env_seconds("ADVISOR_PG_RECONNECT_S", "15", zero=True)


def notice_s() -> float:
    """After how long without an answer from a PostgreSQL server a command says it is waiting: 30 s, or
    $ADVISOR_PG_NOTICE_S."""
    return env_seconds("ADVISOR_PG_NOTICE_S", "30")


def answer_wait_s() -> float:
    """How long a command waits for a PostgreSQL server that does not answer before it stops with one line:
    300 s, or $ADVISOR_PG_WAIT_S (`inf`: for ever). The advisor's own queries take milliseconds (a lock another
    session holds is asked for 0.2 s at a time, each a query the server answers: `locks.advisory_lock`), so a
    silence this long is a paused server or a cut link; every finished trial is committed by then, and the same
    command resumes the study. A wait for such a lock gives up once its holder's process has sent the server
    nothing for as long (stopped or paused while it held it)."""
    return env_seconds("ADVISOR_PG_WAIT_S", "300", forever=True)


_STOP_WAITING: list[Callable[[], bool]] = []
"""While not empty, a wait for a server (a restart, an answer) ends once any of these says so."""


def stopping() -> bool:
    """Whether a command asked to stop (`stop_waiting_when`) is waiting for its database."""
    return any(stop() for stop in _STOP_WAITING)


@contextmanager
def stop_waiting_when(requested: Callable[[], bool]) -> Iterator[None]:
    """In the block, a wait for a restarting server (`ride_out_restarts`) ends as soon as `requested()` is true,
    and one for an answer (`watch_answers`) once it has lasted `STOP_AFTER_S`: a tune asked to stop by Ctrl-C or
    SIGTERM while it writes (its handler only notes the signal there) stops now, not when the wait runs out."""
    _STOP_WAITING.append(requested)
    try:
        yield
    finally:
        _STOP_WAITING.remove(requested)


_REFUSED: dict[str, tuple[float, float]] = {}
"""Per server (its URL, no password): when it first and last refused a connection of this process (since the
last connection it took)."""


class _QuietLostServer(logging.Filter):
    """Drop Optuna's warning for a read of a study's trials that a PostgreSQL server going down cut: "Caught an
    error from sqlalchemy: (psycopg2.OperationalError) server closed the connection unexpectedly ... [SQL: ...]
    ... Falling back to a slower alternative." - nine lines with the SQL before the run's own one line
    (`storage_errors.storage_failure`), or before nothing when the fallback read finds the server back. (The fallback is
    for SQLite's limit on `IN` ids; psycopg2 sends the ids inline, so on PostgreSQL only the link fails there.)"""

    _LOST = re.compile(r"Caught an error from sqlalchemy: \(psycopg2?\.OperationalError\)")

    def filter(self, record: logging.LogRecord) -> bool:
        return not self._LOST.match(record.getMessage())


_QUIET = _QuietLostServer()


def ride_out_restarts(engine: Engine, *, connected: bool = False) -> Engine:
    """`engine`, which on PostgreSQL waits for a server that restarts: once it has connected (`connected`: it
    did before this call, as Optuna's storage does to set up its tables, keeping that connection pooled), a new
    connection (after a restart, `pool_pre_ping` finds the pooled ones dead and opens new ones) that the server
    refuses or answers with "starting up" / "shutting down" is tried again every half second, up to
    `reconnect_s` after the server's first refusal: one wait per outage, shared by the process's engines (a
    tune has two) and their connections, so a server gone for good stops a tune after it, not after a wait for
    each. A tune whose server restarted between two database writes stopped with an error; it goes on. The
    engine's first connection fails at once (a wrong URL, a server that does not run: the checks' one line,
    not a wait)."""
    if engine.dialect.name != "postgresql":
        return engine
    logging.getLogger("optuna.storages._rdb.storage").addFilter(_QUIET)  # (once: a filter is added only once)
    from sqlalchemy import event

    server = engine.url.render_as_string(hide_password=True)
    state = {"connected": connected}

    @event.listens_for(engine, "do_connect")
    def _connect(dialect: Any, conn_rec: Any, cargs: Any, cparams: Any) -> Any:
        while True:
            try:
                connection = dialect.connect(*cargs, **cparams)
            except dialect.loaded_dbapi.OperationalError as e:
                if not state["connected"] or getattr(e, "left", False):  # (a server `watch_answers` gave up on)
                    raise
                now, wait = time.monotonic(), reconnect_s()
                since, last = _REFUSED.get(server, (now, now))
                if now - last > wait:  # refused long after the last refusal: another outage, its own wait
                    since = now
                _REFUSED[server] = (since, now)
                if now >= since + wait or stopping():
                    raise
                time.sleep(0.5)
                continue
            state["connected"] = True
            _REFUSED.pop(server, None)
            return connection

    return engine


def connection_lost(error: BaseException | None) -> bool:
    """Whether `error`, or an error it was raised from, is a PostgreSQL connection lost in the middle of a query:
    the server restarted or stopped, or failed over, under it (SQLAlchemy's `connection_invalidated`) - not a
    server this run gave up waiting for (`_Silence.leave`), nor a connection refused."""
    seen = set()
    while error is not None and id(error) not in seen:
        seen.add(id(error))
        if getattr(error, "connection_invalidated", False):
            return not getattr(getattr(error, "orig", None), "left", False)
        error = error.__cause__ or error.__context__
    return False


T = TypeVar("T")


def redo_when_cut(write: Callable[[], T]) -> T:
    """`write()`, done again where a PostgreSQL server restart (or failover) cut its connection in the middle of
    it, until it goes through: the new connection waits for the server as any does after a restart
    (`ride_out_restarts`), so the redo is given up - the cut's error raised, the run's one line - once the server
    has refused connections for `reconnect_s` (or at once with ADVISOR_PG_RECONNECT_S=0), on Ctrl-C or SIGTERM,
    or when the server stays silent (`watch_answers`). `write` must be one transaction that is safe to redo: the
    cut rolled it back, unless its commit had reached the server and only the answer was lost - so doing it
    twice must leave what doing it once does (an upsert, a delete and insert, a state change that checks the
    state it finds)."""
    deadline = None
    while True:
        try:
            return write()
        except Exception as e:
            if not connection_lost(e) or stopping():
                raise
            now = time.monotonic()
            deadline = now + reconnect_s() if deadline is None else deadline
            if now >= deadline:
                raise
        time.sleep(0.1)


STOP_AFTER_S = 1.0
"""How long a wait for an answer goes on once the command was asked to stop: a server that works answers in
milliseconds, so the writes a stopping tune still makes (its interrupted trial failed and queued again, its
front) finish, and one that does not answer is left."""

_SILENT: dict[str, float] = {}
"""The servers (host:port) whose silence this process has said (`notice_s`), and since when, until they answer."""
_LEFT: dict[str, tuple[str, float]] = {}
"""The servers this process stopped waiting for: why, and when a wait for it last ended unanswered. The command
ends, so its last writes (a trial failed, its connection given back) do not each wait again: a wait within
`STOP_AFTER_S` of the last one ends at once, a later one (an engine kept after the wait, as in a notebook) tries
for `STOP_AFTER_S` - until the server answers, or a new run begins (the outermost `watch_answers` block:
another command, another `run_tune` call waits afresh)."""
_LOCK = threading.Lock()


_NOT_INSTALLED = object()
_watching = 0
"""How many `watch_answers` blocks are open (the CLI's command, a `run_tune` inside it or on its own)."""
_replaced: Any = _NOT_INSTALLED
"""The wait callback `_wait_for_answer` replaced while it is installed (None: psycopg2's own wait)."""
_RUNNING = threading.local()
"""`depth`: how many `watch_answers` blocks this thread is in - the thread that runs the command or the API
call (a `run_tune` in a program's worker thread too), not a heartbeat thread Optuna started for it."""


@contextmanager
def watch_answers() -> Iterator[None]:
    """In the block, every psycopg2 connection of the process waits for its server in `_wait_for_answer` (a
    wait callback: libpq only sends and reads, never blocks): a wait inside libpq took neither Ctrl-C nor
    SIGTERM, had no time limit once connected, and said nothing - a tune whose server was paused sat silent
    until it came back. The `advisor` command is advisor's own process, so its whole run is one block
    (`cli.run`); the Python API's entry points that open a database (`run_tune`, the readers) are each one, so
    a program that imports advisor keeps its own psycopg2 waits once they return: the callback found on
    entering the outermost block (None, psycopg2's own; another library's, as psycogreen's) is put back on
    leaving it - with a callback set, psycopg2 refuses `cursor.copy_expert` and `connection.lobject`.
    Installed at once where psycopg2 is imported, else by the first psycopg2 engine made in the block
    (`engine_watched`): a command on SQLite never imports it. Usable as a decorator."""
    global _watching
    counted = False
    outer = getattr(_RUNNING, "depth", 0)
    try:  # (counted inside it: a Ctrl-C once the block counted itself - installing the callback, say - left
        # the count up and the callback installed for the rest of the process, as a notebook's kernel)
        with _LOCK:
            _watching += 1
            counted = True  # (no call between the two: a signal's handler runs at a call or a loop's jump)
            if _watching == 1:
                _LEFT.clear()  # (a run waits for a server afresh, whatever a run before it gave up on)
            if "psycopg2.extensions" in sys.modules:
                _install()
        _RUNNING.depth = outer + 1
        yield
    finally:
        _RUNNING.depth = outer
        if counted:
            _leave()


def _leave() -> None:
    """A `watch_answers` block ends: the outermost one puts back the callback it found."""
    global _watching, _replaced
    with _LOCK:
        _watching -= 1
        if _watching == 0 and _replaced is not _NOT_INSTALLED:
            from psycopg2 import extensions

            if extensions.get_wait_callback() is _wait_for_answer:  # (else one set in the block: kept)
                extensions.set_wait_callback(_replaced)
            _replaced = _NOT_INSTALLED


def _install() -> None:
    """Put `_wait_for_answer` in place (under `_LOCK`, in a `watch_answers` block), keeping the callback found."""
    global _replaced
    from psycopg2 import extensions

    if _replaced is _NOT_INSTALLED:
        _replaced = extensions.get_wait_callback()
        extensions.set_wait_callback(_wait_for_answer)


def engine_watched() -> type:
    """A psycopg2 engine is being made: checks the three settings now, so a bad one is the command's first line,
    not an error mid-run, and in a `watch_answers` block installs its wait callback. Returns the connection
    class its connections are made of (psycopg2's `connection_factory`): the ones `_wait_for_answer` watches."""
    global _SETTINGS, _Watched
    reconnect_s()
    _SETTINGS = notice_s(), answer_wait_s()
    with _LOCK:
        if _Watched is None:
            from psycopg2.extensions import connection

            class AdvisorConnection(connection):
                """A psycopg2 connection of an advisor engine: its waits are advisor's (`_wait_for_answer`)."""

            _Watched = AdvisorConnection
        if _watching:
            _install()
    return _Watched


_Watched: Any = None
"""The connection class of advisor's psycopg2 engines (`engine_watched`). The wait callback is the process's,
so while a command or an API call runs it is asked to wait for every psycopg2 connection, a program's own in
its other threads too: those get the wait they had (the callback found, else psycopg2's `wait_select`), not
advisor's notes and give-up - a long query of the program's own is not a silent server."""


_POLL_OK, _POLL_READ, _POLL_WRITE = 0, 1, 2
"""psycopg2's `connection.poll()` states (`psycopg2.extensions.POLL_*`), here without importing psycopg2."""
_SELECTOR = getattr(selectors, "PollSelector", selectors.DefaultSelector)
"""One poll(2) per wait, no descriptor to make and close (epoll), and none past 1023 refused (select(2))."""
_SETTINGS: tuple[float, float] | None = None
"""(`notice_s`, `answer_wait_s`) as `engine_watched` last checked them: read once per engine, not per wait."""


def _wait_for_answer(conn: Any) -> None:
    """Until `conn`'s server has answered (its connection made, its query's result read). A server silent for
    `notice_s` is said in one `note:` line on stderr (one per outage, whichever connections wait), and its
    answer after that in another. A psycopg2 `OperationalError` (the connection is closed) ends the wait once
    the server has been silent for `answer_wait_s` - while connecting, for the connection's `connect_timeout`,
    which libpq does not keep when a callback waits - and `STOP_AFTER_S` into it once the command was asked to
    stop; each later wait for that server in the run then ends with the same reason (and is not tried again as
    a restart, `ride_out_restarts`) at once, or after a try of `STOP_AFTER_S` where the last such wait ended
    longer ago than that, until it answers (`_LEFT`). Ctrl-C and SIGTERM
    reach their handlers within a quarter of a second.

    Every query of the process comes here, so a server that answers costs little: nothing is looked up (the
    server, the limits) until a quarter of a second has passed without an answer, or the run has given up on
    a server (`_LEFT`). A connection that is not an advisor engine's (`_Watched`: a program's own, in another
    thread) waits in the callback advisor found, else in psycopg2's `wait_select` (its blocking wait, Ctrl-C
    cancelling the query)."""
    if not isinstance(conn, _Watched or ()):
        own = _replaced
        if own is None or own is _NOT_INSTALLED:
            from psycopg2.extras import wait_select as own
        return own(conn)
    state = conn.poll()
    if state == _POLL_OK:
        if _SILENT or _LEFT:
            _answered(_Silence.server_of(conn))
        return
    start = time.monotonic()
    silence = None
    if _LEFT:  # (a server given up on: at once, or after a brief try)
        silence = _Silence(conn, start)
        silence.check()
    with _SELECTOR() as ready:
        fd, event = conn.fileno(), _event(state)
        ready.register(fd, event)
        while True:
            if not ready.select(0.25):
                if silence is None:
                    silence = _Silence(conn, start)
                silence.check()
            state = conn.poll()
            if state == _POLL_OK:
                if _SILENT or _LEFT:
                    _answered(silence.server if silence is not None else _Silence.server_of(conn))
                return
            if (conn.fileno(), _event(state)) != (fd, event):  # (libpq may change socket while connecting)
                ready.unregister(fd)
                fd, event = conn.fileno(), _event(state)
                ready.register(fd, event)


def _event(state: int) -> int:
    if state == _POLL_READ:
        return selectors.EVENT_READ
    if state == _POLL_WRITE:
        return selectors.EVENT_WRITE
    from psycopg2 import OperationalError

    raise OperationalError(f"unexpected state from psycopg2's poll: {state}")


def _answered(server: str) -> None:
    """`server` answered: no longer given up on; its answer said if its silence was."""
    _LEFT.pop(server, None)
    with _LOCK:
        since = _SILENT.pop(server, None)
    if since is not None:
        say_note(f"PostgreSQL at {server} answered again after {time.monotonic() - since:.0f} s; going on")


class _Silence:
    """A wait for an answer that has lasted: its server, its limit, and what it has said."""

    def __init__(self, conn: Any, start: float) -> None:
        from psycopg2 import extensions as pg

        params = conn.info.dsn_parameters
        self.host, self.port = params.get("host") or "localhost", params.get("port") or "5432"
        self.server = f"{self.host}:{self.port}"
        self.start = start
        self.notice, self.limit = _SETTINGS or (notice_s(), answer_wait_s())
        self.said_limit = f"{self.limit:g} s (ADVISOR_PG_WAIT_S)"
        self.connecting = conn.status not in (pg.STATUS_READY, pg.STATUS_BEGIN, pg.STATUS_PREPARED)
        if self.connecting and float(params.get("connect_timeout") or 0) > 0:
            self.limit = max(float(params["connect_timeout"]), 2.0)  # (libpq's minimum)
            self.said_limit = f"{self.limit:g} s (the connect timeout)"
        self.left = _LEFT.get(self.server)
        if self.left is not None:  # given up on in this run: tried briefly, in case it is back
            recent = time.monotonic() - self.left[1] < STOP_AFTER_S
            self.limit = 0.0 if recent else min(self.limit, STOP_AFTER_S)

    @staticmethod
    def server_of(conn: Any) -> str:
        params = conn.info.dsn_parameters
        return f"{params.get('host') or 'localhost'}:{params.get('port') or '5432'}"

    def leave(self, reason: str) -> Exception:
        from psycopg2 import OperationalError

        # the run ends (not so when a heartbeat's wait gives up: the next beat, or the tune's, tries again); a
        # run is the thread in the `watch_answers` block, the main thread or not (a `run_tune` in a worker
        # thread waited the whole limit again on each of its last writes)
        if getattr(_RUNNING, "depth", 0) or stopping():
            _LEFT[self.server] = (_LEFT.get(self.server, (reason,))[0], time.monotonic())
        error = OperationalError(reason)
        error.left = True  # type: ignore[attr-defined]
        return error

    def check(self) -> None:
        """Raise where the wait ends; say the silence once it has lasted `notice`."""
        from psycopg2 import OperationalError

        waited = time.monotonic() - self.start
        if waited >= self.limit:
            if self.left is not None:
                raise self.leave(self.left[0])
            if self.connecting:
                raise OperationalError(f'connection to server at "{self.host}", port {self.port} failed: timeout '
                                       "expired")
            raise self.leave(f"PostgreSQL at {self.server} has not answered for {self.said_limit}")
        if waited >= STOP_AFTER_S and stopping():
            raise self.leave(f"stopped waiting for PostgreSQL at {self.server}: the run was asked to stop")
        if waited >= self.notice:
            with _LOCK:
                said = self.server in _SILENT
                _SILENT.setdefault(self.server, self.start)
            if not said:
                upto = "" if self.limit == float("inf") else f" up to {self.said_limit}"
                say_note(f"PostgreSQL at {self.server} has not answered for {self.notice:g} s; still waiting{upto} - "
                      "Ctrl-C stops the command, nothing finished is lost")


def say_note(line: str) -> None:
    """One `note:` on stderr, wrapped at the terminal's width as every other note (`print_wrapped`): what a wait
    for the database says (the server's silence, a lock's holder). Written in one piece (the console's buffer),
    so that notes said by two waiting threads do not interleave."""
    from rich.console import Console

    from advisor.terminal import print_wrapped

    with (console := Console(stderr=True)):  # its buffer: written whole on leaving
        print_wrapped(console, f"note: {line}", 2)
