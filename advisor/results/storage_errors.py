"""The one line for a database that failed, cannot be read or is not advisor's: a lock held too long, a full
disk, a server out of reach or stopped, rows that cannot be decoded, another Optuna version's tables, another
program's file. One module, so that every command and reader words a storage failure alike: from the
driver's own reason, the file or URL named, passwords hidden.
"""

from __future__ import annotations

import itertools
import os
import re
import shlex
from pathlib import Path
from typing import Any

from advisor.errors import UserError
from advisor.results.connections import sqlite_busy_timeout_s
from advisor.results.urls import DEFAULT_STORAGE, mask_url, sqlite_path


def locked_database(where: Any = None) -> UserError:
    """The one error for a SQLite file another process kept locked past `sqlite_busy_timeout_s`: not a
    damaged database, and what to do about it."""
    path = sqlite_path(where) if isinstance(where, str) else where
    name = f"the SQLite database {path}" if path else "the SQLite database (--storage)"
    return UserError(f"{name} stayed locked by another process for {sqlite_busy_timeout_s():g} s: a worker stopped "
                     "in the middle of a write (a suspended machine, SIGSTOP, a paused container) holds it; resume "
                     f"or end that process (`fuser {path or 'FILE'}` names it), then run again; finished trials are kept")


def is_locked_error(error: BaseException | None) -> bool:
    """Whether `error`, or an error it was raised from, is SQLite's "database is locked"."""
    seen = set()
    while error is not None and id(error) not in seen:
        seen.add(id(error))
        if "database is locked" in str(getattr(error, "orig", None) or error):
            return True
        error = error.__cause__ or error.__context__
    return False


def unique_violation(error: BaseException) -> bool:
    """Whether an `IntegrityError` is a duplicate key - a row another writer inserted first, which an upsert takes
    for its cue to update instead - and not a NOT NULL, foreign-key or check violation: a bug in what was written,
    which passed for a duplicate and lost the write in silence. PostgreSQL's SQLSTATE 23505; SQLite's extended
    code for a primary key or unique constraint (its message on a build that lacks the name)."""
    orig = getattr(error, "orig", None) or error
    code = getattr(orig, "pgcode", None) or getattr(orig, "sqlstate", None)
    if code:
        return code == "23505"
    name = getattr(orig, "sqlite_errorname", "")
    if name:
        return name in ("SQLITE_CONSTRAINT_PRIMARYKEY", "SQLITE_CONSTRAINT_UNIQUE")
    return str(orig).startswith("UNIQUE constraint failed")


def database_error(error: BaseException | None) -> BaseException | None:
    """The database's own error in `error`'s chain (`error` itself, or one it was raised from or while handling),
    None if there is none: a driver error SQLAlchemy wrapped (what `driver_reason` reads), else the driver's or
    Optuna's storage error. Optuna may raise another error while handling one: a tell whose write failed reads
    the trial back, and when that fails too its `_run_trial` ends in an UnboundLocalError."""
    seen, found = set(), None
    while error is not None and id(error) not in seen:
        seen.add(id(error))
        if getattr(error, "orig", None) is not None and type(error).__module__.startswith("sqlalchemy"):
            return error
        if found is None and (type(error).__module__.startswith(("sqlalchemy", "sqlite3", "psycopg"))
                              or type(error).__name__ == "StorageInternalError"):
            found = error
        error = error.__cause__ or error.__context__
    return found


_SQLITE_WRITE_FAILED = ("disk is full", "disk I/O error", "readonly database", "unable to open database file")
"""SQLite's reasons for a write that did not reach the file: no space, a file-size limit (`ulimit -f`: EFBIG
reads as a disk I/O error), a file or directory made read-only, a file gone."""


