"""What a new user met in pass 14 (second half): each test failed before its fix."""

from __future__ import annotations

import os

import pytest

from tests.cli_helpers import advisor, flat, one_error_line
from tests.recommend_helpers import make_db, standard_front


@pytest.mark.parametrize("given", [["--mode", "Replay"], ["--space", "Quick"], ["--device", "CPU"]],
                         ids=lambda a: a[0])
def test_a_fixed_name_in_another_case_is_read_as_the_name(tmp_path, given):
    """`--sampler TPE`, `--task GSM8K` and `--to HF` were read in any case, but `--mode Replay`, `--space Quick` and
    `--device CPU` were refused. Each is now read as its name: the run goes on to the next check (a bad --study)."""
    r = advisor("tune", *given, "--study", "bad name!", "--storage", "s.db", cwd=tmp_path, timeout=120)
    one_error_line(r, "--study 'bad name!': use 1-100 letters")


def test_prefer_and_a_simulated_policy_are_read_in_any_case(tmp_path):
    """`recommend --prefer Latency` was "unknown preference 'Latency'" and `simulate --policy LRU` "unknown cache
    policy 'LRU'" (also --prefetch, --token-scope, --miss); both now answer as for the lower-case name."""
    db = make_db(tmp_path / "f.db", standard_front())
    shown = {}
    for prefer in ("latency", "Latency"):
        r = advisor("recommend", "--storage", db, "--budget", "10GiB", "--prefer", prefer, cwd=tmp_path, timeout=120)
        assert r.returncode == 0, r.stderr
        shown[prefer] = r.stdout
    assert shown["Latency"] == shown["latency"]
    r = advisor("simulate", "missing.npz", "--policy", "LRU,Tide", "--prefetch", "None", "--token-scope", "Block",
                "--miss", "CPU", cwd=tmp_path, timeout=120)
    one_error_line(r, "missing.npz")  # past every name: the trace file is what is wrong


def test_the_line_of_a_deleted_study_wraps_at_the_terminal_width(tmp_path):
    """`studies --delete NAME`'s closing line ("deleted study ... Studies left: ...", ~200 characters) was one line
    at any width, where every other long line wraps at the terminal's width (`terminal.print_wrapped`)."""
    name = "a_study_with_a_rather_long_name"
    make_db(tmp_path / "f.db", standard_front(name) + standard_front("b"))
    r = advisor("studies", "--delete", name, "--yes", "--storage", "f.db", cwd=tmp_path, timeout=120,
                env={**os.environ, "COLUMNS": "60"})
    assert r.returncode == 0, r.stderr
    lines = r.stdout.splitlines()
    assert len(lines) > 1 and max(map(len, lines)) <= 60, r.stdout
    assert flat(r.stdout).startswith(f"deleted study '{name}' from f.db; the eval cache") and flat(r.stdout).endswith("Studies left: b")
