"""Offloading strategies users run, side by side on recorded dLLM traces: time per token at GPU budgets.

`python -m benchmarks.offload_strategies [--quick]`

Traces (recorded by decoding, routing of the real sampler, token scope "all" = what it computed):
the bundled dLLM on its own task as `advisor tune` traces it (task prompts one after another, 16 tokens, block
8; 4 prompts with --quick, 8 without); a LLaDA-MoE-7B-shaped random model (64 experts, top-8, block 32); a
LLaDA2.0-mini-shaped random model (256 experts, top-8, grouped router, block 32), 64 tokens of 1 (2) random
prompts each. Expert bytes and times are those of the real
model's expert shape (LLaDA-MoE 2048x1024, LLaDA2.0-mini 2048x512; the bundled model its own).

Budgets: 10%, 25%, 50% of the bf16 expert bytes on the GPU. Time per generated token is modelled by
`advisor.offload.timing` from the replayed trace: device expert compute, copies (the recorded H200 link
profile, benchmarks/results/2026-11-30_h200_gpu_check.json) and CPU expert compute (THIS host's CPU expert
times, measured now), CPU overlapped with the device. Device compute side by side in two models: a
fused-MoE runtime as users deploy (`device_roofline` of the recorded H200: weight bytes / its nominal memory
bandwidth or FLOPs, plus a launch cost per layer; the RESULT line) and this project's eager per-expert forwards
measured on an H200 (`RECORDED_H200`, launch-bound: 0.12 ms per bf16 expert, 0.91 ms per int4 expert; the
`eager_` values).

Strategies: Mixtral-offloading-style (bf16, LRU, every miss copied); Fiddler-style (bf16, static hot experts
from the trace itself, misses on the CPU); TIDE-style (bf16, interval refresh, misses on the CPU, best tau of
1/2/4/8); llama.cpp-style (bf16, as many of the last whole layers' experts on the GPU as fit, the earlier
layers' experts on the CPU, as llama.cpp's --n-cpu-moe and -ngl place them); and the configuration a 40-trial Optuna study (TPE, seeded; the four baselines enqueued first, as
a warm start) picks over format x policy x miss policy x tau x slots within the budget, formats restricted
to those within 1 accuracy point of full precision on the bundled model (its measured precision sweep on the
held-out test set, read from advisor/models/bundled/metrics.json). Also the limit: every expert resident, no
transfer (device compute only).

Ends with `RESULT worst_speedup_25=<x> worst_speedup_any=<x> eager_worst_speedup_25=<x>
eager_worst_speedup_any=<x>` (study pick vs the best baseline, fused and eager device model).
"""

from __future__ import annotations

import argparse
import json
from pathlib import Path
from typing import Any

import torch

from advisor.baselines import BASELINES, TIDE_TAUS, baseline_slots
from advisor.hardware.profiles import HardwareProfile
from advisor.offload.simulate import simulate
from advisor.offload.timing import RECORDED_H200, ModelCosts, device_roofline
from advisor.offload.trace import RoutingTrace, record_prompts, record_random_prompts
from advisor.quant.spec import expert_nbytes_of
from advisor.tune.space import EvaluationSettings

RESULTS = Path(__file__).resolve().parent / "results"
GPU_CHECK = RESULTS / "2026-11-30_h200_gpu_check.json"
BUDGETS = (0.10, 0.25, 0.50)
METRICS = Path(__file__).resolve().parents[1] / "advisor" / "models" / "bundled" / "metrics.json"


def bundled_accuracy() -> tuple[dict[str, float], str]:
    """Accuracy per expert format of the bundled dLLM (its committed precision sweep) and the source."""
    rows = json.loads(METRICS.read_text())["precision_sweep"]
    n = rows[0]["n"]
    return ({r["format"]: float(r["accuracy"]) for r in rows},
            f"measured:exact-match, bundled dLLM, {n} held-out problems (advisor/models/bundled/metrics.json)")


