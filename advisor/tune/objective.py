"""One trial: knob values -> configuration -> memory check -> staged, cached measurements -> objective values.

Cost discipline (DESIGN.md):
* the memory budget is checked on counted bytes before anything runs: searched layer-group formats (two or
  more), a searched hot fraction and the cache size are drawn within what fits (`advisor.tune.budget`), and a
  configuration that still cannot fit (an enqueued one, a format that fits only with another miss policy than
  the one drawn, or the formats or hot fraction of a study begun before they were drawn within the budget) is
  recorded with `trial.set_constraint` and never reaches the model;
* accuracy and fidelity depend on the precision plan only: they are measured once per plan fingerprint
  and kept in the study database (`EvalCache`), across trials, studies and workers;
* cache size, policy and prefetch change bytes and time, never outputs: they are evaluated by replaying
  the routing trace recorded once per plan (routing can differ by precision, so never across plans);
* staging: the fidelity proxy runs first; full task accuracy runs only when the candidate could still
  reach the front - i.e. no finished trial dominates it even if it were as accurate as the best plan
  measured so far (its upper confidence bound). Optuna has no pruning for multi-objective studies, so a
  skipped candidate still completes, with an accuracy *modelled* from the proxy and marked so.
"""

from __future__ import annotations

import time
from collections import Counter
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from typing import Any

from advisor.quant.plan import PrecisionPlan
from advisor.results.evalcache import CachedEval, CacheKey, EvalCache
from advisor.results.front import dominates
from advisor.tune.backend import Backend, Measured, TraceRun, TrialOutOfMemory
from advisor.tune.budget import BudgetFit
from advisor.tune.config import TrialConfig, build_config, peak_source
from advisor.tune.space import SearchSpace

CONSTRAINT = "memory_budget"
"""Optuna constraint key: (counted peak GPU bytes - budget) / budget; <= 0 is feasible."""
FIDELITY_CONSTRAINT = "fidelity_floor"
"""Optuna constraint key of a trial whose top-1 agreement is below the space's fidelity_floor (floor - top-1, > 0):
its accuracy was not measured, only estimated, so it must not reach the front."""
DASHBOARD_CONSTRAINTS = "constraints"
"""System attribute optuna-dashboard (0.21) reads constraints from: Optuna 4's list format."""


def record_constraint(trial: Any, violation: float) -> None:
    """Store the budget constraint where Optuna 5's samplers read it (`set_constraint`) and, as the same value
    in Optuna 4's list, where optuna-dashboard reads it - so over-budget trials show there as infeasible, not
    as points with the placeholder accuracy 0. (Optuna reads both: the list entry appears as constraint "0".)"""
    trial.set_constraint(CONSTRAINT, violation)
    storage = getattr(trial, "storage", None)
    if storage is not None:
        storage.set_trial_system_attr(trial._trial_id, DASHBOARD_CONSTRAINTS, [violation])


@dataclass
class TrialOutcome:
    values: dict[str, float]
    sources: dict[str, str]
    stage: str  # "infeasible" | "proxy" | "measured" | "cached"
    feasible: bool
    config: TrialConfig
    seconds: float
    extra: dict[str, Any] = field(default_factory=dict)


def _from_row(hit: CachedEval) -> Measured:
    """A stored measurement, with the device and study that measured it."""
    return Measured(hit.values, hit.sources, hit.seconds, {"device": hit.device, "study": hit.study_name})


