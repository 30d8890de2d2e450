"""Study-level facts in the project's own table, and a torch- and optuna-free listing of studies.

`advisor studies` must be instant and must work on a database another machine wrote, so it reads plain SQL:
our `advisor_study` rows (model, task, space, budget), the stored fronts, and trial counts from Optuna's
`studies`/`trials` tables (a schema optuna-dashboard also relies on). A study Optuna knows but we never
registered (created by another tool) is still listed, with what can be known about it. A running trial whose
worker stopped sending heartbeats (`trial_heartbeats`) is told apart: it stays RUNNING until the next
`advisor tune` on the study fails it and queues it again. `delete_study` (`advisor studies --delete`) removes a
study: our rows in one transaction, then Optuna's study through Optuna (the one function here that imports it),
or as plain SQL where Optuna cannot decode a row of it.
"""

from __future__ import annotations

import datetime as dt
import json
from dataclasses import dataclass
from typing import Any

from sqlalchemy import DateTime, String, delete, func, inspect, select, text
from sqlalchemy.engine import Engine
from sqlalchemy.exc import DatabaseError, IntegrityError
from sqlalchemy.orm import Session

from advisor.results.reconnect import redo_when_cut
from advisor.results.storage import GRACE_PERIOD_S
from advisor.results.storage_errors import damaged_reason, damaged_rows, unique_violation, unreadable_database
from advisor.results.store import FrontRow, StudyRow
from advisor.results.trials import trial_state

SILENT_AFTER_S = 3 * GRACE_PERIOD_S
"""A running trial whose worker sent no heartbeat for longer is "silent" (its worker most likely died): three
times the grace period after which `advisor tune` with the default --heartbeat (10 s) fails it. A live worker
writes one every --heartbeat seconds, so one run with any --heartbeat under 90 s is never called silent, and the
next `advisor tune` with --heartbeat 30 or less fails a silent trial."""


def _now() -> dt.datetime:
    return dt.datetime.now(dt.UTC).replace(tzinfo=None)


def register_study(engine: Engine, name: str, **fields: Any) -> None:
    """Insert or update the study's row (first writer creates it; later writers refresh counts/time); done again
    where a PostgreSQL restart cut it (`redo_when_cut`: an upsert). A new row needs every column the table
    requires (`advisor.tune.study.REGISTRY_FIELDS`): one left out is a ValueError naming it, not a write lost."""
    redo_when_cut(lambda: _register(engine, name, fields))


def _register(engine: Engine, name: str, fields: dict[str, Any]) -> None:
    for tries in range(1, 4):
        try:
            with Session(engine) as s, s.begin():
                row = s.get(StudyRow, name)
                if row is None:
                    s.add(StudyRow(study_name=name, created_at=_now(), updated_at=_now(), **fields))
                else:
                    for k, v in fields.items():
                        setattr(row, k, v)
                    row.updated_at = _now()
            return
        except IntegrityError as e:
            # a duplicate key: another worker inserted the row between our read and write - update it instead; any
            # other violation (a required column left out) was taken for one, and the row silently never written
            if not unique_violation(e) or tries == 3:
                raise ValueError(f"study {name!r}: its row in {StudyRow.__tablename__} was not written "
                                 f"({_integrity_reason(e, fields)})") from e


def _integrity_reason(error: IntegrityError, fields: dict[str, Any]) -> str:
    """What the database refused in a study row: the required columns `fields` leaves out, if any, else its own
    words (a duplicate key three times over: a row inserted and deleted under every try)."""
    required = [c.name for c in StudyRow.__table__.columns if not c.nullable and c.default is None
                and c.name not in ("study_name", "created_at", "updated_at")]
    missing = [c for c in required if fields.get(c) is None]
    if missing:
        return f"required field{'s' if len(missing) > 1 else ''} missing: {', '.join(missing)}"
    return str(getattr(error, "orig", error)).strip().splitlines()[0]


