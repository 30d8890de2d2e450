"""How many transactions the advisor's own writes cost a trial on SQLite (each commit an fsync of the file): a
trial's attributes (results, constraints) in one, the front with the study's `updated` time in one, an accuracy
measurement's lease claimed in one and released with its row in one (benchmarks/trial_overhead.py measures it)."""

from __future__ import annotations

import re
from collections import Counter
from pathlib import Path

import optuna
import pytest
from sqlalchemy import event
from sqlalchemy.engine import Engine
from sqlalchemy.orm import Session
from tune_helpers import FakeBackend, small_space

from advisor.results.evalcache import CacheKey, EvalCache
from advisor.results.store import EvalLeaseRow, engine_for
from advisor.tune.study import TuneOptions, run_tune

WRITE = re.compile(r"^\s*(?:INSERT\s+INTO|UPDATE|DELETE\s+FROM)\s+\"?(\w+)", re.I)


class Transactions:
    """The tables each committed SQLite transaction wrote, for every connection opened in the block."""

    def __init__(self) -> None:
        self.committed: list[frozenset[str]] = []

    def __enter__(self) -> Transactions:
        event.listen(Engine, "connect", self._connect)
        return self

    def __exit__(self, *exc) -> None:
        event.remove(Engine, "connect", self._connect)

    def _connect(self, con, record) -> None:
        tables: set[str] = set()

        def trace(sql: str) -> None:
            if m := WRITE.match(sql):
                tables.add(m.group(1))
            elif sql.lstrip().upper().startswith("COMMIT"):
                if tables:
                    self.committed.append(frozenset(tables))
                tables.clear()

        con.set_trace_callback(trace)


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


KEY = CacheKey("fp", "toy", "plan1", "{}", "accuracy")


def _put(cache: EvalCache, value: float) -> None:
    cache.put(KEY, {"accuracy": value}, {"accuracy": "measured:test"}, device="cpu", seconds=0.1, study_name="s")


def _leases(cache: EvalCache) -> int:
    with Session(cache.engine) as s:
        return s.query(EvalLeaseRow).count()


def test_a_measurement_under_a_lease_is_two_transactions_and_leaves_no_lease(tmp_path: Path):
    url = f"sqlite:///{tmp_path}/c.db"
    with Transactions() as t:  # (its connections opened in the block: each is traced from its start)
        cache = EvalCache(engine_for(url))
        assert cache.measure_once(KEY, lambda: _put(cache, 0.9)) is None
    assert t.committed == [{"advisor_eval_lease"}, {"advisor_eval_cache", "advisor_eval_lease"}]
    assert _leases(cache) == 0 and cache.get(KEY).values["accuracy"] == 0.9

    # another worker's row landed first: the put is refused, and the lease is still released
    other = EvalCache(engine_for(url))
    key2 = CacheKey("fp", "toy", "plan2", "{}", "accuracy")

    def raced() -> None:
        other.put(key2, {"accuracy": 0.7}, {"accuracy": "measured:test"}, device="cpu", seconds=0.1, study_name="s")
        cache.put(key2, {"accuracy": 0.8}, {"accuracy": "measured:test"}, device="cpu", seconds=0.1, study_name="s")

    assert cache.measure_once(key2, raced) is None
    assert _leases(cache) == 0 and cache.get(key2).values["accuracy"] == 0.7

    # a measurement that fails releases its lease too
    key3 = CacheKey("fp", "toy", "plan3", "{}", "accuracy")
    with pytest.raises(RuntimeError):
        cache.measure_once(key3, lambda: (_ for _ in ()).throw(RuntimeError("boom")))
    assert _leases(cache) == 0 and cache.get(key3) is None