def storage_failure(error: BaseException, where: str | None = None, *, removed: bool = False) -> UserError | None:
    """The one line for a database that failed in the middle of a command - a server stopped, restarted or out
    of reach, a disk full, a file-size limit, a lock held too long - found anywhere in `error`'s chain; None if
    the chain holds no database error. `where` is the --storage URL (named in the line, password hidden). Every
    finished trial was committed when it finished: a rerun resumes. `removed`: the SQLite file was new and held
    nothing finished, and `discard_unfinished` removed it (the line says so)."""
    found = database_error(error)
    if found is None:
        return None
    if is_locked_error(found):
        return locked_database(where)
    reason = mask_url(driver_reason(found))
    path = sqlite_path(where) if where else None
    driver = getattr(found, "orig", None) or found
    if path is not None or type(driver).__module__.startswith("sqlite3"):
        if not any(s in reason for s in _SQLITE_WRITE_FAILED):
            return None  # (a damaged or foreign file: the readers' and the checks' own lines)
        kept = (f"this run created {path} and nothing in it had finished, so it was removed" if removed and path
                else "nothing finished is lost")
        return UserError(f"cannot write {path or 'the SQLite database (--storage)'} ({reason}): its disk is full, a "
                         f"file-size limit (ulimit -f) was reached, or the file or its directory is read-only; {kept} "
                         "- make room (or make it writable) and run the same command again")
    if not {type(driver).__name__, type(found).__name__} & {"OperationalError", "InterfaceError", "DisconnectionError"}:
        return None  # not the server or the link to it (a query it refused: the callers' own lines)
    shown = f"the database {mask_url(where)}" if where else "the database (--storage)"
    return UserError(f"{shown} failed during the run ({reason}); nothing finished is lost - once it works again (its "
                     "server running and reachable, space on its disk), run the same command again")


def driver_reason(error: BaseException) -> str:
    """The driver's own reason for a database error, one line: the first non-blank line of the error SQLAlchemy
    wraps (or of `error` itself), else the error's type."""
    cause = getattr(error, "orig", None) or error
    return next((ln.strip() for ln in str(cause).splitlines() if ln.strip()), type(cause).__name__)


def unusable_url(url: str, error: BaseException) -> UserError:
    """The one line for a --storage that names no database SQLAlchemy can open (an unknown scheme, a driver not
    installed, a malformed URL), whichever command met it: the URL and the reason, passwords hidden."""
    return UserError(f"cannot use storage {mask_url(url)!r} ({mask_url(driver_reason(error))}); give a SQLAlchemy "
                     f"URL such as {DEFAULT_STORAGE} or postgresql://user@host/db (password in PGPASSWORD or "
                     "~/.pgpass)")


def server_hint(reason: str, url: str = "") -> str:
    """What to do about a database server that could not be used, by the driver's `reason`: a password the
    server asks for and the URL leaves out (as the `next:` commands `tune` and `recommend` print it), a database
    the server took for `url` naming none (`_unnamed_database`), else the URL and the server."""
    if "no password supplied" in reason:  # libpq's "fe_sendauth: no password supplied"
        return ("the server asks for a password the URL leaves out: set PGPASSWORD or add the password to ~/.pgpass "
                "(or write it in the URL)")
    if "password authentication failed" in reason and url and _names_no_password(url):
        return ("the URL gives no password, so the server refused the one PostgreSQL's client found in PGPASSWORD "
                "or the password file (~/.pgpass, or $PGPASSFILE): correct it there (or write it in the URL)")
    return _unnamed_database(reason, url) or "check the URL and that the server runs"


def _names_no_password(url: str) -> bool:
    """`url` holds no password (as the `next:` commands print it): libpq took one from PGPASSWORD or its password
    file, which "check the URL" does not name."""
    from sqlalchemy.engine import make_url
    from sqlalchemy.exc import ArgumentError

    try:
        parsed = make_url(url)
    except (ArgumentError, ValueError):
        return False
    return parsed.password is None and "password" not in parsed.query


def _unnamed_database(reason: str, url: str) -> str | None:
    """Where `url` names no database (`postgresql://user@host:5433/`) and the server has none of the name libpq
    chose in its place - $PGDATABASE, else the user name - the hint that says so: libpq's 'database "advisor"
    does not exist' named a database the user never wrote. None otherwise."""
    missing = re.search(r'database "([^"]*)" does not exist', reason)
    if missing is None or not url:
        return None
    from sqlalchemy.engine import make_url
    from sqlalchemy.exc import ArgumentError

    try:
        parsed = make_url(url)
    except (ArgumentError, ValueError):
        return None
    if parsed.database or {"dbname", "service"} & set(parsed.query):  # ?dbname=X names one (a service may)
        return None
    chosen = "$PGDATABASE" if os.environ.get("PGDATABASE") else "the user name"
    return (f"the URL names no database, so PostgreSQL took {chosen} ({missing.group(1)!r}) as the database's "
            "name: end the URL with the database to use (.../DBNAME)")