@dataclass
class StudySummary:
    name: str
    model: str
    task: str
    space: str
    budget_bytes: float | None
    device: str
    n_complete: int
    n_failed: int
    n_running: int
    front_size: int
    updated_at: dt.datetime | None
    n_waiting: int = 0
    """Queued trials (re-queued after an interruption or a dead worker, or seeded) that nobody runs yet."""
    n_retried: int = 0
    """Of the failed trials, those queued again and run (or waiting) as a new trial (`retry_of`): an interrupted
    trial or a dead worker's, which cost nothing but time."""
    objectives: dict[str, str] | None = None  # metric -> "minimize" | "maximize", as the study was run
    n_infeasible: int = 0
    """Of the finished trials, those stored over budget (user attr feasible = false): on no front."""
    silent_s: tuple[float, ...] = ()
    """Of the running trials, those silent (no heartbeat for over `SILENT_AFTER_S`): seconds since each one's last
    heartbeat. Running trials without heartbeats (heartbeat off, or a worker killed before its first beat until
    the next `advisor tune` stamps one) are not judged."""
    tuned: bool = True
    """Whether the study has the settings row `advisor tune` stores; a study Optuna alone knows (another tool's,
    or one whose delete was interrupted) has none: its model, task and space show as '?'."""
    n_unreadable: int = 0
    """Trials whose stored state Optuna never writes (a garbled row): counted only for `studies --delete`, which
    deletes them (`list_studies` refuses such a study otherwise)."""
    gpu: str | None = None
    """The --gpu profile the study was tuned for (its stored hardware profile's name), which prices its modelled
    times; None where it was tuned without --gpu (or is no study of `advisor tune`)."""


UNREADABLE = "unreadable"
"""`list_studies`' own key for the trials of a state Optuna never writes, among the counts by Optuna's states."""


def study_task_text(engine: Engine, name: str, task: str, objectives: dict[str, str] | None) -> str:
    """`advisor.results.front.task_text` of study `name`, reading its stored space text only where the study
    measured no task accuracy."""
    from advisor.results.front import task_text

    if not objectives or "accuracy" in objectives:
        return task
    return task_text(task, objectives, study_user_attrs(engine, name).get("space_toml"))


def study_user_attrs(engine: Engine, name: str) -> dict[str, Any]:
    """The user attributes Optuna stored for study `name` (what `advisor tune` compares on resume), read by
    plain SQL so that nothing is created or written; {} when the database, its tables or the study are
    not there yet."""
    from advisor.results.urls import sqlite_path

    path = sqlite_path(engine.url)
    if path is not None and not path.is_file():  # connecting would create the file
        return {}
    try:
        if not {"studies", "study_user_attributes"} <= set(inspect(engine).get_table_names()):
            return {}
        q = text("SELECT a.key, a.value_json FROM study_user_attributes a "
                 "JOIN studies s ON s.study_id = a.study_id WHERE s.study_name = :name")
        with engine.connect() as c:
            return {k: json.loads(v) for k, v in c.execute(q, {"name": name})}
    except (DatabaseError, ValueError) as e:
        raise unreadable_database(engine.url, e, study=name) from e


