"""A database `advisor tune` wrote whose rows of a study cannot be decoded (a garbled SQLite row, a value on
PostgreSQL the readers cannot decode): every reader says the study's rows are damaged and what to do - delete it
with `advisor studies --delete`, which decodes none of its rows, or start a new --storage - not "point --storage at
the file `advisor tune` wrote" (it is that file) nor, on PostgreSQL, "check the URL and that the server runs"."""

from __future__ import annotations

import sqlite3
import subprocess
from pathlib import Path

import pytest
from cli_helpers import flat
from sqlalchemy import text
from sqlalchemy.engine import make_url
from test_studies_delete import _advisor, _two_studies

from advisor.results.store import engine_for
from tests.test_cli_bad_input import garbled_example

EXAMPLE_DB = str(Path(__file__).resolve().parents[1] / "studies" / "example" / "advisor.db")


@pytest.fixture
def pg_url(pg_schema_url: str) -> str:
    """A fresh schema on the test server, dropped after the test (conftest.pg_schema_url)."""
    return pg_schema_url


@pytest.mark.postgres
def test_export_of_a_damaged_row_on_postgresql_says_the_rows_are_damaged_not_check_the_server(pg_url, capsys,
                                                                                                monkeypatch):
    """export of a trial off the front whose stored config is no JSON said "cannot read advisor results from
    postgresql://... (...); check the URL and that the server runs": the server ran, the row was damaged."""
    _two_studies(pg_url)
    engine = engine_for(pg_url)
    with engine.begin() as c:
        off = c.execute(text(
            "SELECT MIN(t.number) FROM trials t JOIN studies s ON s.study_id = t.study_id WHERE s.study_name = 'b' "
            "AND t.state = 'COMPLETE' AND t.number NOT IN (SELECT trial_number FROM advisor_front WHERE "
            "study_name = 'b')")).scalar()
        assert off is not None
        c.execute(text("UPDATE trial_user_attributes SET value_json = 'garbage{' WHERE key = 'config' AND trial_id = "
                       "(SELECT t.trial_id FROM trials t JOIN studies s ON s.study_id = t.study_id WHERE "
                       "s.study_name = 'b' AND t.number = :n)"), {"n": off})
    engine.dispose()
    code, out = _advisor(capsys, monkeypatch, "export", "b", str(off), "--to", "json", "-o", "x.json",
                         "--storage", pg_url)
    assert code == 2 and "holds rows of study 'b' that cannot be decoded" in out, out
    assert "`advisor studies --delete b` and the same --storage, or give a new --storage" in out, out
    assert "check the URL" not in out, out
    password = make_url(pg_url.split("?")[0]).password
    assert not password or f":{password}@" not in out, out  # the URL as masked: user:***@host


def test_a_damaged_study_row_is_said_with_the_studies_there_and_studies_delete_deletes_it(tmp_path, capsys,
                                                                                          monkeypatch):
    """A study settings row that does not decode (a start date that is no date): `advisor studies` and `pareto`
    said "point --storage at the file `advisor tune` wrote", and `studies --delete` refused the same way - a
    study no command could read or delete. Now the line says the rows are damaged, names the studies there
    (`studies` cannot list them), and `studies --delete` deletes it."""
    monkeypatch.chdir(tmp_path)
    garbled_example(tmp_path, "UPDATE advisor_study SET created_at = 'garbage'")
    code, out = _advisor(capsys, monkeypatch, "studies", "--storage", "garbled.db")
    assert (code, out.strip()) == (2, (
        "error: garbled.db holds rows of a study that cannot be decoded (Invalid isoformat string: 'garbage'): they "
        "are damaged; delete the study with `advisor studies --delete NAME` (studies there: bundled-example) and "
        "the same --storage, or give a new --storage")), out
    code, out = _advisor(capsys, monkeypatch, "pareto", "bundled-example", "--no-plots", "--storage", "garbled.db")
    assert code == 2 and "`advisor studies --delete bundled-example` and the same --storage" in out, out
    code, out = _advisor(capsys, monkeypatch, "studies", "--delete", "bundled-example", "--yes", "--storage",
                         "garbled.db")
    assert code == 0 and out.startswith("deleted study 'bundled-example' from garbled.db"), out
    code, out = _advisor(capsys, monkeypatch, "studies", "--storage", "garbled.db")
    assert (code, out) == (0, "no studies in garbled.db; run `advisor tune` first\n"), out
    with sqlite3.connect(tmp_path / "garbled.db") as con:
        assert con.execute("SELECT COUNT(*) FROM advisor_eval_cache").fetchone()[0] > 0  # kept
    con.close()


