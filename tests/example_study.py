"""The committed example study (`studies/example/advisor.db`), and its trials found by what they ran: a test names
the configuration it means, not a trial number that moves whenever the example is regenerated."""

from __future__ import annotations

import json
import shutil
import sqlite3
from pathlib import Path
from typing import Any

EXAMPLE_DB = Path(__file__).resolve().parents[1] / "studies" / "example" / "advisor.db"


def example_trials(**config: Any) -> list[int]:
    """The numbers, ascending, of the example's complete trials whose stored config has each of these values
    (e.g. `precision_spec="int4", slots_per_layer=[52] * 4, policy="flru", miss_policy="hybrid"`)."""
    with sqlite3.connect(f"file:{EXAMPLE_DB}?mode=ro", uri=True) as con:
        rows = con.execute("SELECT t.number, a.value_json FROM trials t JOIN studies s USING (study_id) "
                           "JOIN trial_user_attributes a ON a.trial_id = t.trial_id AND a.key = 'config' "
                           "WHERE s.study_name = 'bundled-example' AND t.state = 'COMPLETE' ORDER BY t.number")
        stored = [(n, json.loads(raw)) for n, raw in rows]
    return [n for n, c in stored if all(c.get(k) == v for k, v in config.items())]


def example_trial(**config: Any) -> int:
    """The number of the example's one complete trial whose stored config has these values."""
    (number,) = example_trials(**config)
    return number


def example_without_hot_set(tmp: Path) -> tuple[Path, int]:
    """A copy of the committed example study in `tmp` whose first static_hot (Fiddler-style) trial off the front
    lost its calibration routing (config['routing_counts'], which export derives the hot set from), as a trial
    tuned before 2026-12-04 was stored; the copy's path and that trial's number."""
    db = tmp / "example.db"
    shutil.copy(EXAMPLE_DB, db)
    con = sqlite3.connect(db)
    try:
        front = {n for (n,) in con.execute("SELECT trial_number FROM advisor_front")}
        rows = con.execute("SELECT a.trial_user_attribute_id, t.number, a.value_json FROM trial_user_attributes a "
                           "JOIN trials t USING (trial_id) WHERE a.key = 'config' ORDER BY t.number").fetchall()
        attr, number, cfg = next((a, n, c) for a, n, v in rows
                                 if n not in front and (c := json.loads(v)).get("policy") == "static_hot")
        del cfg["routing_counts"]
        con.execute("UPDATE trial_user_attributes SET value_json = ? WHERE trial_user_attribute_id = ?",
                    (json.dumps(cfg), attr))
        con.commit()
    finally:
        con.close()
    return db, number