def list_studies(engine: Engine, name: str | None = None, *, damaged: bool = False) -> list[StudySummary]:
    """Every study in the database (ours and Optuna's), with trial counts and stored front size; with `name`,
    that study alone (or none), reading only its own rows. A study holding a trial of a state Optuna never writes
    is refused as damaged (`damaged_rows`), as report and export refuse it; with `damaged`, what `studies
    --delete` asks with, such trials are counted in `n_unreadable` instead."""
    try:
        insp = inspect(engine)
        tables = set(insp.get_table_names())
    except DatabaseError as e:
        raise unreadable_database(engine.url, e) from e
    if not tables & {"studies", StudyRow.__tablename__}:
        return []
    counts: dict[str, dict[str, int]] = {}
    args = {} if name is None else {"name": name}

    def where(column: str, joined: str = "WHERE") -> str:  # joined: "AND" after a WHERE of the query's own
        return "" if name is None else f"{joined} {column} = :name "

    try:
        with engine.connect() as c:
            if {"studies", "trials"} <= tables:
                q = text("SELECT s.study_name, t.state, COUNT(t.trial_id) FROM studies s "
                         f"LEFT JOIN trials t ON t.study_id = s.study_id {where('s.study_name')}"
                         "GROUP BY s.study_name, t.state")
                for study, state, n in c.execute(q, args):
                    d = counts.setdefault(study, {})
                    if state is None:
                        continue
                    try:  # a state no count shows (it was left out: 299 of 300) is a row report cannot decode
                        d[trial_state(state)] = int(n)
                    except ValueError as e:
                        if not damaged:
                            raise damaged_rows(engine.url, e, study) from e
                        d[UNREADABLE] = d.get(UNREADABLE, 0) + int(n)
            silent = _silent_trials(c, name) if {"studies", "trials", "trial_heartbeats"} <= tables else {}
            retried: dict[str, int] = {}
            attr_tables = {"trial_user_attributes", "trial_system_attributes"} & tables
            if {"studies", "trials"} <= tables and attr_tables:
                # an interrupted trial's retry names it in the user attr retry_of; a dead worker's, queued by
                # Optuna's RetryFailedTrialCallback, in the system attr failed_trial
                union = " UNION ".join(
                    f"SELECT trial_id, value_json FROM {tbl} WHERE key = '{key}'"
                    for tbl, key in (("trial_user_attributes", "retry_of"), ("trial_system_attributes", "failed_trial"))
                    if tbl in attr_tables)
                q = text(f"SELECT s.study_name, COUNT(DISTINCT a.value_json) FROM ({union}) a "
                         "JOIN trials t ON t.trial_id = a.trial_id JOIN studies s ON s.study_id = t.study_id "
                         f"{where('s.study_name')}GROUP BY s.study_name")
                retried = {study: int(n) for study, n in c.execute(q, args)}
            over: dict[str, int] = {}
            if {"studies", "trials", "trial_user_attributes"} <= tables:
                q = text("SELECT s.study_name, COUNT(*) FROM trial_user_attributes a JOIN trials t ON t.trial_id = "
                         "a.trial_id JOIN studies s ON s.study_id = t.study_id WHERE a.key = 'feasible' AND "
                         f"a.value_json = 'false' AND t.state = 'COMPLETE' {where('s.study_name', 'AND')}"
                         "GROUP BY s.study_name")
                over = {study: int(n) for study, n in c.execute(q, args)}
            fronts: dict[str, int] = {}
            if FrontRow.__tablename__ in tables:
                q = text(f"SELECT study_name, COUNT(*) FROM {FrontRow.__tablename__} {where('study_name')}"
                         "GROUP BY study_name")
                fronts = {study: int(n) for study, n in c.execute(q, args)}
        rows: dict[str, StudyRow] = {}
        if StudyRow.__tablename__ in tables:
            with Session(engine) as s:
                mine = select(StudyRow) if name is None else select(StudyRow).where(StudyRow.study_name == name)
                rows = {r.study_name: _checked(r) for r in s.scalars(mine)}
    except (ValueError, TypeError, DatabaseError) as e:  # a garbled row (a date, text not UTF-8): named with the
        if damaged_reason(e) is None:  # studies there; else the database itself
            raise unreadable_database(engine.url, e) from e
        raise damaged_rows(engine.url, e, name, None if name else known_studies(engine)) from e
    out = []
    for study in sorted(set(counts) | set(rows)):
        r, c = rows.get(study), counts.get(study, {})
        out.append(StudySummary(
            name=study,
            model=r.model if r else "?",
            task=r.task if r else "?",
            space=r.space if r else "?",
            budget_bytes=r.budget_bytes if r else None,
            device=r.device if r else "?",
            n_complete=c.get("COMPLETE", 0 if c else r.n_complete if r else 0),
            n_failed=c.get("FAIL", 0),
            n_running=c.get("RUNNING", 0),
            front_size=fronts.get(study, 0),
            updated_at=r.updated_at if r else None,
            n_waiting=c.get("WAITING", 0),
            objectives=dict(r.objectives) if r and r.objectives else None,
            silent_s=tuple(silent.get(study, ())),
            n_retried=min(retried.get(study, 0), c.get("FAIL", 0)),
            n_infeasible=over.get(study, 0),
            tuned=r is not None,
            n_unreadable=c.get(UNREADABLE, 0),
            gpu=str(r.hardware["name"]) if r and isinstance(r.hardware, dict) and r.hardware.get("name") else None,
        ))
    return out


