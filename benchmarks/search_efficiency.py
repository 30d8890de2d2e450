"""How fast do the samplers find the Pareto front under a tight GPU budget, and does the tuner measure
accuracy once per plan?

1. Exhaustive: every configuration of a reduced space is evaluated with the tuner's own `Objective`
   (accuracy and fidelity once per precision plan, cache axes by replaying that plan's routing trace).
   At each budget its feasible Pareto front gives the reference hypervolume.
2. Search, per budget: each sampler (several seeds) runs an Optuna study whose objective looks the values up
   in the exhaustive table - exactly the numbers the real objective returns, at no model cost - drawing
   configurations as `run_tune` does (budget-aware: the hot fraction and the cache size within what fits,
   warm-started with the most cache that fits per plan). Hypervolume after 10/20/40 trials as a fraction of
   the exhaustive one (worst seed), and the share of trials over budget. A budget-blind row (the cache size over its whole
   range, the constraint only recorded, corner seeds: the tuner before budget-aware search) is kept beside
   it for comparison; so, with `--blind-formats`, a row with two or more layer groups' formats drawn each over
   its own domain (`fmt_g*`: a study begun before they were drawn in turn within the budget), the rest as above.
3. Cost: one real `run_tune` per budget (default sampler, staging on, fresh database) counts accuracy
   evaluations against the distinct precision plans its trials visited (target <= 1.0) and its trials over
   budget (target 0).

A budget fraction f means: the resident (non-expert) weights plus f x every routed expert at bf16, the
dtype users deploy (the bundled model stores fp32, whose resident weights alone exceed 10% of its bytes).

Runs on the bundled model; falls back to `tiny:llada_moe` (objective fidelity_top1 instead of accuracy,
which a random tiny model cannot score) when the bundled model is missing.

    python -m benchmarks.search_efficiency [--budgets 0.1,0.25,0.5] [--trials 40] [--seeds 5] [--groups 1] [--out FILE]

`--groups 2` tunes a format per half of the MoE layers (16 format pairs, 4096 configurations): at a tight budget
some pairs fit no cache size although each format fits beside the other group's smallest.

Last line: `RESULT worst_hv40=<default sampler, worst budget and seed> over_budget_runs=<n>` (budget-aware
searches and real runs together). `gpu_checks()` runs a short live study on CUDA (measured copy times).
"""

from __future__ import annotations

import argparse
import json
import math
import os
import shutil
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

CHECKPOINTS = (10, 20, 40)
REDUCED_SPACE = """
name = "reduced"
description = "search-efficiency benchmark: precision per layer group (int2 costs accuracy) + hot set, slots, two policies"
[precision]
formats = ["bf16", "int8", "int4", "int2"]
groups = GROUPS
[precision.hot_cold]
hot_fraction = [0.0, 0.25]
hot_formats = ["bf16"]
[cache]
slots_per_layer = { low = 1, high = "all" }
policies = ["lru", "lfu"]
prefetch = ["none"]
[objectives]
h2d_bytes_per_token = "minimize"
ACC = "maximize"
peak_gpu_bytes = "minimize"
[evaluation]
task = "toy"
limit = 32
trace_prompts = 2
fidelity_prompts = 4
staging = STAGING
"""


def _space(acc_metric: str, staging: bool, groups: int = 1):
    from advisor.tune.space import parse_space

    text = REDUCED_SPACE.replace("ACC", acc_metric).replace("STAGING", "true" if staging else "false")
    text = text.replace("GROUPS", str(groups))
    return parse_space(text, "<reduced>")


def _backend(model: str, device: str = "cpu"):
    """(backend, objective-name-of-accuracy) on `model`, falling back to the tiny model if it is missing."""
    import torch

    from advisor.errors import UserError
    from advisor.eval.tasks import get_task
    from advisor.models.load import load_model
    from advisor.tune.model_backend import ModelBackend

    torch.set_num_threads(1)
    try:
        loaded = load_model(model, device=device)
    except UserError as e:
        print(f"note: {e}; using tiny:llada_moe", file=sys.stderr)
        loaded = load_model("tiny:llada_moe", device=device)
    acc = "accuracy" if loaded.tokenizer is not None else "fidelity_top1"
    space = _space(acc, staging=False)
    return ModelBackend(loaded, get_task(space.evaluation.task), space.evaluation), acc


