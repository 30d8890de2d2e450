"""The project's own tables, beside Optuna's in the same database: persisted Pareto fronts.

Optuna's storage keeps every trial (so optuna-dashboard opens a study unchanged); these tables keep what
`recommend`, `export` and `report` read, without importing optuna or torch: one row per front point with
its configuration, its measured values and where each value came from.

Canonical metric names (used as keys everywhere in the project):
  h2d_bytes_per_token     counted bytes copied host->device per generated token
  transfer_ms_per_token   H2D time per generated token (CUDA events, or modelled from a hardware profile)
  latency_ms_per_token    wall-clock generation time per generated token
  hit_rate                expert-cache hits / look-ups
  accuracy                task accuracy (exact match, or pass@1), 0..1
  fidelity_kl             mean KL(full precision || this config) of next-token distributions
  fidelity_top1           top-1 agreement with full precision, 0..1
  peak_gpu_bytes          peak device memory (measured on CUDA; counted bytes on CPU)
`sources` maps each metric to how it was obtained, e.g. "counted", "measured:cuda-events",
"measured:wall-clock", "modelled:pcie(bw=25.0GB/s,lat=10us)".
"""

from __future__ import annotations

import datetime as dt
import json
from collections.abc import Iterable

from sqlalchemy import JSON, DateTime, Float, Integer, String, Text, create_engine, delete, select
from sqlalchemy.engine import Engine
from sqlalchemy.orm import DeclarativeBase, Mapped, Session, mapped_column

from advisor.errors import UserError
from advisor.results.front import METRICS, FrontPoint

__all__ = ["METRICS", "Base", "FrontPoint", "FrontRow", "engine_for", "ensure_tables", "load_fronts", "save_front"]

class Base(DeclarativeBase):
    pass


class FrontRow(Base):
    """One point of a study's persisted Pareto front."""

    __tablename__ = "advisor_front"

    id: Mapped[int] = mapped_column(Integer, primary_key=True, autoincrement=True)
    study_name: Mapped[str] = mapped_column(String(512), index=True)
    trial_number: Mapped[int] = mapped_column(Integer)
    model: Mapped[str] = mapped_column(String(512))
    model_fingerprint: Mapped[str] = mapped_column(String(128))
    task: Mapped[str] = mapped_column(String(128))
    space: Mapped[str] = mapped_column(String(512))
    budget_bytes: Mapped[float | None] = mapped_column(Float, nullable=True)
    device: Mapped[str] = mapped_column(String(256))
    hardware: Mapped[dict] = mapped_column(JSON)
    config: Mapped[dict] = mapped_column(JSON)
    values: Mapped[dict] = mapped_column(JSON)
    sources: Mapped[dict] = mapped_column(JSON)
    created_at: Mapped[dt.datetime] = mapped_column(DateTime)
    note: Mapped[str] = mapped_column(Text, default="")


def _point_from_row(r: FrontRow) -> FrontPoint:
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
    )


def engine_for(url: str) -> Engine:
    """An engine for a SQLAlchemy URL; a plain path is taken as a SQLite file."""
    if "://" not in url:
        url = f"sqlite:///{url}"
    try:
        return create_engine(url, future=True)
    except Exception as e:  # bad URL or missing driver
        raise UserError(f"cannot open storage {url!r}: {e}. Use a SQLAlchemy URL such as sqlite:///studies/advisor.db") from e


def ensure_tables(engine: Engine) -> None:
    Base.metadata.create_all(engine)


def save_front(engine: Engine, study_name: str, points: Iterable[FrontPoint]) -> int:
    """Replace the stored front of `study_name` with `points` in one transaction (never half-written)."""
    ensure_tables(engine)
    now = dt.datetime.now(dt.UTC).replace(tzinfo=None)
    n = 0
    with Session(engine) as s, s.begin():
        s.execute(delete(FrontRow).where(FrontRow.study_name == study_name))
        for p in points:
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
                    values={k: float(v) for k, v in p.values.items()},
                    sources=dict(p.sources),
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
        if not inspect(engine).has_table(FrontRow.__tablename__):
            return []
        with Session(engine) as s:
            q = select(FrontRow)
            if study_name is not None:
                q = q.where(FrontRow.study_name == study_name)
            return [_point_from_row(r) for r in s.scalars(q.order_by(FrontRow.study_name, FrontRow.trial_number))]
    except DatabaseError as e:
        raise UserError(f"{engine.url} is not a readable advisor database ({type(e).__name__}); point --storage at the file `advisor tune` wrote") from e