def _unencodable_text(error: BaseException) -> str | None:
    """The string a query could not send to the database, when that is what `error` (or the error it wraps) is:
    a command-line argument holding bytes the locale could not decode (Python keeps them as lone surrogates,
    which no UTF-8 database can store)."""
    seen: set[int] = set()
    e: BaseException | None = error
    while e is not None and id(e) not in seen:
        seen.add(id(e))
        if isinstance(e, UnicodeEncodeError) and isinstance(e.object, str):
            return e.object
        e = getattr(e, "orig", None) or e.__cause__ or e.__context__
    return None


ROW_ERRORS = (ValueError, TypeError, LookupError, AssertionError)
"""What decoding a stored row raises (the readers' own checks, Optuna's ORM and enums, json, dates), where the
database itself reads fine; a driver's error (sqlite3.Error, SQLAlchemy's DatabaseError) is none of these, but for
SQLite's text that is not UTF-8 (`damaged_reason`)."""
_NOT_UTF8 = re.compile(r"Could not decode to UTF-8 column '([^']*)'")  # sqlite3's words for a TEXT value it cannot read
OPTUNA_TABLES = ("studies", "study_directions", "study_user_attributes", "study_system_attributes", "trials",
                 "trial_user_attributes", "trial_system_attributes", "trial_params", "trial_values",
                 "trial_intermediate_values", "trial_heartbeats", "version_info")
"""Optuna's tables (optuna.storages._rdb.models, Optuna 5.1), whose ORM queries label a column `<table>_<column>`."""


def _not_utf8_column(error: BaseException) -> tuple[str | None, str] | None:
    """(table where known, column) of the TEXT value sqlite3 could not decode as UTF-8 in `error` (or an error it
    wraps), None where it is no such error. sqlite3 names the result column, which Optuna's ORM labels
    `studies_study_name`: the table is split off where the label starts with one of `OPTUNA_TABLES`."""
    seen: set[int] = set()
    e: BaseException | None = error
    while e is not None and id(e) not in seen:
        seen.add(id(e))
        if (m := _NOT_UTF8.match(str(e))) is not None:
            label = m.group(1)
            table = next((t for t in sorted(OPTUNA_TABLES, key=len, reverse=True)
                          if label.startswith(f"{t}_") and len(label) > len(t) + 1), None)
            return (table, label[len(table) + 1:]) if table else (None, label)
        e = getattr(e, "orig", None) or e.__cause__ or e.__context__
    return None


def not_optuna_writes(what: str) -> str:
    """The one clause for a stored enum name Optuna has no member for ('BOGUS' as a trial state)."""
    return f"a stored {what} is not one Optuna writes"


_ENUM = re.compile(r"is not among the defined enum values\. Enum name: (\w+)")  # SQLAlchemy's Enum LookupError
_ENUM_WORDS = {"trialstate": "trial state", "studydirection": "study direction", "trialvaluetype": "value type"}


def damaged_reason(error: BaseException) -> str | None:
    """Why `error` is a stored row that cannot be decoded, in one short clause, or None where it is no such row:
    a `ROW_ERRORS` (an enum name Optuna has no member for said as `not_optuna_writes`, not SQLAlchemy's list of
    members), or sqlite3's OperationalError for a TEXT value that is not UTF-8 (the database reads; that row does
    not), said by its column (and table where the label names it) - sqlite3 quotes the whole text, a trial's
    configuration of kilobytes."""
    if isinstance(error, ROW_ERRORS):
        enum = _ENUM.search(str(error)) if isinstance(error, LookupError) else None
        return not_optuna_writes(_ENUM_WORDS.get(enum[1], enum[1])) if enum else driver_reason(error)
    if (found := _not_utf8_column(error)) is None:
        return None
    table, column = found
    return f"column '{column}'{f' of table {table!r}' if table else ''} holds text that is not UTF-8"


