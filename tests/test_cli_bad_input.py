"""Bad input through the CLI a user runs: one `error:` line, exit code 2, no traceback or box, nothing
written, storage problems found before the model loads, and no password in any message. Each refusal goes
through the console entry point in this process (`advisor_entry`); what is about the process itself (usage
errors' exit code, signals, what a refusal imports, warnings on stderr) runs `advisor` as one."""

from __future__ import annotations

import hashlib
import json
import os
import shutil
import signal
import sqlite3
import stat
import subprocess
import sys
import time
from pathlib import Path

import pytest
from cli_helpers import advisor, advisor_entry, advisor_in_process, advisors_at_once, flat, one_error_line
from tune_helpers import few_problems_quick_space

PG_URL = "postgresql://bob:s3cret-pw@127.0.0.1:1/advisor"  # nothing listens on port 1


def before_model_load(r: subprocess.CompletedProcess) -> None:
    """The tune header is printed once the model has loaded: it must not be there."""
    assert "advisor tune" not in r.stdout, r.stdout


def space_refused(tmp_path: Path, text: str, *needles: str) -> None:
    """`advisor tune --space s.toml` with this space: one error line holding `needles`, before the model loads,
    nothing written."""
    (tmp_path / "s.toml").write_text(text)
    r = advisor_entry("tune", "--space", "s.toml", "--storage", str(tmp_path / "s.db"), cwd=tmp_path)
    one_error_line(r, *needles)
    before_model_load(r)
    assert not (tmp_path / "s.db").exists() and not (tmp_path / "studies").exists()


@pytest.fixture
def study_db(tmp_path) -> Path:
    """A small valid SQLite database standing for an existing study file."""
    path = tmp_path / "study.db"
    con = sqlite3.connect(path)
    con.execute("CREATE TABLE studies (study_id INTEGER PRIMARY KEY, study_name TEXT)")
    con.commit()
    con.close()
    return path


def garbled_example(tmp_path: Path, sql: str, *args: object) -> Path:
    """A copy of the example study database (tmp_path/garbled.db) with `sql` run on it, a row changed."""
    bad = tmp_path / "garbled.db"
    shutil.copy(Path(__file__).resolve().parents[1] / "studies" / "example" / "advisor.db", bad)
    with sqlite3.connect(bad) as con:
        assert con.execute(sql, args).rowcount, sql
    con.close()
    return bad


def digest(p: Path) -> str:
    return hashlib.sha256(p.read_bytes()).hexdigest()


def test_a_refusal_quoting_a_value_with_a_newline_or_an_escape_is_still_one_line(tmp_path):
    """A value typed in quotes holding a newline, a tab, a terminal escape or a right-to-left override, quoted by
    the refusal as typed (`inspect --dtype $'a\\nb'`), made the error two lines, or recoloured or reordered the
    terminal's line (CLI fuzzing, 2026-12-06): each is shown escaped, as Python writes it."""
    r = advisor_entry("inspect", "bundled", "--dtype", "a\nb", cwd=tmp_path)
    assert one_error_line(r).startswith("error: unknown dtype 'a\\nb'"), r.stderr
    db = str(Path(__file__).resolve().parents[1] / "studies" / "example" / "advisor.db")
    r = advisor_entry("recommend", "--storage", db, "--gpu", "x\ty\x1b[31m\u202e", cwd=tmp_path)
    line = one_error_line(r, "unknown GPU 'x\\ty\\x1b[31m\\u202e'")
    assert not any(c in line for c in "\t\x1b\u202e"), line


def test_click_usage_errors_are_one_line(tmp_path):
    for args, needle in ((["tune", "--trials", "x"], "--trials"), (["tune", "--bogus"], "--bogus"),
                         (["nosuch"], "nosuch"), (["pareto"], "study")):
        one_error_line(advisor(*args, cwd=tmp_path), needle, "--help")


def test_corrupt_database_before_the_model_loads(tmp_path):
    bad = tmp_path / "corrupt.db"
    bad.write_bytes(b"not a database at all " * 200)
    before = digest(bad)
    t0 = time.perf_counter()
    r = advisor_entry("tune", "--trials", "1", "--storage", str(bad), cwd=tmp_path)
    line = f"error: {bad} is not a readable advisor database (file is not a database); point --storage at the " \
           "file `advisor tune` wrote"
    assert one_error_line(r) == line + ", or a new path"
    before_model_load(r)
    assert time.perf_counter() - t0 < 60 and digest(bad) == before
    assert one_error_line(advisor_entry("report", "any", "--storage", str(bad), cwd=tmp_path)) == line  # reads only


def test_a_database_of_another_optuna_schema_fails_before_the_model_loads(tmp_path):
    """A study file whose Optuna schema another Optuna version set up (an upgrade of optuna under an old
    studies/advisor.db) passed the storage check and failed only after the model had loaded; now before, with
    Optuna's own remedy, the file untouched."""
    import optuna

    db = tmp_path / "old.db"
    optuna.create_study(study_name="old", storage=f"sqlite:///{db}")
    with sqlite3.connect(db) as con:
        con.execute("UPDATE alembic_version SET version_num = 'v2.6.0.a'")
    before = digest(db)
    r = advisor_entry("tune", "--trials", "1", "--storage", str(db), cwd=tmp_path)
    one_error_line(r, "holds study tables of another Optuna version", "optuna storage upgrade")
    before_model_load(r)
    assert digest(db) == before


def test_corrupt_database_is_one_line_in_every_reader(tmp_path):
    """studies/pareto (SQLAlchemy) and recommend/export (stdlib sqlite3) say the same line for a corrupt file."""
    bad = tmp_path / "corrupt.db"
    bad.write_bytes(b"not a database at all " * 200)
    line = f"error: {bad} is not a readable advisor database (file is not a database); point --storage at the " \
           "file `advisor tune` wrote"
    for args in (["studies"], ["pareto", "any"], ["recommend"], ["export", "any", "1", "--to", "json"]):
        assert one_error_line(advisor_entry(*args, "--storage", str(bad), cwd=tmp_path)) == line, args
    assert bad.read_bytes() == b"not a database at all " * 200


def test_a_garbled_json_value_is_one_line_in_every_reader(tmp_path):
    """A database whose stored front has one undecodable JSON value: one line from every reader, file untouched."""
    src = Path(__file__).resolve().parents[1] / "studies" / "example" / "advisor.db"
    bad = tmp_path / "garbled.db"
    shutil.copy(src, bad)
    con = sqlite3.connect(bad)
    study, trial = con.execute("SELECT study_name, trial_number FROM advisor_front LIMIT 1").fetchone()
    con.execute("UPDATE advisor_front SET hardware = 'garbage{' WHERE study_name = ? AND trial_number = ?",
                (study, trial))
    con.commit()
    con.close()
    before = digest(bad)
    for args in (["pareto", study, "--no-plots"], ["recommend"], ["export", study, str(trial), "--to", "json"]):
        line = one_error_line(advisor_entry(*args, "--storage", str(bad), cwd=tmp_path))
        assert f"{bad} holds rows of" in line and "they are damaged; delete the study with" in line, (args, line)
    assert digest(bad) == before


@pytest.mark.parametrize(("column", "value"), [("\"values\"", "null"), ("config", "[1, 2]"),
                                               ("\"values\"", '{"accuracy": "high"}')])
def test_a_stored_json_value_of_the_wrong_type_is_one_line_in_every_reader(tmp_path, column, value):
    """Valid JSON of the wrong type in a stored front row (values null, config a list, a value a string) was a
    TypeError/AttributeError traceback in recommend, export and pareto."""
    src = Path(__file__).resolve().parents[1] / "studies" / "example" / "advisor.db"
    bad = tmp_path / "garbled.db"
    shutil.copy(src, bad)
    con = sqlite3.connect(bad)
    study, trial = con.execute("SELECT study_name, trial_number FROM advisor_front LIMIT 1").fetchone()
    con.execute(f"UPDATE advisor_front SET {column} = ? WHERE study_name = ? AND trial_number = ?",
                (value, study, trial))
    con.commit()
    con.close()
    for args in (["pareto", study, "--no-plots"], ["recommend"], ["export", study, str(trial), "--to", "json"]):
        line = one_error_line(advisor_entry(*args, "--storage", str(bad), cwd=tmp_path))
        assert f"{bad} holds rows of" in line and "they are damaged; delete the study with" in line, (args, line)


@pytest.mark.parametrize(("column", "value"), [("objectives", '"x"'), ("budget_bytes", "lots"), ("created_at", 12)])
def test_a_stored_study_row_of_the_wrong_type_is_one_line(tmp_path, column, value):
    """A garbled `advisor_study` row (SQLite keeps any value in any column): `advisor studies` printed a
    ValueError/TypeError traceback; pareto named objectives that are not an object by dict()'s own message."""
    bad = garbled_example(tmp_path, f"UPDATE advisor_study SET {column} = ?", value)
    for args in (["studies"], ["pareto", "bundled-example", "--no-plots"]):
        line = one_error_line(advisor_entry(*args, "--storage", str(bad), cwd=tmp_path))
        assert f"{bad} holds rows of" in line and "dictionary update" not in line, (args, line)
        assert "delete the study with `advisor studies --delete" in line, line


_TRIAL_0 = "trial_id = (SELECT trial_id FROM trials WHERE number = 0)"


@pytest.mark.parametrize(("table", "column", "where", "value"), [
    ("trial_user_attributes", "value_json", "key = 'values'", "1.5"),
    ("trial_user_attributes", "value_json", "key = 'config'", "garbage{"),
    ("trial_user_attributes", "value_json", "1", "NaN"),
    ("trial_user_attributes", "value_json", "1", None),  # SQLite keeps NULL (any value) in any column
    ("trial_values", "value", "1", None),
    ("trial_system_attributes", "value_json", "key = 'constraints'", '["x"]'),
    ("study_system_attributes", "value_json", "key = 'study:metric_names'", "[1, 2]")])
def test_a_garbled_trial_off_the_front_is_one_line(tmp_path, table, column, where, value):
    """`export STUDY N` of a trial off the front reads its Optuna attributes: a garbled one (a value that is not
    JSON, a number where an object belongs) printed a JSONDecodeError/TypeError traceback (fuzzing, 2026-12-06),
    where a garbled front row was already this one line. Nothing is written. Metric names that are not names
    were a traceback past the reader (sorting them); the reader checks what it decoded now (`_check_shapes`)."""
    trial = "" if table.startswith("study") else f" AND {_TRIAL_0}"  # trial 0: complete and off the stored front
    bad = garbled_example(tmp_path, f"UPDATE {table} SET {column} = ? WHERE {where}{trial}", value)
    for url in (str(bad), f"sqlite+pysqlite:///{bad}"):  # stdlib sqlite3 and SQLAlchemy readers
        r = advisor_entry("export", "bundled-example", "0", "--to", "json", "-o", "x.json", "--storage", url,
                          cwd=tmp_path)
        line = one_error_line(r)
        assert "garbled.db holds rows of study 'bundled-example' that cannot be decoded" in line, line
        assert not (tmp_path / "x.json").exists()


@pytest.mark.parametrize("garble", ["UPDATE trial_params SET param_value = 1e308",
                                    "UPDATE trial_values SET objective = objective + 7",
                                    "UPDATE trial_params SET param_value = NULL",  # Optuna's TypeError
                                    "UPDATE trial_params SET distribution_json = '{\"name\": "
                                    "\"CategoricalDistribution\"}'"])  # and KeyError
def test_a_garbled_optuna_row_is_one_line_in_report(tmp_path, garble):
    """Optuna's own tables garbled (a categorical parameter's index past its choices, a value of an objective
    the study lacks, a value or distribution it cannot decode): `advisor report` printed Optuna's IndexError
    traceback (CLI fuzzing, 2026-12-06); now its one 'not a readable Optuna study database' line, before any
    work, nothing written."""
    bad = garbled_example(tmp_path, garble)
    r = advisor_entry("report", "bundled-example", "--storage", str(bad), "-o", "rep", cwd=tmp_path)
    line = one_error_line(r, "garbled.db holds rows of study 'bundled-example' that cannot be decoded",
                          "delete the study with `advisor studies --delete bundled-example`")
    assert "IndexError" not in line and not (tmp_path / "rep").exists(), line


@pytest.mark.parametrize(("args", "module", "name"), [
    (["report", "bundled-example", "-o", "rep"], "advisor.report.data", "engine_kwargs"),
    (["export", "bundled-example", "0", "--to", "json", "-o", "x.json"], "advisor.results.trials", "trial_point")],
    ids=["report", "export"])
def test_a_bug_of_our_own_in_a_reader_is_not_called_a_corrupt_database(tmp_path, monkeypatch, args, module, name):
    """The readers of Optuna's tables caught TypeError (and report's IndexError, KeyError) around all their work,
    for garbled rows: a TypeError of the advisor's own code there (here one made to fail) was 'not a readable
    database', exit 2, sending the user to a database that is fine. Only what decodes stored values is caught now
    (Optuna's decoding of its rows; `trials._decoded`, `_check_shapes`): the bug is a traceback, as any other."""
    import importlib

    def broken(*_a, **_k):
        raise TypeError("a bug of our own")

    monkeypatch.setattr(importlib.import_module(module), name, broken)
    shutil.copy(Path(__file__).resolve().parents[1] / "studies" / "example" / "advisor.db", tmp_path / "ok.db")
    r = advisor_entry(*args, "--storage", "ok.db", cwd=tmp_path)
    assert r.returncode == 1 and "TypeError: a bug of our own" in r.stderr, r.stderr
    assert "not a readable" not in r.stderr, r.stderr


def test_tune_resuming_a_study_with_a_garbled_optuna_row_is_one_line(tmp_path):
    """`advisor tune --study S` on a database whose Optuna rows for S are garbled (a categorical parameter's index
    past its choices) printed Optuna's IndexError traceback (CLI fuzzing, 2026-12-06); now one line naming the
    study and the remedy, and the file is not written."""
    bad = garbled_example(tmp_path, "UPDATE trial_params SET param_value = 1e308")
    before = digest(bad)
    space = Path(__file__).resolve().parents[1] / "studies" / "example" / "space.toml"  # its own settings (README)
    r = advisor_entry("tune", "--space", str(space), "--budgets", "10%,25%,50%", "--trials", "1", "--sampler",
                      "random", "--resident", "--study", "bundled-example", "--storage", str(bad), cwd=tmp_path)
    one_error_line(r, "cannot resume study 'bundled-example': a stored trial cannot be read",
                   "`advisor studies --delete bundled-example` with the same --storage")
    assert digest(bad) == before


_UNDECODABLE = ["UPDATE trials SET state = 'BOGUS'",  # enum names Optuna has no member for: LookupError
                 "UPDATE study_directions SET direction = 'BOGUS'",
                 "UPDATE trial_values SET value_type = 'BOGUS'",
                 "UPDATE trial_values SET value = NULL",  # a FINITE value: Optuna's AssertionError
                 "UPDATE trial_values SET value = 'abc'",  # text in the float column: ValueError past Optuna
                 "UPDATE study_system_attributes SET value_json = '5' WHERE key = 'study:metric_names'"]  # TypeError


@pytest.mark.parametrize("garble", _UNDECODABLE, ids=["state", "direction", "value_type", "null", "text", "names"])
def test_an_optuna_row_optuna_cannot_decode_is_one_line_in_report_export_and_tune(tmp_path, garble):
    """Optuna's tables garbled where Optuna decodes or we read what it decoded (an unknown state, direction or
    value type, a NULL or text objective value, metric names '5'): `report` and resuming `tune` printed a
    LookupError/AssertionError/ValueError/TypeError traceback, and `export` of a trial off the front called a
    trial of an unknown state 'bogus, not complete' or exported it; now each is its one unreadable-database
    line, nothing written. An unknown enum name is said as export says it, not as SQLAlchemy lists the members."""
    bad = garbled_example(tmp_path, garble)
    before = digest(bad)
    r = advisor_entry("report", "bundled-example", "--storage", str(bad), "-o", "rep", cwd=tmp_path)
    enum = ("is not one Optuna writes",) if "BOGUS" in garble else ()  # as export says, not SQLAlchemy's member list
    one_error_line(r, "garbled.db holds rows of", "that cannot be decoded", "advisor studies --delete", *enum)
    r = advisor_entry("export", "bundled-example", "0", "--to", "json", "-o", "x.json", "--storage", str(bad),
                      cwd=tmp_path)
    one_error_line(r, "garbled.db holds rows of study 'bundled-example' that cannot be decoded",
                   "`advisor studies --delete bundled-example` and the same --storage, or give a new --storage")
    space = Path(__file__).resolve().parents[1] / "studies" / "example" / "space.toml"
    r = advisor_entry("tune", "--space", str(space), "--budgets", "10%,25%,50%", "--trials", "1", "--sampler",
                      "random", "--resident", "--study", "bundled-example", "--storage", str(bad), cwd=tmp_path)
    one_error_line(r, "cannot resume study 'bundled-example': a stored trial cannot be read")
    assert digest(bad) == before and not (tmp_path / "rep").exists() and not (tmp_path / "x.json").exists()


@pytest.mark.parametrize("garble", [*_UNDECODABLE[:2], "UPDATE trials SET datetime_start = 'garbage'",
                                    "UPDATE trials SET datetime_start = 5"],
                         ids=["state", "direction", "start-text", "start-number"])
def test_deleting_a_study_optuna_cannot_decode_deletes_it(tmp_path, garble):
    """`studies --delete` of a study whose rows Optuna's ORM cannot decode as it deletes them (an unknown state
    or direction name; a start time that is no date, or a number: ValueError, TypeError) printed a traceback,
    then an unreadable-database line with its front deleted and its Optuna trials kept: a study no command could
    read nor delete, listed with 0 finished trials. Its rows are deleted as plain SQL now: the study is gone, the
    eval cache kept."""
    garbled_example(tmp_path, garble)
    r = advisor_entry("studies", "--delete", "bundled-example", "--yes", "--storage", "garbled.db", cwd=tmp_path)
    trials = "0 finished trials, 300 unreadable" if "state" in garble else "300 finished trials"  # not 300 and 300
    assert r.returncode == 0 and flat(r.stdout).startswith(f"deleted study 'bundled-example' (bundled, toy: {trials}"), \
        r.stdout + r.stderr
    r = advisor_entry("studies", "--storage", "garbled.db", cwd=tmp_path)
    assert (r.returncode, r.stdout) == (0, "no studies in garbled.db; run `advisor tune` first\n"), r.stdout + r.stderr
    with sqlite3.connect(tmp_path / "garbled.db") as con:
        tables = [t for (t,) in con.execute("SELECT name FROM sqlite_master WHERE type = 'table'")]
        left = {t: n for t in tables if (n := con.execute(f"SELECT COUNT(*) FROM {t}").fetchone()[0])}
    con.close()
    assert set(left) == {"version_info", "alembic_version", "advisor_eval_cache"}, left


