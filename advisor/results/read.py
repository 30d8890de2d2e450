"""The fast read path of stored fronts: needs neither SQLAlchemy nor torch.

`recommend` and `export` must answer in well under a second; importing SQLAlchemy alone costs a good part
of that. So for SQLite files (the default storage) the stored front is read with the standard library's
sqlite3; any other URL goes through `advisor.results.store` (SQLAlchemy). Both return `FrontPoint`s.
The table layout is defined once, in `advisor.results.store.FrontRow`.
"""

from __future__ import annotations

import datetime as dt
import sqlite3

from advisor.parsing import loads_json
from advisor.results.connections import connect_read_only
from advisor.results.front import FrontPoint, check_stored
from advisor.results.reconnect import watch_answers
from advisor.results.storage import require_database
from advisor.results.storage_errors import unreadable_database
from advisor.results.urls import sqlite_path

_COLUMNS = (
    "study_name, trial_number, model, model_fingerprint, task, config, \"values\", sources, device, hardware, "
    "space, budget_bytes, created_at"
)



@watch_answers()  # (a program's own psycopg2 waits are its own again on return)
def read_fronts(url: str, study_name: str | None = None) -> list[FrontPoint]:
    """Stored front points of one study (or all) from any storage URL."""
    path = sqlite_path(url)
    if path is None:
        from advisor.results.store import engine_for, load_fronts  # lazy: SQLAlchemy only off the SQLite path

        return load_fronts(engine_for(url), study_name)
    require_database(url)
    try:
        con = connect_read_only(path)
        try:
            if not con.execute("SELECT 1 FROM sqlite_master WHERE type='table' AND name='advisor_front'").fetchone():
                return []
            registered = con.execute("SELECT 1 FROM sqlite_master WHERE type='table' AND name='advisor_study'")
            objectives = ("(SELECT s.objectives FROM advisor_study s WHERE s.study_name = advisor_front.study_name)"
                          if registered.fetchone() else "NULL")
            q = f"SELECT {_COLUMNS}, {objectives} FROM advisor_front"
            args: tuple = ()
            if study_name is not None:
                q += " WHERE study_name = ?"
                args = (study_name,)
            rows = con.execute(q + " ORDER BY study_name, trial_number", args).fetchall()
        finally:
            con.close()
        return [check_stored(_point(r)) for r in rows]
    except (sqlite3.DatabaseError, ValueError, TypeError) as e:  # ValueError/TypeError: a garbled row
        raise unreadable_database(path, e, study=study_name) from e


def read_task_text(url: str, study_name: str, task: str, objectives: dict[str, str] | None) -> str:
    """`advisor.results.front.task_text` of study `study_name`, reading its stored space text (Optuna's study
    attribute `space_toml`) only where the study measured no task accuracy: by sqlite3 on SQLite, as
    `read_fronts` reads, else `advisor.results.registry.study_task_text`."""
    from advisor.results.front import task_text

    if not objectives or "accuracy" in objectives:
        return task
    path = sqlite_path(url)
    if path is None:
        from advisor.results.registry import study_task_text
        from advisor.results.store import engine_for

        engine = engine_for(url)
        try:
            return study_task_text(engine, study_name, task, objectives)
        finally:
            engine.dispose()
    try:
        con = connect_read_only(path)
        try:
            optuna = con.execute("SELECT 1 FROM sqlite_master WHERE type='table' AND name='study_user_attributes'"
                                 ).fetchone()  # (none in a database of fronts only)
            row = con.execute("SELECT a.value_json FROM study_user_attributes a JOIN studies s ON s.study_id = "
                              "a.study_id WHERE s.study_name = ? AND a.key = 'space_toml'",
                              (study_name,)).fetchone() if optuna else None
        finally:
            con.close()
        return task_text(task, objectives, loads_json(row[0]) if row else None)
    except (sqlite3.DatabaseError, ValueError, TypeError) as e:
        raise unreadable_database(path, e, study=study_name) from e


def _point(r: tuple) -> FrontPoint:
    created = dt.datetime.fromisoformat(r[12]) if r[12] else None
    return FrontPoint(
        study_name=r[0],
        trial_number=int(r[1]),
        model=r[2],
        model_fingerprint=r[3],
        task=r[4],
        config=loads_json(r[5]),
        values=loads_json(r[6]),
        sources=loads_json(r[7]),
        device=r[8],
        hardware=loads_json(r[9]),
        space=r[10],
        budget_bytes=r[11],
        created_at=created,
        objectives=loads_json(r[13]) if r[13] else {},
    )