def _checked(r: StudyRow) -> StudyRow:
    """`r` as read back, or ValueError when the row is garbled (SQLite keeps any value in any column: objectives
    that are not a JSON object, a budget or trial count that is not a number), which the listing makes the one
    unreadable-database line; `advisor studies` met it as a traceback while printing."""
    def bad(name: str, what: str) -> ValueError:
        return ValueError(f"study {r.study_name!r}: stored {name} is not {what}")

    if r.objectives is not None and not isinstance(r.objectives, dict):
        raise bad("objectives", "a JSON object")
    if r.budget_bytes is not None and (isinstance(r.budget_bytes, bool) or not isinstance(r.budget_bytes, int | float)):
        raise bad("budget", "a number")
    if r.n_complete is not None and (isinstance(r.n_complete, bool) or not isinstance(r.n_complete, int)):
        raise bad("finished-trial count", "a whole number")
    for name in ("model", "task", "space", "device"):
        if getattr(r, name) is not None and not isinstance(getattr(r, name), str):
            raise bad(name, "text")
    return r


def _silent_trials(c: Any, name: str | None) -> dict[str, list[float]]:
    """Per study, seconds since the last heartbeat of each running trial silent for over `SILENT_AFTER_S`."""
    out: dict[str, list[float]] = {}
    for study, age in _beat_ages(c, name):
        if age > SILENT_AFTER_S:
            out.setdefault(study, []).append(age)
    return out


def _beat_ages(c: Any, name: str | None) -> list[tuple[str, float]]:
    """(study, seconds since the last heartbeat) of each running trial that has one, reckoned from the database's
    clock as Optuna's own stale-trial check does (heartbeats are written with it)."""
    now = c.execute(select(func.now())).scalar().replace(tzinfo=None)  # PostgreSQL's is aware: Optuna drops it
    q = text("SELECT s.study_name, h.heartbeat FROM trial_heartbeats h JOIN trials t ON t.trial_id = h.trial_id "
             "JOIN studies s ON s.study_id = t.study_id WHERE t.state = 'RUNNING'"
             + ("" if name is None else " AND s.study_name = :name")).columns(study_name=String, heartbeat=DateTime)
    return [(study, (now - beat).total_seconds()) for study, beat in c.execute(q, {} if name is None else {"name": name})]


# ------------------------------------------------------------------------------------------ deleting a study


def known_studies(engine: Engine) -> list[str]:
    """Every study name the database holds anything of: Optuna's studies, our study rows and stored fronts (a
    front without its study row is left by nothing this tool does, but `delete_study` must reach it too). Read as
    plain SQL, no row decoded: a study whose rows are damaged is named too (`studies --delete` deletes it)."""
    names: set[str] = set()
    try:
        tables = set(inspect(engine).get_table_names())
        with engine.connect() as c:
            for table in ("studies", StudyRow.__tablename__, FrontRow.__tablename__):
                if table in tables:
                    names |= {str(n) for n in c.execute(text(f"SELECT DISTINCT study_name FROM {table}")).scalars()}
    except DatabaseError as e:
        raise unreadable_database(engine.url, e) from e
    return sorted(names)


def live_trials(engine: Engine, name: str) -> int:
    """Running trials of study `name` whose worker sent a heartbeat within `SILENT_AFTER_S`: most likely a worker
    tuning it right now (a trial without heartbeats, whose worker ran with them off or died before its first
    beat, cannot be judged and is not counted)."""
    if not {"studies", "trials", "trial_heartbeats"} <= set(inspect(engine).get_table_names()):
        return 0
    with engine.connect() as c:
        return sum(age <= SILENT_AFTER_S for _, age in _beat_ages(c, name))