def test_input_nested_past_the_parsers_stack_is_each_readers_one_line(tmp_path):
    """JSON or TOML nested deeper than Python's parsers recurse (a RecursionError, which every reader's
    JSONDecodeError/TOMLDecodeError catch let through): a GSM8K data file, HumanEval completions, a hardware
    profile and a search space each printed a traceback (CLI fuzzing, 2026-12-06); now each reader's own line,
    naming the file, and nothing written."""
    deep = "[" * 100_000 + "]" * 100_000
    (tmp_path / "deep.jsonl").write_text(deep + "\n")
    (tmp_path / "deep.toml").write_text("a = " + deep + "\n")
    (tmp_path / "profiles").mkdir()
    (tmp_path / "profiles" / "deep.json").write_text(deep)
    cases = [(["tune", "--task", "gsm8k", "--data", "deep.jsonl", "--storage", "t.db"],
              "deep.jsonl:1: not valid JSON (nested too deeply); expected one GSM8K"),
             (["eval", "--completions", "deep.jsonl", "-t", "humaneval", "--json", "e.json"],
              "deep.jsonl:1: not valid JSON (nested too deeply); expected one completions"),
             (["tune", "--space", "deep.toml", "--storage", "t.db"], "deep.toml:1:1: malformed TOML: nested too deeply")]
    for args, needle in cases:
        one_error_line(advisor_entry(*args, cwd=tmp_path), needle)
    r = advisor_entry("profile", "--list", "--profiles-dir", "profiles", cwd=tmp_path)  # lists the rest, names it
    assert r.returncode == 0 and "hardware profile profiles/deep.json is not valid JSON (nested too deeply" in flat(
        r.stderr), r.stderr
    assert sorted(p.name for p in tmp_path.iterdir()) == ["deep.jsonl", "deep.toml", "profiles"]


def test_an_output_that_is_a_device_or_a_pipe_is_refused_and_left_as_it_was(tmp_path):
    """`export -o /dev/null` (as root) or `-o FIFO`: the temporary file renamed onto the path replaced the device
    node or the pipe with a regular file holding the export - CLI fuzzing replaced this host's /dev/full so,
    2026-12-06. Now one line, the node as it was; a node made here stands for /dev's."""
    db = str(Path(__file__).resolve().parents[1] / "studies" / "example" / "advisor.db")
    os.mkfifo(tmp_path / "fifo")
    nodes = {"fifo": ("a named pipe", stat.S_ISFIFO)}
    if os.geteuid() == 0:  # only root makes device nodes
        os.mknod(tmp_path / "null", 0o666 | stat.S_IFCHR, os.makedev(1, 3))
        nodes["null"] = ("a character device", stat.S_ISCHR)
    for name, (kind, is_kind) in nodes.items():
        for args, option in ((["export", "bundled-example", "8", "--to", "json", "--storage", db, "-o", name],
                              "-o/--output"),
                             (["quant-report", "bundled", "--max-experts", "1", "--layers", "0", "--json", name],
                              "--json")):
            r = advisor_entry(*args, cwd=tmp_path)  # the option named, as every output refusal names it (927f376)
            one_error_line(r, f"cannot write {name}: it is {kind}", f"; give {option} another path")
            assert is_kind(os.lstat(tmp_path / name).st_mode), (name, args)


def test_an_integer_past_pythons_digit_limit_is_each_readers_one_line(tmp_path):
    """A JSON or TOML integer of more digits than Python converts (4300: a plain ValueError from int(), which a
    JSONDecodeError/TOMLDecodeError catch let through) in a --precision file, a search space or a data line
    printed a traceback (CLI fuzzing, 2026-12-06); now each reader's own line, with where the number is."""
    digits = "1" + "0" * 5000
    (tmp_path / "plan.json").write_text('{"default": "int8", "note": ' + digits + "}")
    (tmp_path / "s.toml").write_text(f'name = "x"\n[precision]\nformats = ["int8"]\ngroups = {digits}\n')
    (tmp_path / "d.jsonl").write_text('{"question": "q", "answer": "#### 2", "n": ' + digits + "}\n")
    said = "an integer of 5001 digits, more than the 4300 a number may have"
    for args, needle in ((["eval", "-n", "1", "-p", "plan.json", "--json", "e.json"], "bad precision plan 'plan.json'"),
                         (["tune", "--space", "s.toml", "--storage", "t.db"], "s.toml:4:10: malformed TOML"),
                         (["tune", "--task", "gsm8k", "--data", "d.jsonl", "--storage", "t.db"], "d.jsonl:1")):
        one_error_line(advisor_entry(*args, cwd=tmp_path), needle, said)
    assert sorted(p.name for p in tmp_path.iterdir()) == ["d.jsonl", "plan.json", "s.toml"]


def test_a_data_line_of_megabytes_is_refused_before_it_is_tokenized(tmp_path):
    """A --data line of hundreds of MB (a file that lost its line breaks, or no task file) was read, tokenized and
    run: a 300 MB GSM8K question took the host to 23.7 GB and the kernel's OOM killer. A line past 1 MiB (task
    records are a few KiB) is now one line naming file:line, before any model loads; HumanEval's reader shares it."""
    question = "How many apples? " * 70_000  # 1.1 MiB
    (tmp_path / "g.jsonl").write_text(json.dumps({"question": question, "answer": "#### 2"}) + "\n")
    (tmp_path / "h.jsonl").write_text(json.dumps({"task_id": "t/0", "prompt": question, "test": "", "entry_point": "f"})
                                      + "\n")
    for task, name in (("gsm8k", "g.jsonl"), ("humaneval", "h.jsonl")):
        one_error_line(advisor_entry("eval", "--task", task, "--data", name, "--limit", "1", cwd=tmp_path),
                       f"{name}:1: a line longer than 1.0 MiB", "check the file")


def test_a_data_file_without_line_breaks_is_refused_having_read_one_record(tmp_path):
    """The 1 MiB limit was checked on a line read whole: a file of GBs without a newline took twice its size in
    RAM before it was refused (1 GiB: 2.1 GB peak, 16 s). At most a record and its line end are read now. A record
    of 1 MiB is counted without its line end, CRLF included (it was refused as 'a line of 1.0 MiB ... at most 1.0 MiB
    is read')."""
    import tracemalloc

    from advisor.errors import UserError
    from advisor.eval import gsm8k

    big = tmp_path / "big.jsonl"
    with big.open("wb") as fh:
        fh.truncate(64 << 20)  # sparse: 64 MiB of zero bytes, no newline
    tracemalloc.start()
    try:
        with pytest.raises(UserError, match=r"big\.jsonl:1: a line "):
            gsm8k.read_jsonl(big)
        peak = tracemalloc.get_traced_memory()[1]
    finally:
        tracemalloc.stop()
    assert peak < 8 << 20, peak
    record = json.dumps({"question": "", "answer": "#### 2"})
    record = record.replace('""', json.dumps("x" * ((1 << 20) - len(record))))
    (tmp_path / "crlf.jsonl").write_bytes(f"{record}\r\n".encode())
    assert len(record) == 1 << 20 and len(gsm8k.read_jsonl(tmp_path / "crlf.jsonl")) == 1


def test_a_study_name_that_is_not_utf8_is_not_blamed_on_the_database(tmp_path):
    """A study name typed in a terminal of another encoding (bytes Python keeps as lone surrogates): pareto,
    recommend --study and export said the database was "not a readable advisor database" (the driver could not
    encode the name) and told the user to point --storage at another file; it is the name."""
    db = str(Path(__file__).resolve().parents[1] / "studies" / "example" / "advisor.db")
    for args in ([b"pareto", b"caf\xe9", b"--no-plots"], [b"recommend", b"--study", b"caf\xe9"],
                 [b"export", b"caf\xe9", b"1", b"--to", b"json"]):
        r = subprocess.run([sys.executable, "-m", "advisor", *args, b"--storage", db.encode()], cwd=tmp_path,
                           capture_output=True, text=True, timeout=120)
        line = one_error_line(r, "'caf\\udce9' holds bytes that are not UTF-8 text", "give the name in UTF-8")
        assert "not a readable advisor database" not in line, line


def test_a_foreign_trials_table_is_one_error_in_either_trial_reader(tmp_path):
    """`export STUDY N` of a trial off the front reads Optuna's tables with stdlib sqlite3 for a sqlite:/// URL
    and with SQLAlchemy otherwise: a `trials` table not Optuna's is the same clear error in both (the
    SQLAlchemy reader let a raw OperationalError through)."""
    from advisor.errors import UserError
    from advisor.results.trials import read_trial

    db = tmp_path / "foreign.db"
    with sqlite3.connect(db) as con:
        con.execute("CREATE TABLE trials (x INTEGER)")
    for url in (f"sqlite:///{db}", f"sqlite+pysqlite:///{db}"):
        with pytest.raises(UserError, match=r"foreign\.db is another program's database \(tables trials\), not an "
                                             "advisor study database"):
            read_trial(url, "any", 0)


def test_report_on_a_database_no_study_was_tuned_into_names_the_study(tmp_path):
    """A database without Optuna's tables (an empty PostgreSQL database, a SQLite file of other tables): `report`
    said "storage error: An exception is raised during the commit ..."; now as `pareto` does: a SQLite file of
    another program's tables is named as such (3a47bcd)."""
    db = tmp_path / "other.db"
    with sqlite3.connect(db) as con:
        con.execute("CREATE TABLE notes (x INTEGER)")
    r = advisor_entry("report", "mine", "--storage", str(db), "-o", str(tmp_path / "r"), cwd=tmp_path)
    one_error_line(r, "other.db is another program's database (tables notes), not an advisor study database",
                   "give --storage the file `advisor tune` wrote")
    assert not (tmp_path / "r").exists()


def test_read_only_database_refused_before_the_model_loads(tmp_path, study_db):
    before = digest(study_db)
    r = advisor_entry("tune", "--storage", f"sqlite:///file:{study_db}?mode=ro&uri=true", cwd=tmp_path)
    one_error_line(r, "read-only")
    before_model_load(r)
    assert digest(study_db) == before


def test_storage_in_a_directory_that_takes_no_new_file_is_refused_at_once(tmp_path):
    """`--storage sqlite:////proc/x.db`: `os.access` says /proc is writable to root, so the tune went on, could
    not create the study file's seeding lock and waited for it without end, saying another process held it (CLI
    fuzzing, 2026-12-06); now one line at once."""
    if not Path("/proc").is_dir():
        pytest.skip("no /proc")
    r = advisor("tune", "--trials", "1", "--storage", "sqlite:////proc/advisor-x.db", cwd=tmp_path,
                timeout=60)  # (a subprocess: the wait it replaced had no end)
    one_error_line(r, "cannot create /proc/advisor-x.db: /proc is not a writable directory")
    before_model_load(r)


def test_storage_that_is_a_device_or_pipe_is_not_called_a_directory(tmp_path):
    """`tune --storage /dev/null` (or a FIFO) said "is a directory, not a database file; give a file path such
    as /dev/null/advisor.db" (CLI fuzzing, 2026-12-06): what it is, and a path that can work."""
    os.mkfifo(tmp_path / "fifo")
    for storage, kind in (("/dev/null", "a character device"), (str(tmp_path / "fifo"), "a named pipe")):
        r = advisor_entry("tune", "--trials", "1", "--storage", storage, cwd=tmp_path)
        line = one_error_line(r, f"--storage {storage} is not a regular file ({kind})")
        assert "directory" not in line and "studies/advisor.db" in line, line
        before_model_load(r)


def test_read_only_mount_refused_before_the_model_loads(tmp_path, study_db):
    """A database on a read-only file system (a bind mount remounted read-only, as root in a namespace)."""
    if shutil.which("unshare") is None:
        pytest.skip("no unshare")
    ro = tmp_path / "ro"
    ro.mkdir()
    probe = subprocess.run(["unshare", "-m", "sh", "-c", f"mount --bind {tmp_path} {ro} && "
                            f"mount -o remount,bind,ro {ro} && touch {ro}/x"], capture_output=True, text=True)
    if "Read-only file system" not in probe.stderr:
        pytest.skip(f"cannot make a read-only mount here: {probe.stderr.strip()[:80]}")
    code = f"cd {tmp_path} && exec {sys.executable} -m advisor tune --storage {ro}/study.db"
    r = subprocess.run(["unshare", "-m", "sh", "-c", f"mount --bind {tmp_path} {ro} && "
                        f"mount -o remount,bind,ro {ro} && {code}"], capture_output=True, text=True, timeout=300)
    one_error_line(r, "read-only")
    before_model_load(r)


def test_unwritable_place_and_bad_url_before_the_model_loads(tmp_path):
    (tmp_path / "afile").write_text("x")
    r = advisor_entry("tune", "--storage", str(tmp_path / "afile" / "advisor.db"), cwd=tmp_path)
    one_error_line(r, f"{tmp_path / 'afile'} is not a directory; give --storage another path")  # `check_parent`'s words
    before_model_load(r)
    r = advisor_entry("tune", "--storage", "nosuchdb://host/x", cwd=tmp_path)
    one_error_line(r, "nosuchdb")
    before_model_load(r)
    assert not (tmp_path / "studies").exists()


def test_open_storage_on_an_unreachable_server_masks_the_password():
    """The tune checks storage first (`preflight`), but a server that stops answering after the check reaches
    `open_storage`'s own messages: they hide the password too."""
    from advisor.errors import UserError
    from advisor.results.storage import open_storage
    from advisor.results.urls import normalize_url

    with pytest.raises(UserError, match=r"cannot connect to storage .*bob:\*\*\*@127\.0\.0\.1") as e:
        open_storage(normalize_url(PG_URL), heartbeat_interval=None)
    assert "s3cret" not in str(e.value)


def test_unreachable_postgresql_masks_the_password(tmp_path):
    r = advisor_entry("tune", "--storage", PG_URL, cwd=tmp_path)
    one_error_line(r, "cannot connect", "bob:***@127.0.0.1")
    before_model_load(r)
    for args in (["studies"], ["pareto", "s"], ["report", "s"], ["recommend", "--budget", "1GiB"],
                 ["export", "s", "1", "--to", "json"]):
        r = advisor_entry(*args, "--storage", PG_URL, cwd=tmp_path)
        assert r.returncode == 2 and "s3cret" not in r.stdout + r.stderr, (args, r.stderr)
        one_error_line(r)


def test_a_password_with_an_unencoded_at_sign_is_named_not_shown(tmp_path):
    """`postgresql://bob:s3cret@pw@host/db`: the driver took "pw@127.0.0.1" for the host and printed it (part of
    the password, past the *** mask); now one line says to URL-encode it, before anything connects."""
    for args in (["tune", "--trials", "1"], ["studies"], ["recommend"]):
        r = advisor_entry(*args, "--storage", "postgresql://bob:s3cret@pw@127.0.0.1:1/advisor", cwd=tmp_path)
        line = one_error_line(r, "user 'bob'", "more than one '@'", "URL-encoded, '@' as %40")
        assert "s3cret" not in r.stdout + r.stderr and "pw@" not in line, line
        before_model_load(r)


def test_postgresql_server_that_never_answers_is_one_line_in_every_reader(tmp_path):
    """A port that accepts connections but never speaks (a hung server, a proxy): every reader gives up after
    the connect timeout with one line (they hung until the OS gave up, minutes)."""
    import socket

    with socket.socket() as silent:
        silent.bind(("127.0.0.1", 0))
        silent.listen(16)  # the kernel completes the handshake; nothing ever answers
        url = f"postgresql://bob:s3cret-pw@127.0.0.1:{silent.getsockname()[1]}/advisor"
        readers = (["studies"], ["pareto", "s"], ["recommend", "--budget", "1GiB"], ["export", "s", "1", "--to", "json"])
        for r in advisors_at_once([[*args, "--storage", url] for args in readers], cwd=tmp_path, timeout=40):
            one_error_line(r, "bob:***@127.0.0.1", "timeout expired", "check the URL and that the server runs")


@pytest.mark.postgres
def test_report_gives_up_on_a_server_that_goes_silent_after_the_look_at_its_tables(tmp_path):
    """`advisor report` opened Optuna's storage with an engine of its own, without the connect timeout every
    other reader has: a server that went silent after the look at its tables held the report for
    ADVISOR_PG_WAIT_S (300 s). Now that connection also gives up after the connect timeout, with one line."""
    import socket
    import threading

    base = os.environ.get("ADVISOR_TEST_POSTGRES_URL")
    if not base:
        pytest.skip("ADVISOR_TEST_POSTGRES_URL is not set (source .ci/start_postgres.sh to start a local server)")
    import optuna
    from sqlalchemy.engine import make_url

    from advisor.results.urls import normalize_url

    optuna.storages.RDBStorage(normalize_url(base)).engine.dispose()  # the study tables exist, as after any tune
    real = make_url(base)
    held: list[socket.socket] = []
    looked = threading.Event()  # the tables were looked at: connections from then on never hear back

    def relay(a: socket.socket, b: socket.socket) -> None:
        try:
            while data := a.recv(65536):
                if b"version_info" in data:
                    looked.set()
                b.sendall(data)
        except OSError:
            pass

    def serve(ls: socket.socket) -> None:
        while True:
            try:
                down, _ = ls.accept()
            except OSError:
                return
            held.append(down)
            if not looked.is_set():
                up = socket.create_connection((real.host or "127.0.0.1", real.port or 5432))
                held.append(up)
                for a, b in ((down, up), (up, down)):
                    threading.Thread(target=relay, args=(a, b), daemon=True).start()

    with socket.socket() as ls:
        ls.bind(("127.0.0.1", 0))
        ls.listen(16)
        threading.Thread(target=serve, args=(ls,), daemon=True).start()
        via = real.set(host="127.0.0.1", port=ls.getsockname()[1]).render_as_string(hide_password=False)
        t0 = time.monotonic()
        r = advisor_entry("report", "no-such-study", "--storage", via, "--out", str(tmp_path / "r"),
                    cwd=tmp_path)
        one_error_line(r, "timeout expired")
        assert time.monotonic() - t0 < 20
        for s in held:
            s.close()


