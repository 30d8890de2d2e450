"""Storage checks that run before anything slow (a model load takes 10-30 s); password masking (`mask_url`,
kept in `storage`, which needs it too, and imported from here as before).

`check_storage` opens the database the way the command will use it - read, or read and write - and turns
every problem (a file that is not a database, a read-only file or directory, a bad URL, a server that does
not answer) into one `UserError` line. URLs in messages always go through `mask_url`.
"""

from __future__ import annotations

import os
import sqlite3
from pathlib import Path
from typing import TYPE_CHECKING

from advisor.errors import UserError
from advisor.files import check_parent, no_new_file, special_kind
from advisor.results.connections import connect_read_only, engine_kwargs
from advisor.results.storage_errors import (
    NEW_PATH,
    driver_reason,
    foreign_tables,
    server_hint,
    tables_text,
    unreadable_database,
    unusable_url,
)
from advisor.results.urls import mask_url, sqlite_options

if TYPE_CHECKING:
    from sqlalchemy.engine import Connection


def check_storage(url: str, *, write: bool) -> str:
    """The normalized URL of a usable database, or one `UserError`. Readers need an existing database; a
    writer (`advisor tune`) needs a writable one, or a writable directory to create it in: an existing one, as
    for every file the tool writes, but for the default database's `studies/`."""
    from advisor.results.storage import require_database
    from advisor.results.urls import DEFAULT_STORAGE, normalize_url, refuse_directory_url, sqlite_path

    given, url = url, normalize_url(url, create_dirs=False)
    if url.startswith("sqlite"):
        path = sqlite_path(url)
        if path is None:  # in-memory
            if write:  # named as given: `sqlite:///:memory:?mode=ro` is `sqlite:///file:%253Amemory%253A?...` now
                raise UserError(f"--storage {given.strip()} is an in-memory database: the tune's trials would vanish with it "
                                "(and its heartbeat thread, on a connection of its own, sees none); give a file path "
                                "such as studies/advisor.db")
            return url
        if not write:
            require_database(url)
        else:  # `x.db/` tuned into the file x.db and named `sqlite:///x.db/` in its next steps
            refuse_directory_url(url, write=True)
        if write and url != normalize_url(DEFAULT_STORAGE, create_dirs=False):
            check_parent(path, "--storage")  # as every file option (`export -o`, `--json`): a mistyped directory
            # is not made; the default's is
        _check_sqlite(path, url, write=write)
        return url
    _check_server(url, write=write)
    return url


def _check_sqlite(path: Path, url: str, *, write: bool) -> None:
    options = sqlite_options(url)  # the ones --storage takes are read-only: refused, existing file or not
    if write and options:
        said = ", ".join(f"{k}={v}" for k, v in options.items())
        raise UserError(f"--storage opens {path} read-only ({said}), and the tune writes trials; drop that option "
                        "from the URL")
    if path.exists():
        if path.is_dir():
            raise UserError(f"--storage {path} is a directory, not a database file; give a file path such as "
                            f"{path / 'advisor.db'}")
        if not path.is_file():  # /dev/null was "a directory", with /dev/null/advisor.db to try instead
            raise UserError(f"--storage {path} is not a regular file ({special_kind(path) or 'unreadable'}), not a "
                            "database file; give a file path such as studies/advisor.db")
        try:
            con = connect_read_only(path)
            try:
                con.execute("SELECT count(*) FROM sqlite_master").fetchone()
                optuna_tables = con.execute("SELECT 1 FROM sqlite_master WHERE type='table' AND "
                                            "name='alembic_version'").fetchone() is not None
                if write:
                    _check_not_foreign(con, path)
            finally:
                con.close()
        except sqlite3.Error as e:
            raise unreadable_database(path, e, NEW_PATH if write else "") from e
        if write:
            refuse_read_only(path, "the tune writes trials", ", or give --storage another path")
            _check_may_write(path)
        if write and optuna_tables:
            _check_optuna_schema(url)
        return
    if write:
        parent = _existing_parent(path.parent)  # a file tried there too: in /proc, which `os.access` says root
        # may write, the tune waited without end for its lock file
        if not parent.is_dir() or not os.access(parent, os.W_OK | os.X_OK) or no_new_file(parent) is not None:
            raise UserError(f"cannot create {path}: {parent} is not a writable directory; give --storage a "
                            "writable path")


def refuse_read_only(path: Path, writes: str, instead: str) -> None:
    """One line naming a SQLite file that cannot be written, or whose directory cannot (SQLite writes its journal
    there), before anything writes to it: `writes` says what would, `instead` ends the line. `os.access` answers
    no to root too on a read-only file system."""
    if not os.access(path, os.W_OK) or not os.access(path.parent, os.W_OK):
        raise UserError(f"{path} is read-only ({writes}, and SQLite its journal next to the file); make the file "
                        f"and its directory writable{instead}")


