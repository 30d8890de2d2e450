"""Sizes and shares read one number syntax (`advisor.units.DECIMAL`) in every command that takes them, and a size
under one byte says so. `--memory 1e-3%` was taken as a share while `1e3KB` was no size; `--budget 0.5B` (0
bytes once rounded) said "must be positive"."""

from __future__ import annotations

from pathlib import Path

import pytest
from typer.testing import CliRunner

from advisor.errors import UserError

EXAMPLE = str(Path(__file__).parent.parent / "studies" / "example" / "advisor.db")
SIZE_OPTIONS = {"tune": ["tune", "--storage", "unused.db", "--budget"],
                "recommend": ["recommend", "--storage", EXAMPLE, "--budget"],
                "report": ["report", "bundled-example", "--storage", EXAMPLE, "--memory"],
                "inspect": ["inspect", "bundled", "--budget"]}


def refusal(args: list[str], cwd: Path) -> str:
    """The UserError `advisor ARGS` is refused with (the console entry point prints it as its one `error:` line)."""
    import contextlib

    from advisor.cli import app

    with contextlib.chdir(cwd):
        r = CliRunner().invoke(app, args)
    assert isinstance(r.exception, UserError), (r.exit_code, r.output, r.exception)
    return str(r.exception)


@pytest.mark.parametrize("command", SIZE_OPTIONS)
def test_a_size_under_one_byte_says_so(tmp_path, command):
    assert "'0.5B' is less than one byte; give at least 1B" in refusal([*SIZE_OPTIONS[command], "0.5B"], tmp_path)
    assert "'0B' must be positive" in refusal([*SIZE_OPTIONS[command], "0B"], tmp_path)


@pytest.mark.parametrize("command", SIZE_OPTIONS)
def test_an_exponent_is_no_size(tmp_path, command):
    assert "'1e3KB' is not a size" in refusal([*SIZE_OPTIONS[command], "1e3KB"], tmp_path)


@pytest.mark.parametrize("command", SIZE_OPTIONS)
def test_a_lowercase_b_is_bits_and_refused(tmp_path, command):
    """`--budget 12Gb` was read as 12 GB, though a lowercase b is usually a bit (Gb: gigabits): the budget meant may
    be 8 times smaller. It is refused in one line saying so and what to write; a study that stored such a spelling
    (`--budgets 12Gb`) still matches it as the bytes it was read as then."""
    from advisor.tune.budget import budget_key

    said = refusal([*SIZE_OPTIONS[command], "12Gb"], tmp_path)
    assert said.startswith(f"{SIZE_OPTIONS[command][-1]} '12Gb': Gb is gigabits; write 12GB or 12GiB"), said
    assert "'150kb': kb is kilobits; write 150KB or 150KiB" in refusal([*SIZE_OPTIONS[command], "150kb"], tmp_path)
    assert budget_key("12Gb") == budget_key("12GB") and budget_key("-") == "-"
    assert list(tmp_path.iterdir()) == []


@pytest.mark.parametrize("spelling", ["1e-3%", "inf%", "1_0%", "-5%"])
def test_a_share_reads_the_number_syntax_of_a_size(tmp_path, spelling):
    said = refusal([*SIZE_OPTIONS["report"], spelling], tmp_path)
    assert said == f"--memory '{spelling}' is not a share; give a decimal number of percent, e.g. 25% or 12.5%"
    said = refusal(["tune", "--storage", "unused.db", "--budgets", spelling], tmp_path)
    assert said.startswith(f"--budgets '{spelling}' is not a share"), said
    assert list(tmp_path.iterdir()) == []


SHARE_OPTIONS = {"tune": ["tune", "--storage", "unused.db", "--budgets"],
                 "report": ["report", "bundled-example", "--storage", EXAMPLE, "--memory"]}


@pytest.mark.parametrize("command", SHARE_OPTIONS)
@pytest.mark.parametrize("zero", ["0", "0%", "0.0%", "0B"])
def test_a_zero_budget_or_share_must_be_positive(tmp_path, command, zero):
    """`--budgets 0` read "budget '0' must be positive; or a share such as 25% ...", `--budgets 0%` and `--memory
    0%` "a share must be between 0% and 100%": a zero is refused in --budget's words (`is_zero_size`)."""
    option = SHARE_OPTIONS[command][-1]
    assert refusal([*SHARE_OPTIONS[command], zero], tmp_path) == f"{option} '{zero}' must be positive"
    assert sorted(p.name for p in tmp_path.iterdir()) == []


def test_kubernetes_binary_units_are_the_binary_units(tmp_path):
    """`--budget 12Gi` (Kubernetes' spelling, as in a pod's resource limits) was refused as "not a size; use e.g.
    12GiB": it is 12 GiB, as `12G` is. recommend answers `2Mi` as it answers `2MiB`, and a budget in `Ki` is read
    in KiB (the refusal of one above the card names the bytes)."""
    import json

    from advisor.cli import app

    def chosen(budget: str) -> dict:
        r = CliRunner().invoke(app, ["recommend", "--storage", EXAMPLE, "--budget", budget, "--json"])
        assert r.exit_code == 0, r.output
        payload = json.loads(r.output)
        return {"budget_bytes": payload["query"]["budget_bytes"], "chosen": payload["chosen"]}

    assert chosen("2Mi") == chosen("2MiB") == chosen("2 mi")
    said = refusal(["recommend", "--storage", EXAMPLE, "--gpu", "RTX 4090", "--budget", "26214400Ki"], tmp_path)
    assert said.startswith("25.00 GiB (--budget 26214400Ki) is more than the RTX 4090 24GB's memory"), said
