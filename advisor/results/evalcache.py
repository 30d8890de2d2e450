"""Measurements that depend on the precision plan only, kept across trials, studies and workers.

Accuracy (and the fidelity proxy) depend on which weights the experts compute with, not on how they are
cached, so they are keyed by model fingerprint + task + precision-plan fingerprint + the evaluation
settings that change the number (limit, seed, generation length). The table lives in the study's own
database, beside Optuna's, so every worker sharing a PostgreSQL study shares the cache too. Two workers
that measure the same plan at once both succeed: the second insert hits the unique key and is dropped.
"""

from __future__ import annotations

import datetime as dt
from dataclasses import dataclass
from typing import Any

from sqlalchemy import func, inspect, select
from sqlalchemy.engine import Engine
from sqlalchemy.exc import IntegrityError
from sqlalchemy.orm import Session

from advisor.results.store import EvalCacheRow, create_tables


@dataclass(frozen=True)
class CacheKey:
    model_fingerprint: str
    task: str
    plan_fingerprint: str
    settings: str
    kind: str


@dataclass
class CachedEval:
    values: dict[str, float]
    sources: dict[str, str]
    device: str
    seconds: float
    study_name: str


class EvalCache:
    """get/put of plan-only measurements in the study database."""

    def __init__(self, engine: Engine):
        self.engine = engine
        if not inspect(engine).has_table(EvalCacheRow.__tablename__):
            create_tables(engine)

    def _where(self, key: CacheKey):
        return (
            (EvalCacheRow.model_fingerprint == key.model_fingerprint)
            & (EvalCacheRow.task == key.task)
            & (EvalCacheRow.plan_fingerprint == key.plan_fingerprint)
            & (EvalCacheRow.settings == key.settings)
            & (EvalCacheRow.kind == key.kind)
        )

    def get(self, key: CacheKey) -> CachedEval | None:
        with Session(self.engine) as s:
            row = s.scalars(select(EvalCacheRow).where(self._where(key))).first()
            if row is None:
                return None
            return CachedEval(dict(row.values), dict(row.sources), row.device, row.seconds, row.study_name)

    def put(self, key: CacheKey, values: dict[str, Any], sources: dict[str, str], *, device: str, seconds: float,
            study_name: str) -> None:
        row = EvalCacheRow(
            model_fingerprint=key.model_fingerprint, task=key.task, plan_fingerprint=key.plan_fingerprint,
            settings=key.settings, kind=key.kind, values={k: float(v) for k, v in values.items()},
            sources=dict(sources), device=device, seconds=float(seconds), study_name=study_name,
            created_at=dt.datetime.now(dt.UTC).replace(tzinfo=None),
        )
        try:
            with Session(self.engine) as s, s.begin():
                s.add(row)
        except IntegrityError:
            pass  # another worker measured the same plan first; its row stands

    def count(self, model_fingerprint: str, task: str, kind: str = "accuracy") -> int:
        with Session(self.engine) as s:
            return int(s.scalar(select(func.count()).select_from(EvalCacheRow).where(
                (EvalCacheRow.model_fingerprint == model_fingerprint) & (EvalCacheRow.task == task)
                & (EvalCacheRow.kind == kind))) or 0)

    def best(self, model_fingerprint: str, task: str, settings: str) -> list[dict[str, float]]:
        """Every cached accuracy measurement for this model/task/settings (for optimistic staging bounds)."""
        with Session(self.engine) as s:
            rows = s.scalars(select(EvalCacheRow).where(
                (EvalCacheRow.model_fingerprint == model_fingerprint) & (EvalCacheRow.task == task)
                & (EvalCacheRow.settings == settings) & (EvalCacheRow.kind == "accuracy")))
            return [dict(r.values) for r in rows]