@pytest.mark.parametrize("garble", ["UPDATE trials SET state = 'BOGUS'", "UPDATE trial_values SET value = 'abc'"])
def test_report_and_export_of_damaged_optuna_rows_say_to_delete_the_study(tmp_path, capsys, monkeypatch, garble):
    """report and export said "point --storage at the database/file `advisor tune` wrote" of the very file."""
    monkeypatch.chdir(tmp_path)
    garbled_example(tmp_path, garble)
    code, out = _advisor(capsys, monkeypatch, "report", "bundled-example", "--storage", "garbled.db", "-o", "rep")
    assert code == 2 and "garbled.db holds rows of" in out and "they are damaged; delete the study with " in out, out
    assert "point --storage" not in out, out
    code, out = _advisor(capsys, monkeypatch, "export", "bundled-example", "0", "--to", "json", "-o", "x.json",
                         "--storage", "garbled.db")
    assert code == 2 and "garbled.db holds rows of study 'bundled-example' that cannot be decoded" in out, out
    assert "`advisor studies --delete bundled-example` and the same --storage, or give a new --storage" in out, out


def test_report_names_the_study_whose_optuna_rows_are_damaged_and_reads_the_others(tmp_path, capsys, monkeypatch):
    """report read every study's rows (Optuna's get_all_study_summaries) to list the names: a trial of state
    'BOGUS' in study 'other' refused the report of any study with "delete the study with `advisor studies
    --delete NAME`", naming none. Now the names are read undecoded and only the study asked for is decoded:
    its own damaged rows are said by its name, as `studies` and `pareto` say them, and another study reads."""
    import optuna

    from advisor.report.data import load_study_data

    monkeypatch.chdir(tmp_path)
    garbled_example(tmp_path, "SELECT 1")
    optuna.logging.set_verbosity(optuna.logging.WARNING)
    optuna.create_study(study_name="other", storage="sqlite:///garbled.db").optimize(
        lambda t: t.suggest_float("x", 0, 1), n_trials=1)
    with sqlite3.connect(tmp_path / "garbled.db") as con:
        con.execute("UPDATE trials SET state = 'BOGUS' WHERE study_id = "
                    "(SELECT study_id FROM studies WHERE study_name = 'other')")
    con.close()
    code, out = _advisor(capsys, monkeypatch, "report", "other", "--storage", "garbled.db", "-o", "rep")
    assert code == 2 and "garbled.db holds rows of study 'other' that cannot be decoded" in out, out
    assert "delete the study with `advisor studies --delete other` and the same --storage" in out, out
    assert not (tmp_path / "rep").exists()
    assert len(load_study_data("bundled-example", "garbled.db").trials) > 0  # (report's reading; its run takes 70 s)


def test_studies_and_pareto_refuse_a_study_with_a_trial_state_optuna_never_writes(tmp_path, capsys, monkeypatch):
    """One trial whose stored state is no Optuna state ('BOGUS') was left out of every count of `advisor studies`
    and `pareto` (299 finished of 300 trials, nothing said), while report and export refused the study as
    damaged: now they refuse it with the same line, by its name, and `studies --delete` deletes it, counting it."""
    monkeypatch.chdir(tmp_path)
    garbled_example(tmp_path, "UPDATE trials SET state = 'BOGUS' WHERE trial_id = (SELECT MIN(trial_id) FROM trials)")
    line = ("garbled.db holds rows of study 'bundled-example' that cannot be decoded (a stored trial state is not one "
            "Optuna writes): they are damaged; delete the study with `advisor studies --delete bundled-example` and "
            "the same --storage, or give a new --storage")
    for args in (("studies",), ("pareto", "bundled-example", "--no-plots")):
        code, out = _advisor(capsys, monkeypatch, *args, "--storage", "garbled.db")
        assert (code, flat(out)) == (2, f"error: {line}"), out
    code, out = _advisor(capsys, monkeypatch, "studies", "--delete", "bundled-example", "--yes", "--storage",
                         "garbled.db")
    assert code == 0 and flat(out).startswith("deleted study 'bundled-example' (bundled, toy: 299 finished trials, "
                                              "1 unreadable; 39 front points) from garbled.db"), out


