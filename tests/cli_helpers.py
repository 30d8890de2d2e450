"""Running the CLI as a user does (`python -m advisor` in a directory of their own) and reading its one-line
refusals, for the tests that go through it."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path


def advisor(*args: str, cwd: Path, timeout: float = 600,
            env: dict[str, str] | None = None) -> subprocess.CompletedProcess:
    """`advisor ARGS` run in `cwd`, its output captured (whatever its exit code)."""
    return subprocess.run([sys.executable, "-m", "advisor", *args], cwd=cwd, capture_output=True, text=True,
                          timeout=timeout, env=env)


def one_error_line(r: subprocess.CompletedProcess, *needles: str) -> str:
    """The single `error:` line (the last line on stderr), holding each of `needles`, after checking exit code 2
    and no traceback or rich error box."""
    everything = r.stdout + r.stderr
    assert r.returncode == 2, everything
    assert "Traceback" not in everything and "╭" not in everything, everything
    errors = [ln for ln in r.stderr.splitlines() if ln.startswith("error:")]
    assert len(errors) == 1 and r.stderr.rstrip().splitlines()[-1] == errors[0], r.stderr
    for n in needles:
        assert n in errors[0], errors[0]
    return errors[0]