class Objective:
    """Callable for `study.optimize`. Holds per-process caches (calibration counts, traces, fidelities)."""

    def __init__(
        self,
        backend: Backend,
        space: SearchSpace,
        *,
        budget_bytes: int | None,
        eval_cache: EvalCache,
        study_name: str,
        profile: Any = None,
        mode: str = "replay",
        on_stage=None,
        stop_requested: Callable[[], bool] = lambda: False,
        fill_hot: bool = True,
        fill_formats: bool = True,
    ):
        if mode not in ("replay", "live"):
            raise ValueError(f"mode must be 'replay' or 'live', got {mode!r}")
        self.backend, self.space = backend, space
        self.budget_bytes = budget_bytes
        self.cache, self.study_name = eval_cache, study_name
        self.mode = mode
        self.stop_requested = stop_requested  # ends a wait for another worker's measurement
        self.metrics = list(space.objectives)
        self.directions = [space.objectives[m] for m in self.metrics]
        self.settings = space.evaluation
        self.task = backend.task_name
        self.settings_key = self.settings.key(self.task, backend.task_data_sha256)
        self._fidelity_key = self.settings.key(self.task, backend.task_data_sha256, "fidelity")
        self.profile = profile
        self.on_stage = on_stage or (lambda stage, trial_number: None)
        self._counts: dict[int, list[int]] | None = None
        self.fit = BudgetFit(space, backend.shape, budget_bytes, self.counts, fill_hot,  # (`run_tune` says which)
                             fill_formats)
        self._traces: dict[str, TraceRun] = {}
        self._fidelity: dict[str, Measured] = {}
        self.counters: Counter[str] = Counter()
        # (trial number, configuration, counted peak, budget) of each trial recorded over budget without running
        self.unrun_over_budget: list[tuple[int | None, dict[str, Any], int, int]] = []
        self.current_trial: int | None = None
        self.current_params: dict[str, Any] | None = None

    # ------------------------------------------------------------------ plan-only measurements (cached)
    def counts(self) -> dict[int, list[int]]:
        if self._counts is None:
            self._counts = self.backend.calibration_counts()
        return self._counts

    def config_for(self, params: dict[str, Any]) -> TrialConfig:
        shape = self.backend.shape
        needs_counts = float(params.get("hot_fraction", 0.0)) > 0 or params.get("allocation") == "by_frequency" \
            or params.get("policy") == "static_hot"
        return build_config(self.space, params, shape, self.counts() if needs_counts else None)

    def _key(self, plan: PrecisionPlan, kind: str) -> CacheKey:
        settings = self._fidelity_key if kind == "fidelity" else self.settings_key
        return CacheKey(self.backend.model_fingerprint, self.task, plan.fingerprint, settings, kind)

    def fidelity(self, plan: PrecisionPlan) -> tuple[Measured, bool]:
        """(fidelity, reused): kept for this process, and measured under the same lease as accuracy."""
        fp = plan.fingerprint
        if fp in self._fidelity:
            return self._fidelity[fp], True
        m, reused = self._cached(plan, "fidelity"), True  # (a stored row needs no lease)
        if m is None:
            m, here = self._measure_once(plan, "fidelity", self.backend.fidelity)
            reused = not here
        self._fidelity[fp] = m
        return m, reused

    def cached_accuracy(self, plan: PrecisionPlan) -> Measured | None:
        return self._cached(plan, "accuracy")

    def _cached(self, plan: PrecisionPlan, kind: str) -> Measured | None:
        hit = self.cache.get(self._key(plan, kind))
        return None if hit is None else _from_row(hit)

    def measure_accuracy(self, plan: PrecisionPlan) -> tuple[Measured, bool]:
        """(accuracy, measured here): under a lease, so that two workers never measure one plan at once -
        the second waits for the first one's row."""
        return self._measure_once(plan, "accuracy", self.backend.accuracy)

    def _measure_once(self, plan: PrecisionPlan, kind: str,
                      run: Callable[[PrecisionPlan], Measured]) -> tuple[Measured, bool]:
        """(measurement, measured here) of a plan-only `kind`: a stored row, one another worker is measuring
        (waited for), or `run` here under the lease (counted in `<kind>_evaluations` and stored)."""
        key = self._key(plan, kind)
        measured: list[Measured] = []

        def measure() -> None:
            m = run(plan)
            self.counters[f"{kind}_evaluations"] += 1
            self.cache.put(key, m.values, m.sources, device=self.backend.device, seconds=m.seconds,
                           study_name=self.study_name)
            measured.append(m)

        hit = self.cache.measure_once(key, measure, stop=self.stop_requested)
        return (measured[0], True) if hit is None else (_from_row(hit), False)

    def trace(self, plan: PrecisionPlan) -> TraceRun:
        fp = plan.fingerprint
        if fp not in self._traces:
            self._traces[fp] = self.backend.trace(plan)
            self.counters["traces_recorded"] += 1
        return self._traces[fp]

    # ------------------------------------------------------------------ the trial
    def __call__(self, trial: Any) -> list[float]:
        fixed = trial.user_attrs.get("fixed_params")  # a baseline strategy: its configuration, not sampled
        params = dict(fixed) if fixed else self.fit.suggest(trial)
        self.current_trial, self.current_params = trial.number, dict(fixed or trial.params)
        outcome = self.evaluate(params, trial=trial)
        for key, value in self.trial_attrs(outcome).items():
            trial.set_user_attr(key, value)
        return [outcome.values[m] for m in self.metrics]

    def trial_attrs(self, o: TrialOutcome) -> dict[str, Any]:
        config = o.config.to_json()
        config["model_meta"] = self.backend.model_meta
        if o.config.policy == "static_hot" or o.config.hot_fraction > 0:  # what exports read: the hot set, and
            # the traffic a per-expert plan's collapse weighs (a study-wide table: not stored where unused)
            config["routing_counts"] = {str(layer): [int(x) for x in c] for layer, c in self.counts().items()}
        decoding = getattr(self.backend, "decoding", None)  # a model's (a closed-form test backend has none)
        if decoding is not None:
            config["decoding"] = decoding
        return {
            "config": config,
            "values": o.values,
            "sources": o.sources,
            "device": self.backend.device,
            "stage": o.stage,
            "feasible": o.feasible,
            "plan_fingerprint": o.config.plan.fingerprint,
            "seconds": o.seconds,
            **({"accuracy_detail": o.extra["accuracy"]} if "accuracy" in o.extra else {}),
            **({"infeasible_reason": o.extra["reason"]} if "reason" in o.extra else {}),
        }

    def evaluate(self, params: dict[str, Any], *, trial: Any = None,
                 completed: Sequence[Sequence[float]] | None = None) -> TrialOutcome:
        """Measure one configuration. `trial` (Optuna) gets the constraint; `completed` (objective vectors of
        finished feasible trials) drives staging when there is no study to ask."""
        t0 = time.perf_counter()
        cfg = self.config_for(params)
        values: dict[str, float] = {"peak_gpu_bytes": float(cfg.peak_bytes)}
        sources: dict[str, str] = {"peak_gpu_bytes": self._peak_source(cfg)}
        # the constraint is recorded once the outcome is known: Optuna ignores a constraint key set twice
        violation = (cfg.peak_bytes - self.budget_bytes) / self.budget_bytes if self.budget_bytes else None
        if violation is not None and violation > 0:
            self.counters["infeasible"] += 1
            values |= self._placeholders(cfg)
            sources |= {k: "not-run:infeasible(placeholder)" for k in values if k != "peak_gpu_bytes"}
            reason = f"counted peak {cfg.peak_bytes} bytes > budget {self.budget_bytes} bytes"
            self.unrun_over_budget.append((getattr(trial, "number", None), cfg.to_json(), cfg.peak_bytes,
                                           self.budget_bytes))
            outcome = TrialOutcome(values, sources, "infeasible", False, cfg, time.perf_counter() - t0,
                                   {"reason": reason})
        else:
            try:
                outcome = self._measure(cfg, values, sources, trial, completed, t0)
                if "counted_peak_bytes" in outcome.values and self.budget_bytes:  # the allocator's peak decides
                    violation = (outcome.values["peak_gpu_bytes"] - self.budget_bytes) / self.budget_bytes
            except TrialOutOfMemory as oom:
                self.counters["infeasible"] += 1
                self.counters["out_of_memory"] += 1
                if violation is not None:
                    violation = max(1e-6, (cfg.peak_bytes + oom.asked - self.budget_bytes) / self.budget_bytes)
                else:  # no budget: the device's memory was the limit it broke, by at least what it asked more
                    violation = max(1e-6, oom.asked / max(1, cfg.peak_bytes))
                placeholders = self._placeholders(cfg)
                values = {"peak_gpu_bytes": float(cfg.peak_bytes), **placeholders, "oom_asked_bytes": float(oom.asked)}
                sources = {"peak_gpu_bytes": self._peak_source(cfg),
                           **{k: "not-run:out-of-memory(placeholder)" for k in placeholders},
                           "oom_asked_bytes": f"measured:out-of-memory({oom})"}
                outcome = TrialOutcome(values, sources, "infeasible", False, cfg, time.perf_counter() - t0,
                                       {"reason": f"out of memory in the trial: {oom}"})
        # every trial of a study carries the same constraint keys: Optuna's GPSampler refuses a study whose trials
        # differ ("The constraint names must be the same for all trials"); 0 where nothing was violated
        if trial is not None:
            record_constraint(trial, 0.0 if violation is None else violation)
            if self.settings.fidelity_floor > 0:
                trial.set_constraint(FIDELITY_CONSTRAINT, outcome.extra.get("fidelity_violation", 0.0))
        return outcome

    def _measure(self, cfg: TrialConfig, values: dict[str, float], sources: dict[str, str], trial: Any,
                 completed: Sequence[Sequence[float]] | None, t0: float) -> TrialOutcome:
        self.on_stage("fidelity", getattr(trial, "number", None))
        fid, reused = self.fidelity(cfg.plan)
        self.counters["fidelity_cache_hits"] += int(reused)
        values |= fid.values
        sources |= fid.sources

        # the cache axes: replayed from the routing trace, or (--mode live) run through the offload runtime
        self.on_stage("live" if self.mode == "live" else "cache", getattr(trial, "number", None))
        cache_vals, cache_srcs = self.cache_metrics(cfg)
        values |= cache_vals
        sources |= cache_srcs
        over = self._measured_peak(values, sources)
        if over:  # no accuracy run for a configuration that does not fit
            if "accuracy" in self.metrics:
                values["accuracy"] = self._placeholders(cfg)["accuracy"]
                sources["accuracy"] = "not-run:measured-over-budget(placeholder)"
            return TrialOutcome(values, sources, "infeasible", False, cfg, time.perf_counter() - t0, {"reason": over})

        stage = "measured"
        extra: dict[str, Any] = {}
        if "accuracy" in self.metrics:
            acc = self.cached_accuracy(cfg.plan)
            if acc is not None:
                stage = "cached"
                self.counters["accuracy_cache_hits"] += 1
            elif self._worth_measuring(values, fid, trial, completed):
                self.on_stage("accuracy", getattr(trial, "number", None))
                acc, here = self.measure_accuracy(cfg.plan)
                if not here:  # another worker measured it while this one waited
                    stage = "cached"
                    self.counters["accuracy_cache_hits"] += 1
            else:
                stage = "proxy"
                self.counters["accuracy_skipped"] += 1
                acc = self._modelled_accuracy(fid)
                below = self._fidelity_violation(fid)
                if below:  # not dominated, only below the floor: the estimate is kept off the front
                    extra["fidelity_violation"] = below
            values["accuracy"] = float(acc.values["accuracy"])
            sources["accuracy"] = acc.sources.get("accuracy", "measured")
            extra["accuracy"] = {k: v for k, v in acc.values.items() if k != "accuracy"}
        return TrialOutcome(values, sources, stage, True, cfg, time.perf_counter() - t0, extra)

    def _measured_peak(self, values: dict[str, float], sources: dict[str, str]) -> str:
        """A live trial of an offloaded model on CUDA: the device then holds what a deployment of the
        configuration holds, so the allocator's measured peak becomes its peak (the counted one is kept beside
        it). Returns why the trial is infeasible ("" when it fits or this does not apply)."""
        measured = values.get("allocator_peak_bytes")
        if self.mode != "live" or measured is None or not getattr(self.backend, "offloaded", False):
            return ""
        values["counted_peak_bytes"], sources["counted_peak_bytes"] = values["peak_gpu_bytes"], sources["peak_gpu_bytes"]
        values["peak_gpu_bytes"], sources["peak_gpu_bytes"] = measured, sources["allocator_peak_bytes"]
        if not self.budget_bytes or measured <= self.budget_bytes:
            return ""
        self.counters["infeasible"] += 1
        self.counters["over_budget_measured"] += 1
        return (f"measured peak {int(measured)} bytes (CUDA allocator) > budget {self.budget_bytes} bytes (counted "
                f"{int(values['counted_peak_bytes'])})")

    # ------------------------------------------------------------------ pieces
    def cache_metrics(self, cfg: TrialConfig) -> tuple[dict[str, float], dict[str, str]]:
        """Bytes, hit rate, transfer and latency per generated token: by trace replay (counted bytes,
        modelled time) or, in live mode, by running the offload runtime (measured)."""
        if self.mode == "live":
            live = self.backend.live(cfg)
            if live is not None:
                self.counters["live_runs"] += 1
                return dict(live.values), dict(live.sources)
        run = self.trace(cfg.plan)
        rep = self.backend.replay(run, cfg)
        self.counters["replays"] += 1
        tokens = max(1, run.tokens)
        v, s = rep.values, rep.sources
        lookups = max(1.0, v.get("lookups", 0.0))
        transfer_ms = v.get("transfer_ms", self._transfer_ms(v["bytes_h2d"], v.get("copies", 0.0)))
        transfer_src = s.get("transfer_ms", self._transfer_source())
        compute_ms = 1e3 * run.compute_seconds / tokens
        out = {
            "h2d_bytes_per_token": v["bytes_h2d"] / tokens,
            "hit_rate": v.get("hits", 0.0) / lookups,
            "transfer_ms_per_token": transfer_ms / tokens,
            "latency_ms_per_token": compute_ms + transfer_ms / tokens,
        }
        if "time_ms" in v:
            out["time_per_token"] = v["time_ms"] / tokens
        srcs = {
            "h2d_bytes_per_token": s.get("bytes_h2d", "counted:trace-replay"),
            "hit_rate": s.get("hits", "counted:trace-replay"),
            "transfer_ms_per_token": transfer_src,
            "latency_ms_per_token": f"measured:wall-clock({run.device},{run.recorded_with})+{transfer_src}",
        }
        if "time_ms" in v:
            srcs["time_per_token"] = s.get("time_ms", "modelled")
        if "copies" in v:  # recommend models the target's transfer from bytes and copies (the one formula)
            out["copies_per_token"] = v["copies"] / tokens
            srcs["copies_per_token"] = s.get("copies", srcs["h2d_bytes_per_token"])
        return out, srcs

    def _peak_source(self, cfg: TrialConfig) -> str:
        """What the trial's counted peak holds (`advisor.tune.config.peak_source`: no staging for CPU misses)."""
        return peak_source(self.backend.shape, cfg.prefetch, cfg.miss)

    def _transfer_ms(self, nbytes: float, copies: float) -> float:
        return self._profile().transfer_ms(nbytes, copies)

    def _transfer_source(self) -> str:
        return self._profile().transfer_source

    def _profile(self) -> Any:
        if self.profile is None:
            from advisor.hardware.profiles import DEFAULT_PROFILE

            self.profile = DEFAULT_PROFILE
        return self.profile

    def _placeholders(self, cfg: TrialConfig) -> dict[str, float]:
        """Values for a configuration that was not run (over budget): pessimistic and deterministic, so a
        sampler that reads values of infeasible trials is not lured towards them; never on a front."""
        all_bytes = float(cfg.expert_store_bytes)  # as if every expert crossed the link for every token
        out = {
            "h2d_bytes_per_token": all_bytes,
            "transfer_ms_per_token": self._transfer_ms(all_bytes, sum(self.backend.shape.num_experts)),
            "accuracy": 0.0,
            "hit_rate": 0.0,
            "fidelity_top1": 0.0,
        }
        out["latency_ms_per_token"] = out["time_per_token"] = out["transfer_ms_per_token"]
        out["fidelity_kl"] = 1e3
        return out

    def _worth_measuring(self, values: dict[str, float], fid: Measured, trial: Any,
                         completed: Sequence[Sequence[float]] | None) -> bool:
        """Staging: could this candidate still reach the front if it were as accurate as possible?"""
        if not self.settings.staging:
            return True
        if self._fidelity_violation(fid):
            return False
        bound = self._optimistic_accuracy()
        if bound is None:
            return True  # nothing measured yet: nothing to compare against
        optimistic = [bound if m == "accuracy" else values[m] for m in self.metrics]
        if completed is None:
            completed = self._completed_vectors(trial)
        return not any(dominates(c, optimistic, self.directions) for c in completed)

    def _fidelity_violation(self, fid: Measured) -> float:
        """How far this plan's top-1 agreement falls below the space's fidelity_floor (0: not below, or no floor)."""
        top1 = fid.values.get("fidelity_top1")
        floor = self.settings.fidelity_floor
        return floor - float(top1) if floor > 0 and top1 is not None and top1 < floor else 0.0

    def _optimistic_accuracy(self) -> float | None:
        """Upper confidence bound of the best accuracy measured for this model/task/settings so far."""
        rows = self.cache.best(self.backend.model_fingerprint, self.task, self.settings_key)
        if not rows:
            return None
        return max(max(r.get("accuracy_ci_high", r["accuracy"]), r["accuracy"]) for r in rows)

    def _completed_vectors(self, trial: Any) -> list[list[float]]:
        if trial is None or not hasattr(trial, "study"):
            return []
        from optuna.trial import TrialState

        out = []
        for t in trial.study.get_trials(deepcopy=False, states=(TrialState.COMPLETE,)):
            # only trials whose accuracy was measured (not modelled) may rule a candidate out
            if t.user_attrs.get("stage") in ("measured", "cached") and t.values is not None \
                    and len(t.values) == len(self.metrics):
                out.append(list(t.values))
        return out

    def _modelled_accuracy(self, fid: Measured) -> Measured:
        """Accuracy of a skipped candidate, modelled as best measured accuracy x top-1 agreement (marked so). It
        stays off the front: a dominated candidate's is never above the optimistic bound that showed it dominated,
        and one below the fidelity floor is infeasible by `FIDELITY_CONSTRAINT`."""
        rows = self.cache.best(self.backend.model_fingerprint, self.task, self.settings_key)
        best = max((r["accuracy"] for r in rows), default=0.0)
        top1 = float(fid.values.get("fidelity_top1", 0.0))
        return Measured({"accuracy": best * top1},
                        {"accuracy": f"modelled:fidelity-proxy(best-measured {best:.3f} x top1 {top1:.3f})"})
