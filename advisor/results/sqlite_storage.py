"""Optuna's RDB storage whose heartbeat outlives a database that fails for a moment, and, for a SQLite file, whose
trial state changes are atomic across processes.

Optuna writes a trial's heartbeat from a thread of its own; a write that failed (a PostgreSQL server restarted,
a SQLite file locked past the busy timeout) ended that thread with a traceback on stderr, and the trial beat no
more: its worker, alive, was judged dead and its trial failed and run again elsewhere. `HeartbeatStorage` lets
the failed beat go (the next one, an interval later, writes it; the lease renewal in `evalcache` does the same).

Optuna starts a queued (WAITING) trial by reading it and setting it RUNNING under `SELECT ... FOR UPDATE`,
which SQLite ignores: two workers reading the queue at the same instant both ran the trial, and the later one's
tell crashed ("Cannot tell a COMPLETE trial"); two workers failing one stale trial would both queue its retry.
Here every state change takes the file's lock (the turn SQLite workers take, `locks.sqlite_lock`, passed in
by `storage.open_storage`) and Optuna re-reads the state under it, so the second worker finds the trial taken
or finished and moves on. `RetryStaleTrial` queues a stale trial again without the constraints its stopped
attempt recorded.

Optuna tries a trial's insert again when it fails (`_create_new_trial`: five tries); where a PostgreSQL restart
cut only the answer to a committed insert, the second try queued the point again. A trial queued through
`queue_trial` carries a key of its own (`QUEUED_ID`), and a try again of its insert finds the trial the first made
(`HeartbeatStorage._get_prepared_new_trial`). Imported only where Optuna already is.
"""

from __future__ import annotations

import copy
import json
import threading
import uuid
from collections.abc import Callable, Iterator, Sequence
from contextlib import AbstractContextManager, contextmanager
from typing import Any, Literal

import optuna
from optuna.exceptions import StorageInternalError, UpdateFinishedTrialError
from optuna.trial import TrialState
from sqlalchemy.exc import SQLAlchemyError

from advisor.results.reconnect import redo_when_cut

QUEUED_ID = "advisor:queued_id"
"""Trial system attribute: a key of the queued trial's own (random), so that a try again of its insert - Optuna's,
after a cut that lost the answer to a committed one - finds the trial made, not a second one."""


def queue_trial(study: optuna.study.Study, params: dict[str, Any], user_attrs: dict[str, Any] | None = None) -> None:
    """`study.enqueue_trial(params, user_attrs=user_attrs)` (no `skip_if_exists`), queued once however often its
    insert is tried (`QUEUED_ID`)."""
    study.add_trial(optuna.trial.create_trial(state=TrialState.WAITING, user_attrs=user_attrs,
                                              system_attrs={"fixed_params": params, QUEUED_ID: uuid.uuid4().hex}))


class RetryStaleTrial(optuna.storages.RetryHeartbeatStaleTrialCallback):
    """Optuna's retry of a trial whose worker stopped beating (killed, or stopped by its database cut under a
    query), less the constraints that attempt had recorded. Optuna copies every system attribute of the stale
    trial into its retry, and keeps a constraint set first: the retry was judged by the stopped attempt's
    constraint (the allocator's peak, an out-of-memory, measured again) and the resumed run printed Optuna's
    "The constraint value is ignored because this constraint `key='memory_budget'` is already set" warning."""

    def __call__(self, study: optuna.study.Study, trial: optuna.trial.FrozenTrial) -> None:
        trial = copy.copy(trial)
        trial.system_attrs = {**{k: v for k, v in trial.system_attrs.items()
                                 if k != "constraints" and not k.startswith("constraints:")},
                              QUEUED_ID: uuid.uuid4().hex}  # (the stale trial's own key would find that trial)
        super().__call__(study, trial)


