"""Where an `advisor` process's time goes at start-up and at exit - the garbage collector's share above all -
before and after a change, side by side in one run.

`python -m benchmarks.startup_gc [--base 225ee52] [--runs 5] [--tune-runs 3] [--importtime]`

Each command runs as a fresh process through the real entry point (`python -m advisor`, what the `advisor`
script runs), once with the code of `--base` (exported with `git archive`, `benchmarks.live_speed.export_tree`)
and once with this checkout, in turns (the order rotates each run):

* read-only commands on the committed example study: `advisor --help`, `recommend --help`, `studies`,
  `recommend --budget 1.5MiB ...` and `pareto` (its plots written to a fresh directory);
* `advisor tune --trials 2` on the bundled model (a fresh SQLite file, cache and profiles directory each run).

A prelude in the child measures: every garbage collection (`gc.callbacks`: seconds, count, by generation), the
time from its start to its last `atexit` hook, the imported heavy packages (torch, transformers, optuna) and the
subprocesses it started. `exit` is the time from that last hook to the process's end as the parent sees it: the
interpreter's finalisation, which collects what is left on the heap once more. Wall time and CPU time (user+sys
of the child, from getrusage) complete it. Best of N (the least disturbed run: the host is shared with other
jobs) and the median are printed; the RESULT line takes the best. The two sides' stdout must be equal for the
read-only commands, and for `tune` each stored trial's values (all but measured times), labels and
configuration (`benchmarks.live_speed.counters`).

Ends with `RESULT <cmd>_wall_s_before=.. <cmd>_gc_s_before=.. <cmd>_exit_s_before=.. <cmd>_maxrss_mib_before=..
<cmd>_wall_s_after=.. (the same four) ... outputs_equal=<0|1> read_only_heavy_imports=<n>` for cmd in help,
recommend_help, studies, recommend, pareto, tune: best-of-N seconds, the largest peak RSS; the last counts the
read-only runs that imported torch, transformers or optuna (must be 0).
"""

from __future__ import annotations

import argparse
import os
import re
import resource
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

from benchmarks.cli_speed import slowest_imports
from benchmarks.live_speed import counters, export_tree, first_difference, read_trials

ROOT = Path(__file__).resolve().parents[1]
DEFAULT_BASE = "225ee52"  # main before the start-up collector change of 2026-12-06
EXAMPLE_DB = ROOT / "studies" / "example" / "advisor.db"

# installed before anything of advisor; its atexit hook is registered first, so it runs last
PRELUDE = """
import atexit, gc, resource, subprocess, sys, time
_t0 = time.perf_counter()
_gc = {0: [0, 0.0], 1: [0, 0.0], 2: [0, 0.0]}
_start = [0.0]
def _cb(phase, info):
    if phase == "start":
        _start[0] = time.perf_counter()
    else:
        g = _gc[info["generation"]]
        g[0] += 1
        g[1] += time.perf_counter() - _start[0]
gc.callbacks.append(_cb)
_popen = [0]
_init = subprocess.Popen.__init__
def _counted(self, *a, **k):
    _popen[0] += 1
    _init(self, *a, **k)
subprocess.Popen.__init__ = _counted
def _last():
    heavy = ",".join(m for m in ("torch", "transformers", "optuna") if m in sys.modules) or "-"
    gens = " ".join(f"{n},{s:.4f}" for n, s in _gc.values())
    print(f"PROBE run={time.perf_counter() - _t0:.4f} gc={gens} heavy={heavy} popen={_popen[0]} "
          f"maxrss={resource.getrusage(resource.RUSAGE_SELF).ru_maxrss} stamp={time.time():.4f}",
          file=sys.__stderr__, flush=True)
atexit.register(_last)
import runpy
sys.argv = ["advisor", *sys.argv[1:]]
runpy.run_module("advisor", run_name="__main__", alter_sys=True)
"""

PROBE = re.compile(r"PROBE run=([\d.]+) gc=(\d+),([\d.]+) (\d+),([\d.]+) (\d+),([\d.]+) heavy=(\S+) popen=(\d+) "
                   r"maxrss=(\d+) stamp=([\d.]+)")


def read_only_commands(db: str) -> dict[str, list[str]]:
    return {
        "help": ["--help"],
        "recommend_help": ["recommend", "--help"],
        "studies": ["studies", "--storage", db],
        "recommend": ["recommend", "--storage", db, "--budget", "1.5MiB", "--max-accuracy-drop", "0.01",
                      "--prefer", "latency"],
        "pareto": ["pareto", "bundled-example", "--storage", db, "--out", "plots"],
    }


