"""Waiting for a PostgreSQL server that restarts under a running tune: a connection refused after the process
has once connected is tried again for a while (`ride_out_restarts`), so a restart or failover between two
database writes does not end the study, while a wrong URL or a server that never ran still fails at once."""

from __future__ import annotations

import logging
import os
import re
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from typing import TYPE_CHECKING, Any

from advisor.errors import UserError

if TYPE_CHECKING:
    from sqlalchemy.engine import Engine


def reconnect_s() -> float:
    """How long a PostgreSQL engine that has connected once retries a new connection the server refuses (a
    restart, a failover): 15 s, or $ADVISOR_PG_RECONNECT_S (0: fail at once)."""
    raw = os.environ.get("ADVISOR_PG_RECONNECT_S", "15")
    try:
        seconds = float(raw)
    except ValueError:
        seconds = -1.0
    if not 0 <= seconds < float("inf"):
        raise UserError(f"ADVISOR_PG_RECONNECT_S={raw!r} is not a number of seconds; set it to e.g. 15 or unset it")
    return seconds


_STOP_WAITING: list[Callable[[], bool]] = []
"""While not empty, `ride_out_restarts` gives up waiting for a server once any of these says so."""


@contextmanager
def stop_waiting_when(requested: Callable[[], bool]) -> Iterator[None]:
    """In the block, a wait for a restarting server (`ride_out_restarts`) ends as soon as `requested()` is true:
    a tune asked to stop by Ctrl-C or SIGTERM while it writes (its handler only notes the signal there) stops
    now, not when the wait runs out."""
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
    (`storage.storage_failure`), or before nothing when the fallback read finds the server back. (The fallback is
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
            except dialect.loaded_dbapi.OperationalError:
                if not state["connected"]:
                    raise
                now, wait = time.monotonic(), reconnect_s()
                since, last = _REFUSED.get(server, (now, now))
                if now - last > wait:  # refused long after the last refusal: another outage, its own wait
                    since = now
                _REFUSED[server] = (since, now)
                if now >= since + wait or any(stop() for stop in _STOP_WAITING):
                    raise
                time.sleep(0.5)
                continue
            state["connected"] = True
            _REFUSED.pop(server, None)
            return connection

    return engine