@pytest.mark.postgres
def test_postgresql_database_the_user_cannot_create_tables_in_is_refused_before_the_model_loads(tmp_path):
    """A database where the study tables cannot be created (here: no schema on the search path; the README's
    first recipe gave a user without CREATE on `public`) is one line before the model loads, not Optuna's
    ProgrammingError after it."""
    base = os.environ.get("ADVISOR_TEST_POSTGRES_URL")
    if not base:
        pytest.skip("ADVISOR_TEST_POSTGRES_URL is not set (source .ci/start_postgres.sh to start a local server)")
    r = advisor_entry("tune", "--trials", "1", "--storage", f"{base}?options=-csearch_path%3Dno_such_schema", cwd=tmp_path)
    one_error_line(r, "has no schema on user", "search_path")
    before_model_load(r)

def test_a_postgresql_url_without_a_database_says_the_server_took_the_user_name(tmp_path, monkeypatch):
    """`--storage postgresql://advisor@127.0.0.1:5433/` (no database name) said libpq's 'database "advisor" does not
    exist; check the URL and that the server runs': a database the user never named. The line says PostgreSQL took
    the user name for it, for a reader and for tune (before the model loads); a named database that is missing
    keeps the plain hint, as does one named in the URL's query (?dbname=...)."""
    base = os.environ.get("ADVISOR_TEST_POSTGRES_URL")
    if not base:
        pytest.skip("ADVISOR_TEST_POSTGRES_URL is not set (source .ci/start_postgres.sh to start a local server)")
    from sqlalchemy.engine import make_url

    monkeypatch.delenv("PGDATABASE", raising=False)
    url = make_url(base)
    if url.username in (None, url.database):
        pytest.skip("the test server's user has a database of its own name")
    bare = url._replace(database=None).render_as_string(hide_password=False)  # (set() keeps a None)
    said = (f"database \"{url.username}\" does not exist); the URL names no database, so PostgreSQL took the user name "
            f"('{url.username}') as the database's name: end the URL with the database to use (.../DBNAME)")
    one_error_line(advisor_entry("studies", "--storage", f"{bare}/", cwd=tmp_path), said)
    r = advisor_entry("tune", "--trials", "1", "--storage", bare, cwd=tmp_path)
    one_error_line(r, said.replace(");", ";"))
    before_model_load(r)
    line = one_error_line(advisor_entry("studies", "--storage", f"{bare}/no_such_db", cwd=tmp_path), "no_such_db")
    assert line.endswith("check the URL and that the server runs"), line
    line = one_error_line(advisor_entry("studies", "--storage", f"{bare}/?dbname=no_such_db", cwd=tmp_path),
                          "no_such_db")  # named in the query (libpq's own parameter): said "names no database"
    assert line.endswith("check the URL and that the server runs"), line


@pytest.mark.parametrize("name", ["a b", "-x", "x/y", "x" * 101, "x;rm"])
def test_bad_study_names(tmp_path, name):
    r = advisor_entry("tune", "--study", name, cwd=tmp_path)
    one_error_line(r, "--study")
    before_model_load(r)


def test_space_fraction_of_model_above_one(tmp_path):
    space = tmp_path / "s.toml"
    space.write_text('name = "s"\n[precision]\nformats = ["int8"]\n[budget]\nfraction_of_model = 7.5\n')
    one_error_line(advisor_entry("tune", "--space", str(space), cwd=tmp_path), "s.toml:5", "fraction_of_model")


def test_non_utf8_task_data(tmp_path):
    data = tmp_path / "bad.jsonl"
    data.write_bytes(b'{"question": "1+1", "answer": "#### 2"}\n{"question": "caf\xe9", "answer": "#### 1"}\n')
    for args in (["tune", "--task", "gsm8k"], ["eval", "--task", "gsm8k"]):
        r = advisor_entry(*args, "--data", str(data), cwd=tmp_path)
        one_error_line(r, "bad.jsonl:2", "UTF-8")
    assert not (tmp_path / "studies").exists()


def test_a_byte_order_mark_before_task_data_or_a_space_is_no_error(tmp_path):
    """A UTF-8 file saved by a Windows editor starts with a BOM: a GSM8K --data file was refused with "not valid
    JSON (Unexpected UTF-8 BOM (decode using utf-8-sig))", advice for a programmer, and a space file with
    "malformed TOML: Invalid statement" at 1:1, hiding its real error. A precision plan file already read it."""
    data = tmp_path / "bom.jsonl"
    data.write_bytes(b'\xef\xbb\xbf{"question": "1+1", "answer": "#### 2"}\r\n')
    r = advisor_entry("eval", "--task", "gsm8k", "--data", str(data), "--limit", "1", "--max-new-tokens", "2",
                "--no-progress", cwd=tmp_path)
    assert r.returncode == 0 and "accuracy:" in r.stdout and "n=1" in r.stdout, r.stdout + r.stderr
    space_refused(tmp_path, '\ufeffname = "s"\n[precision]\nformats = ["int8"]\n[cache]\npolicies = []\n',
                  "s.toml:5", "cache.policies: must be a non-empty list")


def test_space_values_checked_against_the_model(tmp_path):
    space = tmp_path / "s.toml"
    space.write_text('name = "s"\n[precision]\nformats = ["int8"]\n[cache]\nslots_per_layer = { low = 1, high = 999 }\n')
    r = advisor_entry("tune", "--space", str(space), "--storage", str(tmp_path / "s.db"), cwd=tmp_path)
    one_error_line(r, "s.toml:5", "999", "64 experts per layer")
    assert not (tmp_path / "s.db").exists()
    space.write_text('name = "s"\n[precision]\nformats = ["int8"]\ngroups = 9\n')  # the bundled model has 4 layers
    r = advisor_entry("tune", "--space", str(space), "--storage", str(tmp_path / "s.db"), cwd=tmp_path)
    one_error_line(r, "s.toml:4", "precision.groups: 9", "4 MoE layers", "at most 4")
    assert not (tmp_path / "s.db").exists()


@pytest.mark.parametrize("cache, words", [
    ('slots_per_layer = ["all"]', ("cache.slots_per_layer", "integer >= 1", 'high = "all"')),
    ('slots_per_layer = [4, "all"]', ("cache.slots_per_layer", "integer >= 1", 'high = "all"')),
    ('slots_per_layer = "all"', ("cache.slots_per_layer", "integer >= 1", 'high = "all"')),
    ('expert_budget = ["all"]', ("cache.expert_budget", "integer >= 1", 'high = "all"')),
])
def test_space_values_that_would_crash_later_are_refused_on_load(tmp_path, cache, words):
    """Values the space grammar does not allow fail on load, naming the field and what it takes."""
    space_refused(tmp_path, f'name = "s"\n[precision]\nformats = ["int8"]\n[cache]\n{cache}\n', "s.toml:5", *words)


def test_float_range_without_step_is_refused_on_load(tmp_path):
    space_refused(tmp_path, 'name = "s"\n[precision]\nformats = ["int8"]\n[precision.hot_cold]\n'
                            'hot_fraction = { low = 0.0, high = 0.5 }\n', "s.toml:5", "precision.hot_cold.hot_fraction", "step")


def test_a_range_that_its_step_does_not_divide_is_refused_on_load(tmp_path):
    """{ low = 0, high = 1, step = 0.6 }: Optuna cut it to [0, 0.6] with a warning, while the space's own grid
    went on to 1.2 - a hot fraction above 1, enqueued by the warm start - and the header counted it."""
    for line, words in (("hot_fraction = { low = 0.0, high = 1.0, step = 0.6 }",
                         ("precision.hot_cold.hot_fraction", "high (1)", "step", "end at 0.6")),
                        ("hot_fraction = { low = 0.0, high = 0.5, step = 0.2 }", ("end at 0.4",))):
        space_refused(tmp_path, f'name = "s"\n[precision]\nformats = ["int8"]\n[precision.hot_cold]\n{line}\n',
                      "s.toml:5", *words)
    space_refused(tmp_path, 'name = "s"\n[precision]\nformats = ["int8"]\n[cache]\nslots_per_layer = { low = 1, '
                            'high = 9, step = 3 }\n', "s.toml:5", "cache.slots_per_layer", "end at 7")


def test_tau_without_the_tide_policy_is_refused_not_ignored(tmp_path):
    """cache.tau is tide's refresh interval: with no tide in cache.policies it was dropped without a word (the
    study searched no tau), as cache.allocation without an expert budget is refused."""
    space_refused(tmp_path, 'name = "s"\n[precision]\nformats = ["int8"]\n[cache]\npolicies = ["lru", "flru"]\n'
                            'tau = [1, 2, 4]\n', "s.toml:6", "cache.tau", '"tide" policy')


@pytest.mark.parametrize("evaluation, objectives, words", [
    ("staging = false\nfidelity_floor = 0.9", 'accuracy = "maximize"', ("staging = false", "set staging = true")),
    ("fidelity_floor = 0.9", 'fidelity_top1 = "maximize"', ("accuracy is not among [objectives]",)),
])
def test_a_fidelity_floor_that_could_never_act_is_refused_not_ignored(tmp_path, evaluation, objectives, words):
    """The floor skips the accuracy runs of plans below it, in the staging of accuracy: with staging off, or no
    accuracy objective, it loaded and did nothing."""
    space_refused(tmp_path, f'name = "s"\n[precision]\nformats = ["int8"]\n[objectives]\n{objectives}\n'
                            f'peak_gpu_bytes = "minimize"\n[evaluation]\n{evaluation}\n',
                  "s.toml:", "evaluation.fidelity_floor", "top-1 agreement", *words)


@pytest.mark.parametrize("key", ["trace_prompts", "fidelity_prompts"])
def test_a_prompt_count_no_run_could_mean_is_refused_on_load(tmp_path, key):
    """evaluation.trace_prompts = 100000000000 loaded, and a model without a tokenizer (tiny:*) then drew that many
    seeded random prompts, until interrupted, with the study already written; `advisor trace --limit` as much
    did the same. Now one line naming the file, key and the range. A `limit` beyond the task still means all of
    its problems (a task's examples are all it evaluates; nothing more is decoded)."""
    from advisor.tune.space import parse_space

    (tmp_path / "s.toml").write_text(f'name = "s"\n[precision]\nformats = ["int8"]\n[evaluation]\n{key} = 100000000000\n'
                                     '[objectives]\nh2d_bytes_per_token = "minimize"\nfidelity_top1 = "maximize"\n')
    r = advisor_entry("tune", "tiny:llada_moe", "--space", "s.toml", "--trials", "1", "--storage", str(tmp_path / "s.db"),
                cwd=tmp_path)  # (ran until interrupted)
    one_error_line(r, "s.toml:5", f"evaluation.{key}", "between 1 and 10000 prompts, got 100000000000")
    before_model_load(r)
    assert not (tmp_path / "s.db").exists() and not (tmp_path / "studies").exists()
    assert parse_space('[precision]\nformats = ["int8"]\n[evaluation]\nlimit = 100000000000\n'
                       f'{key} = 10000\n', "s.toml").evaluation.limit == 10**11
    if key == "trace_prompts":
        r = advisor_entry("trace", "tiny:llada_moe", "-o", "t.npz", "--limit", "100000000000", cwd=tmp_path)
        one_error_line(r, "Invalid value for '--limit'", "less than or equal to 10000")
        assert not (tmp_path / "t.npz").exists()


def test_a_dotted_key_in_the_wrong_table_is_named_on_its_own_line(tmp_path):
    """`evaluation.seed = 1` written under [cache] is the unknown key cache.evaluation: the line said
    "s.toml:1" (the dotted key was matched only when it was the offending key itself, not a key inside it)."""
    space = tmp_path / "s.toml"
    space.write_text('name = "s"\n[precision]\nformats = ["int8"]\n[cache]\npolicies = ["lru"]\nevaluation.seed = 1\n')
    r = advisor_entry("tune", "--space", str(space), "--storage", str(tmp_path / "s.db"), cwd=tmp_path)
    one_error_line(r, "s.toml:6: cache.evaluation: unknown key")
    before_model_load(r)



def test_a_required_key_left_out_names_no_line_of_the_file(tmp_path):
    """A space without [precision] was refused as "e5.toml:1: precision.formats: is required": line 1 is the
    [cache] header, which has nothing to do with it. A key that is not in the file names the file alone."""
    (tmp_path / "e5.toml").write_text('[cache]\nslots_per_layer = [8]\npolicies = ["lru"]\n')
    r = advisor_entry("tune", "--space", "e5.toml", "--storage", "s.db", cwd=tmp_path)
    one_error_line(r, "error: e5.toml: precision.formats: is required")
    before_model_load(r)

def test_a_stepped_range_up_to_all_runs_on_its_grid_without_warnings(tmp_path):
    """"all" is the model's size (64 here), which a step of 5 from 1 does not reach: the range ends at 61, the
    last value of its grid, instead of Optuna cutting it with a UserWarning in every trial. (In this process: the
    one trial's warnings are caught as raised, each of them, where a process printed each once on stderr.)"""
    import warnings

    space = tmp_path / "s.toml"
    space.write_text('name = "s"\n[precision]\nformats = ["int8"]\n[cache]\nslots_per_layer = { low = 1, '
                     'high = "all", step = 5 }\n[evaluation]\nlimit = 2\ntrace_prompts = 1\nfidelity_prompts = 1\n')
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        r = advisor_in_process("tune", "--space", str(space), "--trials", "1", "--sampler", "random", "--storage",
                               str(tmp_path / "s.db"), cwd=tmp_path)
    assert r.returncode == 0, r.stdout + r.stderr
    assert "Warning" not in r.stderr and not caught, (r.stderr, [f"{w.category.__name__}: {w.message}" for w in caught])
    assert "(13 configurations)" in r.stdout.replace("\n", " "), r.stdout


def test_expert_budget_below_one_slot_per_layer_is_refused(tmp_path):
    """The bundled model has 4 MoE layers: a total of 2 slots cannot give each one."""
    space = tmp_path / "s.toml"
    space.write_text('name = "s"\n[precision]\nformats = ["int8"]\n[cache]\nexpert_budget = { low = 1, high = 2 }\n')
    r = advisor_entry("tune", "--space", str(space), "--storage", str(tmp_path / "s.db"), cwd=tmp_path)
    one_error_line(r, "s.toml:5", "cache.expert_budget", "4 MoE layers", "at least 4")
    assert not (tmp_path / "s.db").exists()


def test_budget_too_small_for_an_offloaded_model_says_what_it_must_hold(tmp_path):
    """1.27 MiB is above the bundled model's 1.23 MiB of resident weights, yet holds no expert per layer: the
    offloaded model also holds activations and staging buffers, which the refusal now names (it gave raw bytes,
    "a budget of 1331691 bytes ... (1286656 bytes are resident)", and left the rest unsaid)."""
    r = advisor_entry("tune", "--budget", "1.27MiB", "--trials", "1", "--storage", str(tmp_path / "s.db"), cwd=tmp_path)
    one_error_line(r, "a budget of 1.27 MiB cannot hold the resident weights", "(1.23 MiB are resident, ",
                   "KiB of activations, and staging buffers for the experts that stream past the cache; "
                   "the smallest configuration needs 1.83 MiB)")
    assert not (tmp_path / "s.db").exists()


def test_budget_below_the_resident_weights_says_so(tmp_path):
    """1 MiB is less than the bundled model's 1.23 MiB of non-expert weights: no format or cache can help, so
    the line says that and what the smallest configuration needs (it said "raise --budget or add a smaller
    format", as if a smaller format could fit)."""
    r = advisor_entry("tune", "--budget", "1MiB", "--trials", "1", "--storage", str(tmp_path / "s.db"), cwd=tmp_path)
    line = one_error_line(r, "a budget of 1.00 MiB cannot hold even the resident (non-expert) weights, 1.23 MiB",
                          "the smallest configuration of the space needs 1.", ": raise --budget")
    assert "smaller format" not in line
    assert not (tmp_path / "s.db").exists()


def test_a_budget_the_user_did_not_give_is_named_when_nothing_fits(tmp_path, monkeypatch):
    """A budget the user did not give that nothing fits was refused as 'a budget of 918.52 KiB ... raise --budget',
    without saying where it came from. It names the source now, as the run's header would have: a space's default
    share of a model whose least configuration is the whole model (every expert bf16 on the GPU: here the share
    is not moved towards it, `default_budget`), and the largest of --budgets."""
    import torch
    from typer.testing import CliRunner

    from advisor.cli import app
    from advisor.errors import UserError
    from advisor.models.tiny import build_tiny

    monkeypatch.chdir(tmp_path)
    build_tiny("qwen3_moe", dtype=torch.bfloat16).save_pretrained("ck")
    Path("all.toml").write_text('[precision]\nformats = ["bf16", "fp16"]\n[cache]\nslots_per_layer = [8]\n'
                                'policies = ["lru"]\n[objectives]\nfidelity_top1 = "maximize"\n'
                                'peak_gpu_bytes = "minimize"\n[budget]\nfraction_of_model = 0.5\n')
    for args, want in ((["./ck", "--space", "all.toml"], "a budget of 46.69 KiB (0.5 x the model's counted bytes, "
                        "all space default) cannot hold the resident weights and one expert per MoE layer"),
                       (["tiny:diffusion_gemma", "--space", "quick", "--budgets", "1%"],
                        "(the largest of --budgets) cannot hold")):
        r = CliRunner().invoke(app, ["tune", *args, "--trials", "1", "--storage", str(tmp_path / "s.db")])
        assert isinstance(r.exception, UserError), r.output
        line = str(r.exception)
        assert want in line and "\n" not in line, line
        assert line.endswith(": give a larger one with --budgets or add a smaller format" if "--budgets" in args else
                             ": give a larger one with --budget or add a smaller format"), line
    assert not (tmp_path / "s.db").exists()


def test_a_budget_that_a_space_s_one_format_cannot_fit_is_refused(tmp_path, monkeypatch):
    """A space of one format (its precision fixed) was not checked against the budget: at 95 KiB, under the 96.75 KiB
    that one bf16 expert per layer of the tiny Qwen3-MoE needs, `tune` recorded its trial over budget without
    running it and ended with no front. It is refused before anything is stored, as a space of several formats is."""
    from typer.testing import CliRunner

    from advisor.cli import app
    from advisor.errors import UserError

    monkeypatch.chdir(tmp_path)
    Path("one.toml").write_text('[precision]\nformats = ["bf16"]\n[cache]\npolicies = ["lru"]\n[objectives]\n'
                                'fidelity_top1 = "maximize"\npeak_gpu_bytes = "minimize"\n')
    r = CliRunner().invoke(app, ["tune", "tiny:qwen3_moe", "--space", "one.toml", "--budget", "95KiB", "--trials", "1",
                                 "--storage", "s.db"])
    assert isinstance(r.exception, UserError), r.output
    assert str(r.exception) == ("a budget of 95.00 KiB cannot hold the resident weights and one expert per MoE layer "
                                "in any format of the space (90.75 KiB are resident; the smallest configuration needs "
                                "96.75 KiB): raise --budget or add a smaller format"), str(r.exception)
    assert not Path("s.db").exists()


