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


def test_a_baseline_over_its_budget_says_so_and_shows_no_placeholder_accuracy():
    """An offloaded model's no-cache baseline counts staging buffers: over the study's budget it is infeasible and
    stores placeholder values (accuracy 0.0, 'not-run:...'); Mixtral-offloading-style at a budget that holds no
    expert is that trial. Its rows vanished without a word; a 0-slot trial over the budget it was queued at (1.69
    MiB at 1.5 MiB) was shown as that budget's answer."""
    none = trial(17, "llama.cpp", "1.5MiB", [0, 0, 0, 0], "lru", "cpu", also=[("fiddler", "1.5MiB", 0)],
                 peak=1.69 * MIB)
    copy = trial(16, "no-cache", "-", [0, 0, 0, 0], "lru", "copy", also=[("mixtral-offloading", "1.5MiB", 0)],
                 peak=2.44 * MIB, feasible=False, acc=0.0)
    copy.sources["accuracy"] = "not-run:infeasible(placeholder)"
    copy.sources["peak_gpu_bytes"] = "counted:resident-weights+slots*expert-bytes+staging+activation-allowance"
    rows = baseline_rows([none], "1.5MiB", Reference(3e6, 2.6, None, "test"), {}, 1.5 * MIB, [copy])
    by = {r.strategy: r for r in rows}
    assert list(by) == ["Mixtral-offloading-style", "Fiddler-style", "llama.cpp-style"], rows
    assert all(r.trial is None and r.accuracy is None and r.h2d_bytes_per_token is None for r in rows), rows
    assert by["Mixtral-offloading-style"].note == (
        "over budget: trial #16 needs 2.44 MiB (staging buffers counted) > 1.5MiB (1.50 MiB); with no expert on the "
        "GPU it cannot fit there at all")
    assert by["llama.cpp-style"].note == by["Fiddler-style"].note == (
        "over budget: trial #17 needs 1.69 MiB > 1.5MiB (1.50 MiB); with no expert on the GPU it cannot fit there at all")
    # where it fits, its values
    assert [r.trial for r in baseline_rows([none], "1.5MiB", Reference(3e6, 2.6, None, "test"), {}, 2 * MIB)] == [
        17, 17]