# ------------------------------------------------------------------ hypervolume (all objectives minimised)


def hypervolume(points: list[tuple[float, ...]], ref: tuple[float, ...]) -> float:
    """Exact hypervolume dominated by `points` up to `ref` (slicing along the first objective)."""
    pts = [p for p in points if all(x < r for x, r in zip(p, ref, strict=True))]
    if not pts:
        return 0.0
    if len(ref) == 1:
        return ref[0] - min(p[0] for p in pts)
    pts.sort(key=lambda p: p[0])
    total = 0.0
    for i, p in enumerate(pts):
        upper = pts[i + 1][0] if i + 1 < len(pts) else ref[0]
        if upper > p[0]:
            total += (upper - p[0]) * hypervolume([q[1:] for q in pts[: i + 1]], ref[1:])
    return total


def _normaliser(rows: list[dict], metrics: list[str], directions: list[str]):
    lo = {m: min(r["values"][m] for r in rows) for m in metrics}
    hi = {m: max(r["values"][m] for r in rows) for m in metrics}

    def norm(values: dict) -> tuple[float, ...]:
        out = []
        for m, d in zip(metrics, directions, strict=True):
            span = (hi[m] - lo[m]) or 1.0
            x = (values[m] - lo[m]) / span
            out.append(1.0 - x if d == "maximize" else x)
        return tuple(out)

    return norm


def budget_bytes(shape, fraction: float) -> int:
    """Resident weights + `fraction` x every routed expert at bf16 (see the module docstring)."""
    experts = sum(n * shape.expert_bytes(layer, "bf16") for layer, n in enumerate(shape.num_experts))
    return int(shape.resident_bytes + fraction * experts)


# ------------------------------------------------------------------ the benchmark


def _key(params: dict) -> str:
    return json.dumps({k: params[k] for k in sorted(params)}, sort_keys=True)


def exhaustive(backend, space, db: str) -> tuple[list[dict], dict]:
    """Every configuration measured once, without a budget (each budget then keeps those that fit)."""
    from advisor.results.evalcache import EvalCache
    from advisor.results.store import engine_for
    from advisor.tune.objective import Objective

    obj = Objective(backend, space, budget_bytes=None, eval_cache=EvalCache(engine_for(db)), study_name="exhaustive")
    rows = []
    t0 = time.perf_counter()
    shape = backend.shape
    for params in space.enumerate(shape.n_layers, shape.min_experts):
        o = obj.evaluate(params, completed=[])
        rows.append({"key": _key(params), "params": params, "values": o.values, "plan": o.config.plan.fingerprint})
    cost = {"configs": len(rows), "distinct_plans": len({r["plan"] for r in rows}),
            "seconds": round(time.perf_counter() - t0, 1), **dict(obj.counters)}
    return rows, cost


def blind_corners(space, shape) -> list[dict]:
    """The budget-blind tuner's seeds: each uniform format at the smallest and the largest cache."""
    knobs = space.knobs(shape.n_layers, shape.min_experts)
    sizes = knobs[space.size_knob].values()
    out = []
    for size in (sizes[-1], sizes[0]):
        for fmt in space.formats.values():
            p = {n: (fmt if n.startswith("fmt_g") else size if n == space.size_knob else
                     min(d.values()) if n == "hot_fraction" else d.values()[0])
                 for n, d in knobs.items() if d.fixed is None}
            if p not in out:
                out.append(p)
    return out