def _dump(db: Path) -> list[str]:
    con = sqlite3.connect(db)
    try:
        return list(con.iterdump())
    finally:
        con.close()


@pytest.fixture(scope="module")
def tuned_quick(tmp_path_factory) -> Path:
    """`advisor tune --trials 1` (the bundled model, the quick space, the default study name bundled-toy-quick):
    tuned once per test process; each resume test copies the file (`copy_tuned_quick`), never writing this one."""
    work = tmp_path_factory.mktemp("tuned-quick")
    first = advisor_in_process("tune", "--trials", "1", "--storage", str(work / "s.db"), cwd=work)
    assert first.returncode == 0, first.stdout + first.stderr
    return work / "s.db"


def copy_tuned_quick(tuned_quick: Path, db: Path) -> Path:
    """`tuned_quick`'s study file copied to `db`, as if `advisor tune --trials 1 --storage db` had made it."""
    shutil.copyfile(tuned_quick, db)
    return db


class _Loaded(Exception):
    """Raised where the model would load."""


def _study_attrs(db) -> dict:
    with sqlite3.connect(db) as c:
        rows = c.execute("SELECT key, value_json FROM study_user_attributes").fetchall()
    c.close()
    return {k: json.loads(v) for k, v in rows}


def _execute(db, query: str, *args) -> None:
    with sqlite3.connect(db) as c:
        c.execute(query, args)
    c.close()


def _no_load(monkeypatch) -> None:
    from advisor.commands import tune as tune_cmd
    from advisor.tune import interrupt

    def load(*a, **k):
        raise _Loaded("the model was loaded")

    monkeypatch.setattr(interrupt, "import_runtime", load)
    monkeypatch.setattr(tune_cmd, "_load", load)


@pytest.mark.parametrize("columns", ["100", "80"])
def test_the_nothing_to_run_line_ends_in_its_whole_command_at_any_width(tmp_path, tuned_quick, monkeypatch, columns):
    """At 100 columns 'study bundled-toy-quick already has 1 finished trial (--trials 1); nothing to run - `--more N`
    adds N' was broken by rich before its last word: "N" alone on the next line. The line is wrapped between words
    now, `--more N` whole and no N outside it, so whatever the width its last line ends in the command."""
    copy_tuned_quick(tuned_quick, tmp_path / "s.db")
    _no_load(monkeypatch)
    r = advisor_in_process("tune", "--trials", "1", "--storage", "s.db", cwd=tmp_path, env={"COLUMNS": columns})
    assert r.returncode == 0, r.stdout + r.stderr
    lines = r.stdout.splitlines()
    at = next(i for i, line in enumerate(lines) if line.startswith("study bundled-toy-quick already has"))
    pair = lines[at:at + 2]
    assert " ".join(pair) == ("study bundled-toy-quick already has 1 finished trial (--trials 1); nothing to run - "
                              "add trials with `--more N`"), pair
    assert all(len(line) <= int(columns) for line in pair) and pair[1].endswith("`--more N`"), pair


def test_resume_with_nothing_to_run_answers_from_the_load_record_with_the_full_paths_checks(tmp_path, tuned_quick,
                                                                                         monkeypatch):
    """`tune --trials 1` (`tuned_quick`) stores its load's record (the bundled model's files, its fingerprint,
    decoding, allowance: `advisor.tune.shortcut`); the same command again says 'nothing to run' without loading the model, takes no run number, re-saves a
    front a kill left unsaved, says a changed activation allowance, refuses trials of another decoding; a study
    without a record (stored by an earlier version) loads the model."""
    args = ("tune", "--trials", "1", "--storage", "s.db")  # the bundled model: study bundled-toy-quick
    db = copy_tuned_quick(tuned_quick, tmp_path / "s.db")  # as `tune --trials 1 --storage s.db` made it
    attrs = _study_attrs(db)
    record = attrs["load_record"]
    assert record["fingerprint"] == attrs["model_fingerprint"] and record["offloaded"] is True, record
    assert record["key"]["signature"]["model"]["path"].endswith("bundled"), record["key"]
    assert record["key"]["fraction"] == 0.6 and record["decoding"]["steps_per_block"], record

    _no_load(monkeypatch)
    again = advisor_in_process(*args, cwd=tmp_path, env={"COLUMNS": "200"})
    assert again.returncode == 0, again.stdout + again.stderr
    assert "already has 1 finished trial (--trials 1); nothing to run" in again.stdout, again.stdout
    assert "queued trials (warm start) did not run" in again.stdout, again.stdout
    assert _study_attrs(db)["runs"] == attrs["runs"]

    _execute(db, "DELETE FROM advisor_front")  # killed between a trial's end and its front's save
    again = advisor_in_process(*args, cwd=tmp_path, env={"COLUMNS": "200"})
    assert again.returncode == 0, again.stdout + again.stderr
    with sqlite3.connect(db) as c:
        assert c.execute("SELECT COUNT(*) FROM advisor_front").fetchone()[0] == 1
    c.close()

    allowance = {"bytes": 1, "source": "measured:elsewhere"}
    _execute(db, "UPDATE study_user_attributes SET value_json = ? WHERE key = 'activation_allowance'",
             json.dumps(allowance))
    again = advisor_in_process(*args, cwd=tmp_path, env={"COLUMNS": "200"})
    assert "counted an activation allowance of 1 B (measured:elsewhere); this run counts" in again.stdout, again.stdout

    with sqlite3.connect(db) as c:
        ((tid, raw),) = c.execute("SELECT trial_id, value_json FROM trial_user_attributes WHERE key = 'config'")
    c.close()
    config = json.loads(raw)
    steps = config["decoding"]["steps_per_block"]
    config["decoding"]["steps_per_block"] = steps + 1
    _execute(db, "UPDATE trial_user_attributes SET value_json = ? WHERE trial_id = ? AND key = 'config'",
             json.dumps(config), tid)
    r = advisor_entry(*args, cwd=tmp_path, env={"COLUMNS": "200"})
    one_error_line(r, f"its trials decoded {steps + 1} denoising steps per block, this run decodes {steps}")

    _execute(db, "DELETE FROM study_user_attributes WHERE key = 'load_record'")  # a study stored before records were
    r = advisor_in_process(*args, cwd=tmp_path, env={"COLUMNS": "200"})
    assert "_Loaded('the model was loaded')" in r.stderr, r.stdout + r.stderr



def test_a_damaged_load_record_loads_the_model_without_a_traceback(tmp_path, tuned_quick, monkeypatch):
    """A load record whose key is this run's but whose values are not the ones this code writes (a damaged or
    edited row: a field gone, another shape, a value of another type) ended the run with a traceback (ModelShape's
    TypeError, a KeyError; check_resume's AttributeError of a model_meta that is text, a TypeError of a decoding that
    is a list or of expert counts that are text); it is in doubt, so the run loads the model (here: `_Loaded`), as
    for a study without a record."""
    db = copy_tuned_quick(tuned_quick, tmp_path / "s.db")
    record = _study_attrs(db)["load_record"]
    _no_load(monkeypatch)
    text_counts = {**record["shape"], "num_experts": [str(n) for n in record["shape"]["num_experts"]]}
    for damage in ({"shape": {**record["shape"], "bogus": 1}}, {"tokenizer": None}, {"shape": []},
                   {"model_meta": "x"}, {"decoding": [1]}, {"shape": text_counts},
                   {"decoding": {**record["decoding"], "steps_per_block": "x"}},  # (was refused as other steps)
                   {"shape": {**record["shape"], "native_format": "zz"}}):  # (was refused as an unknown format)
        edited = {k: v for k, v in {**record, **damage}.items() if v is not None}
        _execute(db, "UPDATE study_user_attributes SET value_json = ? WHERE key = 'load_record'", json.dumps(edited))
        r = advisor_in_process("tune", "--trials", "1", "--storage", "s.db", cwd=tmp_path)
        assert "_Loaded('the model was loaded')" in r.stderr, (damage, r.stdout + r.stderr)


@pytest.mark.parametrize("library", ["tokenizers", "datasets"])
def test_another_tokenizers_or_datasets_version_loads_the_model(tmp_path, tuned_quick, monkeypatch, library):
    """The load record's key held the versions of torch, transformers ... but not of tokenizers (it encodes the
    prompts, whose lengths size the probed activation allowance) nor of datasets (it reads gsm8k's and humaneval's
    prompts): a run with another version said 'nothing to run' from values another version gave. It loads the
    model (here: `_Loaded`)."""
    from importlib import metadata

    copy_tuned_quick(tuned_quick, tmp_path / "s.db")
    _no_load(monkeypatch)
    real = metadata.version
    monkeypatch.setattr(metadata, "version", lambda name: "0.0.0+other" if name == library else real(name))
    r = advisor_in_process("tune", "--trials", "1", "--storage", "s.db", cwd=tmp_path)
    assert "_Loaded('the model was loaded')" in r.stderr, r.stdout + r.stderr


GSM8K_SPACE = """name = "g"
[precision]
formats = ["int8"]
[cache]
slots_per_layer = { low = 1, high = "all" }
policies = ["lru"]
[objectives]
h2d_bytes_per_token = "minimize"
accuracy = "maximize"
[evaluation]
task = "gsm8k"
limit = 1
trace_prompts = 1
fidelity_prompts = 1
max_new_tokens = 8
staging = false
"""


def test_a_new_hub_dataset_revision_loads_the_model_not_said_to_have_nothing_to_run(tmp_path, monkeypatch):
    """The load record's key told --data files apart by their sha256, but gsm8k / humaneval read from the hub's
    cache have none: after a new dataset revision there (other prompts, so another probed activation allowance)
    the same command said 'nothing to run' from the old load's values. The key holds the examples' digest: a
    run on other examples loads the model (here: `_Loaded`), one on the same ones still does not."""
    from advisor.eval import gsm8k

    (tmp_path / "g.toml").write_text(GSM8K_SPACE)
    rows = [{"question": "What is 1 + 2?", "answer": "1 + 2 = 3\n#### 3"}]
    monkeypatch.setattr(gsm8k, "load_hub", lambda split="test": [dict(r) for r in rows])
    args = ("tune", "bundled", "--space", "g.toml", "--trials", "1", "--budget", "4MiB", "--storage", "s.db")
    first = advisor_in_process(*args, cwd=tmp_path, env={"COLUMNS": "200"})
    assert first.returncode == 0, first.stdout + first.stderr
    _no_load(monkeypatch)
    again = advisor_in_process(*args, cwd=tmp_path, env={"COLUMNS": "200"})
    assert "nothing to run" in again.stdout, again.stdout + again.stderr
    rows[0]["question"] = "What is 1 + 2 + 3 + 4 + 5 + 6 + 7?"  # the cache's new revision
    r = advisor_in_process(*args, cwd=tmp_path, env={"COLUMNS": "200"})
    assert "_Loaded('the model was loaded')" in r.stderr, r.stdout + r.stderr


def test_resume_with_nothing_to_run_prints_the_front_as_the_full_path_ends(tmp_path, tuned_quick, monkeypatch):
    """The short path (`advisor.tune.shortcut`) printed no front table: only 'nothing to run' and where the study
    is. It prints the stored front with its counts, as a run that loaded the model ends, without loading it."""
    copy_tuned_quick(tuned_quick, tmp_path / "s.db")
    _no_load(monkeypatch)
    again = advisor_in_process("tune", "--trials", "1", "--storage", "s.db", cwd=tmp_path, env={"COLUMNS": "200"})
    assert again.returncode == 0, again.stdout + again.stderr
    out = again.stdout
    title = "Pareto front of study bundled-toy-quick (1 point; 1 finished trial, 0 over budget, 0 failed)"
    assert out.index("nothing to run") < out.index(title) < out.index("stored in sqlite:///s.db"), out
    assert "accuracy: measured:exact-match:toy(n=32," in out, out  # the table's sources, under it


def test_resume_with_nothing_to_run_says_its_header_from_the_stored_values(tmp_path, tuned_quick, monkeypatch):
    """The short path printed no header: a user running `tune MODEL --budget X --trials N` again was shown a front
    without the model, task, space, device, budget or objectives it was tuned on, which the full path's header
    says. It prints that header (one definition), from the stored values, without the sampler (nothing is drawn)."""
    copy_tuned_quick(tuned_quick, tmp_path / "s.db")
    _no_load(monkeypatch)
    again = advisor_in_process("tune", "--trials", "1", "--storage", "s.db", cwd=tmp_path, env={"COLUMNS": "200"})
    assert again.returncode == 0, again.stdout + again.stderr
    head, rest = again.stdout.split("\nstudy bundled-toy-quick already has 1 finished trial", 1)
    assert head.startswith("advisor tune bundled (4 MoE layers x 64 experts, ") and "| task toy" in head, head
    assert "| space quick (" in head and "| device cpu\nbudget: " in head and head.endswith("| mode replay"), head
    assert "objectives: h2d_bytes_per_token (min), accuracy (max)" in head and "sampler" not in head, head


def test_resume_with_another_gpu_profile_is_refused(tmp_path):
    """The --gpu profile prices time_per_token (link + device roofline): a study keeps one. RTX 4090 and A10
    both have 24 GB, so the memory budget alone would not tell them apart; so would a measured profile.
    The refusal comes before the model loads (minutes for a real model), for the default study name too."""
    db = tmp_path / "s.db"
    (tmp_path / "quick.toml").write_text(few_problems_quick_space())  # quick's trials on fewer problems: ~2 s
    # the default study name: bundled-toy-quick (the space keeps quick's name)
    base = ("tune", "--trials", "1", "--storage", str(db), "--space", "quick.toml")
    first = advisor_in_process(*base, "--gpu", "RTX 4090", cwd=tmp_path)
    assert first.returncode == 0, first.stdout + first.stderr
    again = advisor_in_process(*base, "--gpu", "NVIDIA GeForce RTX 4090", cwd=tmp_path)  # same GPU: resumed, its
    assert again.returncode == 0 and "already has 1 finished trial" in again.stdout, again.stdout + again.stderr  # trial done
    before = _dump(db)
    r = advisor_entry(*base[:2], "3", *base[3:], "--gpu", "A10", cwd=tmp_path)
    one_error_line(r, "'bundled-toy-quick'", "'RTX 4090 24GB'", "'A10 24GB'", "new --study name", "resume it with --gpu 'RTX 4090 24GB'")
    before_model_load(r)
    # a model no loader could take is said first, before the storage opens (optuna, SQLAlchemy: ~1 s)
    r = advisor_entry("tune", "./no-such-model", "--storage", str(db), "--study", "bundled-toy-quick", "--gpu", "A10",
                cwd=tmp_path)
    one_error_line(r, "no directory './no-such-model': a MODEL that is a path")
    profiles = tmp_path / "profiles"
    profiles.mkdir()
    measured = {"name": "NVIDIA GeForce RTX 4090", "memory_bytes": 24 << 30, "h2d_gbps_pinned": 21.7,
                "h2d_gbps_pageable": 9.8, "copy_latency_us": 14.0, "source": "measured:2026-12-01"}
    (profiles / "rtx-4090.json").write_text(json.dumps(measured))
    r = subprocess.run([sys.executable, "-m", "advisor", *base[:2], "3", *base[3:], "--gpu", "RTX 4090"],
                       cwd=tmp_path, capture_output=True, text=True, timeout=300,
                       env={**os.environ, "ADVISOR_PROFILES_DIR": str(profiles)})
    one_error_line(r, "'RTX 4090 24GB' (catalogue (nominal))", "measured:2026-12-01")
    before_model_load(r)
    assert _dump(db) == before  # nothing written by either refusal


def test_resume_with_another_space_or_budget_is_refused_before_the_model_loads(tmp_path, tuned_quick):
    """A study name reused with another search space, budget or objectives is refused in one line before the
    model loads (minutes for a real model), in both modes, and nothing is written; also for a database whose
    file name has characters a URL encodes (its lock file lies beside it under its own name)."""
    from advisor.tune.space import load_space

    db = copy_tuned_quick(tuned_quick, tmp_path / "s@1:x.db")  # `tune --trials 1` of study bundled-toy-quick
    study = "bundled-toy-quick"
    quick = load_space("quick").text
    (tmp_path / "lru.toml").write_text(quick.replace('policies = ["lru", "lfu"]', 'policies = ["lru"]'))
    (tmp_path / "fid.toml").write_text(quick.replace('accuracy = "maximize"', 'fidelity_top1 = "maximize"'))
    before = _dump(db)
    for mode in ("replay", "live"):
        # lru.toml and fid.toml are edited copies still named "quick": the line says so, not "another (quick)"
        same_name = "another search space (also named 'quick', with other contents)"
        for model, extra, needle in (("bundled", ("--space", "lru.toml"), same_name),
                                     ("bundled", ("--space", "fid.toml"), same_name),
                                     ("bundled", ("--space", "default"), "another search space (quick)"),
                                     ("bundled", ("--budget", "3MiB"),
                                      "another memory budget (4.34 MiB; this run's: 3.00 MiB)")):
            r = advisor_entry("tune", model, "--trials", "2", "--storage", str(db), "--study", study, "--mode", mode,
                            *extra, cwd=tmp_path)
            one_error_line(r, f"study '{study}'", needle, "choose a new --study name",
                           f"`advisor studies --delete {study}`")
            before_model_load(r)
    # in a second: the refusal comes before torch and transformers import (seconds), not only before the load
    timed = subprocess.run([sys.executable, "-X", "importtime", "-m", "advisor", "tune", "bundled", "--storage", str(db),
                            "--study", study, "--budget", "3MiB"], cwd=tmp_path, capture_output=True, text=True)
    assert timed.returncode == 2 and "another memory budget" in timed.stderr, timed.stderr[-2000:]
    imported = {ln.split("|")[-1].strip() for ln in timed.stderr.splitlines() if ln.startswith("import time:")}
    assert "advisor.tune.study" in imported and not {"torch", "transformers"} & imported
    assert _dump(db) == before
    again = advisor_in_process("tune", "--trials", "1", "--storage", str(db), "--study", study, cwd=tmp_path)  # same
    assert again.returncode == 0 and "already has 1 finished trial" in again.stdout, again.stdout + again.stderr
    # the locks of a file whose name a URL encodes lie beside it under its own name
    names = sorted(p.name for p in tmp_path.iterdir())
    assert names == ["fid.toml", "lru.toml", "s@1:x.db", "s@1:x.db.lock", "s@1:x.db.seed.lock"], names


