"""Optuna's RDB storage whose heartbeat outlives a database that fails for a moment, and, for a SQLite file, whose
trial state changes are atomic across processes.

Optuna writes a trial's heartbeat from a thread of its own; a write that failed (a PostgreSQL server restarted,
a SQLite file locked past the busy timeout) ended that thread with a traceback on stderr, and the trial beat no
more: its worker, alive, was judged dead and its trial failed and run again elsewhere. `HeartbeatStorage` lets
the failed beat go (the next one, an interval later, writes it; the lease renewal in `evalcache` does the same).

Optuna starts a queued (WAITING) trial by reading it and setting it RUNNING under `SELECT ... FOR UPDATE`,
which SQLite ignores: two workers reading the queue at the same instant both ran the trial, and the later one's
tell crashed ("Cannot tell a COMPLETE trial"); two workers failing one stale trial would both queue its retry.
Here every state change takes the file's lock (the turn SQLite workers take, `storage.sqlite_lock`, passed in
by `storage.open_storage`) and Optuna re-reads the state under it, so the second worker finds the trial taken
or finished and moves on. `RetryStaleTrial` queues a stale trial again without the constraints its stopped
attempt recorded. Imported only where Optuna already is.
"""

from __future__ import annotations

import copy
from collections.abc import Callable, Sequence
from contextlib import AbstractContextManager
from typing import Any

import optuna
from optuna.exceptions import StorageInternalError
from optuna.trial import TrialState
from sqlalchemy.exc import SQLAlchemyError


class RetryStaleTrial(optuna.storages.RetryHeartbeatStaleTrialCallback):
    """Optuna's retry of a trial whose worker stopped beating (killed, or stopped by its database cut under a
    query), less the constraints that attempt had recorded. Optuna copies every system attribute of the stale
    trial into its retry, and keeps a constraint set first: the retry was judged by the stopped attempt's
    constraint (the allocator's peak, an out-of-memory, measured again) and the resumed run printed Optuna's
    "The constraint value is ignored because this constraint `key='memory_budget'` is already set" warning."""

    def __call__(self, study: optuna.study.Study, trial: optuna.trial.FrozenTrial) -> None:
        trial = copy.copy(trial)
        trial.system_attrs = {k: v for k, v in trial.system_attrs.items()
                              if k != "constraints" and not k.startswith("constraints:")}
        super().__call__(study, trial)


class HeartbeatStorage(optuna.storages.RDBStorage):
    def record_heartbeat(self, trial_id: int) -> None:
        try:
            super().record_heartbeat(trial_id)
        except (SQLAlchemyError, StorageInternalError):  # the database is busy or gone: the next beat tries again
            pass


class SQLiteFileStorage(HeartbeatStorage):
    def __init__(self, url: str, *, lock: Callable[[], AbstractContextManager[None]], **kwargs: Any) -> None:
        self._lock = lock
        super().__init__(url, **kwargs)

    def set_trial_state_values(self, trial_id: int, state: TrialState, values: Sequence[float] | None = None) -> bool:
        with self._lock():
            return super().set_trial_state_values(trial_id, state, values)