class HeartbeatStorage(optuna.storages.RDBStorage):
    def __init__(self, *args: Any, **kwargs: Any) -> None:
        self._pending_attrs: dict[tuple[int, str, int], list[tuple[str, str, Any]]] = {}
        self._inserting: set[str] = set()  # the `QUEUED_ID`s whose insert has been tried
        super().__init__(*args, **kwargs)

    def _create_new_trial(self, study_id: int, template_trial: optuna.trial.FrozenTrial | None = None) -> Any:
        # (not `create_new_trial`: a study holds its storage in Optuna's `_CachedStorage`, which calls this one)
        try:
            return super()._create_new_trial(study_id, template_trial)
        finally:
            self._inserting.discard(_queued_id(template_trial))

    def _get_prepared_new_trial(self, study_id: int, template_trial: optuna.trial.FrozenTrial | None,
                                session: Any) -> Any:
        """Optuna's new trial row, made in `session` - or, for a queued trial (`QUEUED_ID`) whose insert is tried
        again, the row an earlier try committed, if it did (its answer lost to a cut): Optuna would make a second
        one. Looked up only on a try again (the key is new on the first), in the transaction that holds the study's
        row (Optuna's lock for numbering trials). Optuna's internals: where a later Optuna no longer calls this, it
        queues such a point twice, as before."""
        token = _queued_id(template_trial)
        if token is not None and token in self._inserting:
            from optuna.storages._rdb import models

            attr = models.TrialSystemAttributeModel
            made = (session.query(models.TrialModel).join(attr, attr.trial_id == models.TrialModel.trial_id)
                    .filter(models.TrialModel.study_id == study_id, attr.key == QUEUED_ID,
                            attr.value_json == json.dumps(token)).one_or_none())
            if made is not None:
                return made
        if token is not None:
            self._inserting.add(token)
        return super()._get_prepared_new_trial(study_id, template_trial, session)

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
        if not self._held(("trial", trial_id), "user", key, value):
            redo_when_cut(lambda: super(HeartbeatStorage, self).set_trial_user_attr(trial_id, key, value))

    def set_trial_system_attr(self, trial_id: int, key: str, value: Any) -> None:
        if not self._held(("trial", trial_id), "system", key, value):
            redo_when_cut(lambda: super(HeartbeatStorage, self).set_trial_system_attr(trial_id, key, value))

    def set_study_user_attr(self, study_id: int, key: str, value: Any) -> None:
        if not self._held(("study", study_id), "user", key, value):
            super().set_study_user_attr(study_id, key, value)

    def set_study_system_attr(self, study_id: int, key: str, value: Any) -> None:
        if not self._held(("study", study_id), "system", key, value):
            super().set_study_system_attr(study_id, key, value)

    def set_trial_state_values(self, trial_id: int, state: TrialState, values: Sequence[float] | None = None) -> bool:
        """Optuna's write of a trial's state (and values); one that finishes the trial is redone where a cut
        lost it. A cut after its commit reached the server leaves the trial finished already, which Optuna's
        check refuses to update again: the redo then reads it back and takes a COMPLETE (or PRUNED) trial with
        these values for its own write (another worker finishing the same trial with the same values is as
        good). A FAIL cannot be told from another worker's (failing it as stale): refused, as before. A claim of
        a queued trial (WAITING to RUNNING) is redone too: Optuna's write checks the state it finds, so where the
        cut claim had been committed the redo finds the trial RUNNING and says so (False), and Optuna takes the
        next queued one; the trial claimed then beats for no worker and is failed and queued again as any dead
        worker's (`study._first_heartbeats`). Either way the worker goes on; it stopped there before."""
        if not state.is_finished():
            return redo_when_cut(lambda: super(HeartbeatStorage, self).set_trial_state_values(trial_id, state, values))
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
    # killed before the first of the single writes did (it is failed as stale and run again). A new study's
    # attributes (what it was tuned on and for, about twenty) are written so too, by the worker that seeds it.

    @contextmanager
    def attrs_in_one_commit(self, owner_id: int, *, of: Literal["trial", "study"] = "trial") -> Iterator[None]:
        """In the block, this thread's attribute writes for trial (or study, `of`) `owner_id` are held and committed
        together at its end (also when it raises: what was recorded before the error stays recorded, as before).
        Other threads' writes, and those for another trial or study, go through at once. A trial's are written
        again where a PostgreSQL restart cut them (upserts); a study's are not: they are written under the
        study's seed lock, which the cut ends too - only its holder's whole seeding could be redone."""
        pending: list[tuple[str, str, Any]] = []
        where = (threading.get_ident(), of, owner_id)
        self._pending_attrs[where] = pending
        try:
            yield
        finally:
            del self._pending_attrs[where]
            if pending and of == "trial":
                redo_when_cut(lambda: self._write_attrs(of, owner_id, pending))
            elif pending:
                self._write_attrs(of, owner_id, pending)

    def _held(self, owner: tuple[str, int], kind: str, key: str, value: Any) -> bool:
        pending = self._pending_attrs.get((threading.get_ident(), *owner))
        if pending is None:
            return False
        pending.append((kind, key, value))
        return True

    def _write_attrs(self, of: str, owner_id: int, pending: list[tuple[str, str, Any]]) -> None:
        """`pending` in order, in one transaction: a trial's through Optuna's own write of one attribute
        (`_set_trial_attr_without_commit`: the trial must still be updatable; an attribute is an upsert), a study's
        as Optuna's `set_study_user_attr` writes one (`_study_attr_writer`). Those are Optuna's internals: where a
        later Optuna lacks them, one transaction each, as Optuna writes them. A duplicate key another process wrote
        meanwhile is an error, not the whole batch dropped in silence (as Optuna drops one attribute's)."""
        try:
            from optuna.storages._rdb import models
            from optuna.storages._rdb.storage import _create_scoped_session

            if of == "trial":
                tables = {"user": models.TrialUserAttributeModel, "system": models.TrialSystemAttributeModel}
                write_one = self._set_trial_attr_without_commit
            else:
                tables = {"user": models.StudyUserAttributeModel, "system": models.StudySystemAttributeModel}
                write_one = _study_attr_writer(models)
        except (ImportError, AttributeError):
            for kind, key, value in pending:
                getattr(super(), f"set_{of}_{kind}_attr")(owner_id, key, value)
            return
        with _create_scoped_session(self.scoped_session) as session:
            for kind, key, value in pending:
                write_one(session, tables[kind], owner_id, key, value)