def search(rows: list[dict], space, backend, budget: int, sampler: str, seed: int, trials: int,
           metrics: list[str], directions: list[str], *, aware: bool, fill_formats: bool = True) -> dict[str, Any]:
    """One study on the exhaustive table: HV fraction after each trial, and trials over budget. `fill_formats`
    False draws the layer groups' formats each over its own domain (`BudgetFit`)."""
    import optuna

    from advisor.tune.budget import BudgetFit
    from advisor.tune.objective import CONSTRAINT
    from advisor.tune.samplers import make_sampler

    optuna.logging.set_verbosity(optuna.logging.ERROR)
    shape = backend.shape
    table = {r["key"]: r for r in rows}
    feasible = [r for r in rows if r["values"]["peak_gpu_bytes"] <= budget]
    norm = _normaliser(feasible, metrics, directions)
    ref = tuple(1.1 for _ in metrics)
    hv_star = hypervolume([norm(r["values"]) for r in feasible], ref)
    fit = BudgetFit(space, shape, budget, backend.calibration_counts, fill_formats=fill_formats)
    seen: list[tuple[float, ...]] = []
    curve: list[float] = []
    over = 0

    def objective(trial):
        nonlocal over
        params = fit.suggest(trial) if aware else space.suggest(trial, shape.n_layers, shape.min_experts)
        r = table[_key(params)]
        peak = r["values"]["peak_gpu_bytes"]
        trial.set_constraint(CONSTRAINT, (peak - budget) / budget)
        if peak <= budget:
            seen.append(norm(r["values"]))
        else:
            over += 1
        curve.append(hypervolume(list(seen), ref) / hv_star if hv_star else 0.0)
        return [r["values"][m] for m in metrics]

    study = optuna.create_study(directions=directions, sampler=make_sampler(sampler, seed, len(metrics)))
    for p in (fit.warm_start() if aware else blind_corners(space, shape)):  # as `run_tune` seeds a study
        study.enqueue_trial(p)
    t0 = time.perf_counter()
    study.optimize(objective, n_trials=trials)
    return {"curve": curve, "over_budget": over, "feasible_configs": len(feasible),
            "seconds_per_trial": (time.perf_counter() - t0) / trials}


def real_run_cost(backend, space, budget: int, db: str, trials: int, sampler: str, seed: int = 0) -> dict:
    from advisor.tune.study import TuneOptions, run_tune

    res = run_tune(backend, space, TuneOptions(study_name="cost", storage=db, sampler=sampler, seed=seed,
                                               n_trials=trials, heartbeat_interval=None), budget_bytes=budget)
    evals = res.counters.get("accuracy_evaluations", 0) if "accuracy" in res.metrics else \
        res.counters.get("fidelity_evaluations", 0)
    return {"trials": res.n_complete, "over_budget": res.n_infeasible, "distinct_plans": res.distinct_plans,
            "accuracy_evaluations": evals,
            "evaluations_per_plan": round(evals / res.distinct_plans, 3) if res.distinct_plans else None,
            "skipped_by_staging": res.counters.get("accuracy_skipped", 0), "front_size": len(res.front),
            "seconds": round(res.elapsed_s, 1)}


def _at(curve: list[float], k: int) -> float:
    return curve[min(k, len(curve)) - 1]


