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


def test_a_model_under_the_home_of_no_such_user_is_one_line(tmp_path):
    """`advisor inspect '~nosuchuser/ckpt'` (quoted: the shell left it) was a RuntimeError traceback from
    `Path.expanduser` in the MODEL check; as the shell does, a `~user` of no such user stays as typed."""
    from tests.cli_helpers import advisor, one_error_line

    for args in (["inspect", "~nosuchuser9/ckpt"], ["eval", "~nosuchuser9/ckpt", "--limit", "1"]):
        one_error_line(advisor(*args, cwd=tmp_path, timeout=120), "no directory '~nosuchuser9/ckpt': a MODEL that is a path")


def test_every_output_refuses_a_missing_directory_in_the_same_words(tmp_path, monkeypatch):
    """`export -o`, `eval --json` (every output file) said "~nosuchuser9 does not exist; give another path"
    and never how to make a missing directory, where `report -o`, `tune --storage` (`check_parent`) named the
    user that is not there and the `mkdir -p`; a link to nothing was given a `mkdir -p` that cannot make it."""
    from advisor.errors import UserError

    monkeypatch.chdir(tmp_path)
    (tmp_path / "gone").symlink_to(tmp_path / "nowhere")
    for out, said in (("~nosuchuser9/x.json", "no user 'nosuchuser9' whose home it names; give "),
                      ("no/dir/x.json", "directory no/dir does not exist; create it (mkdir -p no/dir)"),
                      ("gone/x.json", f"gone is a link to {tmp_path / 'nowhere'}, which does not exist")):
        for args in (["export", "bundled-example", "129", "--to", "json", "--storage", str(EXAMPLE_DB), "-o", out],
                     ["eval", "bundled", "--json", out]):
            r = invoke(*args)
            assert isinstance(r.exception, UserError) and said in str(r.exception), (args, r.output, r.exception)
    r = invoke("report", "bundled-example", "--storage", str(EXAMPLE_DB), "-o", "gone/r")
    assert isinstance(r.exception, UserError) and "gone is a link to" in str(r.exception), (r.output, r.exception)
    assert not (tmp_path / "no").exists() and not (tmp_path / "nowhere").exists()


def test_an_output_that_is_a_link_is_written_through(tmp_path, monkeypatch):
    """`export -o run.json`, run.json a link to a file kept elsewhere (dotfiles, a shared config), replaced the
    link by a file of its own and left the linked file as it was; `report -o` fills a linked folder's target."""
    monkeypatch.chdir(tmp_path)
    (tmp_path / "kept").mkdir()
    (tmp_path / "kept" / "run.json").write_text("old")
    (tmp_path / "run.json").symlink_to(tmp_path / "kept" / "run.json")
    r = invoke("export", "bundled-example", "129", "--to", "json", "--storage", str(EXAMPLE_DB), "-o", "run.json")
    assert r.exit_code == 0, (r.output, r.exception)
    assert (tmp_path / "run.json").is_symlink(), "the link was replaced by a file"
    assert '"schema": "moe-advisor/export"' in (tmp_path / "kept" / "run.json").read_text()
    assert sorted(p.name for p in (tmp_path / "kept").iterdir()) == ["run.json"]


def test_an_output_that_replaces_a_private_file_keeps_its_mode(tmp_path, monkeypatch):
    """`export -o run.json` over a file of mode 0600 (through a link to it, written through since the link is no
    longer replaced, or named itself) left it 0644, readable by every user of the host; a script keeps its own mode
    with execute bits added. The umask's 0644 is still what a new file gets."""
    import stat

    monkeypatch.chdir(tmp_path)
    (tmp_path / "kept").mkdir()
    for name in ("run.json", "own.json"):
        (tmp_path / "kept" / name).write_text("old")
        (tmp_path / "kept" / name).chmod(0o600)
    (tmp_path / "run.json").symlink_to(tmp_path / "kept" / "run.json")
    old = os.umask(0o022)
    try:
        for out, to in (("run.json", "json"), ("kept/own.json", "json"), ("new.json", "json"), ("kept/own.sh", "llama.cpp")):
            if to == "llama.cpp":
                (tmp_path / out).write_text("old")
                (tmp_path / out).chmod(0o600)
            r = invoke("export", "bundled-example", "129", "--to", to, "--storage", str(EXAMPLE_DB), "-o", out)
            assert r.exit_code == 0, (out, r.output, r.exception)
    finally:
        os.umask(old)
    mode = {name: stat.S_IMODE((tmp_path / name).stat().st_mode) for name in ("kept/run.json", "kept/own.json",
                                                                              "new.json", "kept/own.sh")}
    assert mode == {"kept/run.json": 0o600, "kept/own.json": 0o600, "new.json": 0o644, "kept/own.sh": 0o711}, mode
    assert (tmp_path / "run.json").is_symlink() and "moe-advisor/export" in (tmp_path / "kept/run.json").read_text()


