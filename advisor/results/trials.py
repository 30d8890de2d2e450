"""Any stored trial of a study, read without optuna or torch: for `export --trial N` of a trial off the front,
and all of a study's complete trials for `recommend`'s accuracy reference (`read_study_trials`).

The stored front (`advisor_front`) keeps only the non-dominated feasible points; every other trial lives in
Optuna's own tables (`studies`, `trials`, `trial_values`, `trial_user_attributes`, ...), the schema that
optuna-dashboard reads too. This module reads one trial from them with plain SQL - the standard library's
sqlite3 for SQLite files, SQLAlchemy otherwise - and makes it a `FrontPoint` the way the tuner makes its
front (`front.trial_point`), so every exporter takes it unchanged.
"""

from __future__ import annotations

import math
import sqlite3
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

from advisor.baselines import NO_CACHE
from advisor.errors import UserError
from advisor.parsing import loads_json
from advisor.results.connections import connect_read_only
from advisor.results.front import METRICS, FrontPoint, dominates, trial_point
from advisor.results.reconnect import watch_answers
from advisor.results.storage import require_database
from advisor.results.storage_errors import not_optuna_writes, unreadable_database
from advisor.results.urls import sqlite_path

_INF = {"INF_POS": math.inf, "INF_NEG": -math.inf}
# the names Optuna stores its enums by (TrialState, StudyDirection, TrialValueModel.TrialValueType)
_STATES = frozenset({"RUNNING", "COMPLETE", "PRUNED", "FAIL", "WAITING"})
_DIRECTIONS = frozenset({"NOT_SET", "MINIMIZE", "MAXIMIZE"})
_VALUE_TYPES = frozenset({"FINITE", "INF_POS", "INF_NEG"})


@dataclass
class StoredTrial:
    """One trial as stored: Optuna's state name (COMPLETE, FAIL, PRUNED, RUNNING, WAITING), the point (None
    unless complete), the study's objectives {metric: direction} and whether the trial met its constraints."""

    state: str
    point: FrontPoint | None
    objectives: dict[str, str]
    feasible: bool = True
    infeasible_reason: str = ""


Query = Callable[[str, dict[str, Any]], list[tuple]]


@dataclass
class StudyTrials:
    """A study's complete trials that ran within its budget, as points (`front.trial_point`), dominated ones too:
    what `report` reads its full-precision reference from (`advisor.results.reference`), which the stored front
    may not hold (`advisor.report.select.feasible_trials`: an over-budget trial stores placeholder values)."""

    points: list[FrontPoint]
    no_cache: FrontPoint | None
    """Its stored no-cache baseline trial (`advisor tune --budgets`), the lowest-numbered, as `report` takes it."""
    dtype: str | None
    """Its model's recorded dtype (the study's `model_meta`)."""

    @property
    def full(self) -> str:
        """The study's full-precision 16-bit format, from the inputs `report` names its baseline by
        (`advisor.report.study.baseline_format`): the no-cache trial's format, else its plans', else the dtype."""
        from advisor.results.config_view import config_format
        from advisor.results.reference import full_format

        return full_format(self.dtype, (config_format(p.config) for p in self.points),
                           config_format(self.no_cache.config) if self.no_cache is not None else None)


def read_trial(url: str, study: str, number: int) -> StoredTrial | None:
    """Trial `number` of `study`, or None when the database keeps no Optuna trials (only stored fronts); a
    study or trial that does not exist is one clear UserError."""
    return _query_optuna(url, lambda q: _read(q, study, number), study)


def read_study_trials(url: str, study: str) -> StudyTrials | None:
    """Every complete trial of `study` that ran within its budget (`StudyTrials`), with the values `report` reads
    for it (`advisor.report.data.trial_record`: its stored values, metrics stored as attributes of their own, then
    its objective values); None when the
    database keeps no Optuna trials or not this study's (a stored front alone). A row that does not decode is one
    clear UserError, as `report` and `export` say it."""
    return _query_optuna(url, lambda q: _read_all(q, study), study)


def study_attr(url: str, study: str, key: str) -> Any:
    """The user attribute `key` Optuna stored for `study` (e.g. the CPU expert times it priced CPU misses
    with), None when the database keeps no Optuna trials or the study or the attribute is not there (a
    missing SQLite file is a UserError, as for every reader)."""
    def read(q: Query) -> Any:
        rows = q("SELECT a.value_json FROM study_user_attributes a JOIN studies s ON s.study_id = a.study_id "
                 "WHERE s.study_name = :s AND a.key = :k", {"s": study, "k": key})
        return _decoded(rows[0][0]) if rows else None

    return _query_optuna(url, read, study)


