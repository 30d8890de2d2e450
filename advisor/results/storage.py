"""Storage URLs and Optuna storages: SQLite by default, PostgreSQL (or any SQLAlchemy URL) for many workers.

Heartbeats make a worker that dies without a word (SIGKILL, a lost machine) visible: its RUNNING trial stops
beating, the next worker to start a trial marks it FAIL and re-queues its parameters (up to `max_retry`
times), so no configuration is silently dropped.
"""

from __future__ import annotations

import contextlib
import functools
import importlib.util
import itertools
import os
import re
import shlex
import time
from collections.abc import Iterator
from contextlib import contextmanager
from contextvars import ContextVar
from pathlib import Path
from typing import TYPE_CHECKING, Any
from urllib.parse import parse_qsl, quote, unquote, urlencode

from advisor.errors import UserError
from advisor.results.reconnect import (
    answer_wait_s,
    engine_watched,
    env_seconds,
    notice_s,
    ride_out_restarts,
    say_note,
    stopping,
)

if TYPE_CHECKING:
    from sqlalchemy.engine import URL, Engine

DEFAULT_STORAGE = "sqlite:///studies/advisor.db"
"""Where studies live unless --storage says otherwise (relative to the working directory)."""


def sqlite_path(url: str | URL) -> Path | None:
    """The file SQLite opens for a SQLite URL (or an engine's `URL`, or a plain path: `sqlite:///` + it, as
    `normalize_url` reads it), as SQLAlchemy hands it to sqlite3: the URL's database part percent-decoded; with
    `uri=true` an SQLite URI filename (`file:x.db`, `file:///abs/x.db`: up to its `?` or `#`, decoded once more),
    without it a name as it stands (`sqlite:///file:x.db` opens a file named `file:x.db`). None for other
    databases and for in-memory SQLite; a SQLite option `--storage` does not take is one `UserError`
    (`sqlite_options`). The lock files, the readers and the checks all take the file from here."""
    name = _sqlite_name(url)
    return None if name is None else Path(name)


def refuse_directory_url(url: str, *, write: bool) -> None:
    """`UserError` for a SQLite file named with a trailing '/' (`--storage x.db/`, `sqlite:///x.db/`) where no
    directory is there (one that is there is refused as a directory): Path and SQLite drop the '/', so a tune
    wrote and a reader read the file x.db. The words of every file option (`files.refuse_directory_name`), for
    the tune and every reader alike."""
    from advisor.files import refuse_directory_name

    name = _sqlite_name(url)
    if name is not None and not Path(name).is_dir():
        refuse_directory_name(name, "write" if write else "read")


def _sqlite_name(url: str | URL) -> str | None:
    """`sqlite_path`'s file name as text, a trailing '/' kept (Path drops it)."""
    if isinstance(url, str):
        url = url if "://" in url else f"sqlite:///{url}"
        m = _SQLITE_URL.fullmatch(url)
        if m is None:
            return None
        sqlite_options(url)  # an option that changes which file SQLite opens (mode=memory) is refused
        database, query = unquote(m[2] or ""), dict(parse_qsl(m[3] or ""))
    elif url.get_backend_name() == "sqlite":
        database, query = url.database or "", dict(url.query)
    else:
        return None
    if _is_true(query.get("uri")) and database.startswith("file:"):  # SQLite's URI, read only with uri=True
        database = re.split(r"[?#]", database.removeprefix("file:"), maxsplit=1)[0]  # up to its query or fragment
        if database.startswith("//"):  # file://[localhost]/abs/path
            database = "/" + database[2:].partition("/")[2]
        database = unquote(database)
    return None if database in ("", ":memory:") else database


def _is_true(value: Any) -> bool:
    """A URL flag as SQLAlchemy reads one (`uri=true`, `uri=1`, ...)."""
    return str(value or "").strip().lower() in ("true", "yes", "on", "y", "t", "1")


