"""A SQLite --storage URL names one file - the one SQLite opens - for every command: the lock files beside it,
tune's checks and the directory it makes, and the read-only commands all take it from `urls.sqlite_path`,
read as SQLAlchemy hands the URL to sqlite3 (its path percent-decoded; `file:` a SQLite URI only with
`uri=true`, otherwise part of the file's name)."""

from __future__ import annotations

import shutil
import subprocess
import sys
from pathlib import Path

from tests import cli_helpers
from tests.cli_helpers import one_error_line

SPACE = """
name = "urls"
[precision]
formats = ["int8"]
groups = 1
[cache]
slots_per_layer = { low = 1, high = "all" }
policies = ["lru"]
prefetch = ["none"]
[objectives]
h2d_bytes_per_token = "minimize"
accuracy = "maximize"
[evaluation]
task = "toy"
limit = 2
trace_prompts = 1
fidelity_prompts = 1
"""


def advisor(*args: str, cwd: Path) -> str:
    """`advisor ARGS`' stdout, a run that must succeed, through the CLI in this process (`advisor_in_process`): the
    file each reads is what is checked (each subprocess paid ~1 s of CPU for Python and the CLI's imports). The
    refusals, and the reads whose stderr must stay empty, run as processes below."""
    r = cli_helpers.advisor_in_process(*args, cwd=cwd)
    assert r.returncode == 0, r.stdout + r.stderr
    return r.stdout


def _tuned(*args: str, cwd: Path) -> None:
    """A tune that must succeed, through the CLI in this process: the URL, not the process, is what is checked
    (as a subprocess each paid ~5-10 s of CPU importing torch and transformers again)."""
    r = cli_helpers.advisor_in_process(*args, cwd=cwd)
    assert r.returncode == 0, r.stdout + r.stderr


def test_a_sqlite_url_names_the_file_sqlite_opens_in_every_command(tmp_path):
    (tmp_path / "space.toml").write_text(SPACE)
    tune = ("tune", "--space", "space.toml", "--study", "a", "--trials", "1")

    # without uri=true SQLite opens a file named `file:s.db`; its lock and the readers were at `s.db`
    # ("no advisor database at s.db")
    literal = "sqlite:///file:s.db"
    _tuned(*tune, "--storage", literal, cwd=tmp_path)
    assert (tmp_path / "file:s.db").is_file() and (tmp_path / "file:s.db.lock").is_file()
    assert not list(tmp_path.glob("s.db*"))
    assert "a" in advisor("studies", "--storage", literal, cwd=tmp_path).splitlines()

    # with uri=true it is SQLite's URI, decoded: the file is `new dir/t.db` (tune made `file:new%20dir`, and SQLite
    # could not create the file); a directory that does not exist is refused by its decoded name, then used
    uri = "sqlite:///file:new%20dir/t.db?uri=true"
    one_error_line(cli_helpers.advisor(*tune, "--storage", uri, cwd=tmp_path), "mkdir -p 'new dir'")
    assert not (tmp_path / "new dir").exists()
    (tmp_path / "new dir").mkdir()
    _tuned(*tune, "--storage", uri, cwd=tmp_path)
    assert (tmp_path / "new dir" / "t.db").is_file() and (tmp_path / "new dir" / "t.db.lock").is_file()
    assert sorted(p.name for p in tmp_path.iterdir()) == ["file:s.db", "file:s.db.lock", "file:s.db.seed.lock",
                                                         "new dir", "space.toml"]
    assert "a" in advisor("studies", "--storage", uri, cwd=tmp_path).splitlines()

    # a percent-encoded name is the decoded file, to the readers too
    shutil.copy(tmp_path / "file:s.db", tmp_path / "my runs?.db")
    assert "a" in advisor("studies", "--storage", "sqlite:///my%20runs%3F.db", cwd=tmp_path).splitlines()
    advisor("pareto", "a", "--storage", "sqlite:///my%20runs%3F.db", "--no-plots", cwd=tmp_path)