@watch_answers()
def _query_optuna(url: str, read: Callable[[Query], Any], study: str | None = None) -> Any:
    """`read` on a query of Optuna's tables in `url` (sqlite3 for SQLite files, SQLAlchemy otherwise: torch
    and SQLAlchemy stay unimported on the default storage); None when the database keeps no Optuna trials. A row
    that does not decode is said of `study`, the one read."""
    path = sqlite_path(url)
    if path is None:
        from sqlalchemy import inspect, text
        from sqlalchemy.exc import DatabaseError

        from advisor.results.store import engine_for

        engine = engine_for(url)
        try:
            if not inspect(engine).has_table("trials"):
                return None
            with engine.connect() as c:
                return read(lambda sql, args: list(c.execute(text(sql), args)))
        except (DatabaseError, ValueError) as e:  # as the sqlite3 branch below
            raise unreadable_database(engine.url, e, study=study) from e
    require_database(url)
    try:
        con = connect_read_only(path)
        try:
            if not con.execute("SELECT 1 FROM sqlite_master WHERE type='table' AND name='trials'").fetchone():
                return None
            return read(lambda sql, args: con.execute(sql, args).fetchall())
        finally:
            con.close()
    except (sqlite3.DatabaseError, ValueError) as e:  # ValueError: a garbled row (`_decoded`, `_check_shapes`,
        raise unreadable_database(path, e, study=study) from e  # `_checked_name`); not TypeError, which such a row no longer
        # reaches: our own bug


def _attrs(rows: list[tuple]) -> dict[str, Any]:
    return {k: _decoded(v) for k, v in rows}


def _decoded(value: Any) -> Any:
    """A stored attribute's `value_json`, or ValueError where it is no JSON text (SQLite keeps any value in any
    column: NULL, a number) or not JSON."""
    if not isinstance(value, str | bytes):
        raise ValueError(f"a stored attribute holds {type(value).__name__}, not JSON text")
    return loads_json(value)


def checked_metric_names(metrics: Any) -> list[str]:
    """The study's stored metric names, or ValueError where they are not a list of names (a garbled row)."""
    if not isinstance(metrics, list) or not all(isinstance(m, str) for m in metrics):
        raise ValueError("the stored metric names are not a list of names")
    return metrics


def check_objective_values(values: Any) -> None:
    """ValueError where a trial's stored objective values are not numbers (SQLite keeps text in a float column)."""
    if not all(is_number(v) for v in values):
        raise ValueError("a stored objective value is not a number")


def _checked_name(value: Any, names: frozenset[str], what: str) -> str:
    """An enum Optuna stores by name ('COMPLETE', 'MINIMIZE'), or ValueError where it is no name Optuna writes."""
    name = str(value).split(".")[-1].upper()
    if name not in names:
        raise ValueError(not_optuna_writes(what))
    return name


def trial_state(value: Any) -> str:
    """A trial's state as Optuna stores it ('COMPLETE'), or ValueError where it is no state Optuna writes."""
    return _checked_name(value, _STATES, "trial state")


def _check_shapes(values: list[Any], meta: dict[str, Any], attrs: dict[str, Any], constraints: dict[str, Any]) -> None:
    """ValueError where a decoded row is not of the shape the tuner stores (a number where an object belongs, a
    value that is not one): a garbled database, refused in one line, before `trial_point` reads it."""
    check_objective_values(values)
    for where, stored, keys in (("study", meta, ("hardware", "objectives")),
                                ("trial", attrs, ("values", "config", "sources"))):
        if bad := [k for k in keys if stored.get(k) is not None and not isinstance(stored[k], dict)]:
            raise ValueError(f"the stored {where} attribute {bad[0]} is not a JSON object")
    if not all(is_number(v) for v in (attrs.get("values") or {}).values()):
        raise ValueError("a stored trial value is not a number")
    if bad := [k for k, v in constraints.items() if not all(is_number(c) for c in (v if isinstance(v, list) else [v]))]:
        raise ValueError(f"the stored {bad[0]} is not a number or a list of numbers")


def is_number(v: Any) -> bool:
    """A stored value that is a number (JSON's true/false decode to bools, which are ints to Python)."""
    return isinstance(v, int | float) and not isinstance(v, bool)


