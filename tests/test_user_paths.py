"""Every option that names a file or directory expands a leading '~' (`advisor.commands.user_path`), as model specs
do: the shell expands none after '=' or in quotes, and `export -o '~/x.json'`, `--json=~/r.json`, `trace
--output=~/t.npz` were refused as "~ does not exist" (or, for --storage, read and written under a directory
named '~' here). Each test failed before the fix; HOME is a folder of the test's own."""

from __future__ import annotations

import os
import shutil
from pathlib import Path

import pytest
from typer.testing import CliRunner

EXAMPLE_DB = Path(__file__).resolve().parent.parent / "studies" / "example" / "advisor.db"


@pytest.fixture
def home(tmp_path, monkeypatch) -> Path:
    """A home directory of the test's own, and a working directory beside it (where no '~' exists)."""
    home = tmp_path / "home"
    home.mkdir()
    (tmp_path / "work").mkdir()
    monkeypatch.setenv("HOME", str(home))
    monkeypatch.chdir(tmp_path / "work")
    return home


def invoke(*args: str):
    from advisor.cli import app

    return CliRunner().invoke(app, list(args))


def test_export_output_and_storage_expand_a_tilde(home):
    shutil.copy(EXAMPLE_DB, home / "a.db")
    for storage in ("~/a.db", "sqlite:///~/a.db"):
        r = invoke("export", "bundled-example", "129", "--to", "json", "-o", "~/x.json", f"--storage={storage}")
        assert r.exit_code == 0, r.output
        assert '"schema": "moe-advisor/export"' in (home / "x.json").read_text()
        (home / "x.json").unlink()
    assert not Path("~").exists()


def test_studies_and_pareto_read_a_storage_url_under_the_home(home):
    shutil.copy(EXAMPLE_DB, home / "a b.db")  # a space: percent-encoded in the URL, as SQLAlchemy decodes it
    r = invoke("studies", "--storage", "sqlite:///~/a b.db")
    assert r.exit_code == 0 and "bundled-example" in r.output, r.output
    r = invoke("pareto", "bundled-example", "--storage=~/a b.db", "-o", "~/plots")
    assert r.exit_code == 0, r.output
    assert (home / "plots" / "bundled-example.png").is_file()


def test_trace_simulate_and_quant_report_files_expand_a_tilde(home):
    r = invoke("trace", "tiny:qwen3_moe", "--output=~/t.npz", "--threads", "1")
    assert r.exit_code == 0 and (home / "t.npz").is_file(), r.output
    r = invoke("simulate", "~/t.npz", "--json=~/s.json", "--policy", "lru")
    assert r.exit_code == 0 and (home / "s.json").is_file(), r.output
    r = invoke("quant-report", "tiny:qwen3_moe", "--formats", "int8", "--samples", "2", "--layers", "0",
               "--max-experts", "1", "--threads", "1", "--json=~/q.json")
    assert r.exit_code == 0 and (home / "q.json").is_file(), r.output



def _path_options() -> list[tuple[str, list[str]]]:
    """(command, option names) of every option whose callback is `user_path` or `user_storage`, read from the app."""
    import typer.main

    from advisor.cli import app
    from advisor.commands import user_path, user_storage

    out = []
    for name, command in typer.main.get_command(app).commands.items():
        for p in command.params:
            wrapped = [c.cell_contents for c in getattr(p.callback, "__closure__", None) or ()]
            if p.param_type_name == "option" and any(c in (user_path, user_storage) for c in wrapped):
                out.append((name, p.opts))
    return out


def test_every_path_option_refuses_a_value_starting_with_equals(home):
    """click reads `-o=~/x` (a short option) as the path '=~/x', not '~/x' (argparse reads '~/x'): `export
    -o=x.json` wrote a file named '=x.json', `-o=~/x.json` was refused as a missing folder '=~'. Every path option
    now refuses a value starting with '=' in one line giving the spellings that mean the path."""
    from advisor.errors import UserError

    options = _path_options()
    assert len(options) >= 20, options  # tune, report, export, eval, trace, ...: each file or directory option
    for command, opts in options:
        short = next((o for o in opts if not o.startswith("--")), None)
        long = next(o for o in opts if o.startswith("--"))
        r = invoke(command, f"{short}=~/x" if short else long, *([] if short else ["=~/x"]))
        assert isinstance(r.exception, UserError), (command, opts, r.output, r.exception)
        assert str(r.exception) == (f"{'/'.join(opts)} '=~/x': a path starting with '='"
                                    + (f" (`{short}=PATH` is read as the path '=PATH')" if short else "")
                                    + f"; write `{short or long} ~/x` or `{long}=~/x` (a name that starts with "
                                    "'=': ./=~/x)"), str(r.exception)
    assert not any(Path(".").iterdir()), list(Path(".").iterdir())


def test_export_short_output_with_equals_is_one_line_and_writes_nothing(home):
    from cli_helpers import advisor, one_error_line

    shutil.copy(EXAMPLE_DB, home / "a.db")
    r = advisor("export", "bundled-example", "129", "--to", "json", "-o=~/x.json", "--storage=~/a.db", cwd=Path.cwd(),
                env={**os.environ, "HOME": str(home)})
    one_error_line(r, "-o/--output '=~/x.json'", "write `-o ~/x.json` or `--output=~/x.json`")
    assert not any(Path(".").iterdir()) and not (home / "x.json").exists()
