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
import threading
from collections.abc import Callable, Iterator, Sequence
from contextlib import AbstractContextManager, contextmanager
from typing import Any

import optuna
from optuna.exceptions import StorageInternalError, UpdateFinishedTrialError
from optuna.trial import TrialState
from sqlalchemy.exc import SQLAlchemyError

from advisor.results.reconnect import redo_when_cut


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
    def __init__(self, *args: Any, **kwargs: Any) -> None:
        self._pending_attrs: dict[tuple[int, int], list[tuple[str, str, Any]]] = {}
        super().__init__(*args, **kwargs)

    def record_heartbeat(self, trial_id: int) -> None:
        try:
            super().record_heartbeat(trial_id)
        except (SQLAlchemyError, StorageInternalError):  # the database is busy or gone: the next beat tries again
            pass

    # The writes that end a trial - its measured results and constraints (attributes), then its state and
    # values - are redone where a PostgreSQL restart cut them (`reconnect.redo_when_cut`): the worker stopped
    # there, and the measurement was lost (the rerun ran the trial again). An attribute is an upsert, so a
    # second write of it leaves what the first did.

    def set_trial_user_attr(self, trial_id: int, key: str, value: Any) -> None:
        if not self._held(trial_id, "user", key, value):
            redo_when_cut(lambda: super(HeartbeatStorage, self).set_trial_user_attr(trial_id, key, value))

    def set_trial_system_attr(self, trial_id: int, key: str, value: Any) -> None:
        if not self._held(trial_id, "system", key, value):
            redo_when_cut(lambda: super(HeartbeatStorage, self).set_trial_system_attr(trial_id, key, value))

    def set_trial_state_values(self, trial_id: int, state: TrialState, values: Sequence[float] | None = None) -> bool:
        """Optuna's write of a trial's state (and values); one that finishes the trial is redone where a cut
        lost it. A cut after its commit reached the server leaves the trial finished already, which Optuna's
        check refuses to update again: the redo then reads it back and takes a COMPLETE (or PRUNED) trial with
        these values for its own write (another worker finishing the same trial with the same values is as
        good). A FAIL cannot be told from another worker's (failing it as stale): refused, as before. A claim
        (RUNNING) is not redone: the worker stops there, no measurement lost."""
        if not state.is_finished():
            return super().set_trial_state_values(trial_id, state, values)
        tries = 0

        def write() -> bool:
            nonlocal tries
            tries += 1
            try:
                return super(HeartbeatStorage, self).set_trial_state_values(trial_id, state, values)
            except UpdateFinishedTrialError:
                if tries > 1 and state != TrialState.FAIL:
                    stored = self.get_trial(trial_id)
                    if stored.state == state and stored.values == (None if values is None else list(values)):
                        return True  # the cut write: committed before its answer was lost
                raise

        return redo_when_cut(write)

    # A trial's attributes (its measured results, its constraints) were each one transaction: nine to twelve
    # commits per trial, each an fsync of the SQLite file. In `attrs_in_one_commit` they are written together, in
    # one transaction, when the block ends - still before Optuna's write that finishes the trial, so a trial is
    # never COMPLETE without them; a worker killed before that commit leaves a RUNNING trial without them, as one
    # killed before the first of the single writes did (it is failed as stale and run again).

    @contextmanager
    def attrs_in_one_commit(self, trial_id: int) -> Iterator[None]:
        """In the block, this thread's attribute writes for `trial_id` are held and committed together at its end
        (also when it raises: what the trial recorded before its error stays recorded, as before). Other threads'
        and other trials' writes go through at once."""
        pending: list[tuple[str, str, Any]] = []
        where = (threading.get_ident(), trial_id)
        self._pending_attrs[where] = pending
        try:
            yield
        finally:
            del self._pending_attrs[where]
            if pending:
                redo_when_cut(lambda: self._write_attrs(trial_id, pending))

    def _held(self, trial_id: int, kind: str, key: str, value: Any) -> bool:
        pending = self._pending_attrs.get((threading.get_ident(), trial_id))
        if pending is None:
            return False
        pending.append((kind, key, value))
        return True

    def _write_attrs(self, trial_id: int, pending: list[tuple[str, str, Any]]) -> None:
        """`pending` in order, in one transaction, through Optuna's own write of one attribute
        (`_set_trial_attr_without_commit`: the trial must still be updatable; an attribute is an upsert). Those are
        Optuna's internals: where a later Optuna lacks them, one transaction each, as Optuna writes them."""
        try:
            from optuna.storages._rdb import models
            from optuna.storages._rdb.storage import _create_scoped_session

            write_one = self._set_trial_attr_without_commit
        except (ImportError, AttributeError):
            for kind, key, value in pending:
                setter = super().set_trial_user_attr if kind == "user" else super().set_trial_system_attr
                setter(trial_id, key, value)
            return
        tables = {"user": models.TrialUserAttributeModel, "system": models.TrialSystemAttributeModel}
        with _create_scoped_session(self.scoped_session, True) as session:
            for kind, key, value in pending:
                write_one(session, tables[kind], trial_id, key, value)


class SQLiteFileStorage(HeartbeatStorage):
    def __init__(self, url: str, *, lock: Callable[[], AbstractContextManager[None]], **kwargs: Any) -> None:
        self._lock = lock
        super().__init__(url, **kwargs)

    def set_trial_state_values(self, trial_id: int, state: TrialState, values: Sequence[float] | None = None) -> bool:
        with self._lock():
            return super().set_trial_state_values(trial_id, state, values)