def _raw_study_names(path: Path) -> dict[bytes, list[str]]:
    """Every study name SQLite file `path` holds, as bytes (stdlib sqlite3: none is decoded), with the tables
    holding it (every table with a `study_name` column); {} where the file does not read."""
    import sqlite3

    found: dict[bytes, list[str]] = {}
    try:
        con = sqlite3.connect(f"{path.resolve().as_uri()}?mode=ro", uri=True)
    except sqlite3.Error:
        return {}
    try:
        con.text_factory = bytes
        tables = [t.decode() for (t,) in con.execute("SELECT name FROM sqlite_master WHERE type = 'table'")]
        for table in sorted(tables):
            if any(col[1] == b"study_name" for col in con.execute(f'PRAGMA table_info("{table}")')):
                for (name,) in con.execute(f'SELECT DISTINCT CAST(study_name AS BLOB) FROM "{table}"'):
                    found.setdefault(bytes(name or b""), []).append(table)
    except sqlite3.Error:
        return {}
    finally:
        con.close()
    return found


def _utf8(raw: bytes) -> str | None:
    try:
        return raw.decode("utf-8")
    except UnicodeDecodeError:
        return None


_RUN_SQL = 'python3 -c "import sqlite3, sys; sqlite3.connect(sys.argv[1]).executescript(sys.argv[2])"'
"""A command line that runs the SQL after the file name on a SQLite file (`_RUN_SQL FILE "SQL"`): Python's
stdlib, there wherever advisor runs, where the `sqlite3` tool often is not (Debian's and Ubuntu's images);
`python3 -m sqlite3` needs Python 3.12. `executescript` runs each statement in SQLite's autocommit."""


def _rename_instruction(path: Path) -> str | None:
    """What to do about a SQLite file whose study names are not UTF-8 text (no command can name such a study, to
    read or delete it): one command (`_RUN_SQL`) giving each a new name in every table holding it; None where none."""
    names = _raw_study_names(path)
    taken = {text for raw in names if (text := _utf8(raw)) is not None}
    bad = [(raw, tables) for raw, tables in names.items() if _utf8(raw) is None]
    if not bad:
        return None
    statements, new_names = [], []
    fresh = (f"renamed-{i}" for i in itertools.count(1))
    for raw, tables in bad:
        new_names.append(new := next(n for n in fresh if n not in taken))
        statements += [f"UPDATE {t} SET study_name = '{new}' WHERE hex(study_name) = '{raw.hex().upper()}'"
                       for t in tables]
    one = len(bad) == 1
    it = "it" if one else "them"
    return (f"{path} holds {'a study whose name is' if one else f'{len(bad)} studies whose names are'} not UTF-8 "
            f"text, so no command can name {it}; rename {it} with `{_RUN_SQL} {shlex.quote(str(path))} "
            f"\"{'; '.join(statements)}\"` (then `advisor studies` lists {it} as {' and '.join(new_names)}, and "
            f"`advisor studies --delete {new_names[0]}` deletes {'it' if one else 'the first'}), or give a new "
            "--storage")


class DamagedRows(UserError):
    """A database that reads, holding a study's rows that cannot be decoded: `studies --delete` deletes such a
    study (it decodes none of its rows), so it goes on without the study's summary."""


def damaged_rows(where: Any, error: BaseException, study: str | None = None, names: list[str] | None = None) -> UserError:
    """The one line for a database whose rows of a study cannot be decoded (`damaged_reason`): the file (or the URL,
    password hidden), the reason, and what to do - delete the study (`study`; else NAME, with the `names` there
    where known) or start a new --storage. Not "point --storage at the file `advisor tune` wrote": it is that
    file, and the server of a URL runs."""
    shown = where if isinstance(where, Path) else sqlite_path(where) or mask_url(str(where))
    found = _not_utf8_column(error)
    if found is not None and found[1] == "study_name" and isinstance(shown, Path):
        if (rename := _rename_instruction(shown)) is not None:
            return DamagedRows(rename)
    which = f"study {study!r}" if study else "a study"
    there = f" (studies there: {', '.join(names)})" if names and not study else ""
    return DamagedRows(f"{shown} holds rows of {which} that cannot be decoded "
                       f"({damaged_reason(error) or driver_reason(error)}): they are "
                       f"damaged; delete the study with `advisor studies --delete {study or 'NAME'}`{there} and the "
                       "same --storage, or give a new --storage")


