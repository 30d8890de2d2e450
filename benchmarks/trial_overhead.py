"""What a trial costs beside its measurements, before and after a change, side by side in one run: the SQLite
commits of `advisor tune` and the accuracy evaluation of an offloaded float32 model on the CPU.

`python -m benchmarks.trial_overhead [--base c7ce7ab] [--rounds 2] [--tiny-trials 20] [--bundled-trials 8]`

Each run is `advisor tune ... --mode replay --device cpu` through the real CLI, a fresh process with a fresh SQLite
file and cache directory, once with the code of `--base` (exported with `git archive`) and once with this checkout,
in turns (the order rotates each round), all with one hardware profile measured at the start (the machinery of
`benchmarks.live_speed`: `export_tree`, `measure_profile`, `run_tune` and its trial-by-trial comparison), on two
models:

* ``tiny`` - `tiny:llada_moe`, its `dllm` space, `--sampler random`: trials of milliseconds, so what the storage
  costs shows;
* ``bundled`` - the bundled dLLM, its `quick` space, `--offload` (its experts streamed from the checkpoint; float32),
  TPE seed 0: each new precision plan's fidelity and accuracy run through the plan's offload runtime.

Every commit SQLite runs is counted (sqlite3's trace callback on each connection SQLAlchemy opens) and named by
the advisor and Optuna functions that asked for it. Each accuracy and fidelity evaluation is timed (wall and
process CPU), with the bytes the dequantized weights it was served from held at its end (0: dequantized per call)
and the process's peak resident memory. Each side's stored values (all but measured times), labels and
configurations must be equal trial by trial.

Ends with `RESULT tiny_commits_per_trial_before=.. tiny_commits_per_trial_after=.. tiny_trial_s_before=..
tiny_trial_s_after=.. bundled_commits_per_trial_before=.. bundled_commits_per_trial_after=..
bundled_accuracy_s_before=.. bundled_accuracy_s_after=.. bundled_accuracy_cpu_s_before=..
bundled_accuracy_cpu_s_after=.. bundled_dequantized_mib_after=.. bundled_maxrss_mib_before=..
bundled_maxrss_mib_after=.. counters_equal=<0|1>`: commits per finished trial (the whole run's over its trials), mean
seconds per trial (start to completion, as stored) and per accuracy evaluation, the largest dequantized copy held,
peak resident memory; means over the rounds.
"""

from __future__ import annotations

import collections
import json
import os
import re
import statistics

from benchmarks.live_speed import (
    PRELUDE,
    PROFILE,
    arguments,
    both_sides,
    differences,
    in_turns,
    opening,
)

DEFAULT_BASE = "c7ce7ab"  # main before the storage batching and the offloaded evaluation's dequantized copy

# before `PRELUDE` (which runs the CLI): counts commits by origin, times evaluations, reads the dequantized copy
COUNTING = r"""
import atexit as _atexit, collections as _collections, json as _json, resource as _resource, sys as _sys, time as _time
from sqlalchemy import event as _event
from sqlalchemy.engine import Engine as _Engine
_COMMITS = _collections.Counter()
def _origin():
    f, names = _sys._getframe(2), []
    while f is not None and len(names) < 3:
        fn = f.f_code.co_filename
        if "/optuna/" in fn or ("/advisor/" in fn and "/site-packages/" not in fn):
            where = "optuna" if "/optuna/" in fn else fn.rsplit("/advisor/", 1)[1][:-3].replace("/", ".")
            name = f"{where}.{f.f_code.co_name}"
            if not names or names[-1] != name:
                names.append(name)
        f = f.f_back
    return " < ".join(names)
def _trace(sql):
    if sql.lstrip()[:6].upper() == "COMMIT":
        _COMMITS[_origin()] += 1
@_event.listens_for(_Engine, "connect")
def _on_connect(con, record):
    if hasattr(con, "set_trace_callback"):
        con.set_trace_callback(_trace)
import advisor.quant.apply as _apply
_served, _fast = [], _apply.fast_runtime
def _fast_runtime(*a, **k):
    r = _fast(*a, **k)
    _served.append(r)
    return r
_apply.fast_runtime = _fast_runtime
def _held():
    return sum(t.nbytes for r in _served for w in getattr(r, "_cache", {}).values() for t in (w.gate, w.up, w.down))
import advisor.tune.model_backend as _mb
_EVALS = []
def _timed(kind, call):
    def run(self, plan):
        _served.clear()
        w, c = _time.perf_counter(), _time.process_time()
        try:
            return call(self, plan)
        finally:
            _EVALS.append({"kind": kind, "plan": plan.spec, "wall": _time.perf_counter() - w,
                           "cpu": _time.process_time() - c, "dequantized_bytes": _held()})
            _served.clear()
    return run
_mb.ModelBackend.accuracy = _timed("accuracy", _mb.ModelBackend.accuracy)
_mb.ModelBackend.fidelity = _timed("fidelity", _mb.ModelBackend.fidelity)
_atexit.register(lambda: print("OVERHEAD " + _json.dumps({"commits": dict(_COMMITS), "evals": _EVALS,
    "maxrss_kib": _resource.getrusage(_resource.RUSAGE_SELF).ru_maxrss}), file=_sys.stderr))
"""

CASES = {
    "tiny": ["tiny:llada_moe", "--sampler", "random"],
    "bundled": ["bundled", "--space", "quick", "--seed", "0", "--offload"],
}