_SQLITE_URL = re.compile(r"(sqlite(?:\+\w+)?)://(?:/([^?]*))?(?:\?(.*))?", re.S)
"""A SQLite URL: its scheme, its database part (None in `sqlite://`, in memory) and its query."""
_DRIVER_OPTIONS = frozenset({"uri", "timeout", "isolation_level", "detect_types", "check_same_thread", "cached_statements"})
"""The query arguments of a SQLite URL that SQLAlchemy hands to the sqlite3 module; any other is SQLite's own."""
SQLITE_OPTIONS = {"mode": "ro", "immutable": "1"}
"""SQLite's own URL options that --storage takes, both to read a study without writing its file. The others
(`cache`, `vfs`, `nolock`, `mode=memory`, ...) change how SQLite opens, locks or shares the file, which neither
the workers' lock file nor the readers (they open the file by its path) follow: refused in one line."""


def sqlite_options(url: str) -> dict[str, str]:
    """SQLite's own options in a SQLite URL, `{}` for none (or not SQLite); one `UserError` for an option or a
    value outside `SQLITE_OPTIONS`, for one given twice (SQLAlchemy hands SQLite both, as `('ro', 'ro')`) and
    for options percent-encoded into an SQLite URI filename (`file:x.db%3Fnolock%3D1`: SQLAlchemy decodes the
    name, and SQLite reads the options after its `?`)."""
    m = _SQLITE_URL.fullmatch(url if "://" in url else f"sqlite:///{url}")
    if m is None:
        return {}
    pairs = parse_qsl(m[3] or "", keep_blank_values=True)
    database = unquote(m[2] or "")
    if _is_true(dict(pairs).get("uri")) and database.startswith("file:") and "?" in database.split("#", 1)[0]:
        raise UserError(f"--storage: SQLite options go after the URL's '?' (sqlite:///file:x.db?mode=ro&uri=true), "
                        f"not percent-encoded into its file name ({m[2]})")
    pairs = [(k, v) for k, v in pairs if k not in _DRIVER_OPTIONS]
    keys = [k for k, _ in pairs]
    twice = sorted({k for k in keys if keys.count(k) > 1})
    if twice:
        raise UserError(f"--storage gives the SQLite option {', '.join(twice)} more than once; give it once")
    bad = [f"{k}={v}" for k, v in pairs if SQLITE_OPTIONS.get(k) != v]
    if bad:
        raise UserError(f"--storage: the SQLite option{'s' if len(bad) > 1 else ''} {', '.join(bad)} "
                        f"{'are' if len(bad) > 1 else 'is'} not supported; the ones it takes are mode=ro and "
                        "immutable=1, to read a study without writing its file (drop the others)")
    return dict(pairs)


def _sqlite_uri_form(url: str) -> str:
    """`url` with its SQLite options (`mode=ro`) in the form where they act: an SQLite URI filename with
    `uri=true`. Written as a path with options, SQLAlchemy ignored them (and warned); with `uri=true` on a plain
    path SQLite opened, even created, a file named `x.db?mode=ro`."""
    m = _SQLITE_URL.fullmatch(url)
    if m is None or not sqlite_options(url):
        return url
    database, query = unquote(m[2] or ""), dict(parse_qsl(m[3], keep_blank_values=True))
    if _is_true(query.get("uri")) and database.startswith("file:"):  # already SQLite's URI form
        return url
    query["uri"] = "true"
    return f"{m[1]}:///{quote(sqlite_file_uri(database), safe='/:')}?{urlencode(query)}"


def sqlite_file_uri(path: str) -> str:
    """`path` as an SQLite URI filename without options: `file:` and the path percent-encoded; a path starting
    with `//` (`sqlite:////` + `/abs/x.db`) after an empty authority, `file://` + it: in `file://abs/x.db`,
    `abs` would be a host."""
    return ("file://" if path.startswith("//") else "file:") + quote(path)


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


_PASSWORD = re.compile(r"(\b[A-Za-z][A-Za-z0-9+.-]*://[^/:@\s]*:)([^@\s]+)(@)")


_GIVEN: dict[str, str] = {}
"""The URLs `normalize_url` named psycopg2 in -> each as the user gave it (`postgresql://...`), which the lines
that name a --storage URL show: `+psycopg2` is advisor's, not the user's."""