NEW_PATH = ", or a new path"  # `unreadable_database`'s hint where the tune would write: it creates a new file


def unreadable_database(where: Any, error: BaseException, hint: str = "", study: str | None = None) -> UserError:
    """The one error for a database that cannot be read (a corrupt or foreign file), whichever reader (stdlib
    sqlite3 or SQLAlchemy) met it: the file (or the URL, password hidden), the driver's own reason, what to do;
    for rows of a study (`study` where known) that cannot be decoded, `damaged_rows`."""
    reason = driver_reason(error)
    text = _unencodable_text(error)
    if text is not None:  # the query's own input, not the database: a name typed in a terminal that is not UTF-8
        path = where if isinstance(where, Path) else sqlite_path(where)
        if path is not None and (rename := _rename_instruction(path)) is not None:
            return UserError(rename)  # the file holds such names: typed as bytes, none matches; renamed, it does
        return UserError(f"{text!r} holds bytes that are not UTF-8 text (a terminal in another encoding?), so no "
                         f"name stored in {path or where} can match it; give the name in UTF-8 (see `advisor studies`)")
    if is_locked_error(error):
        return locked_database(where if isinstance(where, Path) else str(where))
    if damaged_reason(error) is not None:  # the database reads, a server's too; a row in it does not decode
        return damaged_rows(where, error, study)
    if "://" in str(where) and not str(where).startswith("sqlite"):  # a database server: most often not reached
        return UserError(f"cannot read advisor results from {where} ({reason}); {server_hint(reason, str(where))}")
    where = where if isinstance(where, Path) else sqlite_path(where) or where
    cause = getattr(error, "orig", None) or error
    if getattr(cause, "sqlite_errorname", "") == "SQLITE_READONLY_ROLLBACK":  # a hot journal it may not roll back
        return UserError(f"{where} holds a write that a stopped process left unfinished ({where}-journal beside it): "
                         "SQLite must roll it back before anything reads the file, and the file or its directory "
                         "is read-only; make both writable for one run of any advisor command (or copy the file "
                         "with its -journal to a writable directory and use the copy)")
    return UserError(f"{where} is not a readable advisor database ({reason}); point --storage at the file "
                     f"`advisor tune` wrote{hint}")


def other_optuna_schema(where: Any, error: BaseException) -> UserError | None:
    """The one line for a database whose tables another Optuna version set up (Optuna's version check refuses
    it), None for any other error: it is the database `advisor tune` wrote, so Optuna's own advice (upgrade
    optuna, or the database), not "point --storage at the database `advisor tune` wrote"."""
    said = str(error)
    if not isinstance(error, RuntimeError) or "compatible with the table schema" not in said:
        return None
    import optuna

    if "storage upgrade" in said:  # an older schema this Optuna knows
        advice = f"upgrade its tables once with `optuna storage upgrade --storage {mask_url(str(where))}`"
    else:  # a newer one
        advice = "run with the (newer) Optuna that wrote it: pip install -U optuna"
    return UserError(f"{mask_url(str(where))} holds study tables of another Optuna version than this one "
                     f"({optuna.__version__}): {said.split('. ')[0].strip()}; {advice} (`advisor studies`, `pareto`, "
                     "`recommend` and `export` read it as it is)")


def foreign_tables(con: Any) -> list[str]:
    """The tables of an open SQLite file that has tables but none of Optuna's or the advisor's: another
    program's database, which readers do not read and a tune does not add its tables to; [] otherwise."""
    tables = [name for (name,) in con.execute("SELECT name FROM sqlite_master WHERE type='table'")]
    return [] if "studies" in tables or any(t.startswith("advisor_") for t in tables) else tables


def tables_text(tables: list[str]) -> str:
    """'tables a, b, c and 2 more': how a foreign database is named in the line that refuses it."""
    return "tables " + ", ".join(sorted(tables)[:3]) + (f" and {len(tables) - 3} more" if len(tables) > 3 else "")