NOT_UTF8 = [  # (the row changed, its column, a command that reads it)
    ("UPDATE advisor_front SET config = CAST(X'7BFF7D' AS TEXT) WHERE trial_number = 137", "config",
     ("recommend", "--study", "bundled-example", "--budget", "2MiB")),
    ("UPDATE trial_user_attributes SET value_json = CAST(X'22FF22' AS TEXT) WHERE trial_user_attribute_id = "
     "(SELECT MIN(trial_user_attribute_id) FROM trial_user_attributes)", "value_json",
     ("export", "bundled-example", "0", "--to", "json", "-o", "x.json")),
    ("UPDATE advisor_study SET task = CAST(X'74FF' AS TEXT)", "task", ("studies",)),
]


@pytest.mark.parametrize(("garble", "column", "reader"), NOT_UTF8, ids=[c for _, c, _ in NOT_UTF8])
def test_a_row_whose_text_is_not_utf8_is_damaged_and_studies_delete_deletes_its_study(tmp_path, capsys,
                                                                                     monkeypatch, garble, column,
                                                                                     reader):
    """SQLite keeps any bytes as TEXT; a row holding some that are not UTF-8 reads as sqlite3's OperationalError
    ('Could not decode to UTF-8 column ...'), a driver's error, which 3aa800a's damaged-rows line did not take:
    recommend and export said "is not a readable advisor database (... with text '<the whole value>'); point
    --storage at the file `advisor tune` wrote", studies said it without the studies there, and `studies --delete`
    - Optuna's ORM decodes each row it deletes - failed with "storage error: An exception is raised during the
    commit", so no command read or deleted the study. Now it is the damaged-rows line, by its column, and the
    delete goes on as plain SQL."""
    monkeypatch.chdir(tmp_path)
    garbled_example(tmp_path, garble)
    code, out = _advisor(capsys, monkeypatch, *reader, "--storage", "garbled.db")
    assert code == 2 and "point --storage" not in out, out
    assert f"cannot be decoded (column '{column}' holds text that is not UTF-8): they are damaged; delete the " \
           f"study with `advisor studies --delete {'NAME' if column == 'task' else 'bundled-example'}`" in out, out
    if column == "task":  # `studies` cannot list them: it names them
        assert "(studies there: bundled-example)" in out, out
    code, out = _advisor(capsys, monkeypatch, "studies", "--delete", "bundled-example", "--yes", "--storage",
                         "garbled.db")
    assert code == 0 and out.startswith("deleted study 'bundled-example' ") and "Studies left: none" in flat(out), out
    code, out = _advisor(capsys, monkeypatch, "studies", "--storage", "garbled.db")
    assert (code, out) == (0, "no studies in garbled.db; run `advisor tune` first\n"), out


def test_a_column_optuna_reads_is_named_by_its_table_and_column_not_by_a_sqlalchemy_label(tmp_path, capsys,
                                                                                          monkeypatch):
    """Optuna's ORM queries label each column `<table>_<column>`, and sqlite3 names that label when a TEXT value
    is not UTF-8: report said "column 'study_user_attributes_value_json' holds text that is not UTF-8", a name no
    table has. Now the column and its table: "column 'value_json' of table 'study_user_attributes'"."""
    monkeypatch.chdir(tmp_path)
    garbled_example(tmp_path, "UPDATE study_user_attributes SET value_json = CAST(X'22FF22' AS TEXT) WHERE "
                              "study_user_attribute_id = (SELECT MIN(study_user_attribute_id) FROM study_user_attributes)")
    code, out = _advisor(capsys, monkeypatch, "report", "bundled-example", "--storage", "garbled.db", "-o", "rep")
    assert code == 2 and len(out.strip().splitlines()) == 1, out
    assert "(column 'value_json' of table 'study_user_attributes' holds text that is not UTF-8): they are " \
           "damaged" in out, out