def main(argv: list[str] | None = None) -> dict:
    from advisor.tune.samplers import DEFAULT_SAMPLER

    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--model", default="bundled")
    ap.add_argument("--budgets", default="0.1,0.25,0.5", help="fractions of the experts' bf16 bytes (+ resident)")
    ap.add_argument("--trials", type=int, default=40)
    ap.add_argument("--seeds", type=int, default=5)
    ap.add_argument("--samplers", default="tpe,nsga2,random", help="also gp (seconds per trial on 2 cores)")
    ap.add_argument("--blind", default="tpe,nsga2", help="samplers also run budget-blind, for comparison")
    ap.add_argument("--blind-formats", default="", help="samplers also run with the layer groups' formats drawn "
                    "each over its own domain (fmt_g*; needs --groups 2 or more), for comparison")
    ap.add_argument("--no-real-run", action="store_true", help="skip the real run_tune per budget")
    ap.add_argument("--groups", type=int, default=1, help="layer groups with their own format (precision.groups)")
    ap.add_argument("--out", type=Path, default=None, help="also write the full results as JSON")
    a = ap.parse_args(argv)
    if a.seeds < 3:
        ap.error("--seeds must be >= 3 (the worst seed is reported)")
    if a.trials < CHECKPOINTS[-1]:  # fewer trials reported the last trial's hypervolume as worst_hv40
        ap.error(f"--trials must be >= {CHECKPOINTS[-1]} (the hypervolume after "
                 f"{'/'.join(map(str, CHECKPOINTS))} trials is reported)")
    fractions = [float(x) for x in a.budgets.split(",")]
    samplers = a.samplers.split(",")
    blind = [s for s in a.blind.split(",") if s]
    blind_formats = [s for s in a.blind_formats.split(",") if s]
    if blind_formats and a.groups < 2:
        ap.error("--blind-formats needs --groups 2 or more (one group's format is drawn as fmt_g0 either way)")
    tmp = Path(tempfile.mkdtemp(prefix="advisor-bench-"))
    t0 = time.perf_counter()
    try:
        backend, acc = _backend(a.model)
        space = _space(acc, staging=False, groups=a.groups)
        rows, cost = exhaustive(backend, space, f"sqlite:///{tmp}/ex.db")
        metrics = list(space.objectives)
        directions = [space.objectives[m] for m in metrics]
        staged = _space(acc, staging=True, groups=a.groups)
        per_budget = []
        for f in fractions:
            budget = budget_bytes(backend.shape, f)
            entry: dict[str, Any] = {"fraction": f, "budget_bytes": budget, "rows": {}}
            runs = [(s, True, True) for s in samplers] + [(s, True, False) for s in blind_formats] + \
                [(s, False, True) for s in blind]
            for name, aware, fill in runs:  # (sampler, budget-aware, formats drawn within the budget)
                res = [search(rows, space, backend, budget, name, seed, a.trials, metrics, directions, aware=aware,
                              fill_formats=fill) for seed in range(a.seeds)]
                label = f"{name} (budget-blind)" if not aware else name if fill else f"{name} (formats blind)"
                entry["rows"][label] = {
                    "aware": aware and fill,  # (over_budget_runs counts the rows drawn as run_tune draws)
                    "worst": {k: round(min(_at(r["curve"], k) for r in res), 4) for k in CHECKPOINTS},
                    "mean": {k: round(sum(_at(r["curve"], k) for r in res) / len(res), 4) for k in CHECKPOINTS},
                    "per_seed": [round(_at(r["curve"], CHECKPOINTS[-1]), 4) for r in res],
                    "over_budget": sum(r["over_budget"] for r in res),
                    "trials": sum(len(r["curve"]) for r in res),
                    "seconds_per_trial": round(sum(r["seconds_per_trial"] for r in res) / len(res), 3),
                }
                entry["feasible_configs"] = res[0]["feasible_configs"]
            if not a.no_real_run:
                entry["real_run"] = real_run_cost(backend, staged, budget, f"sqlite:///{tmp}/run{f}.db", a.trials,
                                                  DEFAULT_SAMPLER)
            per_budget.append(entry)
    finally:
        shutil.rmtree(tmp, ignore_errors=True)

    print(f"{backend.model_name} on {backend.task_name} ({backend.device}); reduced space ({a.groups} layer "
          f"{'group' if a.groups == 1 else 'groups'}) {len(rows)} configs, "
          f"{cost['distinct_plans']} precision plans; exhaustive evaluation {cost['seconds']} s; "
          f"{a.seeds} seeds x {a.trials} trials per sampler; default sampler {DEFAULT_SAMPLER}")
    print("budget = resident weights + fraction x every routed expert at bf16 (counted bytes)")
    print("HV fraction of the exhaustive feasible front after 10/20/40 trials: worst seed (mean); over budget: "
          "share of all trials; s/trial: the sampler's own time (objective is a table look-up), 2 shared cores")
    for e in per_budget:
        print(f"\nbudget {e['fraction']:g} = {e['budget_bytes'] / 2**20:.2f} MiB: {e['feasible_configs']} of "
              f"{len(rows)} configs fit")
        for label, r in e["rows"].items():
            cells = "  ".join(f"{r['worst'][k]:.3f} ({r['mean'][k]:.3f})" for k in CHECKPOINTS)
            print(f"  {label:22s} {cells}  over budget {r['over_budget'] / r['trials']:.0%}  "
                  f"{r['seconds_per_trial']:.2f} s/trial")
        run = e.get("real_run")
        if run is None:
            continue
        print(f"  real run_tune ({DEFAULT_SAMPLER}, {run['trials']} trials): {run['over_budget']} over budget; "
              f"{run['accuracy_evaluations']} {acc} evaluations for {run['distinct_plans']} distinct plans = "
              f"{run['evaluations_per_plan']} per plan ({run['skipped_by_staging']} skipped by staging); "
              f"front {run['front_size']} points; {run['seconds']} s")
    judged = DEFAULT_SAMPLER if DEFAULT_SAMPLER in samplers else samplers[0]
    worst = min(e["rows"][judged]["worst"][CHECKPOINTS[-1]] for e in per_budget)
    over = sum(r["over_budget"] for e in per_budget for r in e["rows"].values() if r["aware"]) + \
        sum(e["real_run"]["over_budget"] for e in per_budget if "real_run" in e)
    result = {"model": backend.model_name, "model_fingerprint": backend.model_fingerprint, "device": backend.device,
              "task": backend.task_name, "accuracy_objective": acc, "groups": a.groups, "space_size": len(rows),
              "exhaustive": cost,
              "default_sampler": DEFAULT_SAMPLER, "budgets": per_budget, "worst_hv40": worst, "judged": judged,
              "over_budget_runs": over, "seconds": round(time.perf_counter() - t0, 1),
              "targets": {"worst_hv40": 0.95, "over_budget_runs": 0, "evaluations_per_plan": 1.0}}
    if a.out:
        a.out.parent.mkdir(parents=True, exist_ok=True)
        a.out.write_text(json.dumps(result, indent=2))
    print(f"\ntotal {result['seconds']} s" + (f"; worst_hv40 is {judged}'s" if judged != DEFAULT_SAMPLER else ""))
    print(f"RESULT worst_hv40={worst:.3f} over_budget_runs={over}")
    return result


