"""How advisor connects to a database: SQLite's busy timeout and its read-only opens, and an engine's
arguments - PostgreSQL's connect timeout, the psycopg2 connections `reconnect` watches, and the
`application_name` that names one run (`named_run`), by which a lock's waiter judges its holder (`locks`).
Below `locks`, whose schema lock makes an engine of its own.
"""

from __future__ import annotations

import itertools
import os
from collections.abc import Iterator
from contextlib import contextmanager
from contextvars import ContextVar
from pathlib import Path
from typing import Any
from urllib.parse import parse_qsl

from advisor.results.reconnect import engine_watched, env_seconds
from advisor.results.urls import sqlite_file_uri


def sqlite_busy_timeout_s() -> float:
    """How long a SQLite connection waits for a lock another process holds before giving up: 60 s, or
    $ADVISOR_SQLITE_TIMEOUT_S. A worker's writes take milliseconds, so a lock held that long belongs to a
    process stopped in the middle of one (or to a very slow network filesystem: raise it there)."""
    return env_seconds("ADVISOR_SQLITE_TIMEOUT_S", "60")


def read_only_uri(path: Path) -> str:
    """An SQLite URI that opens `path` read-only (never creating it), whatever characters its name has."""
    return f"{sqlite_file_uri(str(path))}?mode=ro"


def connect_read_only(path: Path) -> Any:
    """A stdlib sqlite3 connection that reads `path` without creating or writing it (the torch-free readers)."""
    import sqlite3

    return sqlite3.connect(read_only_uri(path), uri=True, timeout=sqlite_busy_timeout_s())


APPLICATION_NAME = "moe-advisor pid="
"""How advisor's connections name themselves to PostgreSQL (`application_name`, `application_name()`); no `_`
or `%` in it, which `_HOLDER`'s LIKE would read as wildcards."""

_RUN: ContextVar[int | None] = ContextVar("advisor_pg_run", default=None)
"""The number of the `run_tune` call (`named_run`) whose engines are being made, None outside one."""
_RUNS = itertools.count(1)
_TOKEN = [os.urandom(4).hex()]
"""A random token per process start, drawn again in a forked child (drawn once: runs starting together in
threads must not each draw one, naming one run's engines differently)."""
os.register_at_fork(after_in_child=lambda: _TOKEN.__setitem__(0, os.urandom(4).hex()))


@contextmanager
def named_run(*, outside_one: bool = False) -> Iterator[None]:
    """The PostgreSQL engines made in the block (in this thread or task) name themselves after one run of
    their own (`application_name`): a worker waiting for a lock judges whether its holder still works by the
    sessions of the holder's name only, so two `run_tune` calls in one process (threads) must not share one -
    a waiter would count the other runs' queries, even its own, as the holder's and wait on a stopped one.
    `outside_one`: a number of its own only where the block is in no run - what `open_storage` and
    `store.engine_for` make is one run's engines inside `run_tune`, and outside one (a reader, a check, a
    program's own call) a run of its own each: they all shared the process's name."""
    if outside_one and _RUN.get() is not None:
        yield
        return
    token = _RUN.set(next(_RUNS))
    try:
        yield
    finally:
        _RUN.reset(token)


def application_name() -> str:
    """This run's name for PostgreSQL: `moe-advisor pid=PID id=TOKEN.RUN host=HOST` - TOKEN random per
    process start (two containers on one host network can both be pid 1 of the same host name), RUN the
    `named_run` of the engine (`open_storage` and `store.engine_for` outside a run: one of its own; left
    out for an engine made otherwise) - in `pg_stat_activity` and in the note of a worker
    waiting for a lock it holds. 63 bytes at most, the server's limit (a longer name is cut there): only the
    host name is cut, never what makes the name unique; characters outside printable ASCII (which the server
    would replace or escape) are '?'."""
    import socket

    run = _RUN.get()
    ident = _TOKEN[0] + (f".{run}" if run is not None else "")
    host = "".join(ch if " " <= ch <= "~" else "?" for ch in socket.gethostname())
    return f"{APPLICATION_NAME}{os.getpid()} id={ident} host={host}"[:63]


CONNECT_TIMEOUT_S = 5
"""How long a PostgreSQL connection may take: a server that does not answer is one line, not a hang."""


def engine_kwargs(url: str) -> dict[str, Any]:
    """SQLite waits for the write lock instead of failing at once when several workers share the file;
    PostgreSQL gives up connecting after `CONNECT_TIMEOUT_S` (libpq would wait for the OS, minutes) and, through
    psycopg2, waits for its server's answers where Ctrl-C reaches it and a long silence is said
    (`reconnect.watch_answers`, in the command or the API call that made the engine)."""
    if url.startswith("sqlite"):
        return {"connect_args": {"timeout": sqlite_busy_timeout_s()}}
    if url.startswith("postgresql"):
        connect: dict[str, Any] = {"connect_timeout": CONNECT_TIMEOUT_S}
        if "application_name" not in dict(parse_qsl(url.partition("?")[2])) and not os.environ.get("PGAPPNAME"):
            connect["application_name"] = application_name()  # (a lock's waiter tells its holder's process by it)
        if url.startswith("postgresql+psycopg2"):
            connect["connection_factory"] = engine_watched()  # (the connections advisor's wait watches)
        return {"pool_pre_ping": True, "connect_args": connect}
    return {"pool_pre_ping": True}
