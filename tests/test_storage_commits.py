"""How many transactions the advisor's own writes cost a trial on SQLite (each commit an fsync of the file): a
trial's attributes (results, constraints) in one, the front with the study's `updated` time in one, a new study's
attributes in one
(benchmarks/trial_overhead.py measures it; an accuracy measurement's lease: tests/test_eval_lease.py)."""

from __future__ import annotations

from collections import Counter

import optuna
import pytest
from commit_helpers import Transactions
from tune_helpers import FakeBackend, small_space

from advisor.tune.study import TuneOptions, run_tune


@pytest.fixture
def tmp_path(shm_tmp_path):
    return shm_tmp_path


N = 6


@pytest.fixture(scope="module")
def study_run(tmp_path_factory) -> tuple[list[frozenset[str]], str]:
    """The transactions of a 6-trial study on a closed-form backend (SQLite), and its storage URL."""
    opts = TuneOptions(study_name="s", storage=f"sqlite:///{tmp_path_factory.mktemp('commits')}/t.db",
                       sampler="random", seed=0, n_trials=N, heartbeat_interval=60, grace_period=120)
    with Transactions() as t:
        res = run_tune(FakeBackend(), small_space(), opts, budget_bytes=None)
    assert res.n_complete == N
    return t.committed, res.storage_url


def test_a_trials_attributes_are_one_transaction(study_run):
    committed, url = study_run
    # attributes written to trials that already exist (a queued trial's come with its creation): one per trial,
    # where each result and each constraint was one (about eleven per trial)
    attrs = [w for w in committed if w & {"trial_user_attributes", "trial_system_attributes"} and "trials" not in w]
    assert len(attrs) == N, Counter(committed)
    # nothing is lost by it: each finished trial holds its results and constraints
    study = optuna.load_study(study_name="s", storage=url)
    for trial in study.get_trials(states=(optuna.trial.TrialState.COMPLETE,)):
        assert {"config", "values", "sources", "stage", "feasible"} <= trial.user_attrs.keys()
        assert "constraints:memory_budget" in trial.system_attrs and "constraints" in trial.system_attrs


def test_the_front_and_the_studys_updated_time_are_one_transaction(study_run):
    committed, _ = study_run
    # the study's row alone: only when the run starts and ends; after each trial it goes with the front
    assert sum(w == {"advisor_study"} for w in committed) <= 2, Counter(committed)
    assert sum(w == {"advisor_front", "advisor_study"} for w in committed) >= N, Counter(committed)


def test_a_new_studys_attributes_are_one_transaction_and_a_resumes_run_number_one(study_run):
    committed, url = study_run
    # what the study was tuned on and for (about twenty attributes) and the run's number: one commit, where each
    # was one
    assert sum("study_user_attributes" in w for w in committed) == 1, Counter(committed)
    attrs = optuna.load_study(study_name="s", storage=url).user_attrs
    assert {"advisor_version", "model", "model_fingerprint", "task", "space", "space_fingerprint", "space_toml",
            "objectives", "budget_bytes", "hardware", "device", "device_type", "mode", "sampler", "evaluation",
            "model_meta"} <= attrs.keys() and attrs["runs"] == 1, attrs
    opts = TuneOptions(study_name="s", storage=url, sampler="random", seed=0, n_trials=1, heartbeat_interval=60,
                       grace_period=120)
    with Transactions() as t:
        run_tune(FakeBackend(), small_space(), opts, budget_bytes=None)
    assert sum("study_user_attributes" in w for w in t.committed) == 1, Counter(t.committed)
    again = optuna.load_study(study_name="s", storage=url).user_attrs
    assert again == {**attrs, "runs": 2}


def test_without_optunas_internals_a_new_studys_attributes_are_written_one_each(tmp_path, monkeypatch):
    """Where a later Optuna lacks the models the batch is written with, each attribute is written as Optuna
    writes it, one transaction each: nothing lost."""
    import advisor.results.sqlite_storage as storage

    def gone(models):
        raise AttributeError("no StudyModel.find_or_raise_by_id in this Optuna")

    monkeypatch.setattr(storage, "_study_attr_writer", gone)
    url = f"sqlite:///{tmp_path}/t.db"
    opts = TuneOptions(study_name="s", storage=url, sampler="random", seed=0, n_trials=1, heartbeat_interval=60,
                       grace_period=120)
    with Transactions() as t:
        run_tune(FakeBackend(), small_space(), opts, budget_bytes=None)
    attrs = optuna.load_study(study_name="s", storage=url).user_attrs
    assert sum("study_user_attributes" in w for w in t.committed) == len(attrs) > 10, Counter(t.committed)
    assert {"model_fingerprint", "space_fingerprint", "hardware", "evaluation"} <= attrs.keys() and attrs["runs"] == 1
