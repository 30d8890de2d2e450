"""Wall time of the read-only CLI: `advisor recommend` over a database of 1,000 front points, and `advisor --help`.

Targets: recommend <= 0.5 s, --help <= 0.3 s. Each command runs as a fresh subprocess (what a user waits for),
median of N runs; CPU time (user+sys of the child) is printed too, because on a shared machine wall time
includes waiting for a core. `--importtime` lists the slowest imports of each command (python -X importtime).
Ends with `RESULT recommend_wall_s=.. help_wall_s=.. recommend_cpu_s=.. help_cpu_s=..` (medians, seconds).

    python benchmarks/cli_speed.py [--runs 7] [--points 1000] [--importtime]
"""

from __future__ import annotations

import argparse
import os
import random
import resource
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "tests"))

TARGETS = {"recommend": 0.5, "--help": 0.3}


def build_db(path: Path, n_points: int, n_studies: int = 10) -> str:
    """`n_points` front points over `n_studies` studies, with configurations shaped like the tuner's."""
    from recommend_helpers import make_db, model_meta, point

    rng = random.Random(0)
    meta = model_meta("llada_moe", n_layers=16, n_experts=64)
    formats = ["bf16", "int8", "int4", "default=int4;layers=0-3:int8", "default=int8;layers=12-15:int4"]
    pts = []
    for i in range(n_points):
        fmt = formats[i % len(formats)]
        slots = rng.randint(1, 64)
        acc = {"bf16": 0.9, "int8": 0.89, "int4": 0.8}.get(fmt, 0.86) - rng.random() * 0.01
        pts.append(point(f"study{i % n_studies}", i // n_studies, fmt, slots, acc=acc, h2d=rng.uniform(1e6, 5e7),
                         peak_gib=rng.uniform(2, 30), meta=meta, latency=rng.uniform(5, 50)))
    return make_db(path, pts)


def time_command(args: list[str], runs: int) -> tuple[float, float]:
    """(median wall seconds, median child CPU seconds) of `advisor ARGS` as a fresh process."""
    walls, cpus = [], []
    for _ in range(runs):
        before = resource.getrusage(resource.RUSAGE_CHILDREN)
        t0 = time.perf_counter()
        r = subprocess.run([sys.executable, "-c", "from advisor.cli import run; run()", *args],
                           capture_output=True, text=True)
        walls.append(time.perf_counter() - t0)
        after = resource.getrusage(resource.RUSAGE_CHILDREN)
        cpus.append((after.ru_utime - before.ru_utime) + (after.ru_stime - before.ru_stime))
        if r.returncode not in (0, 1):
            raise SystemExit(f"advisor {' '.join(args)} failed: {r.stderr.strip()}")
    return statistics.median(walls), statistics.median(cpus)


def slowest_imports(args: list[str], top: int = 8, cwd: Path | None = None) -> list[tuple[str, float]]:
    """Cumulative import time (s) of the top-level packages a command imports (run in `cwd`: what it writes
    goes there)."""
    code = f"import sys; sys.argv = ['advisor', *{args!r}]\nfrom advisor.cli import run\ntry:\n    run()\nexcept SystemExit:\n    pass"
    err = subprocess.run([sys.executable, "-X", "importtime", "-c", code], capture_output=True, text=True,
                         cwd=cwd).stderr
    cum: dict[str, float] = {}
    for line in err.splitlines():
        if not line.startswith("import time:") or "|" not in line:
            continue
        _, c, raw = line[len("import time:"):].split("|")
        c, name = c.strip(), raw[1:]  # importtime indents nested imports by two spaces after the bar's space
        if not c.isdigit() or name.startswith(" "):
            continue  # nested imports are already inside their top-level entry's cumulative time
        pkg = name.split(".")[0]  # `from advisor.cli import run` is listed as the top-level entry advisor.cli
        cum[pkg] = cum.get(pkg, 0) + int(c) / 1e6
    return sorted(cum.items(), key=lambda kv: -kv[1])[:top]


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--runs", type=int, default=7)
    ap.add_argument("--points", type=int, default=1000)
    ap.add_argument("--importtime", action="store_true")
    a = ap.parse_args()
    with tempfile.TemporaryDirectory() as d:
        url = build_db(Path(d) / "bench.db", a.points)
        size = os.path.getsize(Path(d) / "bench.db")
        print(f"database: {a.points} front points, {size / 2**20:.1f} MiB (SQLite); load average {os.getloadavg()[0]:.1f}")
        cmds = {"recommend": ["recommend", "--storage", url, "--budget", "12GiB", "--max-accuracy-drop", "0.02"],
                "--help": ["--help"]}
        measured = {}
        for name, args in cmds.items():
            wall, cpu = time_command(args, a.runs)
            measured[name] = (wall, cpu)
            verdict = "OK" if wall <= TARGETS[name] else "SLOW"
            print(f"advisor {name:<10} wall {wall:.3f} s (median of {a.runs}, measured:wall-clock)  "
                  f"cpu {cpu:.3f} s  target {TARGETS[name]} s  {verdict}")
            if a.importtime:
                for mod, s in slowest_imports(args):
                    print(f"    import {mod:<28} {s:.3f} s (cumulative, python -X importtime)")
    (rec_wall, rec_cpu), (help_wall, help_cpu) = measured["recommend"], measured["--help"]
    print(f"RESULT recommend_wall_s={rec_wall:.3f} help_wall_s={help_wall:.3f} recommend_cpu_s={rec_cpu:.3f} "
          f"help_cpu_s={help_cpu:.3f}")


if __name__ == "__main__":
    main()