def _check_may_write(path: Path) -> None:
    """Take the file's write lock for an instant (writing nothing): a file another process holds locked in the
    middle of a write (a worker stopped by SIGSTOP, a suspended machine) is the one `locked_database` line after
    the busy timeout now, not once the model has loaded (10-30 s for a real model)."""
    from advisor.results.connections import sqlite_busy_timeout_s

    con = sqlite3.connect(path, timeout=sqlite_busy_timeout_s(), isolation_level=None)
    try:
        con.execute("BEGIN IMMEDIATE")
        con.execute("ROLLBACK")
    except sqlite3.Error as e:
        raise unreadable_database(path, e, NEW_PATH) from e
    finally:
        con.close()


def _check_not_foreign(con: sqlite3.Connection, path: Path) -> None:
    """A tune adds Optuna's and the advisor's tables to the file: refuse, before the model loads, a file of
    other tables only (another program's database, a mistyped --storage: the tune wrote its tables into it) and
    an advisor table without the columns this version writes (the tune failed after the model had loaded)."""
    from advisor.results.store import Base

    if foreign := foreign_tables(con):
        raise UserError(f"{path} is another program's database ({tables_text(foreign)}), not an advisor study "
                        "database, which the tune would add its tables to; give --storage a new path or the file "
                        "`advisor tune` wrote")
    tables = [name for (name,) in con.execute("SELECT name FROM sqlite_master WHERE type='table'")]
    ours = Base.metadata.tables
    for name in (t for t in tables if t in ours):
        have = {row[1] for row in con.execute(f'PRAGMA table_info("{name}")')}
        missing = [c.name for c in ours[name].columns if c.name not in have]
        if missing:
            raise UserError(f"{path} has a table {name} without the column(s) {', '.join(missing[:3])} that "
                            "`advisor tune` writes: not a database it wrote; give --storage a new path")


def _existing_parent(p: Path) -> Path:
    p = p.resolve()
    while not p.exists() and p != p.parent:
        p = p.parent
    return p


def _check_server(url: str, *, write: bool) -> None:
    """Connect once, with a short timeout: a wrong host, port, password or database is one line now; a writer
    on PostgreSQL must also be able to create the tables, or Optuna fails after the model has loaded."""
    from sqlalchemy import create_engine, inspect, text
    from sqlalchemy.exc import ArgumentError, SQLAlchemyError

    try:
        engine = create_engine(url, **engine_kwargs(url))
    except (ArgumentError, ImportError, ValueError) as e:
        raise unusable_url(url, e) from e
    try:
        with engine.connect() as c:
            c.execute(text("SELECT 1"))
            if write and engine.dialect.name == "postgresql":
                _check_may_create(c)
            optuna_tables = write and inspect(c).has_table("alembic_version")
    except SQLAlchemyError as e:
        reason = mask_url(driver_reason(e))
        raise UserError(f"cannot connect to storage {mask_url(url)!r}: {reason}; {server_hint(reason, url)}") from e
    finally:
        engine.dispose()
    if optuna_tables:
        _check_optuna_schema(url)


def _check_optuna_schema(url: str) -> None:
    """Open a database Optuna has already set up as the tune will: one whose schema another Optuna version wrote
    fails now (Optuna's own reason: its upgrade command), not after the model has loaded. Such a database has
    its tables and version rows, so opening it writes nothing."""
    from advisor.results.storage import open_storage

    storage = open_storage(url, heartbeat_interval=None)
    storage.engine.dispose()


def _check_may_create(c: Connection) -> None:
    """On PostgreSQL, the study tables exist or this user may create them (since PostgreSQL 15 only the
    database's owner may create in its `public` schema by default)."""
    from sqlalchemy import text

    user, db, schema, may_create, has_tables = c.execute(text(
        "SELECT current_user, current_database(), current_schema(), "
        "coalesce(has_schema_privilege(current_schema(), 'CREATE'), false), "
        "to_regclass('studies') IS NOT NULL AND to_regclass('advisor_front') IS NOT NULL")).one()
    if may_create or has_tables:
        return
    if not schema:
        raise UserError(f"PostgreSQL database {db} has no schema on user {user}'s search_path to create the "
                        "study tables in; fix the search_path (options=-csearch_path=...) or CREATE SCHEMA")
    raise UserError(f"PostgreSQL user {user} may not create tables in schema {schema} of database {db}, and the "
                    f"study tables are not there yet; make {user} the database's owner (createdb -O {user} "
                    f"{db}) or GRANT CREATE ON SCHEMA {schema} TO {user}")
