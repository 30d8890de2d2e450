"""Measurements that depend on the precision plan only, kept across trials, studies and workers.

Accuracy (and the fidelity proxy) depend on which weights the experts compute with, not on how they are
cached, so they are keyed by model fingerprint + task + precision-plan fingerprint + the evaluation
settings that change the number (limit, seed, generation length). The table lives in the study's own
database, beside Optuna's, so every worker sharing a PostgreSQL study shares the cache too. A worker about to
measure a plan takes a lease on its key first (`measure_once`); another worker that wants the same plan waits
for that result instead of computing it twice. A lease is renewed while its holder works, so a killed holder's
lease runs out and the plan is taken over.
"""

from __future__ import annotations

import datetime as dt
import hashlib
import math
import threading
import time
import uuid
from collections.abc import Callable
from dataclasses import astuple, dataclass
from typing import Any

from sqlalchemy import delete, func, inspect, select, update
from sqlalchemy.engine import Engine
from sqlalchemy.exc import IntegrityError, SQLAlchemyError
from sqlalchemy.orm import Session

from advisor.results.reconnect import redo_when_cut
from advisor.results.storage_errors import unique_violation
from advisor.results.store import EvalCacheRow, EvalLeaseRow, create_tables

LEASE_S = 30.0
"""A lease lasts this long without renewal; its holder renews it every third of that."""


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
        self._leases: dict[CacheKey, tuple[str, str]] = {}  # the leases `measure_once` holds: key -> (lease, owner)
        insp = inspect(engine)
        if not (insp.has_table(EvalCacheRow.__tablename__) and insp.has_table(EvalLeaseRow.__tablename__)):
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
        if not all(math.isfinite(float(v)) for v in values.values()):
            return  # PostgreSQL's JSON has no NaN; not cached, so the same plan is measured again next time
        created_at = dt.datetime.now(dt.UTC).replace(tzinfo=None)

        def write() -> None:
            row = EvalCacheRow(
                model_fingerprint=key.model_fingerprint, task=key.task, plan_fingerprint=key.plan_fingerprint,
                settings=key.settings, kind=key.kind, values={k: float(v) for k, v in values.items()},
                sources=dict(sources), device=device, seconds=float(seconds), study_name=study_name,
                created_at=created_at,
            )
            held = self._leases.get(key)
            try:
                with Session(self.engine) as s, s.begin():
                    s.add(row)
                    if held is not None:  # measured under a lease: released in the same transaction as the row
                        s.execute(delete(EvalLeaseRow).where((EvalLeaseRow.key == held[0])
                                                             & (EvalLeaseRow.owner == held[1])))
            except IntegrityError as e:
                # a duplicate key: another worker measured the same plan first (or this write's cut commit landed);
                # its row stands. Any other violation (a required value left out) is a row never written: raised
                if not unique_violation(e):
                    raise
            else:
                self._leases.pop(key, None)

        # the trial's measurement: a PostgreSQL restart that cut its write failed the trial and stopped the worker,
        # and the rerun measured the plan again (minutes of a real model's evaluation)
        redo_when_cut(write)

    def measure_once(self, key: CacheKey, measure: Callable[[], None], *, stop: Callable[[], bool] = lambda: False,
                     poll_s: float = 0.2, lease_s: float = LEASE_S) -> CachedEval | None:
        """Run `measure` (which `put`s the result) unless another worker is measuring `key`: then wait for its
        row and return it. Returns None when `measure` ran here. `stop()` true while waiting raises
        KeyboardInterrupt (the study was asked to stop)."""
        owner = uuid.uuid4().hex
        lease = hashlib.sha256("\x1f".join(astuple(key)).encode()).hexdigest()
        while not self._claim(lease, owner, lease_s):
            hit = self.get(key)
            if hit is not None:
                return hit
            if stop():
                raise KeyboardInterrupt
            time.sleep(poll_s)
        done = threading.Event()
        renew = threading.Thread(target=self._renew, args=(lease, owner, lease_s, done), daemon=True)
        renew.start()
        self._leases[key] = (lease, owner)  # `put` of this key releases it with its row (one transaction)
        try:
            hit = self.get(key)  # measured between our first look and the claim
            if hit is not None:
                return hit
            measure()
            return None
        finally:
            done.set()
            renew.join()

            def release() -> None:
                with Session(self.engine) as s, s.begin():
                    s.execute(delete(EvalLeaseRow).where((EvalLeaseRow.key == lease) & (EvalLeaseRow.owner == owner)))

            if self._leases.pop(key, None) is not None:  # (not released by `put` with the row)
                redo_when_cut(release)  # (after the measurement is stored: a cut here failed its trial too)

    def _claim(self, lease: str, owner: str, lease_s: float) -> bool:
        now = _utcnow()
        try:  # one transaction: a holder that stopped renewing has lost its lease, and the claim is taken
            with Session(self.engine) as s, s.begin():
                s.execute(delete(EvalLeaseRow).where((EvalLeaseRow.key == lease) & (EvalLeaseRow.expires_at < now)))
                s.flush()
                s.add(EvalLeaseRow(key=lease, owner=owner, expires_at=now + dt.timedelta(seconds=lease_s)))
            return True
        except IntegrityError as e:  # a duplicate key: a live lease (the delete, rolled back with it, removed none)
            if not unique_violation(e):  # any other refusal would be taken for one on every poll: waited on for ever
                raise
            return False

    def _renew(self, lease: str, owner: str, lease_s: float, done: threading.Event) -> None:
        while not done.wait(lease_s / 3):
            try:
                with Session(self.engine) as s, s.begin():
                    s.execute(update(EvalLeaseRow).where((EvalLeaseRow.key == lease) & (EvalLeaseRow.owner == owner))
                              .values(expires_at=_utcnow() + dt.timedelta(seconds=lease_s)))
            except SQLAlchemyError:  # the database is busy or gone: the lease may lapse, at worst one extra run
                continue

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


def _utcnow() -> dt.datetime:
    return dt.datetime.now(dt.UTC).replace(tzinfo=None)