def run_once(tree: Path, work: Path, args: list[str]) -> dict:
    """One `python -m advisor ARGS` on `tree`'s code in the fresh directory `work`."""
    work.mkdir(parents=True)
    env = {**os.environ, "PYTHONPATH": str(tree), "ADVISOR_CACHE_DIR": str(work / "cache"), "COLUMNS": "120",
           "ADVISOR_PROFILES_DIR": str(work / "profiles")}
    before = resource.getrusage(resource.RUSAGE_CHILDREN)
    t0 = time.perf_counter()
    r = subprocess.run([sys.executable, "-c", PRELUDE, *args], capture_output=True, text=True, cwd=work, env=env)
    end, wall = time.time(), time.perf_counter() - t0
    after = resource.getrusage(resource.RUSAGE_CHILDREN)
    m = PROBE.search(r.stderr)
    if r.returncode != 0 or m is None:
        raise SystemExit(f"advisor {' '.join(args)} failed ({r.returncode}):\n{r.stdout[-2000:]}\n{r.stderr[-2000:]}")
    g = [float(x) for x in m.groups()[:7]]
    return {"wall": wall, "cpu": (after.ru_utime - before.ru_utime) + (after.ru_stime - before.ru_stime),
            "run": g[0], "gc": g[2] + g[4] + g[6], "gc_by_gen": (g[2], g[4], g[6]),
            "collections": (int(g[1]), int(g[3]), int(g[5])), "exit": end - float(m.group(11)),
            "maxrss_mib": int(m.group(10)) / 1024,
            "heavy": m.group(8), "popen": int(m.group(9)), "stdout": r.stdout}


def line(side: str, runs: list[dict]) -> str:
    def stat(key: str) -> str:
        xs = [r[key] for r in runs]
        return f"{key} {min(xs):.3f}/{statistics.median(xs):.3f}"

    best = min(runs, key=lambda r: r["gc"])
    gens = " ".join(f"gen{i} {n}x {s:.3f}" for i, (n, s) in enumerate(zip(best["collections"], best["gc_by_gen"],
                                                                          strict=True)))
    return (f"  {side:<6} {stat('wall')}  {stat('cpu')}  {stat('gc')}  {stat('exit')} s (best/median of "
            f"{len(runs)})  least-gc run: {gens}; peak RSS {max(r['maxrss_mib'] for r in runs):.0f} MiB; imported "
            f"{runs[0]['heavy']}; subprocesses {runs[0]['popen']}")


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--base", default=DEFAULT_BASE, help="git revision measured as 'before'")
    ap.add_argument("--runs", type=int, default=5, help="runs of each read-only command per side")
    ap.add_argument("--tune-runs", type=int, default=3, help="runs of `advisor tune --trials 2` per side")
    ap.add_argument("--importtime", action="store_true", help="list each command's slowest imports (this checkout)")
    a = ap.parse_args()
    head = subprocess.run(["git", "-C", str(ROOT), "rev-parse", "--short", "HEAD"], capture_output=True,
                          text=True).stdout.strip()
    print(f"advisor start-up and exit, before = {a.base}, after = this checkout ({head}); python "
          f"{sys.version.split()[0]}; {os.cpu_count()} logical cores; load average {os.getloadavg()[0]:.1f} at the "
          f"start; fresh process per run (python -m advisor), order rotated; measured: wall-clock, getrusage, "
          f"gc.callbacks")
    db = str(EXAMPLE_DB)
    cmds = {**read_only_commands(db), "tune": ["tune", "--trials", "2", "--storage", "sqlite:///study.db"]}
    result, equal, heavy_read_only = {}, True, 0
    with tempfile.TemporaryDirectory() as d:
        tmp = Path(d)
        trees = {"before": export_tree(a.base, tmp / "base"), "after": ROOT}
        os.environ.update(ADVISOR_CACHE_DIR=str(tmp / "cache"), ADVISOR_PROFILES_DIR=str(tmp / "profiles"))
        for name, args in cmds.items():
            n = a.tune_runs if name == "tune" else a.runs
            runs: dict[str, list[dict]] = {"before": [], "after": []}
            for i in range(n):
                for side in (("before", "after") if i % 2 == 0 else ("after", "before")):
                    runs[side].append(run_once(trees[side], tmp / f"{name}-{side}-{i}", args))
            if name == "tune":
                got = {s: [counters(t) for t in read_trials(tmp / f"tune-{s}-0" / "study.db")] for s in runs}
                same = first_difference(got["before"], got["after"])
            else:
                outs = {s: {r["stdout"] for r in rs} for s, rs in runs.items()}
                same = "equal" if len(outs["before"]) == 1 and outs["before"] == outs["after"] else "stdout differs"
                heavy_read_only += sum(r["heavy"] != "-" for rs in runs.values() for r in rs)
            equal &= same == "equal"
            print(f"advisor {' '.join(args).replace(db, 'EXAMPLE_DB')}  (outputs: {same})")
            for side in ("before", "after"):
                print(line(side, runs[side]))
                for key in ("wall", "gc", "exit"):
                    result[f"{name}_{key}_s_{side}"] = f"{min(r[key] for r in runs[side]):.3f}"
                result[f"{name}_maxrss_mib_{side}"] = f"{max(r['maxrss_mib'] for r in runs[side]):.0f}"
            if a.importtime:
                (tmp / f"{name}-imports").mkdir()
                for mod, s in slowest_imports(args, cwd=tmp / f"{name}-imports"):
                    print(f"    import {mod:<28} {s:.3f} s (cumulative, python -X importtime, this checkout)")
    print("RESULT " + " ".join(f"{k}={v}" for k, v in result.items())
          + f" outputs_equal={int(equal)} read_only_heavy_imports={heavy_read_only}")


if __name__ == "__main__":
    main()