def test_sqlite_options_act_as_written_and_never_name_a_new_file(tmp_path):
    """SQLite's own options act only in its URI form with uri=true. `x.db?mode=ro` had SQLAlchemy ignore the option
    with a warning; `sqlite:///x.db?mode=ro&uri=true` had the read-only commands open (and create) an empty file
    named `x.db?mode=ro` and say the study was not there. Both read the database now, read-only, and the tune is
    refused in one line naming the option."""
    db = tmp_path / "runs.db"
    shutil.copy(Path(__file__).resolve().parents[1] / "studies" / "example" / "advisor.db", db)
    before = db.read_bytes()
    for url in ("runs.db?mode=ro", "sqlite:///runs.db?mode=ro&uri=true", f"sqlite:///{db}?immutable=1"):
        for args in (("studies",), ("pareto", "bundled-example", "--no-plots"), ("recommend", "--budget", "3MiB")):
            r = subprocess.run([sys.executable, "-m", "advisor", *args, "--storage", url], cwd=tmp_path,
                               capture_output=True, text=True, timeout=120)
            assert r.returncode == 0 and "bundled-example" in r.stdout and not r.stderr, (url, args, r.stderr)
        r = subprocess.run([sys.executable, "-m", "advisor", "tune", "--study", "bundled-example", "--storage", url],
                           cwd=tmp_path, capture_output=True, text=True, timeout=120)
        where, option = (db, "immutable=1") if url.startswith(f"sqlite:///{tmp_path}") else ("runs.db", "mode=ro")
        assert r.returncode == 2 and r.stderr.strip() == (
            f"error: --storage opens {where} read-only ({option}), and the tune writes trials; drop that option "
            "from the URL"), r.stderr
    assert sorted(p.name for p in tmp_path.iterdir()) == ["runs.db"] and db.read_bytes() == before


def test_sqlite_options_that_change_how_the_file_is_opened_are_one_line_in_every_command(tmp_path):
    """Once SQLite's options acted, the others did too: `cache=shared` failed a tune's connections on a lock
    instead of waiting, `nolock=1` / `vfs=unix-none` let them write side by side ('disk I/O error'), `vfs=unix-dotfile`
    locks with a directory named like the workers' lock file, `mode=memory` read an empty database in some commands
    and the file in others, `mode=RO` is no mode SQLite knows. Each is refused in one line by every command, the
    tune before the model loads, and a new read-only database is refused by the tune before it loads the model."""
    db = tmp_path / "runs.db"
    shutil.copy(Path(__file__).resolve().parents[1] / "studies" / "example" / "advisor.db", db)
    before = db.read_bytes()
    commands = (("studies",), ("pareto", "bundled-example", "--no-plots"), ("recommend", "--budget", "3MiB"),
                ("export", "bundled-example", "129", "--to", "json", "-o", "x.json"), ("report", "bundled-example", "-o", "r"),
                ("tune", "--study", "bundled-example"))
    cases = [(f"runs.db?{o}", commands if o == "cache=shared" else commands[::5])  # every command: one check, shared
             for o in ("cache=shared", "nolock=1", "vfs=unix-none", "mode=memory", "mode=RO", "mode=rw")]
    cases.append(("sqlite:///file:runs.db?vfs=unix-dotfile&uri=true", commands))
    for url, some in cases:
        option = url.split("?")[1].removesuffix("&uri=true")
        for args in some:
            r = subprocess.run([sys.executable, "-m", "advisor", *args, "--storage", url], cwd=tmp_path,
                               capture_output=True, text=True, timeout=120)
            assert r.returncode == 2 and r.stderr.strip() == (
                f"error: --storage: the SQLite option {option} is not supported; the ones it takes are mode=ro and "
                "immutable=1, to read a study without writing its file (drop the others)"), (url, args, r.stderr)
    r = subprocess.run([sys.executable, "-m", "advisor", "tune", "--storage", "new.db?mode=ro"], cwd=tmp_path,
                       capture_output=True, text=True, timeout=120)
    assert r.returncode == 2 and r.stderr.strip() == ("error: --storage opens new.db read-only (mode=ro), and the tune "
                                                      "writes trials; drop that option from the URL"), r.stderr
    assert "model" not in r.stdout.lower(), r.stdout  # refused before the model loads
    assert sorted(p.name for p in tmp_path.iterdir()) == ["runs.db"] and db.read_bytes() == before


