"""The project's own tables, beside Optuna's in the same database: persisted Pareto fronts (`FrontRow`),
study facts (`StudyRow`, queried by `registry`) and plan-only measurements (`EvalCacheRow`, by `evalcache`).

Optuna's storage keeps every trial (so optuna-dashboard opens a study unchanged); these tables keep what
`recommend`, `export` and `report` read, without importing optuna or torch: one row per front point with
its configuration, its measured values and where each value came from.
Metric names and their meaning: `advisor.results.front.METRICS`.
"""

from __future__ import annotations

import datetime as dt
import json
from collections.abc import Iterable

from sqlalchemy import (
    JSON,
    DateTime,
    Float,
    Integer,
    String,
    Text,
    UniqueConstraint,
    create_engine,
    delete,
    select,
    update,
)
from sqlalchemy.engine import Engine
from sqlalchemy.orm import DeclarativeBase, Mapped, Session, mapped_column

from advisor.results.connections import engine_kwargs, named_run
from advisor.results.front import FrontPoint, check_stored, finite_values
from advisor.results.locks import schema_lock
from advisor.results.reconnect import ride_out_restarts
from advisor.results.storage_errors import unreadable_database, unusable_url
from advisor.results.urls import normalize_url


class Base(DeclarativeBase):
    pass


class _RunColumns:
    """What a study ran on and for: the same columns in a study's row and in each of its front points."""

    model: Mapped[str] = mapped_column(String(512))
    model_fingerprint: Mapped[str] = mapped_column(String(128))
    task: Mapped[str] = mapped_column(String(128))
    space: Mapped[str] = mapped_column(String(512))
    budget_bytes: Mapped[float | None] = mapped_column(Float, nullable=True)
    device: Mapped[str] = mapped_column(String(256))
    hardware: Mapped[dict] = mapped_column(JSON)


class FrontRow(_RunColumns, Base):
    """One point of a study's persisted Pareto front."""

    __tablename__ = "advisor_front"

    id: Mapped[int] = mapped_column(Integer, primary_key=True, autoincrement=True)
    study_name: Mapped[str] = mapped_column(String(512), index=True)
    trial_number: Mapped[int] = mapped_column(Integer)
    config: Mapped[dict] = mapped_column(JSON)
    values: Mapped[dict] = mapped_column(JSON)
    sources: Mapped[dict] = mapped_column(JSON)
    created_at: Mapped[dt.datetime] = mapped_column(DateTime)
    note: Mapped[str] = mapped_column(Text, default="")


class StudyRow(_RunColumns, Base):
    """What a study was run on and for (one row per study name)."""

    __tablename__ = "advisor_study"

    study_name: Mapped[str] = mapped_column(String(512), primary_key=True)
    space_fingerprint: Mapped[str] = mapped_column(String(64))
    objectives: Mapped[dict] = mapped_column(JSON)
    sampler: Mapped[str] = mapped_column(String(64))
    created_at: Mapped[dt.datetime] = mapped_column(DateTime)
    updated_at: Mapped[dt.datetime] = mapped_column(DateTime)
    n_complete: Mapped[int] = mapped_column(Integer, default=0)


class EvalCacheRow(Base):
    __tablename__ = "advisor_eval_cache"
    __table_args__ = (UniqueConstraint("model_fingerprint", "task", "plan_fingerprint", "settings", "kind",
                                       name="uq_advisor_eval_cache_key"),)

    id: Mapped[int] = mapped_column(Integer, primary_key=True, autoincrement=True)
    model_fingerprint: Mapped[str] = mapped_column(String(128), index=True)
    task: Mapped[str] = mapped_column(String(128))
    plan_fingerprint: Mapped[str] = mapped_column(String(64))
    settings: Mapped[str] = mapped_column(String(512))
    kind: Mapped[str] = mapped_column(String(32))  # "accuracy" | "fidelity"
    values: Mapped[dict] = mapped_column(JSON)
    sources: Mapped[dict] = mapped_column(JSON)
    device: Mapped[str] = mapped_column(String(128))
    seconds: Mapped[float] = mapped_column(Float)
    study_name: Mapped[str] = mapped_column(String(512))
    created_at: Mapped[dt.datetime] = mapped_column(DateTime)


class EvalLeaseRow(Base):
    """A worker measuring a plan right now: others wait for its result instead of measuring it again. The
    holder renews `expires_at`; a dead holder's lease expires and is taken over."""

    __tablename__ = "advisor_eval_lease"

    key: Mapped[str] = mapped_column(String(64), primary_key=True)  # sha256 of the eval-cache key
    owner: Mapped[str] = mapped_column(String(64))
    expires_at: Mapped[dt.datetime] = mapped_column(DateTime)