def as_given(text: str) -> str:
    """`text` with each URL that `normalize_url` gave a driver written as the user gave it."""
    for url, given in _GIVEN.items():
        text = text.replace(url, given)
    return text


def _masked(text: str) -> str:
    return _PASSWORD.sub(r"\1***\3", text)


def _with_scheme(scheme: str, url: str) -> str:
    """`url` with `scheme` as it can be pasted: the URL itself where it has no password; else how to change the
    one given, not the URL - its password is not printed, and a masked `***` would be sent as the password."""
    given, _, rest = url.partition("://")
    if _PASSWORD.search(url):
        return f"the URL you gave with {scheme}:// in place of {given}:// (not repeated here: its password is not printed)"
    return f"{scheme}://{rest}"


def mask_url(text: str) -> str:
    """`text` with the password of every URL in it replaced by ***, each URL as the user gave it (`as_given`;
    also where SQLAlchemy wrote an engine's URL with its password as ***)."""
    text = _masked(as_given(text))
    for url, given in _GIVEN.items():
        text = text.replace(_masked(url), _masked(given))
    return text


def storage_flag(url: str) -> str:
    """The ` --storage URL` a printed next command needs to reach this database ("" for the default one),
    quoted for a shell. The password is left out, not masked, so the command runs as printed where libpq finds
    it (PGPASSWORD or ~/.pgpass); a masked '***' would be sent as the password."""
    import shlex

    if normalize_url(url, create_dirs=False) == normalize_url(DEFAULT_STORAGE, create_dirs=False):
        return ""
    return f" --storage {shlex.quote(_PASSWORD.sub(lambda m: m.group(1)[:-1] + '@', as_given(url)))}"


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
    return _unnamed_database(reason, url) or "check the URL and that the server runs"


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


def foreign_tables(con: Any) -> list[str]:
    """The tables of an open SQLite file that has tables but none of Optuna's or the advisor's: another
    program's database, which readers do not read and a tune does not add its tables to; [] otherwise."""
    tables = [name for (name,) in con.execute("SELECT name FROM sqlite_master WHERE type='table'")]
    return [] if "studies" in tables or any(t.startswith("advisor_") for t in tables) else tables


def tables_text(tables: list[str]) -> str:
    """'tables a, b, c and 2 more': how a foreign database is named in the line that refuses it."""
    return "tables " + ", ".join(sorted(tables)[:3]) + (f" and {len(tables) - 3} more" if len(tables) > 3 else "")


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


_LOCK_NOT_AVAILABLE = "55P03"
"""PostgreSQL's error code for a lock not granted within `lock_timeout`."""


HEARTBEAT_INTERVAL_S = 10
GRACE_PERIOD_S = 30
MAX_RETRY = 3


def normalize_url(url: str | None, *, create_dirs: bool = True) -> str:
    """A SQLAlchemy URL for `url` (a plain path means a SQLite file, relative to the current directory).

    PostgreSQL URLs get psycopg2 - the driver advisor installs, and the one whose waits for the server
    `reconnect.watch_answers` watches (Ctrl-C, the notice, the give-up) - also where psycopg 3, SQLAlchemy 2.1's
    default, is installed; one that names another driver (`postgresql+psycopg://`, which waits inside itself,
    silent and deaf to Ctrl-C on a paused server) is refused in one line that gives the URL to write. SQLite
    parent directories are created.
    """
    url = (url or DEFAULT_STORAGE).strip()
    if not url:
        url = DEFAULT_STORAGE
    if "://" not in url:
        _refuse_mistyped_url(url)
        url = f"sqlite:///{url}"
    scheme, _, rest = url.partition("://")
    if rest.split("/", 1)[0].count("@") > 1:  # the driver would take the password's tail for the host, and say it
        user = rest.split(":", 1)[0].split("@", 1)[0]
        raise UserError(f"the --storage URL for user {user!r} has more than one '@' before the host: a password "
                        "with '@' (or ':', '/') must be URL-encoded, '@' as %40")
    base, _, driver = scheme.partition("+")
    if base.lower() in ("postgresql", "postgres"):
        if driver and driver.lower() != "psycopg2":
            raise UserError(f"--storage {mask_url(url)}: advisor talks to PostgreSQL through psycopg2, the driver it "
                            f"installs, whose waits for the server it watches (a note after ADVISOR_PG_NOTICE_S, "
                            f"Ctrl-C, the give-up after ADVISOR_PG_WAIT_S); {driver} waits inside itself, where a "
                            f"paused or unreachable server holds the command without a word and Ctrl-C does not end "
                            f"the wait - write {_with_scheme('postgresql', url)}")
        if importlib.util.find_spec("psycopg2") is None:
            raise UserError("psycopg2, advisor's PostgreSQL driver, is not installed; pip install psycopg2-binary")
        if not driver:
            _GIVEN[f"postgresql+psycopg2://{rest}"] = url
        url = f"postgresql+psycopg2://{rest}"
    url = _sqlite_uri_form(url)
    path = sqlite_path(url) if create_dirs else None
    if path is not None:
        try:
            path.parent.mkdir(parents=True, exist_ok=True)
        except OSError as e:
            raise UserError(f"cannot create the directory for {path} ({e.strerror}); pass --storage URL") from e
    return url