def overhead(run: dict) -> dict:
    return json.loads(re.search(r"^OVERHEAD (.*)$", run["stderr"], re.M).group(1))


def summary(run: dict) -> dict:
    o, n = overhead(run), len(run["trials"])
    acc = [e for e in o["evals"] if e["kind"] == "accuracy"]
    return {"n": n, "commits": sum(o["commits"].values()), "commits_per_trial": sum(o["commits"].values()) / n,
            "trial": statistics.mean(t["seconds"] for t in run["trials"]), "wall": run["wall"], "cpu": run["cpu"],
            "acc_n": len(acc), "acc_wall": statistics.mean(e["wall"] for e in acc) if acc else 0.0,
            "acc_cpu": statistics.mean(e["cpu"] for e in acc) if acc else 0.0,
            "fid_wall": statistics.mean([e["wall"] for e in o["evals"] if e["kind"] == "fidelity"] or [0.0]),
            "dequantized": max((e["dequantized_bytes"] for e in o["evals"]), default=0),
            "maxrss": o["maxrss_kib"] / 1024}


def line(label: str, s: dict) -> str:
    return (f"  {label:<17} {s['n']:>2} trials, {s['commits']:>4} commits ({s['commits_per_trial']:.1f} per trial); "
            f"per trial {s['trial']:.3f} s; {s['acc_n']} accuracy evaluations, each {s['acc_wall']:.2f} s "
            f"(cpu {s['acc_cpu']:.2f} s); fidelity {s['fid_wall']:.2f} s each; dequantized copy held "
            f"{s['dequantized'] / 2**20:.2f} MiB at most; peak RSS {s['maxrss']:.0f} MiB; process wall "
            f"{s['wall']:.1f} s cpu {s['cpu']:.1f} s")


def main() -> None:
    a = arguments(__doc__, DEFAULT_BASE, {"tiny": 20, "bundled": 8})
    print(opening("advisor tune --mode replay --device cpu on SQLite", a.base, a.rounds))
    trials = {case: getattr(a, f"{case}_trials") for case in CASES}
    result: dict[str, float] = {}
    equal = True
    with both_sides(a.base, "trial-overhead-") as (tmp, trees):
        for case, args in CASES.items():
            args = [*args, "--trials", str(trials[case]), "--gpu", PROFILE, "--mode", "replay", "--device", "cpu"]
            print(f"\n{case}: advisor tune {' '.join(args)}")
            runs = in_turns(trees, tmp, case, args, a.rounds, lambda label, run: line(label, summary(run)),
                            COUNTING + PRELUDE)
            for side in runs:  # where each side's commits come from (its first run), most first
                origins = collections.Counter(overhead(runs[side][0])["commits"])
                print(f"  commits by origin, {side}:")
                for where, n in origins.most_common():
                    print(f"    {n:>4}  {where}")
            if case == "bundled":
                per_plan = {side: [(e["plan"], e["kind"], round(e["wall"], 2), round(e["cpu"], 2),
                                    round(e["dequantized_bytes"] / 2**20, 2))
                                   for e in overhead(runs[side][0])["evals"]] for side in runs}
                for side, evals in per_plan.items():
                    print(f"  evaluations, {side} (plan, kind, wall s, cpu s, dequantized MiB): {evals}")
            diffs = differences(runs)
            equal &= not diffs
            print(f"  stored values (all but measured times), labels and configurations equal trial by trial in every "
                  f"run: {'yes' if not diffs else 'NO: ' + ', '.join(diffs)}")
            mean = {side: {k: statistics.mean(summary(x)[k] for x in rs) for k in
                           ("commits_per_trial", "trial", "acc_wall", "acc_cpu", "dequantized", "maxrss")}
                    for side, rs in runs.items()}
            for side, m in mean.items():
                print(f"  mean {side:<6}: {m['commits_per_trial']:.1f} commits per trial, {m['trial']:.3f} s per trial, "
                      f"accuracy evaluation {m['acc_wall']:.2f} s (cpu {m['acc_cpu']:.2f} s), dequantized copy "
                      f"{m['dequantized'] / 2**20:.2f} MiB, peak RSS {m['maxrss']:.0f} MiB")
            for side in runs:
                result[f"{case}_commits_per_trial_{side}"] = mean[side]["commits_per_trial"]
                result[f"{case}_trial_s_{side}"] = mean[side]["trial"]
                result[f"{case}_accuracy_s_{side}"] = mean[side]["acc_wall"]
                result[f"{case}_accuracy_cpu_s_{side}"] = mean[side]["acc_cpu"]
                result[f"{case}_dequantized_mib_{side}"] = mean[side]["dequantized"] / 2**20
                result[f"{case}_maxrss_mib_{side}"] = mean[side]["maxrss"]
    print(f"\nload average {os.getloadavg()[0]:.1f} at the end")
    keys = ["tiny_commits_per_trial_before", "tiny_commits_per_trial_after", "tiny_trial_s_before", "tiny_trial_s_after",
            "bundled_commits_per_trial_before", "bundled_commits_per_trial_after", "bundled_accuracy_s_before",
            "bundled_accuracy_s_after", "bundled_accuracy_cpu_s_before", "bundled_accuracy_cpu_s_after",
            "bundled_dequantized_mib_after", "bundled_maxrss_mib_before", "bundled_maxrss_mib_after"]
    print("RESULT " + " ".join(f"{k}={result[k]:.3f}" for k in keys) + f" counters_equal={int(equal)}")


if __name__ == "__main__":
    main()
