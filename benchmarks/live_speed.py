"""Where a `--mode live` trial's time goes on a CPU host, before and after a change, side by side in one run.

`python -m benchmarks.live_speed [--base 41a640a] [--rounds 2] [--bundled-trials 8] [--tiny-trials 12]`

Runs `advisor tune MODEL --mode live --device cpu` through the real CLI, each run a fresh process with a fresh
database and cache directory, once with the code of `--base` (exported with `git archive` into a temporary
directory) and once with this checkout, in turns (the order rotates each round), on two models:

* ``bundled`` - the bundled dLLM, its default `quick` space (offloaded under the space's 60% budget), TPE, seed 0;
* ``tiny`` - `tiny:llada_moe`, its default `dllm` space, `--sampler random` (its objective `time_per_token` is
  measured, so a value-driven sampler would draw other configurations in each run: random keeps them aligned).

Every run names one hardware profile (`--gpu`), measured once at the start by this checkout's `advisor profile
--cpu` for both models' expert shapes: `hybrid` misses are split by the CPU expert times, so with times each run
measured for itself its bytes could move between any two runs, before or after alike.

Each trial's time is read back from the study database (start to completion, what the progress line shows) and
split into the measured work - the wall clock of the trial's generation through the offload runtime, which is
what a live trial measures (`time_per_token` x the generated tokens its source names) - and everything else
(fidelity and accuracy of a new precision plan, packing its host store, the runtime's set-up and release,
storage). `gc` is the time the process spent in `gc.collect()` (wrapped the same way for both sides). Each
side's stored counters (bytes, hits, fidelity, accuracy, peak, the configuration) and source labels must be
equal trial by trial: only the times may differ. A replay run of this checkout (`--mode replay`, same
trials) gives each model's replay time per trial for comparison.

Ends with `RESULT bundled_trial_s_before=.. bundled_trial_s_after=.. bundled_speedup=.. bundled_cpu_speedup=..
bundled_measured_share_after=.. tiny_...(the same five) counters_equal=<0|1>`: mean seconds per trial over the
rounds, before / after of that and of the objective's process CPU time per trial (steadier than wall time on a
shared host, whose other jobs also slow the database's commits), and the share of an after trial that is measured
work.
"""

from __future__ import annotations

import argparse
import io
import json
import os
import re
import resource
import sqlite3
import statistics
import subprocess
import sys
import tarfile
import tempfile
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from datetime import datetime
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
DEFAULT_BASE = "41a640a"  # main before the live-trial fixes of 2026-12-05

# every run goes through the CLI entry point; gc.collect is timed the same way on both sides
PRELUDE = """
import atexit, gc, sys, time
_spent = [0.0, 0]
_collect = gc.collect
def _timed(*a, **k):
    t0 = time.perf_counter()
    try:
        return _collect(*a, **k)
    finally:
        _spent[0] += time.perf_counter() - t0
        _spent[1] += 1
gc.collect = _timed
_auto = [0.0, 0, 0.0]  # every collection (automatic ones too): seconds, count, start
def _cb(phase, info):
    if phase == "start":
        _auto[2] = time.perf_counter()
    else:
        _auto[0] += time.perf_counter() - _auto[2]
        _auto[1] += 1
gc.callbacks.append(_cb)
atexit.register(lambda: print(f"GC_SPENT {_spent[0]:.3f} {_spent[1]} {_auto[0]:.3f} {_auto[1]}", file=sys.stderr))
# each trial's objective (the trial less Optuna's own storage writes around it): wall and process CPU seconds
import advisor.tune.objective as _objective
_call, _obj = _objective.Objective.__call__, [0.0, 0.0, 0]
def _trial(self, trial):
    w, c = time.perf_counter(), time.process_time()
    try:
        return _call(self, trial)
    finally:
        _obj[0] += time.perf_counter() - w
        _obj[1] += time.process_time() - c
        _obj[2] += 1
_objective.Objective.__call__ = _trial
atexit.register(lambda: print(f"OBJECTIVE {_obj[0]:.3f} {_obj[1]:.3f} {_obj[2]}", file=sys.stderr))
sys.argv = ["advisor", *sys.argv[1:]]
from advisor.cli import run
run()
"""

