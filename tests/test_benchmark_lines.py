"""What the benchmark scripts print, run as the README runs them (`python -m benchmarks.<name>`)."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]


def _bench(*args: str, timeout: float = 120) -> list[str]:
    r = subprocess.run([sys.executable, "-m", *args], cwd=ROOT, capture_output=True, text=True, timeout=timeout)
    assert r.returncode == 0, r.stdout + r.stderr
    return r.stdout.strip().splitlines()


def test_trace_scale_loop_line_prints_only_what_it_measured():
    """The loop line printed a remembered '33 ns on this host when idle' beside the measured figure, in every
    run, on every host (the idle run it named measured 23 ns): only the measured number, with its source."""
    lines = _bench("benchmarks.trace_scale", "--tokens", "256")
    loop = [ln for ln in lines if ln.startswith("python loop ")]
    assert len(loop) == 1, lines
    assert "measured:wall-clock" in loop[0] and "33 ns" not in loop[0], loop[0]
    assert lines[-1].startswith("RESULT bytes_per_lookup_disk="), lines[-1]
