"""`EvalCache.put`, the public entry point that stores a plan's measurement: a row the database refuses for a
reason other than a duplicate key is an error, not a measurement lost in silence.

Every IntegrityError was taken for "another worker measured the same plan first": a row missing a required value
(NOT NULL) was never written, nothing said so, and the plan was measured again by the next trial that wanted it.
A real duplicate (the same plan's row already there) still leaves that row standing, without an error."""

from __future__ import annotations

import pytest
from sqlalchemy.exc import IntegrityError
from sqlalchemy.orm import Session

from advisor.results.evalcache import CacheKey, EvalCache
from advisor.results.store import EvalLeaseRow, engine_for

KEY = CacheKey("fp", "toy", "plan1", "{}", "accuracy")


@pytest.fixture(params=["sqlite", "postgresql"])
def cache(request, tmp_path):
    url = f"sqlite:///{tmp_path}/c.db" if request.param == "sqlite" else request.getfixturevalue("pg_schema_url")
    c = EvalCache(engine_for(url))
    yield c
    c.engine.dispose()


def _put(cache: EvalCache, value: float, device: str | None = "cpu") -> None:
    cache.put(KEY, {"accuracy": value}, {"accuracy": "measured:test"}, device=device, seconds=0.1, study_name="s")


def test_a_measurement_missing_a_required_value_raises_and_its_lease_is_released(cache):
    with pytest.raises(IntegrityError, match=r"advisor_eval_cache\.device|\"device\" of relation \"advisor_eval_cache"):
        cache.measure_once(KEY, lambda: _put(cache, 0.9, device=None))
    with Session(cache.engine) as s:
        assert cache.get(KEY) is None and s.query(EvalLeaseRow).count() == 0  # no worker waits on it


def test_the_same_plan_measured_twice_keeps_the_first_row(cache):
    _put(cache, 0.9)
    _put(cache, 0.5)  # another worker's: a duplicate key, not an error
    assert cache.get(KEY).values == {"accuracy": 0.9}
