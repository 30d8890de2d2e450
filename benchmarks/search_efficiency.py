"""How fast do the samplers find the Pareto front, and does the tuner measure accuracy once per plan?

1. Exhaustive: every configuration of a reduced space is evaluated with the tuner's own `Objective`
   (accuracy and fidelity once per precision plan, cache axes by replaying that plan's routing trace).
   Its feasible Pareto front gives the reference hypervolume.
2. Search: NSGA-II, TPE and random search (several seeds) run as Optuna studies whose objective looks the
   values up in the exhaustive table - exactly the numbers the real objective returns, at no model cost -
   with the same memory constraint. Hypervolume after k trials, as a fraction of the exhaustive one.
3. Cost: one real `run_tune` (NSGA-II, staging on, fresh database) counts accuracy evaluations against
   the distinct precision plans its trials visited (target <= 1.0).

Runs on the bundled model; falls back to `tiny:llada_moe` (objective fidelity_top1 instead of accuracy,
which a random tiny model cannot score) when the bundled model is missing.

    python benchmarks/search_efficiency.py [--model bundled] [--trials 40] [--seeds 5] [--out FILE]

`gpu_checks()` runs a short live study on CUDA (measured copy times) for the lead's GPU run.
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

REDUCED_SPACE = """
name = "reduced"
description = "search-efficiency benchmark: uniform precision + hot set, slots, two policies"
[precision]
formats = ["bf16", "int8", "int4"]
groups = 1
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
[budget]
fraction_of_model = 0.6
"""


def _space(acc_metric: str, staging: bool):
    from advisor.tune.space import parse_space

    text = REDUCED_SPACE.replace("ACC", acc_metric).replace("STAGING", "true" if staging else "false")
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


# ------------------------------------------------------------------ the benchmark


def exhaustive(backend, space, budget: int, db: str) -> tuple[list[dict], dict]:
    from advisor.results.evalcache import EvalCache
    from advisor.results.store import engine_for
    from advisor.tune.objective import Objective

    obj = Objective(backend, space, budget_bytes=budget, eval_cache=EvalCache(engine_for(db)), study_name="exhaustive")
    rows = []
    t0 = time.perf_counter()
    shape = backend.shape
    for params in space.enumerate(shape.n_layers, shape.min_experts):
        o = obj.evaluate(params, completed=[])
        key = json.dumps({k: params[k] for k in sorted(params)}, sort_keys=True)
        rows.append({"key": key, "params": params, "values": o.values, "feasible": o.feasible,
                     "plan": o.config.plan.fingerprint})
    plans = {r["plan"] for r in rows if r["feasible"]}
    cost = {"configs": len(rows), "feasible": sum(r["feasible"] for r in rows), "distinct_plans": len(plans),
            "seconds": round(time.perf_counter() - t0, 1), **dict(obj.counters)}
    return rows, cost


def search_curves(rows: list[dict], space, shape, budget: int, samplers: list[str], seeds: int, trials: int,
                  metrics: list[str], directions: list[str]) -> dict[str, Any]:
    import optuna

    from advisor.results.storage import make_sampler
    from advisor.tune.objective import CONSTRAINT

    optuna.logging.set_verbosity(optuna.logging.ERROR)
    table = {r["key"]: r for r in rows}
    feasible = [r for r in rows if r["feasible"]]
    norm = _normaliser(feasible, metrics, directions)
    ref = tuple(1.1 for _ in metrics)
    hv_star = hypervolume([norm(r["values"]) for r in feasible], ref)
    out: dict[str, Any] = {"exhaustive_hv": hv_star, "reference_point": ref, "samplers": {}}
    for name in samplers:
        curves = []
        for seed in range(seeds):
            seen: list[tuple[float, ...]] = []
            curve = []

            def objective(trial, seen=seen, curve=curve):
                params = space.suggest(trial, shape.n_layers, shape.min_experts)
                r = table[json.dumps({k: params[k] for k in sorted(params)}, sort_keys=True)]
                peak = r["values"]["peak_gpu_bytes"]
                trial.set_constraint(CONSTRAINT, (peak - budget) / budget)
                if r["feasible"]:
                    seen.append(norm(r["values"]))
                curve.append(hypervolume(list(seen), ref) / hv_star if hv_star else 0.0)
                return [r["values"][m] for m in metrics]

            study = optuna.create_study(directions=directions,
                                        sampler=make_sampler(name, seed, len(metrics)))
            for p in space.initial_points(shape.n_layers, shape.min_experts):  # as `run_tune` seeds a new study
                study.enqueue_trial(p)
            study.optimize(objective, n_trials=trials)
            curves.append(curve)
        mean = [sum(c[k] for c in curves) / len(curves) for k in range(trials)]
        first = next((k + 1 for k, v in enumerate(mean) if v >= 0.95), None)
        out["samplers"][name] = {"mean_hv_fraction": [round(v, 4) for v in mean],
                                 "min_hv_fraction_at_end": round(min(c[-1] for c in curves), 4),
                                 "trials_to_0.95_mean": first}
    return out


def real_run_cost(backend, space, budget: int, db: str, trials: int, seed: int = 0) -> dict:
    from advisor.tune.study import TuneOptions, run_tune

    res = run_tune(backend, space, TuneOptions(study_name="cost", storage=db, sampler="nsga2", seed=seed,
                                               n_trials=trials, heartbeat_interval=None), budget_bytes=budget)
    evals = res.counters.get("accuracy_evaluations", 0) if "accuracy" in res.metrics else \
        res.counters.get("fidelity_evaluations", 0)
    return {"trials": res.n_complete, "distinct_plans": res.distinct_plans, "accuracy_evaluations": evals,
            "evaluations_per_plan": round(evals / res.distinct_plans, 3) if res.distinct_plans else None,
            "skipped_by_staging": res.counters.get("accuracy_skipped", 0), "front_size": len(res.front),
            "seconds": round(res.elapsed_s, 1)}


def main(argv: list[str] | None = None) -> dict:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--model", default="bundled")
    ap.add_argument("--trials", type=int, default=40)
    ap.add_argument("--seeds", type=int, default=5)
    ap.add_argument("--samplers", default="nsga2,tpe,random")
    ap.add_argument("--out", type=Path, default=None)
    a = ap.parse_args(argv)
    tmp = Path(tempfile.mkdtemp(prefix="advisor-bench-"))
    try:
        backend, acc = _backend(a.model)
        space = _space(acc, staging=False)
        budget = int(space.budget_fraction * backend.shape.full_bytes())
        rows, cost = exhaustive(backend, space, budget, f"sqlite:///{tmp}/ex.db")
        metrics = list(space.objectives)
        directions = [space.objectives[m] for m in metrics]
        curves = search_curves(rows, space, backend.shape, budget, a.samplers.split(","), a.seeds, a.trials,
                               metrics, directions)
        staged = _space(acc, staging=True)
        run = real_run_cost(backend, staged, budget, f"sqlite:///{tmp}/run.db", a.trials)
    finally:
        shutil.rmtree(tmp, ignore_errors=True)
    result = {
        "model": backend.model_name, "model_fingerprint": backend.model_fingerprint, "device": backend.device,
        "task": backend.task_name, "accuracy_objective": acc, "budget_bytes": budget,
        "space_size": len(rows), "exhaustive": cost, "search": curves, "real_run": run,
        "targets": {"hv_fraction_at_40": 0.95, "evaluations_per_plan": 1.0},
    }
    k = min(a.trials, 40) - 1
    print(f"{backend.model_name} on {backend.task_name} ({backend.device}); reduced space {len(rows)} configs, "
          f"{cost['feasible']} feasible, {cost['distinct_plans']} precision plans; exhaustive evaluation "
          f"{cost['seconds']} s")
    for name, s in curves["samplers"].items():
        print(f"  {name:7s} HV fraction after {k + 1} trials: mean {s['mean_hv_fraction'][k]:.3f}, "
              f"worst seed {s['min_hv_fraction_at_end']:.3f}; mean reaches 0.95 at trial {s['trials_to_0.95_mean']}")
    print(f"  real NSGA-II run ({run['trials']} trials): {run['accuracy_evaluations']} {acc} evaluations for "
          f"{run['distinct_plans']} distinct plans = {run['evaluations_per_plan']} per plan "
          f"({run['skipped_by_staging']} skipped by staging)")
    if a.out:
        a.out.parent.mkdir(parents=True, exist_ok=True)
        a.out.write_text(json.dumps(result, indent=2))
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
    budget = int(space.budget_fraction * backend.shape.full_bytes())
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