def test_resume_in_another_mode_or_on_another_device_type_is_refused_before_the_model_loads(tmp_path, monkeypatch,
                                                                                            tuned_quick):
    """Replay models time per token, live measures it (the bundled model on a CPU, 64 slots per layer: 0.16 ms
    modelled for int4, 115 ms measured for int2), and times measured on the CPU and on a GPU differ as much: a
    study resumed in the other mode or with another --device type put both on one front. Workers on cuda:0 and
    cuda:1 still share a study. (A host with no NVIDIA driver refuses --device cuda first, before the study is
    read: that check is passed here, as on a host with one.)"""
    import advisor.commands.tune
    from advisor.tune.study import check_resume, resume_keys

    monkeypatch.setattr(advisor.commands.tune, "refuse_without_cuda_driver", lambda device: None)

    db = copy_tuned_quick(tuned_quick, tmp_path / "s.db")  # `tune --trials 1`, the default study name
    before = _dump(db)
    for args, what in ((["--mode", "live"], "--mode (replay)"), (["--device", "cuda"], "--device type (cpu)")):
        r = advisor_entry("tune", "--trials", "2", "--storage", str(db), *args, cwd=tmp_path)
        one_error_line(r, f"study 'bundled-toy-quick' was run with another {what}", "choose a new --study name")
        before_model_load(r)
        assert _dump(db) == before
    check_resume("s", resume_keys(None, device="cuda:0"), resume_keys(None, device="cuda:1"))  # no refusal


def test_another_data_file_is_measured_anew_and_refused_on_resume(tmp_path):
    """Two --data files of one task are two sets of problems: the second study reused the accuracy measured on
    the first file (the cache knew the task's name only), and resuming a study with the other file mixed both
    on one front. Now the file's digest keys the cache and is compared on resume, before the model loads."""
    sample = (Path(__file__).parent / "data" / "gsm8k_sample.jsonl").read_text().splitlines(keepends=True)
    (tmp_path / "a.jsonl").write_text("".join(sample[:3]))
    (tmp_path / "b.jsonl").write_text("".join(sample[-3:]))
    (tmp_path / "g.toml").write_text('name = "g"\n[precision]\nformats = ["int8"]\n[cache]\nslots_per_layer = [8]\n'
                                     '[objectives]\nh2d_bytes_per_token = "minimize"\naccuracy = "maximize"\n'
                                     '[evaluation]\ntask = "gsm8k"\nlimit = 1\ntrace_prompts = 1\nfidelity_prompts = 1\n'
                                     'max_new_tokens = 8\n')
    db = tmp_path / "s.db"
    for name in ("a", "b"):
        r = advisor_in_process("tune", "--space", "g.toml", "--data", f"{name}.jsonl", "--study", name, "--trials",
                               "1", "--storage", str(db), cwd=tmp_path)
        assert r.returncode == 0, r.stdout + r.stderr
        assert "accuracy evaluations this run: 1 for 1" in r.stdout, r.stdout  # measured, not reused
    before = _dump(db)
    r = advisor_entry("tune", "--space", "g.toml", "--data", "b.jsonl", "--study", "a", "--trials", "2", "--storage",
                str(db), cwd=tmp_path)
    one_error_line(r, "study 'a' was run with another --data file (", "a.jsonl, sha256 ", "new --study name")
    before_model_load(r)
    assert _dump(db) == before


def test_report_on_a_database_with_a_damaged_page_gives_the_drivers_reason(tmp_path):
    """A copy of the example database with three pages overwritten: the file opens and the header is fine, so
    the check before the work passes; reading the trials then fails. `report` said only "(StorageInternalError)",
    Optuna's wrapper; now SQLite's own "database disk image is malformed", and it writes nothing."""
    db = tmp_path / "damaged.db"
    shutil.copy(Path(__file__).resolve().parents[1] / "studies" / "example" / "advisor.db", db)
    with open(db, "r+b") as f:
        f.seek(200 * 4096)
        f.write(b"\xa5" * 3 * 4096)
    r = advisor_entry("report", "bundled-example", "--storage", str(db), "-o", str(tmp_path / "rep"), cwd=tmp_path)
    one_error_line(r, "is not a readable Optuna study database (database disk image is malformed)")
    assert not (tmp_path / "rep").exists()


def test_tune_on_a_database_with_its_version_page_damaged_gives_the_drivers_reason(tmp_path):
    """A copy of the example database whose page of Optuna's version row (`version_info`'s root) is overwritten:
    the header reads, so the file check passes, and Optuna's own open then fails. `tune` said "storage error: An
    exception is raised during the commit. This typically happens due to invalid data in the commit, e.g.
    exceeding max length." (Optuna's wrapper of SQLite's error); now SQLite's own reason, as the readers give
    it, before the model loads, and the file is left as it was; with the hint tune's file check gives a damaged
    file (", or a new path"), which it lacked."""
    db = tmp_path / "damaged.db"
    shutil.copy(Path(__file__).resolve().parents[1] / "studies" / "example" / "advisor.db", db)
    with sqlite3.connect(db) as con:
        page = con.execute("SELECT rootpage FROM sqlite_master WHERE name = 'version_info'").fetchone()[0]
        size = con.execute("PRAGMA page_size").fetchone()[0]
    con.close()
    with open(db, "r+b") as f:
        f.seek((page - 1) * size)
        f.write(b"\xa5" * size)
    before = db.read_bytes()
    r = advisor_entry("tune", "--trials", "1", "--storage", str(db), cwd=tmp_path)
    line = one_error_line(r, f"{db} is not a readable advisor database (database disk image is malformed)")
    assert line.endswith("; point --storage at the file `advisor tune` wrote, or a new path"), line
    before_model_load(r)
    assert db.read_bytes() == before


def test_an_empty_budgets_or_memory_list_is_refused_not_ignored(tmp_path):
    """`tune --budgets "$B"` with B unset tuned a whole study without the budgets, rc 0 and not a word (as
    `--gpu ""` did before it was refused); `report --memory ""` dropped the equal-memory answers the same way."""
    example = Path(__file__).resolve().parents[1] / "studies" / "example" / "advisor.db"
    for args in (["tune", "--budgets", "", "--trials", "1", "--storage", str(tmp_path / "t.db")],
                 ["tune", "--budgets", " , ", "--trials", "1", "--storage", str(tmp_path / "t.db")],
                 ["report", "bundled-example", "--memory", "", "--storage", str(example), "-o", str(tmp_path / "r")]):
        r = advisor_entry(*args, cwd=tmp_path)
        one_error_line(r, "--budgets '" if args[0] == "tune" else "--memory ''", "names no budget; give e.g.")
        before_model_load(r)
    assert list(tmp_path.iterdir()) == []


@pytest.mark.parametrize("sig", [signal.SIGINT, signal.SIGTERM])
def test_ctrl_c_or_sigterm_during_a_report_is_one_line(tmp_path, sig):
    """`advisor report` takes minutes; Ctrl-C there ended with exit 130 and no word (typer turns the
    KeyboardInterrupt into exit 130 silently), and SIGTERM killed it without one. Nothing is written either way."""
    example = Path(__file__).resolve().parents[1] / "studies" / "example" / "advisor.db"
    proc = subprocess.Popen([sys.executable, "-m", "advisor", "report", "bundled-example", "--storage", str(example),
                             "-o", str(tmp_path / "rep")], cwd=tmp_path, stdout=subprocess.PIPE,
                            stderr=subprocess.PIPE, text=True,  # Ctrl-C as at a terminal, even under a runner
                            preexec_fn=lambda: signal.signal(signal.SIGINT, signal.SIG_DFL))  # that ignores it
    assert proc.stderr.readline().startswith("[1] ")  # the report's first step has begun
    proc.send_signal(sig)
    out, err = proc.communicate(timeout=120)
    assert proc.returncode == 130, err
    assert "Traceback" not in err and err.rstrip().splitlines()[-1] == (
        "error: interrupted; nothing is half-written - run the same command again"), err
    assert list(tmp_path.iterdir()) == []


_CTRL_C_WHILE_THE_CLI_IMPORTS = """
import builtins, importlib, os, signal, sys, tomllib
module, func = tomllib.load(open(sys.argv[1], "rb"))["project"]["scripts"]["advisor"].split(":")
sig, real = int(sys.argv[2]), builtins.__import__

def ctrl_c_at_typer(name, *args, **kwargs):  # a real SIGINT (or SIGTERM), while advisor.cli imports typer
    if name == "typer":
        builtins.__import__ = real
        os.kill(os.getpid(), sig)
    return real(name, *args, **kwargs)

builtins.__import__ = ctrl_c_at_typer
sys.argv = ["advisor", "studies"]
getattr(importlib.import_module(module), func)()  # what the console script does
"""


_PYTHON_M_AFTER_A_CAUGHT_INTERRUPT = """
import builtins, ctypes, os, runpy, signal, sys
real = builtins.__import__

def at_sqlalchemy(name, *args, **kwargs):  # inside the command, once the CLI has imported
    if name == "sqlalchemy":
        builtins.__import__ = real
        ctypes.pythonapi.PyRun_String.restype = ctypes.py_object
        try:  # what torch's C++ start-up can do: a KeyboardInterrupt crosses a PyRun_* call and is caught there
            ctypes.pythonapi.PyRun_String(b"raise KeyboardInterrupt", 257, ctypes.py_object({}), ctypes.py_object({}))
        except KeyboardInterrupt:
            pass
        os.kill(os.getpid(), signal.SIGTERM)  # then a real SIGTERM
    return real(name, *args, **kwargs)

builtins.__import__ = at_sqlalchemy
sys.argv = ["advisor", "studies"]
runpy.run_module("advisor", run_name="__main__", alter_sys=True)  # what `python -m advisor` does
"""


def test_python_m_advisor_interrupted_exits_130_after_a_caught_interrupt(tmp_path):
    """Under `python -m`, CPython ends the process by SIGINT (a parent sees -2, not 130) after the one line
    once a KeyboardInterrupt has crossed any PyRun_* call, even a caught one (torch's C++ start-up): the report
    SIGTERM test above failed now and then that way. The entry point exits 130 itself."""
    mod = tmp_path / "mod"
    mod.mkdir()
    (mod / "python_m_flagged.py").write_text(_PYTHON_M_AFTER_A_CAUGHT_INTERRUPT)
    work = tmp_path / "work"
    work.mkdir()
    root = str(Path(__file__).resolve().parents[1])
    r = subprocess.run([sys.executable, "-m", "python_m_flagged"], cwd=work, capture_output=True, text=True,
                       timeout=60, env={**os.environ, "PYTHONPATH": os.pathsep.join([str(mod), root])})
    assert r.returncode == 130, (r.returncode, r.stderr)
    assert r.stderr.splitlines() == ["error: interrupted; nothing is half-written - run the same command again"]
    assert list(work.iterdir()) == []


@pytest.mark.parametrize("sig", [signal.SIGINT, signal.SIGTERM])
def test_ctrl_c_or_sigterm_while_the_cli_imports_is_one_line(tmp_path, sig):
    """Ctrl-C in a command's first ~0.3 s (the console script importing `advisor.cli`) showed Python's
    KeyboardInterrupt traceback, and SIGTERM killed it without a word; the console script's entry point
    (pyproject's [project.scripts]) now says the one line as later, exit 130."""
    pyproject = Path(__file__).resolve().parents[1] / "pyproject.toml"
    r = subprocess.run([sys.executable, "-c", _CTRL_C_WHILE_THE_CLI_IMPORTS, str(pyproject), str(int(sig))], cwd=tmp_path,
                       capture_output=True, text=True, timeout=60,
                       preexec_fn=lambda: signal.signal(signal.SIGINT, signal.SIG_DFL))
    assert r.returncode == 130 and "Traceback" not in r.stderr, r.stderr
    assert r.stderr.splitlines() == ["error: interrupted; nothing is half-written - run the same command again"]
    assert list(tmp_path.iterdir()) == []


def _hold_sqlite_lock(path: Path, how: str) -> subprocess.Popen:
    """Another process that keeps `path` locked (IMMEDIATE: writers wait; EXCLUSIVE: readers too), as a worker
    stopped in the middle of a write does."""
    code = ("import sqlite3, sys, time\n"
            f"c = sqlite3.connect({str(path)!r}, isolation_level=None)\n"
            f"c.execute('BEGIN {how}')\n"
            "c.execute('CREATE TABLE IF NOT EXISTS held (x)')\n"
            "print('held', flush=True)\n"
            "time.sleep(120)\n")
    holder = subprocess.Popen([sys.executable, "-c", code], stdout=subprocess.PIPE, text=True)
    assert holder.stdout.readline().strip() == "held"
    return holder


def test_a_database_another_process_keeps_locked_is_one_line_that_says_so(tmp_path, monkeypatch):
    """A worker stopped in the middle of a write (a suspended machine, SIGSTOP, a paused container) keeps the
    SQLite file locked. The others said the file was 'not a readable advisor database' (readers, after 5 s), or
    'An exception is raised during the commit ... e.g. exceeding max length' (a tune, after 60 s), or waited for
    ever for the file's turn (`<file>.lock`). Now each says the file is locked by another process, and what to do."""
    from filelock import FileLock

    monkeypatch.setenv("ADVISOR_SQLITE_TIMEOUT_S", "1")
    db = tmp_path / "s.db"
    url = f"sqlite:///{db}"
    holder = _hold_sqlite_lock(db, "IMMEDIATE")
    try:  # a writer: the tune that would add trials
        t0 = time.monotonic()
        r = advisor_entry("tune", "--trials", "1", "--storage", url, "--study", "s", cwd=tmp_path)
        one_error_line(r, f"fuser {db}", "locked by another process for 1 s", "then run again")
        assert time.monotonic() - t0 < 60
    finally:
        holder.kill()
        holder.wait()
    holder = _hold_sqlite_lock(db, "EXCLUSIVE")
    try:  # readers
        for args in (["studies"], ["pareto", "s"], ["recommend", "--budget", "1GiB", "--study", "s"]):
            r = advisor_entry(*args, "--storage", url, cwd=tmp_path)
            one_error_line(r, "locked by another process for 1 s")
    finally:
        holder.kill()
        holder.wait()
    with FileLock(f"{db}.lock"):  # the file's turn, held by a stopped worker
        r = advisor_entry("tune", "--trials", "1", "--storage", url, "--study", "s", cwd=tmp_path)
    one_error_line(r, "locked by another process for 1 s")
    monkeypatch.setenv("ADVISOR_SQLITE_TIMEOUT_S", "soon")
    one_error_line(advisor_entry("studies", "--storage", url, cwd=tmp_path), "ADVISOR_SQLITE_TIMEOUT_S='soon'")


@pytest.mark.parametrize("args, option", [
    (["trace", "bundled", "-o", "t.npz", "--steps", "-1"], "--steps"),
    (["trace", "bundled", "-o", "t.npz", "--block-length", "-4"], "--block-length"),
    (["trace", "bundled", "-o", "t.npz", "--max-new-tokens", "-2"], "--max-new-tokens"),
])
def test_negative_decoding_lengths_name_the_option_before_the_model_loads(tmp_path, args, option):
    """`trace --steps -1` said "steps, gen_length and block_length must be positive" (no option named) after the
    model had loaded."""
    r = advisor_entry(*args, cwd=tmp_path)
    one_error_line(r, f"Invalid value for '{option}'")
    assert not (tmp_path / "t.npz").exists()


def test_host_memory_that_is_not_a_size_is_not_called_a_budget(tmp_path):
    """`--host-memory 0` said "--host-memory: budget '0' is not a size": the GPU budget's words for host memory.
    A size of either option is refused in one wording, the option then the value ("--budget '0' must be
    positive"): --host-memory's had a colon of its own ("--host-memory: '0' must be positive")."""
    r = advisor_entry("tune", "--host-memory", "0", "--storage", str(tmp_path / "s.db"), cwd=tmp_path)
    line = one_error_line(r)
    assert line == "error: --host-memory '0' must be positive", line
    before_model_load(r)
    line = one_error_line(advisor_entry("tune", "--host-memory", "8x", "--storage", str(tmp_path / "s.db"), cwd=tmp_path))
    assert line == "error: --host-memory '8x' is not a size; use e.g. 12GiB, 24GB, 8000MiB", line


def test_a_share_given_to_budget_names_budgets_which_takes_shares(tmp_path):
    """`tune --budget 50%` said "budget '50%' is not a size", though `--budgets 50%` takes that share of the model
    (and, alone, is the study's budget): the line now names the option that does."""
    r = advisor_entry("tune", "--budget", "50%", "--storage", str(tmp_path / "s.db"), cwd=tmp_path)
    one_error_line(r, "--budget takes a size (e.g. 12GiB), not a share; give --budgets 50%: a budget of the resident "
                      "weights + 50% of the FP16 expert bytes")
    before_model_load(r)
    assert not (tmp_path / "s.db").exists()


def test_host_memory_on_a_model_loaded_whole_in_replay_is_refused_not_ignored(tmp_path):
    """`--host-memory 1KiB` on the bundled model loaded whole (--resident), in replay: no host store is packed,
    so the cap limited nothing and the study ran without a word. Offloaded (the quick space's default budget is
    below the model, or --offload) it caps the stores (and is checked)."""
    r = advisor_entry("tune", "--host-memory", "1KiB", "--resident", "--trials", "1", "--storage", str(tmp_path / "s.db"),
                cwd=tmp_path)
    one_error_line(r, "--host-memory caps the host stores", "bundled is loaded whole", "add --offload")
    assert not (tmp_path / "s.db").exists()
    r = advisor_entry("tune", "--host-memory", "1KiB", "--offload", "--trials", "1", "--storage", str(tmp_path / "s.db"),
                cwd=tmp_path)
    one_error_line(r, "1.00 KiB is allowed (--host-memory)")


def test_tune_refuses_empty_values_and_a_nan_timeout(tmp_path):
    """`advisor tune "$MODEL" --space "$SPACE"` with a variable unset tuned the bundled model / the default space
    (and `--host-memory ""` dropped the cap) without a word; `--timeout nan` never ended the run."""
    db = tmp_path / "s.db"
    for args, needle in (([""], "MODEL is empty"), (["--space", ""], "--space is empty"),
                         (["--task", " "], "--task is empty"), (["--sampler", ""], "--sampler is empty"),
                         (["--data", ""], "--data is empty"), (["--host-memory", ""], "--host-memory is empty"),
                         (["--timeout", "nan"], "--timeout nan must be positive")):
        r = advisor_entry("tune", *args, "--trials", "1", "--storage", str(db), cwd=tmp_path)
        one_error_line(r, needle)
        before_model_load(r)
        assert not db.exists(), args