def delete_study(engine: Engine, url: str, name: str) -> None:
    """Delete study `name`: our rows of it (its stored front and its study row, one transaction), then Optuna's
    study with every trial (`optuna.delete_study`: one transaction of Optuna's; `_delete_optuna_rows`, one of
    plain SQL, where Optuna cannot decode a row of the study).

    In this order an interrupt or error between the two leaves a study as Optuna alone knows it - as one
    created by another tool, which every command reads (`studies` lists it, `recommend` finds no front of it) -
    and the same call again finishes the job; the other order would leave a front that `recommend` still
    offers for a study whose trials are gone. The eval cache (`EvalCacheRow`, keyed by model, task, precision
    plan and evaluation settings, shared by every study of that model and task; its `study_name` only says
    which study measured a plan first) and the eval leases (keyed by that key, expiring in seconds) are not
    the study's and stay."""
    tables = set(inspect(engine).get_table_names())
    with Session(engine) as s, s.begin():
        for table in (FrontRow, StudyRow):
            if table.__tablename__ in tables:
                s.execute(delete(table).where(table.study_name == name))
    if "studies" not in tables:  # only our tables here: opening Optuna's storage would create its tables
        return
    with engine.connect() as c:
        in_optuna = c.execute(text("SELECT COUNT(*) FROM studies WHERE study_name = :n"), {"n": name}).scalar()
    if not in_optuna:
        return
    import optuna

    from advisor.results.storage import open_storage

    storage = open_storage(url, heartbeat_interval=None, damaged_hint="")  # deleting: no new path to give
    try:
        optuna.delete_study(study_name=name, storage=storage)
    except KeyError:  # another `delete` finished it meanwhile
        pass
    except Exception as e:  # a garbled row: Optuna's ORM decodes each row it deletes (an unknown state name:
        # LookupError; a start time that is no date: ValueError, or not text: TypeError; SQLite text that is not
        # UTF-8: sqlite3's OperationalError under Optuna's StorageInternalError)
        if damaged_reason(e) is None:
            raise
        _delete_optuna_rows(engine, name)
    finally:
        storage.engine.dispose()


def _delete_optuna_rows(engine: Engine, name: str) -> None:
    """Optuna's rows of study `name` deleted as plain SQL, none decoded, in one transaction: what `delete_study`
    falls back to when Optuna's ORM cannot decode a row of the study (a state or direction name it has no member
    for), which left a study no command could read or delete. Every table whose foreign key names `trials` loses
    the study's trials' rows, then every table naming `studies` (the trials themselves among them) its rows, then
    the study row - the order a server that checks foreign keys (PostgreSQL) asks for."""
    from sqlalchemy import column, table

    found = inspect(engine)
    refs = [(t, fk["constrained_columns"][0], fk["referred_table"]) for t in found.get_table_names()
            for fk in found.get_foreign_keys(t) if fk["referred_table"] in ("trials", "studies") and t != "studies"]
    studies, trials = table("studies", column("study_id"), column("study_name")), table("trials", column("trial_id"),
                                                                                         column("study_id"))
    with engine.begin() as c:
        study_id = c.execute(select(studies.c.study_id).where(studies.c.study_name == name)).scalar()
        if study_id is None:  # another `delete` finished it meanwhile
            return
        of_trials = select(trials.c.trial_id).where(trials.c.study_id == study_id).scalar_subquery()
        for referred, ids in (("trials", of_trials), ("studies", study_id)):
            for t, col, to in refs:
                if to == referred and not (referred == "trials" and t == "trials"):
                    rows = table(t, column(col))
                    c.execute(delete(rows).where(rows.c[col].in_(ids) if referred == "trials" else rows.c[col] == ids))
        c.execute(delete(studies).where(studies.c.study_id == study_id))
