"""What a report reads from storage: a study's finished trials (Optuna) and its persisted front (our tables).

Every number the report states about the study comes from here, unchanged, so the report can be checked
against the database. A missing, empty or failed study is a `UserError` before anything is written.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from datetime import datetime
from functools import cached_property
from typing import Any

from advisor.errors import UserError
from advisor.results.connections import engine_kwargs
from advisor.results.front import METRICS, FrontPoint
from advisor.results.preflight import mask_url
from advisor.results.reconnect import watch_answers
from advisor.results.storage import require_database
from advisor.results.storage_errors import (
    damaged_reason,
    damaged_rows,
    driver_reason,
    is_locked_error,
    locked_database,
    other_optuna_schema,
)
from advisor.results.store import engine_for, load_fronts
from advisor.results.trials import check_objective_values, checked_metric_names, is_number
from advisor.results.urls import DEFAULT_STORAGE, normalize_url
from advisor.units import count, names_text


@dataclass
class TrialRecord:
    """One finished trial: its configuration, every recorded metric and where each came from."""

    number: int
    config: dict[str, Any]
    values: dict[str, float]
    sources: dict[str, str]
    attrs: dict[str, Any] = field(default_factory=dict)

    @property
    def precision(self) -> Any:
        for key in ("precision", "plan", "precision_plan"):
            if key in self.config:
                return self.config[key]
        return None

    @cached_property
    def uniform_format(self) -> str | None:
        """The single expert format of a uniform plan (hot/cold or per-layer mixes give None); parsed once, the
        report's selection asks it of every trial many times."""
        from advisor.results.config_view import uniform_format

        p = self.precision
        return uniform_format(p) if p is not None else None

    @property
    def plan_label(self) -> str:
        p = self.precision
        for key in ("plan_description", "precision_description", "plan_describe"):
            if isinstance(self.config.get(key), str):
                return self.config[key]
        return self.uniform_format or (p if isinstance(p, str) else str(self.config.get("plan_fingerprint", "mixed")))

    def attr(self, *names: str, default: Any = None) -> Any:
        """The first of `names` found in the trial's config or user attributes."""
        for n in names:
            if n in self.config:
                return self.config[n]
            if n in self.attrs:
                return self.attrs[n]
        return default


@dataclass
class StudyData:
    """A study as stored: directions, study-level attributes, finished trials and the persisted front."""

    name: str
    storage: str
    objectives: list[str]
    directions: list[str]
    study_attrs: dict[str, Any]
    trials: list[TrialRecord]
    n_failed: int
    n_total: int
    front: list[FrontPoint]
    ran: tuple[datetime, datetime] | None = None
    """When the finished trials ran: the first one's start and the last one's end, as Optuna stored them (the
    tuning host's clock); None where it stored neither."""

    def first_front(self) -> FrontPoint | None:
        return self.front[0] if self.front else None

    def setting(self, *names: str, default: Any = None) -> Any:
        """A study-level setting: study user attrs first, then the front's stored fields, then trials'."""
        for n in names:
            if n in self.study_attrs:
                return self.study_attrs[n]
        fp = self.first_front()
        if fp is not None:
            for n in names:
                if hasattr(fp, n) and getattr(fp, n) not in (None, "", {}):
                    return getattr(fp, n)
        for t in self.trials:
            v = t.attr(*names)
            if v is not None:
                return v
        return default


def _metric_dict(attrs: dict[str, Any], key: str) -> dict[str, Any]:
    v = attrs.get(key)
    return dict(v) if isinstance(v, dict) else {}


def trial_record(trial: Any, objectives: list[str]) -> TrialRecord:
    """Reads a FrozenTrial written by `advisor tune`: config, values and sources from its user attrs.

    Values come from the `values` attr (all measured metrics); the Optuna objective values fill any
    objective missing there, under the study's metric names.
    """
    attrs = dict(trial.user_attrs)
    values = {k: float(v) for k, v in _metric_dict(attrs, "values").items() if is_number(v)}
    for k in METRICS:
        if k not in values and is_number(attrs.get(k)):
            values[k] = float(attrs[k])
    for name, v in zip(objectives, trial.values or [], strict=False):
        values.setdefault(name, float(v))
    config = _metric_dict(attrs, "config") or dict(trial.params)
    sources = {k: str(v) for k, v in _metric_dict(attrs, "sources").items()}
    return TrialRecord(number=trial.number, config=config, values=values, sources=sources, attrs=attrs)