def test_empty_budget_precision_and_layers_are_refused_not_ignored(tmp_path):
    """`inspect --budget ""` printed no fit table, `eval --precision ""` measured full precision and
    `quant-report --layers ""` measured every layer, each without a word (`tune --budget ""` is refused)."""
    for args, needle in ((["inspect", "bundled", "--budget", ""], "budget '' is not a size"),
                         (["eval", "--precision", "", "--limit", "2"], "bad precision plan ''"),
                         (["quant-report", "bundled", "--layers", "", "-f", "int8"], "--layers ''")):
        r = advisor_entry(*args, cwd=tmp_path)
        one_error_line(r, needle)
        assert "bundled" not in r.stdout, r.stdout  # refused before any result is printed


def test_empty_model_gpu_and_plan_are_refused_in_the_analysis_commands(tmp_path):
    """With a variable unset: `eval ""` evaluated the bundled model, `inspect`, `trace` and `quant-report ""`
    loaded the current directory as the model, `profile --model ""` measured no CPU expert times and replaced
    the stored profile, and `simulate --gpu "" / --precision ""` modelled the default link and the traced dtype,
    each without a word (`tune` refuses them). One line each now, and nothing written."""
    trace = tmp_path / "t.npz"
    trace.write_bytes(b"")  # refused before the trace is read
    for args, needle in ((["eval", "", "--limit", "1"], "MODEL is empty"),
                         (["inspect", ""], "MODEL is empty"),
                         (["trace", "", "-o", "t2.npz"], "MODEL is empty"),
                         (["trace", "bundled", "-o", "t2.npz", "--task", "gsm8k", "--data", ""], "--data is empty"),
                         (["quant-report", "", "-f", "int8"], "MODEL is empty"),
                         (["profile", "--cpu", "--model", "", "--profiles-dir", "p"], "--model is empty"),
                         (["simulate", str(trace), "--gpu", ""], "--gpu is empty"),
                         (["simulate", str(trace), "--precision", "", "--json", "s.json"], "--precision is empty")):
        r = advisor_entry(*args, cwd=tmp_path)
        one_error_line(r, needle)
        assert r.stdout == "", r.stdout
    assert sorted(p.name for p in tmp_path.iterdir()) == ["t.npz"]


def test_empty_trace_and_simulate_paths_are_refused_as_empty(tmp_path, monkeypatch):
    """`trace -o ""`, `simulate ""` and `simulate --json ""` read '' as Path('.'), and said "cannot write .: it is a
    directory" or "trace file '.' is a directory", where every other file option says it is empty."""
    from typer.testing import CliRunner

    from advisor.cli import app
    from advisor.errors import UserError

    monkeypatch.chdir(tmp_path)
    (tmp_path / "t.npz").write_bytes(b"")  # refused before it is read
    for args, needle in ((["trace", "tiny:llada_moe", "-o", ""], "-o/--output is empty"),
                         (["simulate", ""], "TRACE_FILE is empty"),
                         (["simulate", "t.npz", "--json", ""], "--json is empty")):
        res = CliRunner().invoke(app, args)
        assert isinstance(res.exception, UserError) and needle in str(res.exception), (args, res.exception)
    assert [p.name for p in tmp_path.iterdir()] == ["t.npz"]


def test_recommend_refuses_empty_filters(tmp_path):
    """`recommend --model ""` recommended from every model's front (an empty name is a substring of all), and
    `--study ""` said no study had a front; both are now refused, as is `export --from-recommend --task ""`."""
    db = str(Path(__file__).resolve().parents[1] / "studies" / "example" / "advisor.db")
    for args, needle in ((["recommend", "--model", "", "--budget", "2MiB"], "--model is empty"),
                         (["recommend", "--study", ""], "--study is empty"),
                         (["export", "--from-recommend", "--to", "json", "--task", " "], "--task is empty")):
        r = advisor_entry(*args, "--storage", db, cwd=tmp_path)
        one_error_line(r, needle)
        assert r.stdout == "", r.stdout


def test_export_refuses_an_empty_output_path(tmp_path):
    """`export -o "$OUT"` with OUT unset read '' as the current directory (Path('') is '.'): the export was built,
    then refused as "cannot write .: it is a directory", naming a path the user never gave. An empty -o is refused
    first, in one line, as every other empty option is."""
    db = str(Path(__file__).resolve().parents[1] / "studies" / "example" / "advisor.db")
    for empty in ("", " "):
        for args in (["bundled-example", "129"], ["--from-recommend", "--budget", "2MiB"]):
            r = advisor_entry("export", *args, "--to", "json", "--storage", db, "-o", empty, cwd=tmp_path)
            line = one_error_line(r, "-o/--output is empty; give a file path (without it: stdout)")
            assert "cannot write ." not in line and r.stdout == "", r.stdout + r.stderr
    assert list(tmp_path.iterdir()) == []


def test_profile_refuses_an_empty_name(tmp_path):
    """`advisor profile --name ""` measured and saved the profile under the device's name (replacing the one
    stored there) as if --name were not given; it is refused before anything is measured or written."""
    out = tmp_path / "profiles"
    r = advisor_entry("profile", "--cpu", "--name", "", "--repeats", "1", "--profiles-dir", str(out), cwd=tmp_path)
    one_error_line(r, "--name is empty")
    assert not out.exists() or not any(out.iterdir())


def test_tune_refuses_a_seed_numpy_cannot_take(tmp_path):
    """`tune --seed -1` loaded the model, created the study and ended in numpy's "Seed must be between 0 and
    2**32 - 1" traceback; now a usage error before anything loads or is written."""
    db = tmp_path / "s.db"
    for seed in ("-1", str(2**32)):
        r = advisor_entry("tune", "--seed", seed, "--trials", "1", "--storage", str(db), cwd=tmp_path)
        one_error_line(r, "--seed")
        before_model_load(r)
        assert not db.exists()


def test_quant_report_refuses_samples_that_cannot_fit_in_memory(tmp_path):
    """`quant-report --samples` beyond the host's memory ended in torch's allocator traceback (exit 1)."""
    r = advisor_entry("quant-report", "bundled", "--samples", str(10**12), "-f", "int8", "--max-experts", "1",
                cwd=tmp_path)
    one_error_line(r, "--samples 1000000000000", "use fewer")
    r = advisor_entry("quant-report", "bundled", "--samples", "8", "-f", "int8", "--max-experts", "1", cwd=tmp_path)
    assert r.returncode == 0 and "8 samples" in r.stdout, r.stdout + r.stderr


def test_quant_report_refuses_max_experts_below_one_before_the_model_loads(tmp_path):
    """`quant-report --max-experts 0` loaded the whole model and then said "no experts selected"; the model
    here does not exist, so only a refusal made before loading names the option."""
    for n in ("0", "-2"):
        r = advisor_entry("quant-report", str(tmp_path / "no-such-model"), "--max-experts", n, "-f", "int8", cwd=tmp_path)
        one_error_line(r, f"--max-experts {n} selects no expert")


def test_more_new_tokens_than_memory_holds_is_one_line(tmp_path, monkeypatch):
    """`eval`/`trace --max-new-tokens 300000000` ended in torch's allocator traceback (exit 1); the allocation
    that fails (over 100 GiB of hidden states) is now named in one line with the option to change. The canvas's
    hidden states are counted before the load (`refuse_canvas_past_memory`, tests/test_cli_busy_host.py); past
    that check (a host said to have 2 TiB free), the allocation that fails is still one line."""
    n = str(3 * 10**8)
    one_error_line(advisor_entry("trace", "bundled", "-o", str(tmp_path / "t.npz"), "--max-new-tokens", n,
                                 cwd=tmp_path), f"--max-new-tokens {n}: bundled (llada_moe)", "143.1 GiB")
    monkeypatch.setattr("advisor.models.load.device_free_bytes", lambda device: 2 << 40)
    # and past the refusal of new tokens beyond the model's positions (`fit_to_positions`): a model without them
    monkeypatch.setattr("advisor.eval.run.model_positions", lambda loaded: None)
    r = advisor_entry("trace", "bundled", "-o", str(tmp_path / "t.npz"), "--max-new-tokens", n, "--limit", "1",
                cwd=tmp_path)
    one_error_line(r, f"out of memory while decoding {n} new tokens", "GiB)", "smaller --max-new-tokens")
    assert not (tmp_path / "t.npz").exists()
    r = advisor_entry("eval", "--max-new-tokens", n, "--limit", "1", "--no-progress", "--json", str(tmp_path / "e.json"),
                cwd=tmp_path)
    one_error_line(r, "out of memory while evaluating on cpu", "smaller --max-new-tokens")
    assert not (tmp_path / "e.json").exists()


def test_a_precision_plan_file_that_is_not_utf8_or_not_a_plan_is_one_line_naming_the_file(tmp_path):
    """`eval --precision plan.json` of a Latin-1 file was a UnicodeDecodeError traceback; a JSON file of the
    wrong shape quoted the file's text, its newline included, so the `error:` line ran over two lines. The path
    is quoted whole, however long (it was cut at 80 characters, as a long inline plan is)."""
    where = tmp_path / ("plans-" * 12)
    where.mkdir()
    (where / "latin1.json").write_bytes(b'{"default": "int8", "note": "caf\xe9"}\n')
    (where / "list.json").write_text('{"default": "int8",\n "layers": [1, 2]}\n')
    for name, needle in (("latin1.json", "not UTF-8 text (byte 32)"), ("list.json", "layers/experts must map")):
        r = advisor_entry("eval", "--precision", str(where / name), "--limit", "1", cwd=tmp_path)
        one_error_line(r, f"bad precision plan '{where / name}'", needle)
        assert "bundled" not in r.stdout, r.stdout  # refused before the model loads


def test_a_range_of_layers_or_experts_wider_than_any_model_is_one_line_before_the_model_loads(tmp_path):
    """A precision plan's or `quant-report --layers`' range is expanded number by number: `layers=0-999999999`
    took every byte of host memory (the process was killed), a wider one was an OverflowError traceback, and
    a range past the model's layers was refused with every number of it listed (megabytes in one line). A range
    spans at most 2**20 numbers now, and the layers a model lacks are named as ranges."""
    for plan, span in (("layers=0-99999999999999999999:int8", "100000000000000000000"),
                       ("experts=0.0-1048576:int8", "1048577")):
        r = advisor_entry("eval", "--precision", plan, "--limit", "1", cwd=tmp_path)
        one_error_line(r, f"bad precision plan '{plan}'", f"spans {span} numbers", "more than 1048576")
        assert "bundled" not in r.stdout, r.stdout  # refused before the model loads
    r = advisor_entry("quant-report", str(tmp_path / "no-such-model"), "--layers", "0-99999999999999999999", cwd=tmp_path)
    one_error_line(r, "--layers '0-99999999999999999999'", "spans 100000000000000000000 numbers")
    r = advisor_entry("quant-report", "tiny:llada_moe", "--layers", "0-1,2-5000,7000", "-f", "int8", cwd=tmp_path)
    one_error_line(r, "--layers names MoE layer(s) 2-5000,7000 but tiny:llada_moe has 2 (0-1)")
    # --layers reads ranges as a plan does: a backwards one was read as no layers, without a word
    r = advisor_entry("quant-report", str(tmp_path / "no-such-model"), "--layers", "0,3-1", cwd=tmp_path)
    one_error_line(r, "--layers '0,3-1': range '3-1' runs backwards")


def test_many_ranges_naming_more_than_any_model_has_are_one_line_before_the_model_loads(tmp_path):
    """Each range spans at most 2**20 numbers, but a plan or --layers of several such ranges was expanded whole:
    `experts=0.0-1048575:int8,1.0-1048575:int8,...` (a few kilobytes for a thousand layers) took every byte of host
    memory as one wide range did. Over 2**22 numbers in all is refused before anything is expanded further."""
    plan = "experts=" + ",".join(f"{layer}.0-1048575:int8" for layer in range(5))
    r = advisor_entry("eval", "--precision", plan, "--limit", "1", cwd=tmp_path)
    one_error_line(r, "bad precision plan", "names more than 4194304 layers and experts in all")
    assert "bundled" not in r.stdout, r.stdout  # refused before the model loads
    layers = ",".join(f"{i * 2**20}-{(i + 1) * 2**20 - 1}" for i in range(5))
    r = advisor_entry("quant-report", str(tmp_path / "no-such-model"), "--layers", layers, cwd=tmp_path)
    one_error_line(r, "--layers '", "names more than 4194304 layers and experts in all")


def test_export_of_a_trial_number_beyond_sqlites_integers_is_one_line(tmp_path):
    """`export STUDY 99999999999999999999999` was an OverflowError traceback ("Python int too large to convert
    to SQLite INTEGER") from the off-front trial reader; the largest number SQLite keeps is still looked up."""
    db = str(Path(__file__).resolve().parents[1] / "studies" / "example" / "advisor.db")
    r = advisor_entry("export", "bundled-example", "9" * 23, "--to", "json", "--storage", db, cwd=tmp_path)
    one_error_line(r, "Invalid value for 'trial'", str(2**63 - 1))
    r = advisor_entry("export", "bundled-example", str(2**63 - 1), "--to", "json", "--storage", db, cwd=tmp_path)
    one_error_line(r, f"study 'bundled-example' has no trial {2**63 - 1}")


def test_export_of_study_trial_refuses_the_options_only_from_recommend_reads(tmp_path):
    """`export STUDY TRIAL --budget 1GiB` (or --gpu, --min-accuracy, ...) exported the trial as stored, rc 0, the
    option read by nothing and not a word said: the user meant a choice under that budget."""
    db = str(Path(__file__).resolve().parents[1] / "studies" / "example" / "advisor.db")
    for extra, needle in ((["--budget", "1GiB"], "--budget only chooses what --from-recommend exports"),
                          (["--gpu", "A10", "--min-accuracy", "0.5"], "--gpu, --min-accuracy only choose")):
        r = advisor_entry("export", "bundled-example", "8", "--to", "json", *extra, "--storage", db, cwd=tmp_path)
        one_error_line(r, needle, "add --from-recommend")
        assert r.stdout == "", r.stdout
    r = advisor_entry("export", "bundled-example", "8", "--to", "json", "--storage", db, cwd=tmp_path)
    assert r.returncode == 0 and json.loads(r.stdout)["source"]["trial"] == 8, r.stdout + r.stderr


@pytest.mark.parametrize("args", [["tune", "--trials", "1", "--storage", "s.db"], ["eval", "--limit", "1"],
                                  ["trace", "bundled", "-o", "t.npz"], ["quant-report", "bundled"]])
def test_more_threads_than_torch_can_take_is_a_usage_error(tmp_path, args):
    """`--threads 99999999999999999999` was torch's "Overflow when unpacking long long" traceback (exit 1), in
    `tune` after the study's header; every command's --threads now has one upper bound."""
    r = advisor_entry(*args, "--threads", "9" * 20, cwd=tmp_path)
    one_error_line(r, "Invalid value for '--threads'", f"{'9' * 20} is not a thread count: give one from")
    before_model_load(r)
    assert list(tmp_path.iterdir()) == []


def test_a_thread_or_trial_count_that_is_no_whole_number_is_named_with_its_range(tmp_path):
    """`--threads x`, `--trials x` and `--more 0` said typer's "Input should be a valid integer, unable to parse
    string as an integer" / "greater than or equal to 1", naming neither the value nor the range, where --seed,
    --heartbeat and export's TRIAL name both. They say them too now."""
    for args, said in ((["--threads", "x"], "'x' is not a thread count: give a whole number from 1 to "),
                       (["--trials", "x"], "'x' is not a trial count: give a whole number of 1 or more"),
                       (["--more", "0"], "0 is not a trial count: give one of 1 or more")):
        r = advisor_entry("tune", *args, "--storage", "s.db", cwd=tmp_path)
        one_error_line(r, f"Invalid value for '{args[0]}': {said}")
    assert list(tmp_path.iterdir()) == []


def test_a_heartbeat_longer_than_a_thread_can_wait_is_a_usage_error(tmp_path):
    """`tune --heartbeat 99999999999999999999` printed the heartbeat thread's OverflowError traceback ("timestamp
    too large to convert to C _PyTime_t") and went on without a heartbeat, exit code 0."""
    r = advisor_entry("tune", "--trials", "1", "--heartbeat", "9" * 20, "--storage", "s.db", cwd=tmp_path)
    one_error_line(r, "Invalid value for '--heartbeat'", "is not a heartbeat interval: give one from 1 to ")
    before_model_load(r)
    assert list(tmp_path.iterdir()) == []


@pytest.mark.parametrize("args", [["quant-report", "bundled", "-f", "int8", "--max-experts", "1"],
                                  ["trace", "tiny:llada_moe", "-o", "t.npz", "--limit", "1"]])
def test_a_seed_torch_cannot_take_is_a_usage_error(tmp_path, args):
    """`quant-report --seed 99999999999999999999` (and `trace` of a tokenizer-less model, which seeds its random
    prompts) was torch's "Overflow when unpacking long long" traceback after the model had loaded."""
    r = advisor_entry(*args, "--seed", "9" * 20, cwd=tmp_path)
    one_error_line(r, "Invalid value for '--seed'", str(2**64 - 1))
    assert r.stdout == "" and list(tmp_path.iterdir()) == []


@pytest.mark.parametrize(("args", "option"), [
    (["trace", "bundled", "-o", "t.npz", "--limit", "1", "--max-new-tokens", str(2**62)], "'--max-new-tokens'"),
    (["trace", "bundled", "-o", "t.npz", "--limit", "1", "--steps", str(2**62)], "'--steps'"),
    (["eval", "--limit", "1", "--max-new-tokens", "9" * 20], "'--max-new-tokens'"),
    (["report", "bundled-example", "-o", "r", "--block-lengths", "8," + "9" * 20], "--block-lengths '8,9999"),
])
def test_decoding_lengths_past_torchs_size_arithmetic_are_refused_before_the_model_loads(tmp_path, args, option):
    """`trace --max-new-tokens 2**62` or `--steps 2**62` ended in torch's "Storage size calculation overflowed"
    traceback (up to ~2**40 it is the out-of-memory line), `eval --max-new-tokens 99999999999999999999` and
    `report --block-lengths 8,99999999999999999999` in its overflow traceback, each after the model loaded."""
    db = str(Path(__file__).resolve().parents[1] / "studies" / "example" / "advisor.db")
    r = advisor_entry(*args, *(["--storage", db] if args[0] == "report" else []), cwd=tmp_path)
    one_error_line(r, option, str(2**31 - 1))
    assert r.stdout == "" and list(tmp_path.iterdir()) == []


