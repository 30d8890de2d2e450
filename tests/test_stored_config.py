"""One reader of a stored configuration: the tuner's `TrialConfig.from_json` (what `advisor report` replays a
stored trial through) and the exporters' `config_view.export_config` read the same precision plan and cache
from what `advisor tune` stored, because both go through `config_view` (`plan_of`, `cache_of`)."""

from __future__ import annotations

from pathlib import Path

from advisor.results.config_view import export_config
from advisor.results.read import read_fronts
from advisor.tune.config import TrialConfig

EXAMPLE_DB = Path(__file__).resolve().parent.parent / "studies" / "example" / "advisor.db"


def _both(config: dict, model: str) -> tuple[TrialConfig, object, list[int]]:
    ex = export_config(config, model)
    n = [layer.num_experts for layer in ex.model.layers]
    return TrialConfig.from_json(config, n), ex, n


def test_the_tuner_and_the_exporters_read_every_stored_point_alike():
    points = read_fronts(str(EXAMPLE_DB), "bundled-example")
    assert len(points) >= 10
    for p in points:
        cfg, ex, n = _both(p.config, p.model)
        assert cfg.cache_key == (tuple(ex.slots_per_layer), ex.policy, ex.prefetch, ex.miss_policy, ex.tau)
        assert [list(row) for row in cfg.plan.grid(n)] == ex.formats
        assert cfg.to_json()["slots_per_layer"] == p.config["slots_per_layer"]
        assert cfg.plan.fingerprint == p.config["plan_fingerprint"]


def test_a_cache_the_exporters_accept_is_read_alike_by_the_tuner():
    """One slot count for every layer, no policy or prefetch stored: the exporters' reading (lru, none) is the
    tuner's too (its own reader raised KeyError here)."""
    stored = dict(read_fronts(str(EXAMPLE_DB), "bundled-example")[0].config)
    del stored["slots_per_layer"], stored["policy"], stored["prefetch"]
    stored["slots"] = 99  # more than a layer's experts: clamped to them
    cfg, ex, n = _both(stored, "bundled")
    assert cfg.slots == tuple(n) == tuple(ex.slots_per_layer)
    assert (cfg.policy, cfg.prefetch) == (ex.policy, ex.prefetch) == ("lru", "none")