def _read(q: Query, study: str, number: int) -> StoredTrial:
    found = q("SELECT study_id FROM studies WHERE study_name = :s", {"s": study})
    if not found:
        raise UserError(f"no study {study!r} in this database (`advisor studies` lists them)")
    sid = found[0][0]
    row = q("SELECT trial_id, state FROM trials WHERE study_id = :s AND number = :n", {"s": sid, "n": number})
    if not row:
        (n,) = q("SELECT COUNT(*) FROM trials WHERE study_id = :s", {"s": sid})[0]
        raise UserError(f"study {study!r} has no trial {number} (its trials are numbered 0-{n - 1})" if n else
                        f"study {study!r} has no trials yet")
    tid, state = row[0][0], trial_state(row[0][1])
    metrics = checked_metric_names(_attrs(q("SELECT key, value_json FROM study_system_attributes WHERE study_id = :s AND "
                       "key = 'study:metric_names'", {"s": sid})).get("study:metric_names") or [])
    dirs = [_checked_name(d, _DIRECTIONS, "study direction").lower() for (d,) in
            q("SELECT direction FROM study_directions WHERE study_id = :s ORDER BY objective", {"s": sid})]
    objectives = dict(zip(metrics, dirs, strict=False))
    if state != "COMPLETE":
        return StoredTrial(state, None, objectives)
    meta = _attrs(q("SELECT key, value_json FROM study_user_attributes WHERE study_id = :s", {"s": sid}))
    attrs = _attrs(q("SELECT key, value_json FROM trial_user_attributes WHERE trial_id = :t", {"t": tid}))
    values = [_INF.get(_checked_name(t, _VALUE_TYPES, "value type"), v) for v, t in
              q("SELECT value, value_type FROM trial_values WHERE trial_id = :t ORDER BY objective", {"t": tid})]
    # Optuna 4's list ('constraints') and Optuna 5's `set_constraint` keys ('constraints:<name>', e.g. the
    # fidelity floor, which only that records)
    stored = _attrs(q("SELECT key, value_json FROM trial_system_attributes WHERE trial_id = :t AND "
                      "(key = 'constraints' OR key LIKE 'constraints:%')", {"t": tid}))
    _check_shapes(values, meta, attrs, stored)
    broken = [k for k, v in stored.items() if any(c > 0 for c in (v if isinstance(v, list) else [v]))]
    named = [k.partition(":")[2] for k in broken if ":" in k]
    feasible = attrs.get("feasible", True) is not False and not broken
    reason = str(attrs.get("infeasible_reason") or "") or (f"it breaks the study constraint {', '.join(named)}"
                                                           if named else "")
    point = trial_point(study, meta, metrics, number, values, attrs)
    return StoredTrial(state, point, objectives, feasible, reason)


def _read_all(q: Query, study: str) -> StudyTrials | None:
    found = q("SELECT study_id FROM studies WHERE study_name = :s", {"s": study})
    if not found:
        return None
    sid = found[0][0]
    metrics = checked_metric_names(_attrs(q("SELECT key, value_json FROM study_system_attributes WHERE study_id = :s "
                                            "AND key = 'study:metric_names'", {"s": sid})).get("study:metric_names") or [])
    meta = _attrs(q("SELECT key, value_json FROM study_user_attributes WHERE study_id = :s", {"s": sid}))
    done = sorted(n for n, state in q("SELECT number, state FROM trials WHERE study_id = :s", {"s": sid})
                  if trial_state(state) == "COMPLETE")
    keys = ("config", "values", "sources", "baseline", "feasible", *METRICS)  # what a point and its reference need
    attrs: dict[int, dict[str, Any]] = {n: {} for n in done}
    for n, k, v in q("SELECT t.number, a.key, a.value_json FROM trial_user_attributes a JOIN trials t ON t.trial_id = "
                     f"a.trial_id WHERE t.study_id = :s AND a.key IN ({', '.join(f':k{i}' for i in range(len(keys)))})",
                     {"s": sid, **{f"k{i}": k for i, k in enumerate(keys)}}):
        if n in attrs:
            attrs[n][k] = _decoded(v)
    values: dict[int, list[Any]] = {n: [] for n in done}
    for n, v, t in q("SELECT t.number, v.value, v.value_type FROM trial_values v JOIN trials t ON t.trial_id = "
                     "v.trial_id WHERE t.study_id = :s ORDER BY t.number, v.objective", {"s": sid}):
        if n in values:
            values[n].append(_INF.get(_checked_name(t, _VALUE_TYPES, "value type"), v))
    points, no_cache = [], None
    for n in done:
        a = attrs[n]
        if a.get("feasible", True) is False:  # over its budget: placeholder values, left out as `report` does
            continue
        _check_shapes(values[n], meta, a, {})
        # a metric stored as an attribute of its own (older studies) counts, as `report` reads it
        own = {k: a[k] for k in METRICS if k not in (a.get("values") or {}) and is_number(a.get(k))}
        p = trial_point(study, meta, metrics, n, values[n], {**a, "values": {**(a.get("values") or {}), **own}})
        points.append(p)
        if no_cache is None and a.get("baseline") == NO_CACHE.name:
            no_cache = p
    model_meta = meta.get("model_meta")
    dtype = model_meta.get("dtype") if isinstance(model_meta, dict) else None
    return StudyTrials(points, no_cache, dtype)


def dominated_by(trial: StoredTrial, front: list[FrontPoint]) -> list[int]:
    """Trial numbers of the front points that dominate `trial` on the study's objectives."""
    if trial.point is None or not trial.objectives:
        return []
    metrics, dirs = list(trial.objectives), list(trial.objectives.values())
    own = [trial.point.values.get(m) for m in metrics]
    if any(v is None for v in own):
        return []
    return [p.trial_number for p in front
            if all(m in p.values for m in metrics) and dominates([p.values[m] for m in metrics], own, dirs)]
