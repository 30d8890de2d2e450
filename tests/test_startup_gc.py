"""The CLI's process keeps the garbage collector off what its imports make (`advisor.startup`): no collection of
the older generations - scans of the whole heap, ~1.2 s of an `advisor tune` start-up and ~2 s more at its exit
before (benchmarks/startup_gc.py) - while it starts up; what torch and transformers made frozen once imported; the
collector's thresholds back for the command's own objects. A program that runs the CLI or `import_runtime`
in-process keeps its own collector settings."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
EXAMPLE_DB = ROOT / "studies" / "example" / "advisor.db"

# `python -m advisor ARGS` (what the `advisor` script runs), watched from before its first import
PROBE = """
import atexit, gc, json, sys
default = gc.get_threshold()
older = []  # (generation, objects frozen by then) of every collection of an older generation
def watch(phase, info):
    if phase == "start" and info["generation"] > 0:
        older.append((info["generation"], gc.get_freeze_count()))
gc.callbacks.append(watch)
def report():
    print("PROBE " + json.dumps({"older": older, "frozen": gc.get_freeze_count(), "default": default,
                                 "threshold": gc.get_threshold(), "torch": "torch" in sys.modules}),
          file=sys.__stderr__)
atexit.register(report)
import runpy
sys.argv = ["advisor", *sys.argv[1:]]
runpy.run_module("advisor", run_name="__main__", alter_sys=True)
"""


def _advisor(tmp_path: Path, *args: str) -> tuple[subprocess.CompletedProcess, dict]:
    r = subprocess.run([sys.executable, "-c", PROBE, *args], cwd=tmp_path, capture_output=True, text=True,
                       timeout=300)
    probe = [ln for ln in r.stderr.splitlines() if ln.startswith("PROBE ")]
    assert r.returncode == 0 and probe, r.stdout[-2000:] + r.stderr[-3000:]
    return r, json.loads(probe[0][len("PROBE "):])


def test_a_command_that_imports_torch_freezes_its_imports_without_a_full_scan_first(tmp_path):
    """`advisor inspect bundled` imports torch and transformers (`import_runtime`): not one collection of an
    older generation comes before they are frozen (before, 8 full collections came while they imported), and
    the thresholds are CPython's again for the command's own objects."""
    r, p = _advisor(tmp_path, "inspect", "bundled")
    assert "4 MoE layers, 256 routed experts" in " ".join(r.stdout.split()), r.stdout[-2000:]
    assert p["torch"]
    assert p["frozen"] > 100_000, p["frozen"]  # torch + transformers: ~400k objects measured
    assert [gen for gen, frozen in p["older"] if frozen == 0] == [], p["older"]
    assert p["threshold"] == p["default"], p


def test_a_read_only_command_scans_no_older_generation(tmp_path):
    """`advisor studies` (read-only: no torch) runs to its end with the older generations' collections held off
    (before: 14 collections of generation 1 and one full collection)."""
    r, p = _advisor(tmp_path, "studies", "--storage", str(EXAMPLE_DB))
    assert "bundled-example" in r.stdout, r.stdout[-2000:]
    assert not p["torch"]
    assert p["older"] == [], p["older"]
    assert p["threshold"][1:] != p["default"][1:], p  # held, for the whole short command


def test_in_process_use_keeps_the_programs_collector(tmp_path):
    """A program that runs the CLI in-process (`advisor.cli.run`, CliRunner) and then `import_runtime` keeps its
    thresholds and freezes nothing: only the entry point's own process is the CLI's."""
    code = (
        "import gc, sys\n"
        "before = gc.get_threshold()\n"
        "from advisor.cli import run\n"
        f"sys.argv = ['advisor', 'studies', '--storage', {str(EXAMPLE_DB)!r}]\n"
        "try:\n    run()\nexcept SystemExit as e:\n    assert e.code == 0, e.code\n"
        "from advisor.tune.interrupt import import_runtime\n"
        "import_runtime(models=False)\n"
        "print('STATE', gc.get_threshold() == before, gc.get_freeze_count())\n"
    )
    r = subprocess.run([sys.executable, "-c", code], cwd=tmp_path, capture_output=True, text=True, timeout=300)
    assert r.returncode == 0, r.stderr[-3000:]
    assert "STATE True 0" in r.stdout, r.stdout[-500:]
