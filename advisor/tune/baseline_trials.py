"""`advisor tune --budgets 10%,25%,50%`: the study answers at these GPU budgets, so it starts from what each
budget's answer needs.

* `budget_points`: at each budget, every uniform format with every choice of the other cache knobs (policy,
  miss policy, tide's tau) and the most cache that fits that budget - as Optuna parameters, so samplers
  learn from them like from the warm start (more slots never cost transfers, so a budget's best
  configuration of a format is among these, or beats them);
* `baseline_trials`: the strategies of `advisor.baselines` at each budget, with their configuration fixed
  (user attrs ``baseline``, ``baseline_budget``, ``fixed_params``). The objective measures them like any
  trial - same trace, same replay, same accuracy cache - so `advisor report` reads them from the database
  beside the searched configurations. They are not sampled (no Optuna parameters): a llama.cpp-style
  placement (the last whole layers on the GPU, none before them) is no point of a slots-per-layer space.
  ``no-cache`` (every routed expert copied) is enqueued once, without a budget. Baselines of the same
  configuration are one trial (the others in its ``baseline_also``, `advisor.baselines.baseline_keys`): at a
  budget that holds no expert, Fiddler-, TIDE- (each tau) and llama.cpp-style all keep none on the GPU and
  compute every miss on the CPU - their policies place nothing - and Mixtral-offloading-style is no-cache;
  queued apart, they were measured alike and stood as one front row per policy. A strategy that cannot fit a
  budget at all - its counted peak with no expert on the GPU over it (`unfit_baselines`) - is not queued there:
  it was recorded over budget without running, or run and measured for nothing; `advisor tune` names it in a
  note, and `advisor report` reads it from the study (`NOT_QUEUED`) for that budget's row.
"""

from __future__ import annotations

import itertools
import json
from collections.abc import Collection, Sequence
from dataclasses import asdict, dataclass
from typing import Any, NamedTuple

from advisor.baselines import (
    BASELINES,
    NO_CACHE,
    SIXTEEN_BIT,
    Baseline,
    baseline_keys,
    baseline_slots,
    full_precision,
)
from advisor.tune.budget import (
    BudgetFit,
    budget_key,
    budget_memory,
    memory_spec,
    space_least_peak,
)
from advisor.tune.config import ModelShape, build_config
from advisor.tune.space import SearchSpace

CACHE_KNOBS = ("allocation", "policy", "prefetch", "miss", "tau")

NOT_QUEUED = "baselines_not_queued"
"""Study user attribute: the `UnfitBaseline`s (as dicts) its `--budgets` runs did not queue."""


@dataclass(frozen=True)
class UnfitBaseline:
    """A baseline strategy not queued at a `--budgets` value: even with no expert on the GPU, its counted peak GPU
    bytes (`peak_bytes`, resident weights, activations and - for copied misses of an offloaded model - staging
    buffers) exceed the budget's (`budget_bytes`)."""

    baseline: str
    budget: str
    format: str
    peak_bytes: int
    budget_bytes: float


def space_full_format(space: SearchSpace, shape: ModelShape) -> str:
    """The 16-bit format the baselines run at, chosen from the search space before any trial: the space's own
    fp16/bf16 if it has one, else the model's. The readers find the same format from the stored trials
    (`advisor.results.reference.full_format`: the no-cache baseline's format first)."""
    for f in space.formats.values():
        if f in SIXTEEN_BIT:
            return str(f)
    return full_precision(shape.native_format)


def _combos(fit: BudgetFit) -> list[dict[str, Any]]:
    """Every distinct choice of the space's free cache knobs (tau only where the policy is tide)."""
    knobs = fit.knobs
    axes = [k for k in CACHE_KNOBS if k in knobs and knobs[k].fixed is None]
    combos, seen = [], set()
    for c in itertools.product(*(knobs[a].values() for a in axes)):
        combo = dict(zip(axes, c, strict=True))
        if "tau" in combo and combo.get("policy", fit.defaults().get("policy")) != "tide":
            combo["tau"] = knobs["tau"].values()[0]  # tau only changes tide
        key = repr(sorted(combo.items()))
        if key not in seen:
            seen.add(key)
            combos.append(combo)
    return combos


def budget_points(fit: BudgetFit, budgets: Sequence[str]) -> list[tuple[str, dict[str, Any]]]:
    """(budget, Optuna parameters) of every uniform format x cache-knob choice with the most cache that fits
    each budget (within the study's own budget); combinations that fit no cache at a budget are left out."""
    starts = [{**fit.defaults(), **plan, **combo} for plan in fit.uniform_plans() for combo in _combos(fit)]
    tops = [fit.largest(params) for params in starts]  # the study's own budget: the same at every --budgets value
    out = []
    for spec in budgets:
        memory, _ = budget_memory(spec, fit.shape)
        for start, top in zip(starts, tops, strict=True):
            if top is None or (i := fit.largest(start, memory)) is None:
                continue
            i = min(i, top)
            params = {**start, fit.size: fit.values[i]}
            out.append((spec.strip(), fit.point(params, i / top if top else 0.0)))
    return out


class UnfitBudget(NamedTuple):
    """A --budgets value at which no configuration of the space fits (`unfit_budgets`)."""

    budget: str
    budget_bytes: float
    least_bytes: int
    least_counts: str
    """What the least configuration counts (`least_uniform_peak`: the one definition `advisor report` uses)."""
    baselines_fit: bool