def _study_attr_writer(models: Any) -> Callable[[Any, Any, int, str, Any], None]:
    """Optuna's `RDBStorage.set_study_user_attr` (or `_system_attr`, by the table given) as a write in a session,
    not committed - Optuna has no such function for a study's attributes - made of Optuna's models (`models`; an
    AttributeError where a later Optuna lacks what it uses). A study deleted meanwhile is Optuna's KeyError."""
    find_study = models.StudyModel.find_or_raise_by_id
    find = {t: t.find_by_study_and_key for t in (models.StudyUserAttributeModel, models.StudySystemAttributeModel)}

    def write(session: Any, table: Any, study_id: int, key: str, value: Any) -> None:
        attribute = find[table](find_study(study_id, session), key, session)
        if attribute is None:
            session.add(table(study_id=study_id, key=key, value_json=json.dumps(value)))
        else:
            attribute.value_json = json.dumps(value)

    return write


def _queued_id(trial: optuna.trial.FrozenTrial | None) -> str | None:
    return None if trial is None else trial.system_attrs.get(QUEUED_ID)


class SQLiteFileStorage(HeartbeatStorage):
    def __init__(self, url: str, *, lock: Callable[[], AbstractContextManager[None]], **kwargs: Any) -> None:
        self._lock = lock
        super().__init__(url, **kwargs)

    def set_trial_state_values(self, trial_id: int, state: TrialState, values: Sequence[float] | None = None) -> bool:
        with self._lock():
            return super().set_trial_state_values(trial_id, state, values)