ACCURACY, ACCURACY_SOURCE = bundled_accuracy()
FORMATS = tuple(f for f, a in ACCURACY.items() if a >= ACCURACY["bf16"] - 0.01)
POLICIES = ("lru", "flru", "lfu_decay", "block_aware", "static_hot", "tide")
TAUS = TIDE_TAUS


def link_profile() -> HardwareProfile:
    d = json.loads(GPU_CHECK.read_text())
    return HardwareProfile.from_dict(d["sections"]["hardware_profile"]["result"])


DEVICES = {"fused": device_roofline(link_profile()), "eager": RECORDED_H200}


def _record(loaded: Any, prompts: int, new: int, block: int, seed: int = 0, **gen: Any) -> RoutingTrace:
    return record_random_prompts(loaded, prompts, seed=seed, max_new_tokens=new, block_length=block, **gen)


def bundled_workload(n: int) -> RoutingTrace:
    """The bundled dLLM on its own task as `advisor tune` traces it: `n` task prompts one after another,
    decoded as the task decodes (16 tokens, 16 steps, block 8)."""
    from advisor.eval.run import workload_prompts
    from advisor.eval.tasks import get_task
    from advisor.models.load import load_model

    loaded = load_model("bundled")
    task = get_task(EvaluationSettings().task)
    return record_prompts(loaded, workload_prompts(loaded, task, n), max_new_tokens=task.max_new_tokens,
                          **task.gen_kwargs)


def traces(quick: bool) -> dict[str, tuple[RoutingTrace, tuple[int, int]]]:
    """name -> (trace, real expert shape (hidden, FFN))."""
    from advisor.models import tiny
    from advisor.models.llada2 import LLaDA2MoeConfig, LLaDA2MoeModelLM
    from advisor.models.load import loaded_from

    prompts = 1 if quick else 2
    out = {}
    tr = bundled_workload(EvaluationSettings().trace_prompts * prompts)
    m = tr.meta
    out["bundled"] = (tr, (int(m["hidden"][0]), int(m["intermediate"][0])))
    lm = loaded_from(tiny.llada_moe_shaped(0, layers=4), None, "llada_moe", "llada-moe-7b-shaped")
    out["llada-moe-7b-shaped"] = (_record(lm, prompts, 64, 32, steps=64), (2048, 1024))
    kw = {**tiny.tiny_fields("llada2"), "num_hidden_layers": 4, "num_experts": 256, "num_experts_per_tok": 8,
          "n_group": 8, "topk_group": 4}
    torch.manual_seed(0)
    l2 = loaded_from(tiny.randomize_(LLaDA2MoeModelLM(LLaDA2MoeConfig(**kw)), seed=0).eval(),
                     None, "llada2", "llada2-mini-shaped")
    out["llada2-mini-shaped"] = (_record(l2, prompts, 64, 32, steps=64), (2048, 512))
    return out


