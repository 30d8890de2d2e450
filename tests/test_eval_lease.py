"""The lease on the accuracy cache: a second worker waits for the first one's measurement instead of repeating
it; a dead holder's lease is taken over; a stop request ends the wait."""

from __future__ import annotations

import datetime as dt
import hashlib
import threading
import time
from dataclasses import astuple

import pytest
from commit_helpers import Transactions
from sqlalchemy.orm import Session

from advisor.results.evalcache import CacheKey, EvalCache
from advisor.results.store import EvalLeaseRow, engine_for

KEY = CacheKey("fp", "toy", "plan1", "{}", "accuracy")


def _put(cache: EvalCache, value: float) -> None:
    cache.put(KEY, {"accuracy": value}, {"accuracy": "measured:test"}, device="cpu", seconds=0.1, study_name="s")


def _leases(cache: EvalCache) -> int:
    with Session(cache.engine) as s:
        return s.query(EvalLeaseRow).count()


def _holding(cache: EvalCache, work) -> threading.Thread:
    """A thread in which `cache` holds KEY's lease while it runs `work`; returned once `work` has started."""
    started = threading.Event()

    def measure() -> None:
        started.set()
        work()

    t = threading.Thread(target=lambda: cache.measure_once(KEY, measure))
    t.start()
    assert started.wait(30)
    return t


def test_second_worker_waits_for_the_first_measurement(tmp_path):
    url = f"sqlite:///{tmp_path}/c.db"
    first, second = EvalCache(engine_for(url)), EvalCache(engine_for(url))
    calls: list[str] = []

    def slow() -> None:
        calls.append("first")
        time.sleep(0.8)
        _put(first, 0.9)

    t = _holding(first, slow)
    hit = second.measure_once(KEY, lambda: calls.append("second"), poll_s=0.05)
    t.join()
    assert calls == ["first"] and hit is not None and hit.values["accuracy"] == 0.9
    assert _leases(first) == 0  # released


def test_dead_holders_lease_is_taken_over(tmp_path):
    cache = EvalCache(engine_for(f"sqlite:///{tmp_path}/c.db"))
    lease = hashlib.sha256("\x1f".join(astuple(KEY)).encode()).hexdigest()
    with Session(cache.engine) as s, s.begin():
        s.add(EvalLeaseRow(key=lease, owner="dead", expires_at=dt.datetime.now(dt.UTC).replace(tzinfo=None)
                           - dt.timedelta(seconds=1)))
    ran = []
    assert cache.measure_once(KEY, lambda: (ran.append(1), _put(cache, 0.8))) is None
    assert ran == [1] and cache.get(KEY).values["accuracy"] == 0.8 and _leases(cache) == 0


def test_a_stop_request_ends_the_wait(tmp_path):
    url = f"sqlite:///{tmp_path}/c.db"
    holder, waiter = EvalCache(engine_for(url)), EvalCache(engine_for(url))
    release = threading.Event()

    def held() -> None:
        release.wait(30)
        _put(holder, 0.5)

    t = _holding(holder, held)
    with pytest.raises(KeyboardInterrupt):
        waiter.measure_once(KEY, lambda: None, stop=lambda: True, poll_s=0.01)
    release.set()
    t.join()


def test_a_measurement_under_a_lease_is_two_transactions_and_leaves_no_lease(tmp_path):
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


def test_two_workers_wanting_one_plans_fidelity_measure_it_once(tmp_path):
    """Fidelity goes through the accuracy's lease: a second worker waits for the first one's row."""
    from tune_helpers import FakeBackend, small_space

    from advisor.tune.objective import Objective

    url = f"sqlite:///{tmp_path}/c.db"
    params = {"fmt_g0": "int8", "fmt_g1": "int4", "hot_fraction": 0.0, "hot_format": "bf16", "policy": "lru",
              "prefetch": "none", "slots": 4}
    backends = [FakeBackend(), FakeBackend()]
    objs = [Objective(b, small_space(), budget_bytes=None, eval_cache=EvalCache(engine_for(url)), study_name="s")
            for b in backends]
    started = threading.Event()
    real = backends[0].fidelity

    def slow(plan):
        started.set()
        time.sleep(0.5)
        return real(plan)

    backends[0].fidelity = slow
    plan = objs[0].config_for(params).plan
    out: list = []
    t = threading.Thread(target=lambda: out.append(objs[0].fidelity(plan)))
    t.start()
    assert started.wait(30)
    second, reused = objs[1].fidelity(plan)
    t.join()
    assert [b.calls["fidelity"] for b in backends] == [1, 0] and reused and out[0][1] is False
    assert second.values == out[0][0].values and objs[1].counters["fidelity_evaluations"] == 0
    assert objs[1].fidelity(plan) == (second, True)  # then from this process's memo
    assert _leases(objs[0].cache) == 0
