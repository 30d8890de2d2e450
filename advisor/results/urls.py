"""Storage URLs: what --storage names (a plain path is a SQLite file, `DEFAULT_STORAGE` when none is given),
the SQLite URL forms and options advisor takes, and a URL as the lines show it (as the user gave it, password
hidden). Apart from the rest of storage because every command reads a URL, most of them nothing else of it:
neither SQLAlchemy nor optuna is imported here.
"""

from __future__ import annotations

import importlib.util
import re
from pathlib import Path
from typing import TYPE_CHECKING, Any
from urllib.parse import parse_qsl, quote, unquote, urlencode

from advisor.errors import UserError

if TYPE_CHECKING:
    from sqlalchemy.engine import URL


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