class Case:
    """One trace at one budget: evaluates configurations (time per token, modelled)."""

    def __init__(self, trace: RoutingTrace, shape: tuple[int, int], budget: float, cpu: Any, link: Any,
                 device: Any = DEVICES["fused"]):
        self.trace, self.shape, self.cpu, self.link, self.device = trace, shape, cpu, link, device
        self.n_layers = trace.n_layers
        self.ne = trace.num_experts
        self.bf16_bytes = expert_nbytes_of("bf16", *shape)
        self.budget_bytes = budget * self.bf16_bytes * sum(self.ne)
        self.tokens = max(1, trace.generated_tokens)
        self.seqs = trace.access_sequences()
        self.hot = trace.hot_sets()

    def slots_fit(self, fmt: str) -> int:
        """Uniform slots per layer that fit the budget at `fmt`."""
        return min(max(self.ne), int(self.budget_bytes // (expert_nbytes_of(fmt, *self.shape) * self.n_layers)))

    def run(self, fmt: str, slots: Any, policy: str, miss: str, tau: int = 4) -> dict[str, Any]:
        n = self.n_layers
        eb = [[expert_nbytes_of(fmt, *self.shape)] * e for e in self.ne]
        costs = ModelCosts(fmt, [self.shape[0]] * n, [self.shape[1]] * n, self.cpu, self.device, self.link)
        st = simulate(self.trace, slots_per_layer=slots, policy=policy, expert_bytes=eb, profile=self.link,
                      hot=self.hot if policy == "static_hot" else None, sequences=self.seqs, miss=miss,
                      policy_kw={"tau": tau} if policy == "tide" else None, costs=costs)
        return {"ms_per_token": st.times["layer_ms"] / self.tokens,
                "terms_per_token": {k: v / self.tokens for k, v in st.times.items()},
                "hit_rate": st.hit_rate, "h2d_bytes_per_token": st.bytes_h2d / self.tokens,
                "cpu_tokens": st.total("cpu_tokens"), "source": st.time_source,
                "config": {"format": fmt, "slots": slots, "policy": policy, "miss": miss,
                           **({"tau": tau} if policy == "tide" else {})}}

    def baselines(self) -> dict[str, dict[str, Any]]:
        """The strategies of `advisor.baselines` (the ones `advisor tune --budgets` stores), at bf16."""
        out = {}
        for b in BASELINES:
            slots = baseline_slots(b, self.ne, lambda s: sum(s) * self.bf16_bytes <= self.budget_bytes)
            placed: Any = slots if b.whole_layers else slots[0]
            out[f"{b.label} ({b.policy}, {b.miss})"] = min(
                (self.run("bf16", placed, b.policy, b.miss, tau) for tau in b.taus), key=lambda r: r["ms_per_token"])
        return out

    def limit(self) -> dict[str, Any]:
        r = self.run("bf16", max(self.ne), "lru", "copy")
        # every expert resident from the start: no copy at all, so every look-up hits (the replay above starts
        # from an empty cache; its first-touch copies are no part of this row)
        gpu = r["terms_per_token"]["gpu_ms"]
        r["terms_per_token"] = {k: gpu if k in ("gpu_ms", "layer_ms") else 0.0 for k in r["terms_per_token"]}
        r["ms_per_token"], r["hit_rate"], r["h2d_bytes_per_token"], r["cpu_tokens"] = gpu, 1.0, 0.0, 0
        return r

    def study(self, trials: int, seed: int, baselines: dict[str, dict[str, Any]]) -> dict[str, Any]:
        import optuna

        optuna.logging.set_verbosity(optuna.logging.WARNING)
        sampler = optuna.samplers.TPESampler(seed=seed, multivariate=True)
        st = optuna.create_study(direction="minimize", sampler=sampler)
        for b in baselines.values():
            c = b["config"]
            if isinstance(c["slots"], int):
                st.enqueue_trial({"format": c["format"], "policy": c["policy"], "miss": c["miss"],
                                  "tau": c.get("tau", 4), "fill": 1.0})
        results: dict[int, dict[str, Any]] = {}

        def objective(trial: Any) -> float:
            fmt = trial.suggest_categorical("format", list(FORMATS))
            policy = trial.suggest_categorical("policy", list(POLICIES))
            miss = trial.suggest_categorical("miss", ["copy", "cpu", "hybrid"])
            tau = trial.suggest_categorical("tau", list(TAUS))
            fill = trial.suggest_float("fill", 0.25, 1.0)  # share of the budget's slots used
            slots = max(0, round(fill * self.slots_fit(fmt)))
            r = self.run(fmt, slots, policy, miss, tau)
            results[trial.number] = r
            return r["ms_per_token"]

        st.optimize(objective, n_trials=trials)
        best = results[st.best_trial.number]
        best["accuracy"] = ACCURACY[best["config"]["format"]]
        return best


def main(argv: list[str] | None = None) -> dict[str, Any]:
    from advisor.offload.cpu_profile import measure_cpu_experts
    from advisor.offload.timing import CPU_FORMATS, CpuProfile

    ap = argparse.ArgumentParser(description=__doc__)
    ap.add_argument("--quick", action="store_true",
                    help="fewer prompts per trace (bundled 4, random models 1), 20 trials")
    ap.add_argument("--trials", type=int, default=40)
    ap.add_argument("--json", default="")
    ap.add_argument("--cpu-profile", default="", help="reuse a CPU expert profile (a --json output of this "
                    "benchmark, or a profile saved by `advisor profile --expert-shape`) instead of measuring")
    args = ap.parse_args(argv)
    torch.set_num_threads(max(1, torch.get_num_threads()))
    trials = 20 if args.quick else args.trials
    link = link_profile()
    tr = traces(args.quick)
    shapes = list(dict.fromkeys(s for _, s in tr.values()))
    if args.cpu_profile:
        d = json.loads(Path(args.cpu_profile).read_text())
        cpu = CpuProfile.from_dict(d.get("cpu_profile") or d["cpu_experts"])
    else:
        cpu = measure_cpu_experts(shapes, list(CPU_FORMATS), repeats=2 if args.quick else 3)
    rows: list[dict[str, Any]] = []
    worst: dict[str, tuple[float, float]] = {}
    for dev_name, device in DEVICES.items():
        speed25, speed_any = [], []
        print(f"\n=== device model '{dev_name}': {device.source}")
        for name, (trace, shape) in tr.items():
            for budget in BUDGETS:
                case = Case(trace, shape, budget, cpu, link, device)
                base = case.baselines()
                pick = case.study(trials, 0, base)
                lim = case.limit()
                best_name = min(base, key=lambda k: base[k]["ms_per_token"])
                best = base[best_name]["ms_per_token"]
                sp = best / pick["ms_per_token"]
                speed_any.append(sp)
                if budget == 0.25:
                    speed25.append(sp)
                rows.append({"device_model": dev_name, "trace": name, "budget": budget, "baselines": base,
                             "pick": pick, "limit": lim, "best_baseline": best_name, "speedup_vs_best_baseline": sp})
                print(f"\n{name} at {budget:.0%} of bf16 expert bytes ({case.budget_bytes / 2**20:.1f} MiB; "
                      f"{trace.n_lookups} look-ups, {case.tokens} tokens), device model {dev_name}:")
                print(f"  {'strategy':<36} {'ms/token':>9} {'vs best':>8} {'vs limit':>9} {'hit':>6} "
                      f"{'H2D/tok':>10}  config")
                for label, r in [*base.items(), ("study pick", pick), ("limit (all resident, bf16)", lim)]:
                    print(f"  {label:<36} {r['ms_per_token']:9.3f} {best / r['ms_per_token']:7.2f}x "
                          f"{r['ms_per_token'] / lim['ms_per_token']:8.2f}x {r['hit_rate']:6.3f} "
                          f"{r['h2d_bytes_per_token'] / 2**20:8.2f}Mi  {r['config']}")
        worst[dev_name] = (min(speed25), min(speed_any))
        print(f"\ntime ({dev_name}): {rows[-1]['pick']['source']}")
    print(f"accuracy: {ACCURACY_SOURCE}; study formats within 1 point of bf16: {', '.join(FORMATS)}")
    print("ratios: 'vs best' = best baseline time / this time (higher is faster); 'vs limit' = this / all-resident")
    (f25, fany), (e25, eany) = worst["fused"], worst["eager"]
    summary = {"rows": rows, "cpu_profile": cpu.to_dict(), "link": link.to_dict(), "trials": trials,
               "worst_speedup_25": f25, "worst_speedup_any": fany,
               "eager_worst_speedup_25": e25, "eager_worst_speedup_any": eany}
    print(f"RESULT worst_speedup_25={f25:.2f} worst_speedup_any={fany:.2f} "
          f"eager_worst_speedup_25={e25:.2f} eager_worst_speedup_any={eany:.2f}")
    if args.json:
        Path(args.json).write_text(json.dumps(summary, indent=2, default=str))
    return summary


if __name__ == "__main__":
    main()