def test_an_absolute_path_written_with_one_slash_too_many_is_read_by_every_command(tmp_path):
    """`sqlite:////` + `/abs/x.db` names `//abs/x.db`, the file `/abs/x.db`, as SQLAlchemy opens it; as an SQLite URI
    filename `file://abs/...` names a host: `recommend`, `export` and `report` said "invalid uri authority", and
    with `?mode=ro` every command looked for `/x.db` without the first directory ("no advisor database at ...")."""
    db = tmp_path / "runs.db"
    shutil.copy(Path(__file__).resolve().parents[1] / "studies" / "example" / "advisor.db", db)
    for url in (f"sqlite:////{db}", f"sqlite:////{db}?mode=ro"):
        assert "bundled-example" in advisor("studies", "--storage", url, cwd=tmp_path)
        advisor("pareto", "bundled-example", "--no-plots", "--storage", url, cwd=tmp_path)
        assert "Export it" in advisor("recommend", "--budget", "3MiB", "--storage", url, cwd=tmp_path)
        advisor("export", "bundled-example", "129", "--to", "json", "-o", "x.json", "--storage", url, cwd=tmp_path)
        r = subprocess.run([sys.executable, "-m", "advisor", "report", "nope", "-o", "r", "--storage", url],
                           cwd=tmp_path, capture_output=True, text=True, timeout=300)
        assert r.returncode == 2 and "no study named 'nope'" in r.stderr, r.stderr
    assert sorted(p.name for p in tmp_path.iterdir()) == ["runs.db", "x.json"]


def test_an_in_memory_database_is_refused_by_tune_before_the_model_loads(tmp_path):
    """`tune --storage sqlite://` ran, printed the heartbeat thread's tracebacks ('no such table': each connection
    has a database of its own) and kept nothing; it is one line now, naming the URL as given (with an option it
    named the rewritten `sqlite:///file:%253Amemory%253A?mode=ro&uri=true`). Readers find no study there."""
    for url in ("sqlite://", "sqlite:///:memory:", "sqlite:///:memory:?mode=ro", "sqlite:///?immutable=1"):
        r = subprocess.run([sys.executable, "-m", "advisor", "tune", "--storage", url], cwd=tmp_path,
                           capture_output=True, text=True, timeout=120)
        assert r.returncode == 2 and r.stderr.strip() == (
            f"error: --storage {url} is an in-memory database: the tune's trials would vanish with it (and its "
            "heartbeat thread, on a connection of its own, sees none); give a file path such as studies/advisor.db"), r.stderr
        assert "model" not in r.stdout.lower(), r.stdout
        assert f"no studies in {url}" in advisor("studies", "--storage", url, cwd=tmp_path)
    assert not list(tmp_path.iterdir())


def test_a_printed_storage_flag_leaves_the_password_out_and_keeps_the_rest():
    """The `--storage` of tune's `next:` and recommend's `Export it:` commands: a masked `***` was sent by libpq
    as the password; the password is left out (libpq reads PGPASSWORD or ~/.pgpass), the rest kept as given.
    The PostgreSQL test in test_recommend_choice runs such a printed command; this one needs no server."""
    from advisor.results.urls import storage_flag

    assert storage_flag("postgresql+psycopg2://bob:s3cr%40t@db.example:5433/advisor?sslmode=require") == (
        " --storage 'postgresql+psycopg2://bob@db.example:5433/advisor?sslmode=require'")
    assert storage_flag("postgresql://bob@db.example/advisor") == " --storage postgresql://bob@db.example/advisor"
    assert storage_flag("sqlite:///studies/advisor.db") == ""  # the default database needs no flag