CASES = {
    "bundled": ["bundled"],
    "tiny": ["tiny:llada_moe", "--sampler", "random"],
}
PROFILE = "live-speed-host"
TINY_SHAPE = "32x16"  # tiny:llada_moe's experts (hidden x expert FFN); the bundled model's are measured by --model
TIMES = ("time_per_token", "latency_ms_per_token")  # measured wall clock: may differ between runs


def export_tree(rev: str, dest: Path) -> Path:
    """The repository's files at `rev` (`git archive`), without touching the checkout."""
    data = subprocess.run(["git", "-C", str(ROOT), "archive", "--format=tar", rev], check=True,
                          capture_output=True).stdout
    with tarfile.open(fileobj=io.BytesIO(data)) as tar:
        tar.extractall(dest, filter="data")
    return dest


def run_tune(tree: Path, work: Path, args: list[str], prelude: str = PRELUDE) -> dict:
    """One `advisor tune` process on `tree`'s code in `work`: wall and CPU seconds, gc time, the stored trials
    (`prelude`: `PRELUDE` with more of its own before it, for a benchmark that measures more; its stderr too)."""
    work.mkdir(parents=True)
    db = work / "study.db"
    env = {**os.environ, "PYTHONPATH": str(tree), "ADVISOR_CACHE_DIR": str(work / "cache"), "COLUMNS": "200",
           "ADVISOR_PROFILES_DIR": str(work.parent / "profiles")}
    before = resource.getrusage(resource.RUSAGE_CHILDREN)
    t0 = time.perf_counter()
    r = subprocess.run([sys.executable, "-c", prelude, "tune", *args, "--storage", f"sqlite:///{db}", "--wide"],
                       capture_output=True, text=True, cwd=work, env=env)
    wall = time.perf_counter() - t0
    after = resource.getrusage(resource.RUSAGE_CHILDREN)
    if r.returncode != 0:
        raise SystemExit(f"advisor tune {' '.join(args)} failed ({r.returncode}):\n{r.stdout[-2000:]}\n{r.stderr[-2000:]}")
    gc = re.search(r"GC_SPENT ([\d.]+) (\d+) ([\d.]+) (\d+)", r.stderr)
    return {"wall": wall, "cpu": (after.ru_utime - before.ru_utime) + (after.ru_stime - before.ru_stime),
            "gc_s": float(gc.group(1)) if gc else float("nan"), "gc_n": int(gc.group(2)) if gc else -1,
            "gc_all_s": float(gc.group(3)) if gc else float("nan"), "trials": read_trials(db),
            "objective": [float(x) for x in re.search(r"OBJECTIVE ([\d.]+) ([\d.]+)", r.stderr).groups()],
            "stderr": r.stderr}


def measure_profile(tmp: Path) -> str:
    """One hardware profile (`PROFILE`, in `tmp`/profiles, where `run_tune` looks) for every run, measured by this
    checkout's `advisor profile --cpu` for both models' expert shapes: `hybrid` splits misses by the CPU expert
    times, and replay models time per token from them, so with times each run measured for itself its bytes and
    times could move between any two runs, before or after alike. Returns what it printed, on one line."""
    r = subprocess.run([sys.executable, "-m", "advisor", "profile", "--cpu", "--model", "bundled", "--expert-shape",
                        TINY_SHAPE, "--name", PROFILE, "--profiles-dir", str(tmp / "profiles")],
                       capture_output=True, text=True, env={**os.environ, "PYTHONPATH": str(ROOT)})
    if r.returncode != 0:
        raise SystemExit(f"advisor profile failed:\n{r.stdout}\n{r.stderr}")
    return " ".join(r.stdout.split())[:600]


def read_trials(db: Path) -> list[dict]:
    con = sqlite3.connect(db)
    try:
        rows = con.execute("SELECT trial_id, number, datetime_start, datetime_complete FROM trials "
                           "WHERE state = 'COMPLETE' ORDER BY number").fetchall()
        out = []
        for tid, number, start, end in rows:
            attrs = {k: json.loads(v) for k, v in con.execute(
                "SELECT key, value_json FROM trial_user_attributes WHERE trial_id = ?", (tid,))}
            seconds = (datetime.fromisoformat(end) - datetime.fromisoformat(start)).total_seconds()
            values, sources = attrs["values"], attrs["sources"]
            tokens = int(re.search(r"\((\d+) tokens", sources["h2d_bytes_per_token"]).group(1))
            out.append({"number": number, "seconds": seconds, "stage": attrs.get("stage"),
                        "measured": values["time_per_token"] * tokens / 1e3, "values": values,
                        "sources": sources, "config": attrs["config"]})
        return out
    finally:
        con.close()