_DATABASES = frozenset({"postgresql", "postgres", "sqlite", "mysql", "mariadb", "oracle", "mssql", "cockroachdb"})
"""The URL schemes (before a `+driver`) that a --storage without `://` was most likely meant to be."""


def _refuse_mistyped_url(given: str) -> None:
    """A --storage without `://` is a SQLite file path; one that starts with a database's scheme and a colon
    (`postgresql:/db`, `postgres:user@host/db`, `sqlite:/x.db`) is a URL mistyped: read as a path, `tune` made a
    directory `postgresql:` and ran alone in a new SQLite file there while the workers meant to share the server's
    study, and a reader said there was no database."""
    scheme = re.match(r"([A-Za-z][A-Za-z0-9.-]*)(?:\+[A-Za-z0-9_.-]*)?:", given)
    if scheme is not None and scheme[1].lower() in _DATABASES:
        example = "sqlite:///studies/advisor.db" if scheme[1].lower() == "sqlite" else "postgresql://user@host/db"
        raise UserError(f"--storage starts with '{scheme[0]}' but has no '//' after it, so it would be read as a SQLite "
                        f"file path; write the URL as {scheme[0]}//... (e.g. {example}), or ./ before a file name "
                        "that starts so")


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


@named_run(outside_one=True)  # (outside a run: its engine and the schema lock's own, one name of their own)
def open_storage(
    url: str | None,
    *,
    heartbeat_interval: int | None = HEARTBEAT_INTERVAL_S,
    grace_period: int | None = GRACE_PERIOD_S,
    max_retry: int | None = MAX_RETRY,
) -> Any:
    """An Optuna `RDBStorage` with heartbeat and retry of stale trials; bad URLs are one-line errors."""
    import warnings

    import optuna
    from sqlalchemy.exc import ArgumentError, OperationalError, SQLAlchemyError

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
    except (ArgumentError, ModuleNotFoundError, ImportError) as e:
        raise unusable_url(url, e) from e
    except OperationalError as e:
        if is_locked_error(e):
            raise locked_database(url) from e
        if sqlite_path(url) is not None:  # creating the tables in a new file: a full disk, a file-size limit
            raise storage_failure(e, url) or unreadable_database(url, e) from e
        reason = mask_url(driver_reason(e))
        raise UserError(f"cannot connect to storage {mask_url(url)!r}: {reason}; {server_hint(reason, url)}") from e
    except (SQLAlchemyError, RuntimeError, ValueError) as e:
        if is_locked_error(e):
            raise locked_database(url) from e
        if (other := other_optuna_schema(url, e)) is not None:
            raise other from e
        raise UserError(f"{mask_url(url)} is not a usable Optuna study database ({type(e).__name__}: "
                        f"{mask_url(driver_reason(e))}); point --storage at another file or URL") from e