def gpu_checks() -> dict:
    """A short live study on CUDA: every trial runs the offload runtime; copy times are CUDA events.
    Returns JSON-able results (< 2 min on one GPU with the bundled or tiny model)."""
    import torch

    if not torch.cuda.is_available():
        return {"skipped": "CUDA not available"}
    from advisor.tune.study import TuneOptions, run_tune

    t0 = time.perf_counter()
    backend, acc = _backend("bundled", device="cuda")
    space = _space(acc, staging=True)
    budget = budget_bytes(backend.shape, 0.25)
    # Keep the study where the GPU run's outputs come back ($OUT), so a measured report can be built from it.
    keep = os.environ.get("OUT")
    tmp = Path(keep) if keep else Path(tempfile.mkdtemp(prefix="advisor-gpu-"))
    db = tmp / ("gpu_study.db" if keep else "g.db")
    try:
        res = run_tune(backend, space, TuneOptions(study_name="gpu-live", storage=f"sqlite:///{db}",
                                                   sampler="nsga2", seed=0, n_trials=8, heartbeat_interval=None,
                                                   mode="live"), budget_bytes=budget)
    finally:
        if not keep:
            shutil.rmtree(tmp, ignore_errors=True)
    front = [{"trial": p.trial_number, "config": {k: p.config.get(k) for k in
                                                  ("precision_description", "slots_per_layer", "policy", "prefetch")},
              "values": p.values, "sources": p.sources} for p in res.front]
    return {
        "device": backend.device, "model": backend.model_name, "trials": res.n_complete,
        "infeasible": res.n_infeasible, "front": front, "counters": res.counters,
        "seconds": round(time.perf_counter() - t0, 1),
        "transfer_sources": sorted({p.sources.get("transfer_ms_per_token", "") for p in res.front}),
        "finite": all(math.isfinite(v) for p in res.front for v in p.values.values()),
    }


if __name__ == "__main__":
    main()