def counters(t: dict) -> dict:
    """What must not move between the two sides: every stored value but the measured times, every label, the
    configuration."""
    return {"values": {k: v for k, v in t["values"].items() if k not in TIMES}, "sources": t["sources"],
            "config": t["config"], "stage": t["stage"]}


def first_difference(ref: list[dict], got: list[dict]) -> str:
    if len(ref) != len(got):
        return f"{len(got)} trials, not {len(ref)}"
    for i, (a, b) in enumerate(zip(ref, got, strict=True)):
        for part in a:
            if a[part] != b[part]:
                if isinstance(a[part], dict):
                    keys = sorted(k for k in a[part].keys() | b[part].keys() if a[part].get(k) != b[part].get(k))
                    return f"trial {i} {part} {', '.join(f'{k}: {a[part].get(k)!r} vs {b[part].get(k)!r}' for k in keys)}"
                return f"trial {i} {part}: {a[part]!r} vs {b[part]!r}"
    return "equal"


def summary(run: dict) -> dict:
    trials = run["trials"]
    n = len(trials)
    trial = sum(t["seconds"] for t in trials) / n
    measured = sum(t["measured"] for t in trials) / n
    return {"n": n, "trial": trial, "measured": measured, "other": trial - measured,
            "obj_wall": run["objective"][0] / n, "obj_cpu": run["objective"][1] / n,
            "median": statistics.median(t["seconds"] for t in trials), "gc": run["gc_s"] / n, "gc_n": run["gc_n"],
            "gc_all": run["gc_all_s"],
            "wall": run["wall"], "cpu": run["cpu"]}


def line(label: str, s: dict) -> str:
    return (f"  {label:<16} {s['n']:>2} trials; per trial: {s['trial']:.3f} s (median {s['median']:.3f}), measured work "
            f"{s['measured']:.3f} s, other {s['other']:.3f} s, gc.collect {s['gc']:.3f} s ({s['gc_n']} calls in the "
            f"run; every collection in the run, automatic ones too: {s['gc_all']:.2f} s), objective wall {s['obj_wall']:.3f} s cpu {s['obj_cpu']:.3f} s; "
            f"process wall {s['wall']:.1f} s cpu {s['cpu']:.1f} s")


def opening(what: str, base: str, rounds: int) -> str:
    """The first line of a before/after run: what runs, both sides (this checkout's commit, and whether its
    advisor/ has uncommitted changes), the host and its load."""
    head = subprocess.run(["git", "-C", str(ROOT), "rev-parse", "--short", "HEAD"], capture_output=True,
                          text=True).stdout.strip()
    dirty = bool(subprocess.run(["git", "-C", str(ROOT), "status", "--porcelain", "advisor"], capture_output=True,
                                text=True).stdout.strip())
    from advisor.hardware.profiles import host_cpu

    return (f"{what}, before = {base}, after = this checkout ({head}{', with uncommitted changes' if dirty else ''}); "
            f"{host_cpu()}; {os.cpu_count()} cores; load average {os.getloadavg()[0]:.1f} at the start; {rounds} "
            "rounds, order rotated")


def turns(rounds: int) -> list[tuple[int, str]]:
    """(round, side) in the order they run: before first in even rounds, after first in odd ones."""
    return [(r, side) for r in range(rounds) for side in (("before", "after") if r % 2 == 0 else ("after", "before"))]


def arguments(doc: str, base: str, trials: dict[str, int]) -> argparse.Namespace:
    """--base, --rounds and a --CASE-trials per case (`trials`: their defaults)."""
    ap = argparse.ArgumentParser(description=doc.splitlines()[0])
    ap.add_argument("--base", default=base, help="git revision measured as 'before'")
    ap.add_argument("--rounds", type=int, default=2)
    for case, n in trials.items():
        ap.add_argument(f"--{case}-trials", type=int, default=n)
    return ap.parse_args()


@contextmanager
def both_sides(base: str, prefix: str) -> Iterator[tuple[Path, dict[str, Path]]]:
    """A scratch directory with `base`'s tree exported into it and the one hardware profile (`measure_profile`,
    said in a line), and the trees: before = `base`, after = this checkout."""
    with tempfile.TemporaryDirectory(prefix=prefix) as d:
        tmp = Path(d)
        trees = {"before": export_tree(base, tmp / "before-tree"), "after": ROOT}
        print("profile: " + measure_profile(tmp))
        yield tmp, trees