def _unreadable(url: str, e: BaseException, study: str | None = None) -> UserError:
    """The one line for a study database Optuna cannot read: locked, of another Optuna's schema, corrupt, or
    holding rows of a study (`study` where known) that cannot be decoded (`damaged_rows`)."""
    if is_locked_error(e):
        return locked_database(url)
    if (other := other_optuna_schema(url, e)) is not None:
        return other
    if damaged_reason(e) is not None:  # the database reads; a row in it does not decode
        return damaged_rows(url, e, study)
    # the driver's reason, not Optuna's wrapper type (StorageInternalError said nothing of a malformed file)
    return UserError(f"{url} is not a readable Optuna study database ({driver_reason(e.__cause__ or e)}); "
                     "point --storage at the database `advisor tune` wrote")


@watch_answers()
def load_study_data(study_name: str, storage: str = DEFAULT_STORAGE) -> StudyData:
    """The stored study, or one clear `UserError` (missing storage, unknown study, no finished trial)."""
    import optuna
    from sqlalchemy import inspect, text
    from sqlalchemy.exc import SQLAlchemyError

    url = normalize_url(storage, create_dirs=False)
    require_database(url)
    optuna.logging.set_verbosity(optuna.logging.WARNING)
    try:  # the names as plain SQL: a damaged row of another study must not stand in for this one's report
        names: list[str] = []
        tables = inspect(engine_for(url))
        if tables.has_table("version_info") and tables.has_table("studies"):  # else no study was tuned into it
            rdb = optuna.storages.RDBStorage(url, engine_kwargs=engine_kwargs(url), skip_table_creation=True)
            with engine_for(url).connect() as c:
                names = [str(n) for n in c.execute(text("SELECT study_name FROM studies")).scalars()]
    except (SQLAlchemyError, RuntimeError, ValueError, optuna.exceptions.OptunaError) as e:
        raise _unreadable(url, e) from e
    if study_name not in names:
        known = names_text(names, study_name)
        raise UserError(f"no study named {study_name!r} in {storage} (studies there: {known}); see `advisor studies`")
    try:  # Optuna decodes this study's rows (its settings, attributes, every trial) here
        study = optuna.load_study(study_name=study_name, storage=rdb)
        all_trials = study.get_trials(deepcopy=False)
        study_attrs, metric_names = dict(study.user_attrs), study.metric_names
    except (LookupError, TypeError, AssertionError) as e:  # a garbled row Optuna decodes (a choice index past its
        # list, a value for an objective the study lacks, an enum name it does not know, a NULL value - Optuna's
        # assert); only here: such an error of our own code is not a corrupt database
        raise _unreadable(url, ValueError(damaged_reason(e) if str(e) else "a stored value Optuna cannot decode"),
                          study_name) from e  # its own words: a LookupError's cause says only the value
    except (SQLAlchemyError, RuntimeError, ValueError, optuna.exceptions.OptunaError) as e:
        raise _unreadable(url, e, study_name) from e
    directions = [d.name.lower() for d in study.directions]
    done = [t for t in all_trials if t.state == optuna.trial.TrialState.COMPLETE]
    try:  # what Optuna decoded without checking it (SQLite keeps any value in any column)
        objectives = checked_metric_names(metric_names or [])
        for t in done:
            check_objective_values(t.values or [])
    except ValueError as e:
        raise _unreadable(url, e, study_name) from e
    failed = sum(t.state == optuna.trial.TrialState.FAIL for t in all_trials)
    if not done:
        raise UserError(f"study {study_name!r} has no finished trial ({count(len(all_trials), 'trial')}, {failed} failed); "
                        "run `advisor tune` until some trials complete, then report again")
    trials = [trial_record(t, objectives) for t in done]
    if not any("h2d_bytes_per_token" in t.values for t in trials):
        raise UserError(f"study {study_name!r} records no h2d_bytes_per_token; it was not written by `advisor tune`")
    front = load_fronts(engine_for(url), study_name)
    starts = [t.datetime_start for t in done if t.datetime_start is not None]
    ends = [t.datetime_complete for t in done if t.datetime_complete is not None]
    return StudyData(
        name=study_name,
        storage=mask_url(url),  # written into the report: never the password
        objectives=objectives,
        directions=directions,
        study_attrs=study_attrs,
        trials=trials,
        n_failed=failed,
        n_total=len(all_trials),
        front=front,
        ran=(min(starts), max(ends)) if starts and ends else None,
    )