def test_tune_refuses_another_programs_sqlite_database_before_the_model_loads(tmp_path):
    """`tune --storage app.db` (a mistyped path to another program's database) added Optuna's and the advisor's
    17 tables to that file and ran; a file with an `advisor_front` table of other columns had them added too,
    and failed after the model had loaded ("no such column: advisor_front.study_name"). Both are refused before
    the model loads, the file unchanged; a database `advisor tune` wrote still resumes."""
    app, half = tmp_path / "app.db", tmp_path / "half.db"
    with sqlite3.connect(app) as con:
        con.execute("CREATE TABLE users (id INTEGER PRIMARY KEY, name TEXT)")
        con.execute("CREATE TABLE notes (id INTEGER PRIMARY KEY, body TEXT)")
    with sqlite3.connect(half) as con:
        con.execute("CREATE TABLE advisor_front (a INTEGER)")
    for db, needles in ((app, ("is another program's database (tables notes, users)", "give --storage a new path")),
                        (half, ("has a table advisor_front without the column(s) id, study_name",))):
        before = digest(db)
        r = advisor_entry("tune", "--trials", "1", "--storage", str(db), cwd=tmp_path)
        one_error_line(r, *needles)
        before_model_load(r)
        assert digest(db) == before


def test_an_empty_output_path_or_data_file_is_refused_not_taken_for_the_default(tmp_path):
    """An unset "$OUT" or "$DATA": `eval/quant-report --json ""` wrote no file (rc 0, not a word), `pareto --out ""`
    wrote its plots into the current directory and `profile --profiles-dir ""` its profile there, `eval/report
    --data ""` read the default problems. Each is now refused before anything is measured or written."""
    db = str(Path(__file__).resolve().parents[1] / "studies" / "example" / "advisor.db")
    for args, needle in ((["eval", "--limit", "1", "--json", ""], "--json is empty"),
                         (["eval", "--limit", "1", "--data", ""], "--data is empty"),
                         (["quant-report", "bundled", "-f", "int8", "--max-experts", "1", "--json", ""],
                          "--json is empty"),
                         (["report", "bundled-example", "--storage", db, "--data", ""], "--data is empty"),
                         (["pareto", "bundled-example", "--storage", db, "--out", ""], "-o/--output is empty"),
                         (["profile", "--cpu", "--repeats", "1", "--profiles-dir", ""], "--profiles-dir is empty")):
        r = advisor_entry(*args, cwd=tmp_path)
        one_error_line(r, needle, "leave the option out")
        assert r.stdout == "" and list(tmp_path.iterdir()) == [], args


def test_a_space_asking_more_new_tokens_than_torch_can_size_is_refused_on_load(tmp_path):
    """evaluation.max_new_tokens = 2**63 - 1 loaded the model and ended in torch's "Overflow when unpacking long
    long" traceback in the first trial; it is held to the bound the --max-new-tokens options have."""
    space_refused(tmp_path, 'name = "s"\n[precision]\nformats = ["int8"]\n[evaluation]\n'
                  f"max_new_tokens = {2**63 - 1}\n", "s.toml:5", "evaluation.max_new_tokens", str(2**31 - 1))


@pytest.mark.parametrize("seed", [2**64, -(2**63) - 1])
def test_a_space_seed_torch_cannot_take_is_refused_on_load(tmp_path, seed):
    """evaluation.seed = 2**64 loaded the model, created the study and ended in torch's "Overflow when unpacking
    long long" traceback in the first trial's fidelity reference; it is held to the range --seed has."""
    space_refused(tmp_path, f'name = "s"\n[precision]\nformats = ["int8"]\n[evaluation]\nseed = {seed}\n',
                  "s.toml:5", "evaluation.seed: must be between", str(2**64 - 1))


def test_a_space_value_of_the_wrong_type_names_the_type_in_words(tmp_path):
    """evaluation.seed = "x" was refused with "must be a int"."""
    space_refused(tmp_path, 'name = "s"\n[precision]\nformats = ["int8"]\n[evaluation]\nseed = "x"\n',
                  "evaluation.seed: must be an integer")


@pytest.mark.parametrize(("name", "content", "needle"), [
    ("config.json", b'{"model_type": "caf\xe9"}', "config.json is not valid JSON ('utf-8' codec"),
    ("config.json", b"[1, 2]\n", "config.json holds a JSON list, not an object of settings"),
    ("model.safetensors.index.json", b"caf\xe9", "index.json is not a valid safetensors index ('utf-8' codec"),
    ("model.safetensors.index.json", b'{"weight_map": [1]}', "is not a valid safetensors index ('list' object"),
    ("model.safetensors.index.json", b'{"weight_map": {"a": 1}}', "weight_map must map tensor names to shard"),
])
def test_a_model_directory_with_an_undecodable_or_misshapen_json_file_is_one_line(tmp_path, name, content, needle):
    """A copy of the bundled model whose config.json or safetensors index is Latin-1 bytes or JSON of the wrong
    shape: `inspect` ended in a UnicodeDecodeError, AttributeError or TypeError traceback (exit 1)."""
    from advisor.models.load import BUNDLED_DIR

    model = tmp_path / "model"
    shutil.copytree(BUNDLED_DIR, model)
    if name.endswith("index.json"):  # a sharded checkpoint's (transformers loads a model.safetensors before it)
        (model / "model.safetensors").rename(model / "model-00001-of-00001.safetensors")
    (model / name).write_bytes(content)
    one_error_line(advisor_entry("inspect", str(model), cwd=tmp_path), needle, "re-download")


@pytest.mark.parametrize(("field", "value", "needle"), [
    ("num_experts", "eight", "Field 'num_experts' expected int, got str"),
    ("text_config", "x", "does not describe a model"),
])
def test_a_config_field_of_the_wrong_type_is_one_line(tmp_path, field, value, needle):
    """A checkpoint whose config.json gives `"num_experts": "eight"`: transformers' strict config raised
    huggingface_hub's StrictDataclassFieldValidationError, a traceback (exit 1) in every command that loads it.
    `"text_config": "x"`: the pre-quantized check (`advisor.models.quant_method`, which looks for a nested
    `quantization_config`) called .get on the string, an AttributeError traceback in an offloaded load."""
    from advisor.models import tiny

    model = tmp_path / "model"
    tiny.build_tiny("qwen3_moe").save_pretrained(str(model))
    config = json.loads((model / "config.json").read_text())
    config[field] = value
    (model / "config.json").write_text(json.dumps(config))
    for mode in ("--resident", "--offload"):
        one_error_line(advisor_entry("inspect", str(model), mode, cwd=tmp_path),
                       "config.json does not describe a model that can be built", needle, "fix that field")


def test_a_config_size_torch_refuses_is_one_line(tmp_path):
    """`"num_experts": -1` in a copy of the bundled model's config.json: building the model (its parameters are
    made before they move to the meta device) raised torch's RuntimeError "negative dimension", a traceback
    (exit 1) in every command that loads the model."""
    from advisor.models.load import BUNDLED_DIR

    model = tmp_path / "model"
    shutil.copytree(BUNDLED_DIR, model)
    config = json.loads((model / "config.json").read_text())
    (model / "config.json").write_text(json.dumps({**config, "num_experts": -1}))
    one_error_line(advisor_entry("inspect", str(model), cwd=tmp_path),
                   "config.json does not describe a model that can be built", "negative dimension", "fix that field")


def test_a_float_weight_stored_as_integers_is_refused(tmp_path):
    """A checkpoint whose header gives one expert weight the dtype I32 (same byte count as F32): the load read
    its bit patterns as integers of ~1e9 and `advisor eval` scored the model 0% (exit 0) without a word."""
    import struct

    from advisor.models.load import BUNDLED_DIR

    model = tmp_path / "model"
    shutil.copytree(BUNDLED_DIR, model)
    raw = (model / "model.safetensors").read_bytes()
    (n,) = struct.unpack("<Q", raw[:8])
    header = json.loads(raw[8:8 + n])
    key = next(k for k in header if ".experts." in k)
    header[key]["dtype"] = "I32"
    text = json.dumps(header).encode()
    text += b" " * (-len(text) % 8)
    (model / "model.safetensors").write_bytes(struct.pack("<Q", len(text)) + text + raw[8 + n:])
    one_error_line(advisor_entry("inspect", str(model), cwd=tmp_path),
                   f"the checkpoint stores {key} as int32, but it is a floating-point weight", "re-download")


def test_a_profiles_directory_with_a_folder_or_a_dangling_link_named_json_is_not_a_traceback(tmp_path):
    """`recommend --gpu` and `profile --list` read every *.json of --profiles-dir: a folder named old.json was an
    IsADirectoryError traceback (now passed over: it holds no profile), a dangling link a FileNotFoundError one
    (now one line naming it)."""
    db = str(Path(__file__).resolve().parents[1] / "studies" / "example" / "advisor.db")
    profiles = tmp_path / "profiles"
    (profiles / "old.json").mkdir(parents=True)
    for args in (["recommend", "--storage", db, "--gpu", "RTX 4090"], ["profile", "--list"]):
        r = advisor_entry(*args, "--profiles-dir", str(profiles), cwd=tmp_path)
        assert r.returncode == 0 and "Traceback" not in r.stderr, r.stderr
    (profiles / "gone.json").symlink_to(tmp_path / "nowhere.json")
    r = advisor_entry("profile", "--list", "--profiles-dir", str(profiles), cwd=tmp_path)  # the rest listed, it named
    assert r.returncode == 0 and f"cannot read hardware profile {profiles / 'gone.json'}" in flat(r.stderr), r.stderr
    # another GPU's `--gpu` is not blocked by it (tests/test_cli_new_user11b.py), only named
    r = advisor_entry("recommend", "--storage", db, "--gpu", "RTX 4090", "--profiles-dir", str(profiles), cwd=tmp_path)
    assert r.returncode == 0 and str(profiles / "gone.json") in r.stderr, r.stderr


def test_an_input_file_that_is_a_directory_is_not_said_to_be_missing(tmp_path):
    """`--data DIR`, `--completions DIR` and `simulate DIR` said the file "does not exist", sending the user to
    look for a file that is there: it is a directory."""
    (tmp_path / "d").mkdir()
    for args, needle in ((["eval", "--task", "gsm8k", "--data", "d"], "GSM8K (question/answer) file 'd' is a directory"),
                         (["eval", "--task", "humaneval", "--completions", "d"], "file 'd' is a directory"),
                         (["simulate", "d"], "trace file 'd' is a directory")):
        line = one_error_line(advisor_entry(*args, cwd=tmp_path), needle)
        assert "does not exist" not in line, line


def test_an_export_option_given_twice_with_two_values_is_refused(tmp_path):
    """`--opt emit=script --opt emit=tensor-types` exported with the last value, the first dropped without a
    word (rc 0); the same value twice is harmless and still exports."""
    db = str(Path(__file__).resolve().parents[1] / "studies" / "example" / "advisor.db")
    base = ["export", "bundled-example", "8", "--to", "llama.cpp", "--storage", db]
    r = advisor_entry(*base, "--opt", "emit=script", "--opt", "emit=tensor-types", cwd=tmp_path)
    one_error_line(r, "option emit given twice for --to llama.cpp ('script', then 'tensor-types')")
    assert r.stdout == ""
    r = advisor_entry(*base, "--opt", "emit=script", "--opt", "emit=script", cwd=tmp_path)
    assert r.returncode == 0 and r.stdout.startswith("#!"), r.stdout[:200] + r.stderr


def test_trace_refuses_an_empty_prompt(tmp_path):
    """`trace bundled --prompt "$PROMPT"` with PROMPT unset traced an empty prompt and wrote the trace (rc 0)."""
    for prompts in ([""], ["2+2=", " "]):
        args = [a for p in prompts for a in ("--prompt", p)]
        r = advisor_entry("trace", "bundled", "-o", "t.npz", *args, cwd=tmp_path)
        one_error_line(r, "--prompt is empty", "the text to decode")
        assert list(tmp_path.iterdir()) == []


def test_a_storage_url_no_driver_takes_is_refused_with_an_example_that_runs_as_shown(tmp_path):
    """The advice's PostgreSQL example carried a password, which the error's URL masking printed as
    `user:***@host`: copied, libpq sent `***`. It names the user only and where the password goes."""
    r = advisor_entry("tune", "--storage", "foo://bar", "--trials", "1", cwd=tmp_path)
    line = one_error_line(r, "cannot use storage 'foo://bar'", "postgresql://user@host/db (password in PGPASSWORD")
    assert "***" not in line


@pytest.mark.parametrize("command", [["studies"], ["pareto", "x", "--no-plots"], ["report", "x", "-o", "r"],
                                     ["recommend", "--study", "x", "--budget", "2MiB"],
                                     ["export", "x", "0", "--to", "json", "-o", "x.json"]],
                         ids=lambda c: c[0])
def test_a_storage_url_no_driver_takes_is_the_same_line_in_every_command(tmp_path, command):
    """report said "cannot use storage ... (reason); give a SQLAlchemy URL such as ... or postgresql://..." of a
    URL no driver takes, the other readers "cannot open storage 'foo://u:secret@bar': reason. Use a SQLAlchemy URL
    such as ..." - with the URL's password shown. One line (`storage_errors.unusable_url`) now, password hidden."""
    r = advisor_entry(*command, "--storage", "foo://u:secret@bar", cwd=tmp_path)
    line = one_error_line(r, "cannot use storage 'foo://u:***@bar' (Can't load plugin: sqlalchemy.dialects:foo); "
                             "give a SQLAlchemy URL such as sqlite:///studies/advisor.db or postgresql://user@host/db")
    assert "secret" not in line and list(tmp_path.iterdir()) == []

@pytest.mark.parametrize(("command", "option", "typed", "fraction"), [
    (["recommend", "--study", "bundled-example", "--budget", "2MiB"], "--min-accuracy", "95", "0.95"),
    (["recommend", "--study", "bundled-example", "--budget", "2MiB"], "--max-accuracy-drop", "5", "0.05"),
    (["export", "--from-recommend", "--study", "bundled-example", "--budget", "2MiB", "--to", "json", "-o", "x.json"],
     "--max-accuracy-drop", "5", "0.05"),
    (["report", "bundled-example", "-o", "r"], "--max-accuracy-drop", "5", "0.05")], ids=["min", "drop", "export",
                                                                                        "report"])
def test_an_accuracy_typed_as_a_percentage_is_told_its_fraction(tmp_path, command, option, typed, fraction):
    """`--min-accuracy 95` / `--max-accuracy-drop 5` (a percentage for a fraction) were refused as "must be between
    0 and 1" without the value meant, and recommend echoed 5 as "5.0": the line says the value as typed and the
    fraction to give."""
    db = str(Path(__file__).resolve().parents[1] / "studies" / "example" / "advisor.db")
    r = advisor_entry(*command, option, typed, "--storage", db, cwd=tmp_path)
    line = one_error_line(r)
    assert line == (f"error: {option} {typed} must be between 0 and 1 (accuracy is a fraction); for {typed} % give "
                    f"{option} {fraction} (or {typed}%)"), line
    assert list(tmp_path.iterdir()) == []
    # a percentage is taken as one (typer's float refused '95%': 'Input should be a valid number'); what is no
    # number is named with the forms it may take, in every command that has the option
    r = advisor_entry(*command, option, "abc", "--storage", db, cwd=tmp_path)
    one_error_line(r, f"Invalid value for '{option}': 'abc' is not an accuracy: give a fraction (0.95) or a "
                      "percentage (95%)")
    if command[0] == "recommend":
        as_percent = advisor_entry(*command, option, f"{typed}%", "--storage", db, cwd=tmp_path)
        as_fraction = advisor_entry(*command, option, fraction, "--storage", db, cwd=tmp_path)
        assert as_percent.returncode == 0 and as_percent.stdout == as_fraction.stdout, as_percent.stderr
    assert list(tmp_path.iterdir()) == []


@pytest.mark.parametrize("typed", ["150%", "-2%", "nan%", "1e999999999%"])
def test_a_percentage_outside_0_to_100_is_named_as_typed(tmp_path, typed):
    """`--min-accuracy 150%` was read as 1.5 and refused as "--min-accuracy 1.5 must be between 0 and 1 ...; for
    1.5 % give --min-accuracy 0.015 (or 1.5%)" - neither the value typed nor the one meant; '-2%' read "-0.02"."""
    db = str(Path(__file__).resolve().parents[1] / "studies" / "example" / "advisor.db")
    r = advisor_entry("recommend", "--study", "bundled-example", "--min-accuracy", typed, "--storage", db,
                      cwd=tmp_path)
    line = one_error_line(r, f"Invalid value for '--min-accuracy': '{typed}' is not an accuracy: give a "
                             "percentage from 0% to 100%, or a fraction (0.95)")
    assert "1.5 %" not in line and list(tmp_path.iterdir()) == []


def test_a_percentage_reads_as_the_fraction_written_in_decimal(tmp_path):
    """`--max-accuracy-drop 0.7%` was 0.7 / 100 in floats, 0.006999999999999999, which recommend printed ("floor
    0.943 (= 0.950 of trial #0, measured, minus 0.006999999999999999; ..."); it reads as 0.007 does."""
    db = str(Path(__file__).resolve().parents[1] / "studies" / "example" / "advisor.db")
    runs = [advisor_entry("recommend", "--study", "bundled-example", "--max-accuracy-drop", typed, "--storage", db,
                          cwd=tmp_path) for typed in ("0.7%", "0.007")]
    assert runs[0].returncode == 0 and runs[0].stdout == runs[1].stdout, runs[0].stdout
    assert "minus 0.007;" in flat(runs[0].stdout), runs[0].stdout

def test_a_file_name_longer_than_the_file_system_takes_is_one_line_in_every_command(tmp_path):
    """A path with a name over 255 bytes (`-o "$MODEL-$PLAN.json"` with a long plan) ended in an OSError
    traceback (File name too long) in every command that looked at it, input or output, even for
    `Path.is_file()`; one line now, before any model loads, and nothing is written."""
    long = "x" * 300
    db = str(Path(__file__).resolve().parents[1] / "studies" / "example" / "advisor.db")
    for args in (["simulate", f"{long}.npz"], ["trace", "tiny:llada_moe", "-o", f"{long}.npz"],
                 ["eval", "bundled", "--task", "gsm8k", "--data", f"{long}.jsonl"],
                 ["studies", "--storage", f"{long}.db"], ["profile", "--list", "--profiles-dir", long],
                 ["export", "bundled-example", "8", "--to", "json", "--storage", db, "-o", f"{long}.json"]):
        r = advisor_entry(*args, cwd=tmp_path)
        one_error_line(r, "file name too long", "give a shorter path")
        assert "wrote" not in r.stdout + r.stderr
    assert list(tmp_path.iterdir()) == []