def in_turns(trees: dict[str, Path], tmp: Path, case: str, args: list[str], rounds: int,
             show: Callable[[str, dict], str], prelude: str = PRELUDE) -> dict[str, list[dict]]:
    """`rounds` runs of `advisor tune ARGS` per side in turns (`turns`), each in its own folder `tmp`/CASE-SIDE-ROUND
    (beside `tmp`/profiles, where `run_tune` looks), each printed (`show(label, run)`) as it ends. Returns each
    side's runs."""
    runs: dict[str, list[dict]] = {"before": [], "after": []}
    for r, side in turns(rounds):
        run = run_tune(trees[side], tmp / f"{case}-{side}-{r}", args, prelude)
        runs[side].append(run)
        print(show(f"{side} (round {r + 1})", run), flush=True)
    return runs


def differences(runs: dict[str, list[dict]]) -> list[str]:
    """The runs whose stored values, labels and configurations are not, trial by trial, those of the first run
    before (`counters`; empty when every run of either side stored the same), with the first difference."""
    ref = [counters(t) for t in runs["before"][0]["trials"]]
    return [f"{side} round {i + 1} ({first_difference(ref, got)})" for side, rs in runs.items()
            for i, run in enumerate(rs) if (got := [counters(t) for t in run["trials"]]) != ref]


def main() -> None:
    a = arguments(__doc__, DEFAULT_BASE, {"bundled": 8, "tiny": 12})
    print(opening("advisor tune --mode live --device cpu", a.base, a.rounds))
    trials = {case: getattr(a, f"{case}_trials") for case in CASES}
    result: dict[str, float] = {}
    equal = True
    with both_sides(a.base, "live-speed-") as (tmp, trees):
        for case, args in CASES.items():
            args = [*args, "--trials", str(trials[case]), "--gpu", PROFILE]
            print(f"\n{case}: advisor tune {' '.join(args)} --mode live --device cpu")
            runs = in_turns(trees, tmp, case, [*args, "--mode", "live", "--device", "cpu"], a.rounds,
                            lambda label, run: line(label, summary(run)))
            replay = run_tune(ROOT, tmp / f"{case}-replay", [*args, "--mode", "replay", "--device", "cpu"])
            rs = summary(replay)
            print(f"  {'replay (after)':<16} {rs['n']:>2} trials  per trial: {rs['trial']:6.3f} s (median "
                  f"{rs['median']:.3f})  process wall {rs['wall']:5.1f} s cpu {rs['cpu']:5.1f} s")
            diffs = differences(runs)
            equal &= not diffs
            print(f"  counters, labels and configurations equal in every run: {'yes' if not diffs else 'NO: ' + ', '.join(diffs)}")
            keys = ("trial", "measured", "other", "gc", "obj_cpu")
            mean = {side: {k: statistics.mean(summary(x)[k] for x in rs_) for k in keys} for side, rs_ in runs.items()}
            b, f = mean["before"], mean["after"]
            for side, m in mean.items():
                print(f"  mean per trial {side:<6}: {m['trial']:.3f} s = measured work {m['measured']:.3f} s + other "
                      f"{m['other']:.3f} s (of it gc.collect {m['gc']:.3f} s); objective cpu {m['obj_cpu']:.3f} s")
            print(f"  before / after: {b['trial'] / f['trial']:.2f}x per trial (wall), {b['obj_cpu'] / f['obj_cpu']:.2f}x "
                  f"objective cpu; replay (after): {rs['trial']:.3f} s per trial")
            result[f"{case}_trial_s_before"] = b["trial"]
            result[f"{case}_trial_s_after"] = f["trial"]
            result[f"{case}_speedup"] = b["trial"] / f["trial"]
            result[f"{case}_cpu_speedup"] = b["obj_cpu"] / f["obj_cpu"]
            result[f"{case}_measured_share_after"] = f["measured"] / f["trial"]
    print(f"\nload average {os.getloadavg()[0]:.1f} at the end")
    keys = [f"{case}_{k}" for case in CASES for k in ("trial_s_before", "trial_s_after", "speedup", "cpu_speedup",
                                                       "measured_share_after")]
    print("RESULT " + " ".join(f"{k}={result[k]:.3f}" for k in keys) + f" counters_equal={int(equal)}")


if __name__ == "__main__":
    main()
