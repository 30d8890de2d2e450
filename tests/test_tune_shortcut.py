"""`advisor tune --trials N` again on a study with its N trials finished answers from the load record the study
stores (`advisor.tune.shortcut`), without loading the model, and still makes the full path's checks on it."""

from __future__ import annotations

import json
import sqlite3

from tests.cli_helpers import advisor_entry, advisor_in_process, one_error_line


class Loaded(Exception):
    """Raised where the model would load."""


def _attrs(db) -> dict:
    with sqlite3.connect(db) as c:
        rows = c.execute("SELECT key, value_json FROM study_user_attributes").fetchall()
    c.close()
    return {k: json.loads(v) for k, v in rows}


def _sql(db, query: str, *args) -> None:
    with sqlite3.connect(db) as c:
        c.execute(query, args)
    c.close()


def _no_load(monkeypatch) -> None:
    from advisor.commands import tune as tune_cmd
    from advisor.tune import interrupt

    def load(*a, **k):
        raise Loaded("the model was loaded")

    monkeypatch.setattr(interrupt, "import_runtime", load)
    monkeypatch.setattr(tune_cmd, "_load", load)


def test_a_finished_study_is_answered_from_its_load_record_with_the_full_paths_checks(tmp_path, monkeypatch):
    """The first run stores its load's record (the bundled model's files, its fingerprint, decoding, allowance);
    the same command again says 'nothing to run' without loading the model, takes no run number, re-saves a
    front a kill left unsaved, says a changed activation allowance, refuses trials of another decoding; a study
    without a record (stored by an earlier version) loads the model."""
    args = ("tune", "--trials", "1", "--storage", "s.db")  # the bundled model: study bundled-toy-quick
    db = tmp_path / "s.db"
    first = advisor_in_process(*args, cwd=tmp_path, env={"COLUMNS": "200"})
    assert first.returncode == 0, first.stdout + first.stderr
    attrs = _attrs(db)
    record = attrs["load_record"]
    assert record["fingerprint"] == attrs["model_fingerprint"] and record["offloaded"] is True, record
    assert record["key"]["signature"]["model"]["path"].endswith("bundled"), record["key"]
    assert record["key"]["fraction"] == 0.6 and record["decoding"]["steps_per_block"], record

    _no_load(monkeypatch)
    again = advisor_in_process(*args, cwd=tmp_path, env={"COLUMNS": "200"})
    assert again.returncode == 0, again.stdout + again.stderr
    assert "already has 1 finished trial (--trials 1); nothing to run" in again.stdout, again.stdout
    assert "queued trials (warm start) did not run" in again.stdout, again.stdout
    assert _attrs(db)["runs"] == attrs["runs"]

    _sql(db, "DELETE FROM advisor_front")  # killed between a trial's end and its front's save
    again = advisor_in_process(*args, cwd=tmp_path, env={"COLUMNS": "200"})
    assert again.returncode == 0, again.stdout + again.stderr
    with sqlite3.connect(db) as c:
        assert c.execute("SELECT COUNT(*) FROM advisor_front").fetchone()[0] == 1
    c.close()

    allowance = {"bytes": 1, "source": "measured:elsewhere"}
    _sql(db, "UPDATE study_user_attributes SET value_json = ? WHERE key = 'activation_allowance'", json.dumps(allowance))
    again = advisor_in_process(*args, cwd=tmp_path, env={"COLUMNS": "200"})
    assert "counted an activation allowance of 1 B (measured:elsewhere); this run counts" in again.stdout, again.stdout

    with sqlite3.connect(db) as c:
        ((tid, raw),) = c.execute("SELECT trial_id, value_json FROM trial_user_attributes WHERE key = 'config'")
    c.close()
    config = json.loads(raw)
    steps = config["decoding"]["steps_per_block"]
    config["decoding"]["steps_per_block"] = steps + 1
    _sql(db, "UPDATE trial_user_attributes SET value_json = ? WHERE trial_id = ? AND key = 'config'",
         json.dumps(config), tid)
    r = advisor_entry(*args, cwd=tmp_path, env={"COLUMNS": "200"})
    one_error_line(r, f"its trials decoded {steps + 1} denoising steps per block, this run decodes {steps}")

    _sql(db, "DELETE FROM study_user_attributes WHERE key = 'load_record'")  # a study stored before records were
    r = advisor_in_process(*args, cwd=tmp_path, env={"COLUMNS": "200"})
    assert "Loaded('the model was loaded')" in r.stderr, r.stdout + r.stderr
