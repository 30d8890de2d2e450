"""`advisor report`'s rows of the baseline strategies (`advisor tune --budgets`) at each budget
(`advisor.report.select.baseline_rows`): what each row says it ran, and a baseline that does not fit its budget."""

from __future__ import annotations

from advisor.baselines import BASELINES
from advisor.report.data import TrialRecord
from advisor.report.select import Reference, baseline_rows

MIB = 2**20
SOURCES = {"peak_gpu_bytes": "counted:resident-weights+slots*expert-bytes+activation-allowance",
           "accuracy": "measured:exact-match:toy(n=4,cpu)"}


def trial(number, name, budget, slots, policy, miss, *, also=(), tau=0, peak=1.7 * MIB, feasible=True, acc=1.0):
    params = {"precision": "fp16", "slots_per_layer": slots, "policy": policy, "miss": miss, "tau": tau}
    attrs = {"baseline": name, "baseline_budget": budget, "fixed_params": params, "feasible": feasible}
    if also:
        attrs["baseline_also"] = [list(k) for k in also]
    config = {"precision": "fp16", "slots_per_layer": slots, "policy": policy, "miss_policy": miss,
              **({"tau": tau} if policy == "tide" else {})}
    values = {"h2d_bytes_per_token": 0.0 if miss == "cpu" else 3e6, "time_per_token": 10.0, "peak_gpu_bytes": peak,
              "accuracy": acc}
    return TrialRecord(number, config, values, dict(SOURCES), attrs)


def test_a_row_that_reuses_another_strategys_trial_at_0_slots_does_not_read_as_that_policy():
    """At a budget that holds no expert one trial measures Fiddler-, TIDE- and llama.cpp-style (`baseline_also`):
    the Fiddler-style row read "policy lru" - llama.cpp-style's policy, a cache Fiddler-style does not have."""
    none = trial(17, "llama.cpp", "1.5MiB", [0, 0, 0, 0], "lru", "cpu",
                 also=[("fiddler", "1.5MiB", 0), *(("tide", "1.5MiB", t) for t in (1, 2, 4, 8))])
    hot = trial(18, "fiddler", "2MiB", [6, 6, 6, 6], "static_hot", "cpu", peak=1.98 * MIB)
    rows = baseline_rows([none, hot], "1.5MiB", Reference(3e6, 2.6, None, "test"), {})
    assert [r.strategy for r in rows] == [b.label for b in BASELINES[1:]], rows
    assert {r.trial for r in rows} == {17}
    by = {r.strategy: r.policy for r in rows}
    assert by["llama.cpp-style"] == "none (0 slots)"
    assert by["Fiddler-style"] == by["TIDE-style"] == "none (0 slots); measured by the llama.cpp-style trial", by
    # a strategy's own trial with slots keeps its policy
    assert [r.policy for r in baseline_rows([none, hot], "2MiB", Reference(3e6, 2.6, None, "test"), {})] == [
        "static_hot"]