def test_a_study_whose_name_is_not_utf8_is_given_a_command_that_renames_it(tmp_path, capsys, monkeypatch):
    """A study whose name in Optuna's studies table is not UTF-8 text: every reader said "delete the study with
    `advisor studies --delete NAME`", a name no one can type (one typed as those bytes is refused before the query,
    as not UTF-8), so no command could read or delete the study. Now the one line gives a command renaming it (by
    the name's bytes, in every table holding it) through Python's sqlite3 - the `sqlite3` tool it first named is
    missing from many systems - and after it `studies` lists it and `studies --delete` deletes it."""
    monkeypatch.chdir(tmp_path)
    garbled_example(tmp_path, "UPDATE studies SET study_name = CAST(X'62FF' AS TEXT)")
    rename = ("garbled.db holds a study whose name is not UTF-8 text, so no command can name it; rename it with "
              "`python3 -c \"import sqlite3, sys; sqlite3.connect(sys.argv[1]).executescript(sys.argv[2])\" "
              "garbled.db \"UPDATE studies SET study_name = 'renamed-1' WHERE hex(study_name) = '62FF'\"` "
              "(then `advisor studies` lists it as renamed-1, and `advisor studies --delete renamed-1` deletes it), "
              "or give a new --storage")
    for args in (("studies",), ("report", "bundled-example", "-o", "rep"),
                 ("studies", "--delete", "bundled-example", "--yes")):
        code, out = _advisor(capsys, monkeypatch, *args, "--storage", "garbled.db")
        assert (code, flat(out)) == (2, f"error: {rename}"), (args, out)
    subprocess.run(rename.split("`")[1], shell=True, cwd=tmp_path, check=True, timeout=60)  # the command as given
    code, out = _advisor(capsys, monkeypatch, "studies", "--storage", "garbled.db")
    assert code == 0 and "renamed-1" in out and "bundled-example" in out, out
    code, out = _advisor(capsys, monkeypatch, "studies", "--delete", "renamed-1", "--yes", "--storage", "garbled.db")
    assert code == 0 and out.startswith("deleted study 'renamed-1' "), out


def test_a_not_utf8_name_typed_as_its_bytes_is_given_the_rename_where_the_file_holds_such_names(tmp_path, capsys,
                                                                                                monkeypatch):
    """The name of a study that is not UTF-8, typed as its bytes (`export $'b\\xff' 1`: Python keeps them as lone
    surrogates, which no query can send), was refused with "no name stored in garbled.db can match it; give the
    name in UTF-8" - where the file does hold such a name, which no UTF-8 name matches either. Now export,
    recommend and pareto give the rename that report and studies give; a file without such names keeps the line."""
    monkeypatch.chdir(tmp_path)
    garbled_example(tmp_path, "UPDATE studies SET study_name = CAST(X'62FF' AS TEXT)")
    typed = "b\udcff"  # how Python reads the argument's bytes b'b\xff'
    for args in (("export", typed, "1", "--to", "json", "-o", "x.json"), ("recommend", "--study", typed),
                 ("pareto", typed, "--no-plots")):
        code, out = _advisor(capsys, monkeypatch, *args, "--storage", "garbled.db")
        assert code == 2 and flat(out).startswith("error: garbled.db holds a study whose name is not UTF-8 text, "
                                                  "so no command can name it; rename it with "), (args, out)
    assert not (tmp_path / "x.json").exists()
    code, out = _advisor(capsys, monkeypatch, "pareto", typed, "--storage", EXAMPLE_DB)
    assert code == 2 and "holds bytes that are not UTF-8 text" in out and "can match it" in out, out
