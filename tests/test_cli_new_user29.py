"""Found by a new user (pass 29) with an RTX 4090, an RTX 3060 12GB, an L4 and an A10G, reading README's GPU and
budget options and what every printed number means (2026-12-07)."""

from __future__ import annotations

from cli_helpers import advisor_entry, one_error_line


def test_inspect_budget_given_as_a_share_says_it_takes_a_size(tmp_path):
    """`inspect bundled --budget 80%` said "--budget '80%' is not a size; use e.g. 12GiB", though `tune` and
    `recommend` say that --budget takes a size, not a share, and what to give. inspect now says so too, before the
    model loads; 0% is still "must be positive", as 0B is."""
    r = advisor_entry("inspect", "bundled", "--budget", "80%", cwd=tmp_path)
    line = one_error_line(r, "--budget takes a size (e.g. 24GiB), not a share", "`advisor profile --list`")
    assert "is not a size" not in line, line
    one_error_line(advisor_entry("inspect", "bundled", "--budget", "0%", cwd=tmp_path), "'0%' must be positive")