def test_profiles_dir_without_gpu_is_refused_not_ignored(tmp_path):
    """--profiles-dir only says where --gpu's measured profiles are: `recommend` and `export --from-recommend`
    without --gpu answered as if it were not given (the directory was never read)."""
    db = str(Path(__file__).resolve().parents[1] / "studies" / "example" / "advisor.db")
    for args in (["recommend"], ["export", "--from-recommend", "--to", "json"]):
        r = advisor_entry(*args, "--storage", db, "--budget", "1.5MiB", "--profiles-dir", str(tmp_path), cwd=tmp_path)
        one_error_line(r, "--profiles-dir needs --gpu NAME")


@pytest.mark.parametrize("device", ["mps", "meta"])
def test_a_device_torch_knows_but_the_runtime_does_not_is_one_line(tmp_path, monkeypatch, device):
    """`--device mps` passed the device check (torch parses it) and ended in a RuntimeError traceback, exit 1,
    when the first checkpoint tensor was moved there; only cpu and cuda run, so it is refused in one line."""
    from typer.testing import CliRunner

    from advisor.cli import app
    from advisor.errors import UserError

    monkeypatch.chdir(tmp_path)
    for args in (["tune", "--device", device, "--trials", "1", "--storage", str(tmp_path / "s.db")],
                 ["eval", "bundled", "--device", device, "--precision", "int4", "--limit", "1"]):
        r = CliRunner().invoke(app, args)
        assert isinstance(r.exception, UserError), (r.output, r.exception)
        assert str(r.exception) == (f"device '{device}' is not supported: the offload runtime runs on cpu or cuda; "
                                    "use cpu, cuda or cuda:N")
    assert not (tmp_path / "s.db").exists()


def test_an_empty_storage_or_report_directory_is_refused_not_taken_for_the_default(tmp_path, monkeypatch):
    """`--storage "$DB"` with DB unset read, tuned into or exported from sqlite:///studies/advisor.db of the current
    directory without a word (a worker of a shared PostgreSQL study tuned into a private SQLite file), and
    `report -o "$OUT"` wrote the report into the current directory; each is one line now, nothing written."""
    from typer.testing import CliRunner

    from advisor.cli import app
    from advisor.errors import UserError

    monkeypatch.chdir(tmp_path)
    (tmp_path / "studies").mkdir()
    shutil.copy(Path(__file__).resolve().parents[1] / "studies" / "example" / "advisor.db",
                tmp_path / "studies" / "advisor.db")  # the default database, which '' used to open
    before = sorted(p.name for p in tmp_path.rglob("*"))
    storage = "--storage is empty; give a database URL or SQLite path (without it: sqlite:///studies/advisor.db)"
    for args, needle in ((["tune", "--space", "nosuch", "--trials", "1"], storage),
                         (["studies"], storage), (["pareto", "bundled-example", "--no-plots"], storage),
                         (["recommend", "--budget", "2MiB"], storage),
                         (["export", "bundled-example", "129", "--to", "json"], storage),
                         (["report", "bundled-example"], storage)):
        r = CliRunner().invoke(app, [*args, "--storage", ""])
        assert isinstance(r.exception, UserError), (args, r.output)
        assert str(r.exception).startswith(needle), str(r.exception)
    r = CliRunner().invoke(app, ["export", "", "129", "--to", "json", "--storage", "studies/advisor.db"])
    assert isinstance(r.exception, UserError), r.output  # it said "no stored Pareto front for any study in ..."
    assert str(r.exception) == "STUDY is empty; give a study name (see `advisor studies`) or leave the option out"
    r = CliRunner().invoke(app, ["report", "nosuch", "--storage", "studies/advisor.db", "-o", ""])
    assert isinstance(r.exception, UserError) and str(r.exception).startswith("-o/--output is empty; give a directory")
    assert sorted(p.name for p in tmp_path.rglob("*")) == before


def test_a_device_is_read_as_every_fixed_name_is(tmp_path, monkeypatch):
    """`--task ' GSM8K'` is read as gsm8k (`choose`), but `--device ' CPU'` (a padded "$DEVICE") was refused as no
    device; it is cpu now: the command goes on to its next check (an unknown tiny family), before torch."""
    from typer.testing import CliRunner

    from advisor.cli import app
    from advisor.errors import UserError

    monkeypatch.chdir(tmp_path)
    for device in (" CPU", "cuda:1 "):
        r = CliRunner().invoke(app, ["inspect", "tiny:nosuch", "--device", device])
        assert isinstance(r.exception, UserError), (r.output, r.exception)
        assert str(r.exception).startswith("unknown tiny family 'nosuch'"), r.exception


@pytest.mark.parametrize("command", ["tune", "eval", "trace", "inspect"])
def test_each_device_option_says_which_devices_it_takes(command):
    """Only cpu and cuda[:N] run (any other device type is refused in one line by `advisor.models.load`); each
    model-loading command's --help says so (trace's --device had no help text)."""
    from typer.testing import CliRunner

    from advisor.cli import app

    r = CliRunner().invoke(app, [command, "--help"], terminal_width=250)
    (line,) = [ln for ln in r.output.splitlines() if "--device" in ln]
    assert "cpu" in line and "cuda" in line, line


def test_an_option_of_one_value_given_twice_is_refused_in_every_command(tmp_path):
    """click keeps the last of `--budget 8GB --budget 4GB` without a word, so the answer was for a value the user
    may not have meant (a script that appends its own --budget to a user's). Every command now refuses an option
    of one value given twice (flags and their --no- side included), before any work; options that take a list
    repeat as before."""
    example = str(Path(__file__).resolve().parents[1] / "studies" / "example" / "advisor.db")
    refused = [
        (["recommend", "--storage", example, "--budget", "8GB", "--budget", "4GB"], "--budget is given 2 times"),
        (["tune", "--trials", "3", "--trials", "5", "--trials", "7"], "--trials is given 3 times"),
        (["pareto", "bundled-example", "--storage", example, "--no-plots", "--no-plots"],
         "--plots/--no-plots is given 2 times"),
        (["export", "bundled-example", "8", "--storage", example, "--to", "json", "-o", "a.json", "--output", "b.json"],
         "-o/--output is given 2 times"),
        (["studies", "--storage", "a.db", "--storage", "b.db"], "--storage is given 2 times"),
        (["report", "bundled-example", "--storage", example, "--memory", "10%", "--memory", "25%"],
         "--memory is given 2 times"),
    ]
    for args, said in refused:
        line = one_error_line(advisor_entry(*args, cwd=tmp_path), said, "; give it once", f"advisor {args[0]} --help")
        assert line.startswith(f"error: {said}"), line
    assert not list(tmp_path.iterdir())  # no study, plot, export or report written
    # repeatable options still repeat: export's --opt (each one applied), profile's --expert-shape
    r = advisor_entry("export", "bundled-example", "8", "--storage", example, "--to", "llama.cpp", "--opt",
                "emit=tensor-types", "--opt", "high_precision=f16", cwd=tmp_path)
    assert r.returncode == 0 and "ffn_down_exps\\.weight=f16" in r.stdout, r.stdout + r.stderr
    r = advisor_entry("profile", "--list", "--expert-shape", "8x8", "--expert-shape", "16x16", cwd=tmp_path)
    assert r.returncode == 0 and "catalogue" in r.stdout, r.stdout + r.stderr


def test_help_is_shown_where_an_option_is_also_given_twice(tmp_path):
    """`--help` wins over the rest of the line, as click has it (a bad value beside it shows the help too): a
    user who adds --help to a line that gave --budget twice is shown the help, not sent to --help."""
    example = str(Path(__file__).resolve().parents[1] / "studies" / "example" / "advisor.db")
    r = advisor_entry("recommend", "--storage", example, "--budget", "8GB", "--budget", "4GB", "--help", cwd=tmp_path)
    assert r.returncode == 0 and "--max-accuracy-drop" in r.stdout and not r.stderr.strip(), r.stdout + r.stderr


def test_report_refuses_block_lengths_past_the_models_positions_naming_the_largest_that_fits(tmp_path):
    """`report --block-lengths 99999` decoded 2 blocks of 99,999 tokens beside each prompt on the bundled model's
    256 positions for many minutes. A block length whose 2 blocks beside the longest traced prompt (47 tokens)
    pass the positions is refused before the traces, with the largest that fits, and nothing is written."""
    db = str(Path(__file__).resolve().parents[1] / "studies" / "example" / "advisor.db")
    r = advisor_entry("report", "bundled-example", "--storage", db, "-o", "r", "--block-lengths", "8,105",
                      cwd=tmp_path)
    one_error_line(r, "--block-lengths 8,105: block length 105 x 2 blocks", "(47 tokens)", "256 positions",
                   "at most 104 fits")
    assert r.stdout == "" and list(tmp_path.iterdir()) == []


def test_report_refuses_block_lengths_past_the_positions_alone_before_the_model_loads(tmp_path):
    """A block length whose 2 blocks alone pass the model's positions (config.json's, read without torch) was
    refused only after "[1] loading the study's model" (minutes for a real checkpoint): it is now the only line,
    before the load; one that passes them only beside the prompts is still refused after it (test above)."""
    db = str(Path(__file__).resolve().parents[1] / "studies" / "example" / "advisor.db")
    r = advisor_entry("report", "bundled-example", "--storage", db, "-o", "r", "--block-lengths", "8,200,99999",
                      cwd=tmp_path)
    one_error_line(r, "--block-lengths 8,200,99999: block lengths 200, 99999 x 2 blocks alone exceed bundled's 256 "
                   "positions; at most 128 fits beside no prompt, fewer beside the traced prompts")
    assert "loading" not in r.stderr and r.stdout == "" and list(tmp_path.iterdir()) == [], r.stderr


def test_report_refuses_a_model_of_other_moe_sizes_before_it_loads(tmp_path):
    """`report --model` of a model of another family or MoE sizes was refused by its fingerprint only after
    "[1] loading the study's model" (minutes for a real checkpoint); its config.json (read without torch) against
    the study's stored model description refuses it before the load, in the fingerprint refusal's words."""
    db = str(Path(__file__).resolve().parents[1] / "studies" / "example" / "advisor.db")
    for spec, differ in (("tiny:qwen3_moe", "model family ('qwen3_moe' here, 'llada_moe' stored)"),
                         ("tiny:llada_moe", "MoE layers (2 here, 4 stored)")):
        r = advisor_entry("report", "bundled-example", "--storage", db, "-o", "r", "--model", spec, cwd=tmp_path)
        one_error_line(r, f"--model {spec} is not the model study 'bundled-example' ran: it has other {differ}, as its "
                       "config.json gives them; point --model at that checkpoint")
        assert "loading" not in r.stderr and r.stdout == "" and list(tmp_path.iterdir()) == [], r.stderr


def test_profile_list_lists_the_good_profiles_and_names_each_broken_one(tmp_path):
    """`profile --list` stopped at the first broken file of the profiles folder (one error line, exit 2), so the
    good profiles beside it and any other broken file went unlisted. Now the good ones and the catalogue are
    listed, the header counts the broken ones, and a note names each: what is wrong and what to do."""
    profiles = tmp_path / "profiles"
    profiles.mkdir()
    good = {"name": "lab-gpu", "memory_bytes": 24 << 30, "h2d_gbps_pinned": 21.7, "h2d_gbps_pageable": 9.8,
            "copy_latency_us": 14.0, "source": "measured:2026-12-01"}
    (profiles / "lab-gpu.json").write_text(json.dumps(good))
    (profiles / "a.json").write_text("{")
    (profiles / "b.json").write_text(json.dumps({"name": "half"}))
    r = advisor_entry("profile", "--list", "--profiles-dir", "profiles", cwd=tmp_path)
    assert r.returncode == 0 and "Traceback" not in r.stderr, r.stderr
    out, err = flat(r.stdout), flat(r.stderr)
    assert out.startswith("1 measured profile(s) in profiles (2 broken, named at the end)"), out
    assert "lab-gpu: " in out and "RTX 4090 24GB: " in out, out
    assert "note: not listed: hardware profile profiles/a.json is not valid JSON" in err, err
    assert "delete it or run `advisor profile` again" in err, err
    assert "note: not listed: profiles/b.json: hardware profile lacks" in err and "or delete it" in err, err


@pytest.mark.parametrize("args", [("s", "-1", "--to", "json"), ("s", "--to", "json", "-15")], ids=["first", "last"])
def test_a_negative_trial_number_is_refused_as_a_trial_number_not_an_option(tmp_path, args):
    """`advisor export STUDY -1` answered click's "No such option: -1" (of -15, "-1"): a negative number is read as
    an option. It is refused as `export STUDY -- -1` is, naming the trial numbers to give; nothing is read."""
    r = advisor_entry("export", *args, "--storage", "s.db", cwd=tmp_path)
    number = next(a for a in args if a.startswith("-") and a[1:].isdigit())
    one_error_line(r, f"Invalid value for 'trial': {number} is not a trial number: give one from 0 to ")
    assert "No such option" not in r.stderr and r.stdout == "" and list(tmp_path.iterdir()) == []


@pytest.mark.parametrize(("args", "said"), [
    (("s", "-0"), "Invalid value for 'trial': -0 has a minus sign: give 0"),
    (("s", "5", "-1"), "Got unexpected extra argument (-1): export takes STUDY TRIAL"),
    (("s", "5", "6", "-1"), "Got unexpected extra arguments (6 -1): export takes STUDY TRIAL"),
    (("s", "--max-accuracy-drop", "-2", "-1"), "Invalid value for 'trial': -1 is not a trial number")],
    ids=["minus-zero", "extra", "extras", "beside-an-option-value"])
def test_a_minus_zero_trial_or_an_extra_negative_argument_is_one_plain_line(tmp_path, args, said):
    """`export s -0` said click's "No such option: -0" (-0 is in the trial range, so the negative-trial refusal
    let it through), and `export s 5 -1` said "-1 is not a trial number" of an argument past TRIAL: the problem is
    the extra argument. Each is one line naming it now; an option's negative value is still the option's."""
    r = advisor_entry("export", *args, "--to", "json", "--storage", "s.db", cwd=tmp_path)
    one_error_line(r, said)
    assert "No such option" not in r.stderr and r.stdout == "" and list(tmp_path.iterdir()) == []


@pytest.mark.parametrize("given", ["two", "1.5", "-1.5"])
def test_a_trial_that_is_no_whole_number_is_named_with_the_range_and_where_trials_are_listed(tmp_path, given):
    """`export STUDY two` / `export STUDY 1.5` said typer's "Invalid value for 'trial': Input should be a valid
    integer, unable to parse string as an integer", naming neither the value nor what a trial number is. It names
    both, the range, and `pareto`; a negative decimal, read as an argument since 9f08402, says the same."""
    r = advisor_entry("export", "s", given, "--to", "json", "--storage", "s.db", cwd=tmp_path)
    one_error_line(r, f"Invalid value for 'trial': '{given}' is not a trial number: give a whole number from 0 to "
                      "9223372036854775807; `advisor pareto STUDY` lists the trials to export (see `")
    assert r.stdout == "" and list(tmp_path.iterdir()) == []


def test_an_int_range_parser_is_named_as_this_typers_integer():
    """typer 0.26-0.28 (pyproject takes >= 0.26) shows a parser's click type by its function's name in --help: with
    c85367d's parser `--seed`, `--heartbeat` and export's TRIAL showed `<parse>` (0.28) or `PARSE` (0.26) where they
    showed `<int>` / `INTEGER`; the parser has the name of that typer's integer ("int" where it keeps no click types,
    0.29), which `advisor.cli._takes_int` reads too (checked by hand with typer 0.26.0 and 0.28.0)."""
    from advisor.commands import SAMPLER_SEED_RANGE, SEED_RANGE

    assert SEED_RANGE["parser"].__name__ == SAMPLER_SEED_RANGE["parser"].__name__ in ("int", "integer")


@pytest.mark.parametrize(("args", "said"), [
    (("simulate", "-1"), "trace file '-1' does not exist"),
    (("tune", "-1"), "'-1' is neither a model directory"),
    (("simulate", "-1", "--bogus"), "No such option: --bogus"),
    (("trace", "-1", "-o", "-2"), "'-1' is neither a model directory"),
    (("simulate", "-1", "--tau", "-2", "--tau", "-3"), "--tau is given 2 times; give it once")],
    ids=["trace-file", "model", "other-option", "beside-an-options-negative-value", "beside-an-option-given-twice"])
def test_a_negative_number_in_a_text_argument_is_that_argument(tmp_path, args, said):
    """`simulate -1` (a number where a file or model goes) answered click's "No such option: -1": it is now the
    argument it lands in, as `simulate -- -1` gives it, and refused in the command's own words; where the line
    has another unknown option, that one is named. A negative number given as an option's value on the same line
    (`trace -1 -o -2`) is that option's, not a number landing nowhere."""
    r = advisor_entry(*args, cwd=tmp_path)
    one_error_line(r, said)
    assert "No such option: -1" not in r.stderr and r.stdout == "" and list(tmp_path.iterdir()) == []


def test_help_beside_a_negative_number_is_shown(tmp_path):
    """`export --help -0` answered "No such option: -0" where --help shows the help whatever else the line says."""
    r = advisor_entry("export", "--help", "-0", cwd=tmp_path)
    assert r.returncode == 0 and "--from-recommend" in r.stdout and not r.stderr.strip(), r.stdout + r.stderr


@pytest.mark.parametrize("args", [("studies", "-1"), ("recommend", "--budget", "8GiB", "-3")])
def test_a_negative_number_given_to_a_command_of_no_arguments_says_it_takes_none(tmp_path, args):
    """`studies -1` said "Got unexpected extra argument (-1): studies takes " - the sentence ended at the command's
    arguments, of which it has none. It says so now."""
    r = advisor_entry(*args, "--storage", "s.db", cwd=tmp_path)
    one_error_line(r, f"Got unexpected extra argument ({args[-1]}): {args[0]} takes no arguments")
    assert r.stdout == "" and list(tmp_path.iterdir()) == []