READERS_AND_TUNE = (("studies",), ("pareto", "bundled-example", "--no-plots"), ("recommend", "--budget", "3MiB"),
                    ("export", "bundled-example", "129", "--to", "json", "-o", "x.json"),
                    ("report", "bundled-example", "-o", "r"), ("tune", "--study", "bundled-example"))


def one_line_in_every_command(tmp_path: Path, url: str, error: str) -> None:
    """`url` is refused with `error`, one line and exit 2, by every command that takes --storage, the tune
    before the model loads; the study's file is not written and no other file is made."""
    db = tmp_path / "runs.db"
    shutil.copy(Path(__file__).resolve().parents[1] / "studies" / "example" / "advisor.db", db)
    before = db.read_bytes()
    for args in READERS_AND_TUNE:
        r = subprocess.run([sys.executable, "-m", "advisor", *args, "--storage", url], cwd=tmp_path,
                           capture_output=True, text=True, timeout=120)
        assert r.returncode == 2 and r.stderr.strip() == f"error: {error}", (url, args, r.stderr)
        assert "model" not in r.stdout.lower(), r.stdout
    assert sorted(p.name for p in tmp_path.iterdir()) == ["runs.db"] and db.read_bytes() == before
    db.unlink()


def test_sqlite_options_the_check_did_not_see_are_one_line_in_every_command(tmp_path):
    """SQLAlchemy hands an SQLite URI filename to SQLite decoded, so `file:runs.db%3Fnolock%3D1` carries SQLite's
    `nolock=1`: no command refused it, the readers looked for a file named `runs.db?nolock=1`, and the tune ran
    on runs.db without SQLite's locking beside a lock file `runs.db?nolock=1.lock`, then failed after the model
    loaded ("storage error: An exception is raised during the commit"). An in-memory `sqlite://?cache=shared`
    printed SQLAlchemy's warning (two lines) in the readers."""
    one_line_in_every_command(
        tmp_path, "sqlite:///file:runs.db%3Fnolock%3D1?uri=true",
        "--storage: SQLite options go after the URL's '?' (sqlite:///file:x.db?mode=ro&uri=true), not "
        "percent-encoded into its file name (file:runs.db%3Fnolock%3D1)")
    one_line_in_every_command(
        tmp_path, "sqlite://?cache=shared",
        "--storage: the SQLite option cache=shared is not supported; the ones it takes are mode=ro and immutable=1, "
        "to read a study without writing its file (drop the others)")
    # a file whose name has a `?` is still read: written twice encoded in SQLite's URI form, once in a path
    shutil.copy(Path(__file__).resolve().parents[1] / "studies" / "example" / "advisor.db", tmp_path / "a?b.db")
    for url in ("sqlite:///file:a%253Fb.db?mode=ro&uri=true", "a%3Fb.db?immutable=1"):
        assert "bundled-example" in advisor("studies", "--storage", url, cwd=tmp_path)
    assert sorted(p.name for p in tmp_path.iterdir()) == ["a?b.db"]


def test_a_sqlite_option_given_twice_is_one_line_in_every_command(tmp_path):
    """`mode=rwc&mode=ro` was taken for `mode=ro` (the last one) by the check and the rewrite, while SQLAlchemy
    hands SQLite both: in SQLite's URI form `mode=ro&mode=ro` was "not a readable advisor database (no such
    access mode: ('ro', 'ro'))". Two unsupported options are named together."""
    for url in ("runs.db?mode=rwc&mode=ro", "sqlite:///file:runs.db?mode=ro&uri=true&mode=ro"):
        one_line_in_every_command(tmp_path, url, "--storage gives the SQLite option mode more than once; give it once")
    one_line_in_every_command(
        tmp_path, "runs.db?cache=shared&timeout=5&nolock=1",
        "--storage: the SQLite options cache=shared, nolock=1 are not supported; the ones it takes are mode=ro and "
        "immutable=1, to read a study without writing its file (drop the others)")