def test_an_output_link_is_checked_where_the_write_lands(tmp_path, monkeypatch):
    """`quant-report --json out.json`, out.json a link into a place that takes no files: the check before the work
    looked at the link's own folder, so the refusal came only after the model loaded and every expert was measured."""
    from advisor.errors import UserError

    monkeypatch.chdir(tmp_path)
    (tmp_path / "out.json").symlink_to("/proc/advisor-nowhere.json")
    r = invoke("quant-report", "tiny:nosuch", "--json", "out.json")
    assert isinstance(r.exception, UserError) and "/proc does not take files" in str(r.exception), r.exception


def test_an_output_folder_that_is_a_link_into_a_missing_folder_is_refused(tmp_path, monkeypatch):
    """`report -o rep`, rep a link to nowhere/rep: the report made nowhere/ without a word and wrote there, where
    `report -o nowhere/rep` is refused (`check_parent`: the folders above an output are not made)."""
    from advisor.errors import UserError

    monkeypatch.chdir(tmp_path)
    (tmp_path / "rep").symlink_to(tmp_path / "nowhere" / "rep")
    r = invoke("report", "bundled-example", "--storage", str(EXAMPLE_DB), "-o", "rep", "--block-lengths", "")
    assert isinstance(r.exception, UserError), (r.output, r.exception)
    assert f"directory {tmp_path / 'nowhere'} does not exist" in str(r.exception), r.exception
    assert not (tmp_path / "nowhere").exists()


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
        named = "/".join(o for o in opts if not o.startswith("--") or o == long)  # aliases (--out) left out
        assert str(r.exception) == (f"{named} '=~/x': a path starting with '='"
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


def test_a_path_option_under_the_home_of_no_such_user_is_one_line(home):
    """A Path-typed option of `~nosuchuser/...` (`simulate FILE`, `trace -o`, `simulate --json`) was a RuntimeError
    traceback from `Path.expanduser`; as the shell does, it stays as typed and is refused as any missing path."""
    from advisor.errors import UserError

    for args, said in ((["simulate", "~nosuchuser9/t.npz"], "trace file '~nosuchuser9/t.npz' does not exist"),
                       (["trace", "bundled", "-o", "~nosuchuser9/t.npz"], "no user 'nosuchuser9' whose home it names"),
                       (["simulate", str(EXAMPLE_DB), "--json", "~nosuchuser9/s.json"],
                        "no user 'nosuchuser9' whose home it names")):
        r = invoke(*args)
        assert isinstance(r.exception, UserError) and said in str(r.exception), (args, r.output, r.exception)


def test_a_loop_of_links_above_an_output_is_named_a_loop_before_the_work(tmp_path, monkeypatch):
    """`ln -s loop loop`: `eval --json loop/r.json` said "loop is a link to loop, which does not exist" (it exists: it
    loops), and `profile` with ADVISOR_PROFILES_DIR=loop/p passed the check before measuring, then failed to write
    ("cannot create directory loop (File exists)") once the measuring was done."""
    from advisor.errors import UserError

    monkeypatch.chdir(tmp_path)
    (tmp_path / "loop").symlink_to("loop")
    said = "loop is a link to loop, which leads back to itself (a loop of links); give"
    r = invoke("eval", "bundled", "--json", "loop/r.json")
    assert isinstance(r.exception, UserError) and said in str(r.exception), (r.output, r.exception)
    monkeypatch.setenv("ADVISOR_PROFILES_DIR", "loop/p")
    r = invoke("profile", "--cpu", "--repeats", "1", "--name", "h")
    assert isinstance(r.exception, UserError) and said in str(r.exception), (r.output, r.exception)
    assert "measured" not in r.output, r.output


def test_an_output_that_is_a_loop_of_links_is_one_line(tmp_path, monkeypatch):
    """`ln -s loop loop`: `report -o loop` was a RuntimeError traceback ("Symlink loop", from `Path.resolve`),
    `pareto -o loop` said "cannot create directory loop (File exists)", `tune --storage loop` blamed a full disk or
    a read-only file (SQLite's "unable to open database file"), and `export -o loop` replaced the link with a file.
    Each names the loop now, before any work, and nothing is written."""
    from tests.cli_helpers import advisor_entry, one_error_line

    (tmp_path / "loop").symlink_to("loop")
    said = "cannot write loop: it is a link that leads back to itself (a loop of links); "
    for args, give in ((["report", "bundled-example", "--storage", str(EXAMPLE_DB), "-o", "loop", "--block-lengths",
                         ""], "give -o/--output another path"),
                       (["pareto", "bundled-example", "--storage", str(EXAMPLE_DB), "-o", "loop"],
                        "give -o/--output another path"),
                       (["tune", "tiny:qwen3_moe", "--storage", "loop", "--trials", "1"], "give --storage another path"),
                       (["export", "bundled-example", "129", "--to", "json", "--storage", str(EXAMPLE_DB), "-o", "loop"],
                        "give -o/--output another path")):
        one_error_line(advisor_entry(*args, cwd=tmp_path), said + give)
    assert sorted(p.name for p in tmp_path.iterdir()) == ["loop"] and (tmp_path / "loop").is_symlink()


def test_an_output_files_refusal_names_the_option_that_gave_it(tmp_path):
    """`export -o afile/x.json` (afile a file) and `export -o loop` ended "give another path" where `report -o` and
    `pareto -o` say "give -o/--output another path": every output file's refusal names its option now, before the
    work (`quant-report --json`, `eval --json`, `trace -o` alike), and nothing is written."""
    from tests.cli_helpers import advisor_entry, one_error_line

    (tmp_path / "loop").symlink_to("loop")
    (tmp_path / "afile").write_text("")
    export = ["export", "bundled-example", "129", "--to", "json", "--storage", str(EXAMPLE_DB), "-o"]
    for args, out, said in ((export, "afile/x.json", "cannot create afile/x.json: afile is not a directory; "
                                                     "give -o/--output another path"),
                            (export, "loop", "cannot write loop: it is a link that leads back to itself (a loop of "
                                             "links); give -o/--output another path"),
                            (["trace", "bundled", "-o"], "afile/t.npz", "afile is not a directory; give -o/--output "
                                                                        "another path"),
                            (["quant-report", "bundled", "--json"], "loop", "(a loop of links); give --json another "
                                                                            "path"),
                            (["eval", "bundled", "--json"], "afile/r.json", "afile is not a directory; give --json "
                                                                            "another path")):
        one_error_line(advisor_entry(*args, out, cwd=tmp_path), said)
    assert sorted(p.name for p in tmp_path.iterdir()) == ["afile", "loop"]


@pytest.mark.parametrize("resolve", ["this python", "python 3.13"])
def test_a_loop_of_links_where_the_default_report_folder_goes_is_refused_before_the_work(tmp_path, monkeypatch,
                                                                                        resolve):
    """`ln -s reports reports`, then `advisor report STUDY` (its default folder reports/STUDY, which `check_parent`
    does not look at): the loop was found by `Path.resolve` raising RuntimeError, which Python 3.13 no longer does
    (non-strict, it resolves what it can: `os.path.realpath`), so there the report was built - the model loaded,
    traced and replayed - and refused only then. It is found before `resolve` now, on any Python."""
    import pathlib

    from tests.cli_helpers import advisor_entry, one_error_line

    if resolve == "python 3.13":
        monkeypatch.setattr(pathlib.Path, "resolve", lambda self, strict=False: pathlib.Path(os.path.realpath(self)))
    (tmp_path / "reports").symlink_to("reports")
    r = advisor_entry("report", "bundled-example", "--storage", str(EXAMPLE_DB), "--block-lengths", "", cwd=tmp_path)
    one_error_line(r, "cannot create reports/bundled-example: reports is a link to reports, which leads back to "
                      "itself (a loop of links); give -o/--output another path")
    assert "loading the study's model" not in r.stdout + r.stderr, r.stdout + r.stderr
    assert sorted(p.name for p in tmp_path.iterdir()) == ["reports"]


def test_the_report_folders_own_refusals_name_the_option_as_every_output_refusal_does(tmp_path):
    """`report -o /proc/NAME` (a place that takes no directory) is refused by the report folder's own check
    (`files.check_replaceable`), whose lines said 'choose another -o' where every other output refusal says 'give
    -o/--output another path' (6bf4472): in the same words now, before the work."""
    from tests.cli_helpers import advisor_entry, one_error_line

    r = advisor_entry("report", "bundled-example", "--storage", str(EXAMPLE_DB), "-o", "/proc/advisor-report-test",
                      "--block-lengths", "", cwd=tmp_path)
    line = one_error_line(r, "cannot create /proc/advisor-report-test: /proc does not take directories (",
                          "); give -o/--output another path")
    assert "choose another" not in line and "loading the study's model" not in r.stdout + r.stderr
    assert list(tmp_path.iterdir()) == []


@pytest.mark.parametrize("storage", ["x.db/", "sqlite:///x.db/"])
def test_tune_refuses_a_storage_file_typed_with_a_trailing_slash(tmp_path, storage):
    """`tune --storage x.db/` tuned into the file x.db (SQLite drops the '/') and named `sqlite:///x.db/` in its next
    steps. A name ending in '/' names a directory: refused in one line, in the words of every output file option
    (`export -o out/`), before torch imports, and no database is made."""
    from tests.test_cli_new_user14 import _refused_light

    assert _refused_light(tmp_path, "tune", "tiny:qwen3_moe", "--storage", storage, "--trials", "1") == (
        "error: cannot write x.db/: a name ending in '/' names a directory; give a file name")
    assert list(tmp_path.iterdir()) == []


@pytest.mark.parametrize("storage", ["x.db/", "sqlite:///x.db/", "sqlite:///x.db/?mode=ro"])
@pytest.mark.parametrize("args", [["studies"], ["studies", "--delete", "bundled-example", "--yes"],
                                  ["pareto", "bundled-example"], ["recommend"],
                                  ["export", "bundled-example", "8", "--to", "json", "-o", "o.json"],
                                  ["report", "bundled-example", "--block-lengths", ""]], ids=lambda a: "-".join(a[:2]))
def test_readers_refuse_a_storage_file_typed_with_a_trailing_slash_as_tune_does(tmp_path, args, storage):
    """`studies`, `pareto`, `recommend`, `export` and `report` with `--storage x.db/` read the file x.db (Path and
    SQLite drop the '/'), where `tune` refuses the name (above). One definition now
    (`urls.refuse_directory_url`): the same line, with 'read' for 'write', exit 2, and nothing read or written.
    `studies --delete` writes, and says 'write' (it said 'read')."""
    from tests.cli_helpers import advisor_entry, one_error_line

    shutil.copy(EXAMPLE_DB, tmp_path / "x.db")
    before = (tmp_path / "x.db").read_bytes()
    r = advisor_entry(*args, "--storage", storage, cwd=tmp_path)
    verb = "write" if "--delete" in args else "read"
    assert one_error_line(r) == f"error: cannot {verb} x.db/: a name ending in '/' names a directory; give a file name"
    assert sorted(p.name for p in tmp_path.iterdir()) == ["x.db"] and (tmp_path / "x.db").read_bytes() == before


@pytest.mark.parametrize("kind", ["directory", "named pipe"])
def test_pareto_refuses_a_plot_file_it_cannot_write_before_writing_the_other(tmp_path, kind):
    """`pareto STUDY -o plots` where plots/STUDY.html is a directory (or a named pipe, refused by every atomic writer
    since 85d8aff) drew and wrote plots/STUDY.png, then refused the HTML plot: a refusal after a write, the PNG of
    a run that failed left behind. Both plot files are checked before the study is read. Either refusal ends by
    naming -o: a directory's said 'give a file name', which pareto takes none of (its plots are named after the
    study)."""
    from tests.cli_helpers import advisor_entry, one_error_line

    plots = tmp_path / "plots"
    plots.mkdir()
    html = plots / "bundled-example.html"
    html.mkdir() if kind == "directory" else os.mkfifo(html)
    said = "it is a directory" if kind == "directory" else "it is a named pipe"
    line = one_error_line(advisor_entry("pareto", "bundled-example", "--storage", str(EXAMPLE_DB), "-o", "plots",
                                        cwd=tmp_path), f"cannot write plots/bundled-example.html: {said}")
    assert line.endswith("; give -o/--output another path"), line
    assert sorted(p.name for p in plots.iterdir()) == ["bundled-example.html"]