def create_tables(engine: Engine) -> None:
    """Create the project's tables if missing. Concurrent workers on PostgreSQL would race in CREATE TABLE
    (duplicate type errors), so there creation is serialised by the advisory lock (`schema_lock`)."""
    with schema_lock(engine):
        Base.metadata.create_all(engine)


def _point_from_row(r: FrontRow, objectives: dict[str, str] | None) -> FrontPoint:
    return FrontPoint(
        study_name=r.study_name,
        trial_number=r.trial_number,
        model=r.model,
        model_fingerprint=r.model_fingerprint,
        task=r.task,
        config=r.config,
        values=r.values,
        sources=r.sources,
        device=r.device,
        hardware=r.hardware,
        space=r.space,
        budget_bytes=r.budget_bytes,
        created_at=r.created_at,
        objectives=dict(objectives) if isinstance(objectives, dict) else objectives or {},  # garbled: check_stored
    )


@named_run(outside_one=True)  # (made outside a `run_tune` call: a name of its own)
def engine_for(url: str) -> Engine:
    """An engine for a SQLAlchemy URL; a plain path is taken as a SQLite file, and a PostgreSQL URL without a
    driver gets one that is installed."""
    url = normalize_url(url, create_dirs=False)
    try:
        engine = create_engine(url, future=True, **engine_kwargs(url))
    except Exception as e:  # bad URL or missing driver
        raise unusable_url(url, e) from e
    return ride_out_restarts(engine)


class StudyRowGone(Exception):
    """A tuning worker's study row vanished under it: `advisor studies --delete` deletes our rows first, then
    Optuna's study, so between the two a worker still finds its study in Optuna; writing its front then would
    bring back the rows the delete had just removed."""


def save_front(engine: Engine, study_name: str, points: Iterable[FrontPoint], *, touch: bool = False) -> int:
    """Replace the stored front of `study_name` with `points` in one transaction (never half-written). `touch`:
    in the same transaction, the study's row says a trial just finished (`advisor studies`' `updated`: it was
    written only when a run started and ended, so an hour-long run's study read as updated at its start);
    `StudyRowGone`, writing nothing, where that row is gone."""
    create_tables(engine)
    now = dt.datetime.now(dt.UTC).replace(tzinfo=None)
    n = 0
    with Session(engine) as s, s.begin():
        if touch and not s.execute(update(StudyRow).where(StudyRow.study_name == study_name)
                                   .values(updated_at=now)).rowcount:
            raise StudyRowGone(study_name)  # (rolled back: no front written for a study being deleted)
        s.execute(delete(FrontRow).where(FrontRow.study_name == study_name))
        for p in points:
            values, sources = finite_values(p.values, p.sources)
            s.add(
                FrontRow(
                    study_name=study_name,
                    trial_number=p.trial_number,
                    model=p.model,
                    model_fingerprint=p.model_fingerprint,
                    task=p.task,
                    space=p.space,
                    budget_bytes=p.budget_bytes,
                    device=p.device,
                    hardware=json.loads(json.dumps(p.hardware)),
                    config=json.loads(json.dumps(p.config)),
                    values=values,
                    sources=sources,
                    created_at=now,
                )
            )
            n += 1
    return n


def load_fronts(engine: Engine, study_name: str | None = None) -> list[FrontPoint]:
    """Stored front points, of one study or all. A database that is not ours gives one clear error."""
    from sqlalchemy import inspect
    from sqlalchemy.exc import DatabaseError

    try:
        insp = inspect(engine)
        if not insp.has_table(FrontRow.__tablename__):
            return []
        with Session(engine) as s:
            q, oq = select(FrontRow), select(StudyRow.study_name, StudyRow.objectives)
            if study_name is not None:
                q, oq = q.where(FrontRow.study_name == study_name), oq.where(StudyRow.study_name == study_name)
            objectives = dict(s.execute(oq).all()) if insp.has_table(StudyRow.__tablename__) else {}
            return [check_stored(_point_from_row(r, objectives.get(r.study_name)))
                    for r in s.scalars(q.order_by(FrontRow.study_name, FrontRow.trial_number))]
    except (DatabaseError, ValueError, TypeError) as e:  # ValueError (JSON too), TypeError: a garbled row
        raise unreadable_database(engine.url, e, study=study_name) from e
