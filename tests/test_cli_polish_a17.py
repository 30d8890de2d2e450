"""Read-side wording found by a new-user pass (recommend, report, pareto, studies): one text per idea."""

from __future__ import annotations

import re
from pathlib import Path

from cli_helpers import advisor_in_process, flat

EXAMPLE = Path(__file__).parent.parent / "studies" / "example" / "advisor.db"


def test_recommend_reasons_give_a_points_size_as_its_stored_values_do(tmp_path):
    """`recommend --budget 1.5MiB` said "uses 1.4 MiB" above a stored peak_gpu_bytes of 1.369 MiB, and "more
    memory: ... with 1.2 MiB" for a point whose stored value reads 1.227 MiB: a configuration's bytes now read as its
    stored values (3 decimals), a budget as `tune` heads it (2 decimals)."""
    out = flat(advisor_in_process("recommend", "--storage", str(EXAMPLE), "--budget", "1.5MiB", cwd=tmp_path).stdout)
    stored = re.search(r"peak_gpu_bytes ([\d.]+ MiB)", out)
    assert stored and stored.group(1) == "1.369 MiB", out
    assert f"- fits 1.50 MiB (--budget 1.5MiB): uses {stored.group(1)} (counted)" in out, out
    r = advisor_in_process("recommend", "--storage", str(EXAMPLE), "--budget", "1MiB", cwd=tmp_path)
    assert r.returncode == 1, r.stdout + r.stderr
    assert "meets the accuracy floor with 1.227 MiB (counted; 232.500 KiB over the budget)" in flat(r.stdout), r.stdout
    assert "exceed the memory budget of 1.00 MiB (--budget 1MiB)" in flat(r.stdout), r.stdout
