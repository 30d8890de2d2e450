"""Optuna storages: SQLite by default, PostgreSQL (or any SQLAlchemy URL) for many workers; the check that a
reader's database is there, and the removal of a SQLite file a failed first run left with nothing finished.
(URLs: `urls`; connections: `connections`; the lines for failures: `storage_errors`; locks: `locks`.)

Heartbeats make a worker that dies without a word (SIGKILL, a lost machine) visible: its RUNNING trial stops
beating, the next worker to start a trial marks it FAIL and re-queues its parameters (up to `max_retry`
times), so no configuration is silently dropped.
"""

from __future__ import annotations

import functools
from pathlib import Path
from typing import Any

from advisor.errors import UserError
from advisor.results.connections import connect_read_only, engine_kwargs, named_run, read_only_uri
from advisor.results.locks import schema_lock, sqlite_lock
from advisor.results.reconnect import ride_out_restarts
from advisor.results.storage_errors import (
    NEW_PATH,
    driver_reason,
    foreign_tables,
    is_locked_error,
    locked_database,
    other_optuna_schema,
    server_hint,
    storage_failure,
    tables_text,
    unreadable_database,
    unusable_url,
)
from advisor.results.urls import mask_url, normalize_url, refuse_directory_url, sqlite_path


def discard_unfinished(url: str) -> bool:
    """Remove the SQLite file of `url` (and its journal) where it holds nothing finished, after a run that created
    it failed to write (a full disk, a file-size limit): left behind, its half-made study - settings and queued
    trials, no result - was listed by `advisor studies` and resumed by the next run, refusing other settings
    although no trial had run with them. Kept (False) where anything in it counts: a finished (or over-budget)
    trial, a cached measurement, another study, or a run of another worker (the study's `runs` above 1); and
    where another process is using it: its turn (`<file>.lock`) or its seeding turn (`<file>.seed.lock`, which a
    worker takes before it opens the file and holds until it has counted its run) is held - both are tried once, not waited
    for - or it cannot be read within a second. With the file go its lock files, which name nothing left."""
    import sqlite3

    path = sqlite_path(url)
    if path is None or not path.is_file():
        return False
    try:
        # the turn a worker takes to end a trial (none ends one while this looks) and the one it holds from
        # before opening the file to counting its run (`runs` is not yet above 1 then): tried once, held: in use
        with sqlite_lock(url, wait=False), sqlite_lock(url, "seed", wait=False):
            con = sqlite3.connect(read_only_uri(path), uri=True, timeout=1.0)
            try:
                tables = {r[0] for r in con.execute("SELECT name FROM sqlite_master WHERE type = 'table'")}

                def rows(table: str, where: str = "1") -> int:
                    return con.execute(f"SELECT count(*) FROM {table} WHERE {where}").fetchone()[0] if table in tables else 0

                if (rows("studies") > 1 or rows("trials", "state IN ('COMPLETE', 'PRUNED')") or rows("advisor_eval_cache")
                        or rows("study_user_attributes", "key = 'runs' AND CAST(value_json AS INTEGER) > 1")):
                    return False
            finally:
                con.close()
            for extra in ("-journal", "-wal", "-shm"):  # first: a journal left beside a new file would be replayed
                Path(f"{path}{extra}").unlink(missing_ok=True)
            path.unlink()
            for lock in ("lock", "seed.lock", "seed.beat"):  # still held: a process that opens one now finds the
                Path(f"{path}.{lock}").unlink(missing_ok=True)  # file gone (a beat file: a killed holder's)
    except (OSError, sqlite3.Error, UserError):
        return False
    return True


def require_database(url: str, *, write: bool = False) -> None:
    """Readers never create a database: a missing SQLite file is one clear `UserError` (`write`: the command
    writes to the file it found, `studies --delete`, and says so in its refusals)."""
    path = sqlite_path(url)
    if path is not None and path.is_dir():  # `--storage studies`: the folder, not the file in it
        found = sorted(path.glob("*.db"))
        example = f"; here: {', '.join(str(p) for p in found[:3])}" if found else ""
        raise UserError(f"--storage {path} is a directory, not a database file; give the file `advisor tune` "
                        f"wrote{example}")
    if path is not None:  # `x.db/` read the file x.db
        refuse_directory_url(url, write=write)
    if path is not None and not path.is_file():
        raise UserError(f"no advisor database at {path}; run `advisor tune` first or pass --storage URL")
    if path is not None:  # another program's file: "run advisor tune first" would send the user to a refusal
        import sqlite3

        try:
            con = connect_read_only(path)
            try:
                tables = foreign_tables(con)
            finally:
                con.close()
        except sqlite3.Error:
            return  # unreadable: the reader says so, with the driver's reason (`unreadable_database`)
        if tables:
            raise UserError(f"{path} is another program's database ({tables_text(tables)}), not an advisor study "
                            "database; give --storage the file `advisor tune` wrote")


