"""A queued point is queued once even where a cut lost only the server's answer to its committed insert.

Optuna tries a failed trial insert again (five tries); where the insert had been committed and only its answer
was lost (a PostgreSQL restart between the commit and its answer), the second try queued the point a second time,
and the study ran it twice. Through `run_tune`, the first queued point's commit is followed by the error such a
cut raises (the answer lost: a connection invalidated) - a real restart cannot be timed to fall there."""

from __future__ import annotations

import json

import pytest
from sqlalchemy.exc import OperationalError
from sqlalchemy.orm import Session
from tune_helpers import FakeBackend, small_space


@pytest.fixture(params=["sqlite", "postgresql"])
def url(request, tmp_path):
    return f"sqlite:///{tmp_path}/q.db" if request.param == "sqlite" else request.getfixturevalue("pg_schema_url")


def test_a_queued_point_whose_insert_answer_was_lost_is_queued_once(url, monkeypatch):
    import optuna

    from advisor.results.sqlite_storage import QUEUED_ID
    from advisor.tune.study import TuneOptions, run_tune

    real_prepare, real_commit, cut = optuna.storages.RDBStorage._get_prepared_new_trial, Session.commit, []

    def prepare(self, study_id, template_trial, session):  # Optuna's insert of a new trial row
        trial = real_prepare(self, study_id, template_trial, session)
        if template_trial is not None and QUEUED_ID in template_trial.system_attrs:
            session.info["queued"] = trial.trial_id
        return trial

    def commit(self):
        queued = self.info.pop("queued", None)
        real_commit(self)
        if queued is not None and not cut:  # committed; the answer "lost"
            cut.append(queued)
            raise OperationalError("COMMIT", {}, Exception("server closed the connection unexpectedly"),
                                   connection_invalidated=True)

    monkeypatch.setattr(optuna.storages.RDBStorage, "_get_prepared_new_trial", prepare)
    monkeypatch.setattr(Session, "commit", commit)
    opts = TuneOptions(study_name="q", storage=url, sampler="random", n_trials=0, heartbeat_interval=None)
    result = run_tune(FakeBackend(), small_space(), opts, budget_bytes=None)
    assert cut, "no queued point's insert was cut"
    storage = optuna.storages.RDBStorage(url if url.startswith("sqlite") else url.replace("postgresql://",
                                                                                          "postgresql+psycopg2://"))
    try:
        trials = optuna.load_study(study_name="q", storage=storage).get_trials(deepcopy=False)
    finally:
        storage.engine.dispose()
    points = [json.dumps(t.system_attrs["fixed_params"], sort_keys=True) for t in trials]
    assert len(points) == len(set(points)) == result.n_waiting > 1, points  # each queued once
    assert trials[0]._trial_id == cut[0]  # the first point: the trial its cut insert made


def test_the_keys_of_queued_inserts_are_let_go_once_each_insert_ends(url, monkeypatch):
    """The storage keeps a queued trial's key while its insert is tried (to know a try again), and lets it go when
    the insert ends. It let go in `create_new_trial`, which a study never calls - Optuna's `_CachedStorage`, which
    holds the storage, calls `_create_new_trial` - so every key queued in the process stayed held."""
    from advisor.results import storage as st
    from advisor.tune.study import TuneOptions, run_tune

    opened, real_open = [], st.open_storage

    def open_storage(*args, **kwargs):
        opened.append(real_open(*args, **kwargs))
        return opened[-1]

    monkeypatch.setattr(st, "open_storage", open_storage)
    opts = TuneOptions(study_name="k", storage=url, sampler="random", n_trials=0, heartbeat_interval=None)
    result = run_tune(FakeBackend(), small_space(), opts, budget_bytes=None)
    assert result.n_waiting > 1 and opened
    assert all(s._inserting == set() for s in opened), [s._inserting for s in opened]
