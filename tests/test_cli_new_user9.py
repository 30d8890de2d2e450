"""What a new user met trying `--budgets` studies and exports at other budgets (pass 9): each test failed before
its fix.

- `advisor tune --budgets 10%,25%,50%` on the bundled model's default space queued nothing of the space at 10%
  (int2 at 1 slot per layer, offloaded, needs 1.83 MiB of its 1.53), without a word: only the baselines ran
  there, and `advisor report --memory` answered "no trial of this precision fits" in every row of that budget.
"""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path


def advisor(*args: str, cwd: Path, timeout: float = 300) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-m", "advisor", *args], cwd=cwd, capture_output=True, text=True,
                          timeout=timeout)


def test_tune_names_a_budgets_value_at_which_no_configuration_of_the_space_fits(tmp_path):
    r = advisor("tune", "tiny:qwen3_moe", "--space", "quick", "--budgets", "1%,50%", "--trials", "1",
                "--storage", f"sqlite:///{tmp_path}/s.db", cwd=tmp_path)
    assert r.returncode == 0, r.stdout + r.stderr
    text = " ".join(r.stdout.split())
    assert ("note: at --budgets 1% (91.23 KiB) no configuration of the space fits (the least, int2 experts with the "
            "smallest cache, needs 92.00 KiB): only the baseline strategies run there") in text, text
    assert "at --budgets 50%" not in text, text