HEARTBEAT_INTERVAL_S = 10
GRACE_PERIOD_S = 30
MAX_RETRY = 3


@named_run(outside_one=True)  # (outside a run: its engine and the schema lock's own, one name of their own)
def open_storage(
    url: str | None,
    *,
    heartbeat_interval: int | None = HEARTBEAT_INTERVAL_S,
    grace_period: int | None = GRACE_PERIOD_S,
    max_retry: int | None = MAX_RETRY,
    damaged_hint: str = NEW_PATH,
) -> Any:
    """An Optuna `RDBStorage` with heartbeat and retry of stale trials; bad URLs are one-line errors (a damaged
    SQLite file's ends with `damaged_hint`: the tune's, as its file check says it, by default)."""
    import warnings

    import optuna
    from sqlalchemy.exc import ArgumentError, SQLAlchemyError

    from advisor.results.sqlite_storage import HeartbeatStorage, RetryStaleTrial, SQLiteFileStorage

    url = normalize_url(url)
    warnings.filterwarnings("ignore", category=optuna.exceptions.ExperimentalWarning)  # heartbeat API
    kwargs: dict[str, Any] = {"engine_kwargs": engine_kwargs(url)}
    if heartbeat_interval:
        kwargs |= {
            "heartbeat_interval": int(heartbeat_interval),
            "grace_period": int(grace_period or 3 * heartbeat_interval),
            "heartbeat_stale_trial_callback": RetryStaleTrial(max_retry=max_retry),
        }
    storage_class: type[optuna.storages.RDBStorage] = HeartbeatStorage  # a failed beat is retried, not fatal
    if sqlite_path(url) is not None:  # its trial state changes (a queued trial's claim) take the file's lock
        storage_class = SQLiteFileStorage
        kwargs["lock"] = functools.partial(sqlite_lock, url)
    try:
        with schema_lock(url):  # Optuna creates its tables on first use: serialised, as ours are
            storage = storage_class(url, **kwargs)
        ride_out_restarts(storage.engine, connected=True)  # Optuna connected to set up or check its tables
        return storage
    except optuna.exceptions.StorageInternalError as e:  # Optuna's wrapper of the driver's error, e.g. a damaged
        cause = e.__cause__  # page met reading its version row: "An exception is raised during the commit ..."
        if not isinstance(cause, SQLAlchemyError):
            raise
        raise _open_failure(url, cause, damaged_hint) from e
    except (ArgumentError, ModuleNotFoundError, ImportError, SQLAlchemyError, RuntimeError, ValueError) as e:
        raise _open_failure(url, e, damaged_hint) from e


def _open_failure(url: str, e: BaseException, damaged_hint: str) -> UserError:
    """The one line for a --storage that Optuna could not open (`url` normalised): a bad URL, a locked file, a
    server not reached, a full disk, another Optuna's schema, a damaged file (its line ends with `damaged_hint`)."""
    from sqlalchemy.exc import ArgumentError, DatabaseError, OperationalError

    if isinstance(e, (ArgumentError, ModuleNotFoundError, ImportError)):
        return unusable_url(url, e)
    if isinstance(e, OperationalError):
        if is_locked_error(e):
            return locked_database(url)
        if sqlite_path(url) is not None:  # creating the tables in a new file: a full disk, a file-size limit
            return storage_failure(e, url) or unreadable_database(url, e, damaged_hint)
        reason = mask_url(driver_reason(e))
        return UserError(f"cannot connect to storage {mask_url(url)!r}: {reason}; {server_hint(reason, url)}")
    if is_locked_error(e):
        return locked_database(url)
    if (other := other_optuna_schema(url, e)) is not None:
        return other
    if isinstance(e, DatabaseError) and sqlite_path(url) is not None:  # a damaged file: as the readers say it
        return unreadable_database(url, e, damaged_hint)
    return UserError(f"{mask_url(url)} is not a usable Optuna study database ({type(e).__name__}: "
                     f"{mask_url(driver_reason(e))}); point --storage at another file or URL")
