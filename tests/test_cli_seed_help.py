"""--seed of eval, trace and quant-report: torch's seed range (-2**63 to 2**64 - 1) is checked by a callback, so
--help no longer shows it as `[-9223372036854775808<=x<=18446744073709551615]`; a seed outside it is still a
usage error (exit 2) naming the range, before any model loads."""

from __future__ import annotations

import pytest
from typer.testing import CliRunner

COMMANDS = (["eval", "bundled"], ["trace", "bundled", "-o", "t.npz"], ["quant-report", "bundled", "-f", "int8"])


@pytest.mark.parametrize("args", COMMANDS, ids=lambda a: a[0])
def test_seed_help_is_readable_and_its_range_still_checked(args, tmp_path, monkeypatch):
    from advisor.cli import app

    monkeypatch.chdir(tmp_path)
    runner = CliRunner(env={"COLUMNS": "200"})
    shown = runner.invoke(app, [args[0], "--help"])
    assert shown.exit_code == 0, shown.output
    (seed,) = [ln for ln in shown.output.splitlines() if "--seed" in ln]
    assert "<=x<=" not in seed and "9223372036854775808" not in shown.output, seed
    for bad in (str(2**64), str(-(2**63) - 1)):
        r = runner.invoke(app, [*args, f"--seed={bad}"])
        assert r.exit_code == 2, r.output
        assert (f"Invalid value for '--seed': {bad} is not a seed torch takes: give one from -9223372036854775808 "
                "to 18446744073709551615") in " ".join(r.output.replace("│", " ").split()), r.output
    assert list(tmp_path.iterdir()) == []