def unfit_budgets(fit: BudgetFit, budgets: Sequence[str]) -> list[UnfitBudget]:
    """Each budget at which `budget_points` finds nothing: no configuration of the space fits there, so only the
    baselines (whose 16-bit experts may run with no cache at all) can answer at it - where one fits (else none is
    queued there: `unfit_baselines`) - with the space's least configuration (`space_least_peak`: `least_uniform_peak`
    of its cheapest format), as `advisor report` counts a format's."""
    space, shape = fit.space, fit.shape
    out = []
    for spec in budgets:
        if budget_points(fit, [spec]):
            continue
        memory, _ = budget_memory(spec, shape)
        peak, counts = space_least_peak(space, shape)
        any_fits = len(unfit_baselines(space, shape, [spec])) < len(BASELINES)
        out.append(UnfitBudget(spec.strip(), memory, peak, counts, any_fits))
    return out


def _params(space: SearchSpace, shape: ModelShape) -> Any:
    """The fixed parameters of a baseline: every expert at the 16-bit format (`space_full_format`), no hot set, no
    prefetch; its slots, policy, miss policy and tau as given."""
    fmt = space_full_format(space, shape)
    base = {**{f"fmt_g{g}": fmt for g in range(space.n_groups(shape.n_layers))}, "hot_fraction": 0.0,
            "hot_format": fmt, "prefetch": "none"}

    def params(b: Baseline, slots: list[int], tau: int) -> dict[str, Any]:
        return {**base, "slots_per_layer": slots, "policy": b.policy, "miss": b.miss, "tau": tau}

    return params


def unfit_baselines(space: SearchSpace, shape: ModelShape, budgets: Sequence[str]) -> list[UnfitBaseline]:
    """The baseline strategies that cannot fit at each budget at all: with no expert on the GPU, their counted peak
    is over it (`baseline_trials` does not queue them there)."""
    params, fmt, out = _params(space, shape), space_full_format(space, shape), []
    for spec in budgets:
        memory, _ = budget_memory(spec, shape)
        for b in BASELINES:
            peak = build_config(space, params(b, [0] * shape.n_layers, 0), shape, None).peak_bytes
            if peak > memory:
                out.append(UnfitBaseline(b.name, spec.strip(), fmt, int(peak), float(memory)))
    return out


def not_queued_attr(stored: Sequence[dict[str, Any]] | None, unfit: Sequence[UnfitBaseline]) -> list[dict[str, Any]]:
    """The study's `NOT_QUEUED` attribute with `unfit` added (one entry per strategy and budget, the latest)."""
    merged = {(d.get("baseline"), budget_key(str(d.get("budget")))): d for d in stored or ()}
    merged |= {(u.baseline, budget_key(u.budget)): asdict(u) for u in unfit}
    return list(merged.values())


def baseline_trials(space: SearchSpace, shape: ModelShape, budgets: Sequence[str],
                    have: Collection[tuple[str, str, int]] = ()) -> list[dict[str, Any]]:
    """User attrs of every baseline trial to queue: no-cache once, then each strategy (each tau) at each budget
    it can fit at all (`unfit_baselines`), but those in `have` (`key`s a study's trials measured already,
    `baseline_keys`; at a budget of the same value however spelled, `budget_key`), and one trial per distinct
    configuration (`same_config`): the first with the lru policy (else the first) of baselines alike, the others
    named in its ``baseline_also``."""
    for spec in budgets:
        memory_spec(spec, "--budgets")  # a bad value fails before anything is enqueued
    n = shape.n_layers
    params = _params(space, shape)
    unfit = {(u.baseline, u.budget) for u in unfit_baselines(space, shape, budgets)}
    every = [{"baseline": NO_CACHE.name, "baseline_budget": "-",
              "fixed_params": params(NO_CACHE, [0] * n, 0)}]
    for spec in budgets:
        memory, _ = budget_memory(spec, shape)
        for b in BASELINES:
            if (b.name, spec.strip()) in unfit:
                continue
            def fits(slots: list[int], b: Baseline = b, memory: float = memory) -> bool:
                return build_config(space, params(b, slots, 0), shape, None).peak_bytes <= memory

            slots = baseline_slots(b, shape.num_experts, fits)
            for tau in b.taus:
                every.append({"baseline": b.name, "baseline_budget": spec.strip(),
                              "fixed_params": params(b, slots, tau)})
    measured = {(n, budget_key(b), t) for n, b, t in have}  # a budget as its value, not as it was spelled then
    groups: dict[str, list[dict[str, Any]]] = {}
    for attrs in every:
        n, b, t = key(attrs)
        if (n, budget_key(b), t) not in measured:
            groups.setdefault(same_config(attrs["fixed_params"]), []).append(attrs)
    out = []
    for alike in groups.values():
        first = next((a for a in alike if a["fixed_params"]["policy"] == "lru"), alike[0])
        also = [list(key(a)) for a in alike if a is not first]
        out.append((every.index(first), {**first, "baseline_also": also} if also else first))
    return [attrs for _, attrs in sorted(out, key=lambda x: x[0])]


def same_config(params: dict[str, Any]) -> str:
    """A baseline's fixed parameters as what they configure: without the policy and tau where no layer has a slot
    (a policy places experts in slots; with none, every expert is a miss, whichever it is), without tau where the
    policy is not tide (tau only changes tide)."""
    p = dict(params)
    if not any(p["slots_per_layer"]):
        p.pop("policy")
        p.pop("tau")
    elif p["policy"] != "tide":
        p.pop("tau")
    return json.dumps(p, sort_keys=True)


def key(attrs: dict[str, Any]) -> tuple[str, str, int]:
    """(strategy, budget, tau) of a baseline trial's user attrs (its own: `baseline_keys` adds those it stands for)."""
    return baseline_keys(attrs)[0]
