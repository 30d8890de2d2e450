"""Precision plans: lookups, shorthands, string/JSON forms, stable fingerprints, one-line errors."""

import json

import pytest

from advisor.errors import UserError
from advisor.quant.plan import PrecisionPlan, hot_experts


def test_uniform_and_per_layer_lookups():
    p = PrecisionPlan.uniform("int8")
    assert p.format_for(0, 0) == p.format_for(7, 63) == "int8"
    q = PrecisionPlan.per_layer({0: "int8", 1: "int4:g64"}, default="bf16")
    assert (q.format_for(0, 3), q.format_for(1, 3), q.format_for(2, 3)) == ("int8", "int4:g64", "bf16")
    assert q.formats_used() == {"int8", "int4:g64", "bf16"}


def test_hot_cold_picks_the_most_routed_experts_of_each_layer():
    freqs = {1: [5, 0, 9, 1, 9, 2, 0, 3]}  # hottest: 2 and 4 (tie -> lower id first), then 0
    p = PrecisionPlan.hot_cold("int8", "int4", 0.25, freqs, base=PrecisionPlan.per_layer({0: "bf16"}, "int4"))
    assert [e for e in range(8) if p.format_for(1, e) == "int8"] == [2, 4]
    assert p.format_for(0, 2) == "bf16" and p.format_for(2, 2) == "int4"
    three = PrecisionPlan.hot_cold("int8", "int4", 3 / 8, freqs)
    assert [e for e in range(8) if three.format_for(1, e) == "int8"] == [0, 2, 4]
    assert "hot/cold" in p.describe() and "2 experts int8" in p.describe()
    with pytest.raises(UserError):
        PrecisionPlan.hot_cold("int8", "int4", 1.5, freqs)


def test_fingerprint_is_stable_across_spelling_and_order():
    a = PrecisionPlan(default="int4", layers={1: "int8", 0: "int8"}, experts={2: {5: "bf16", 1: "bf16"}})
    b = PrecisionPlan(
        default="int4:g128:asym",
        layers={0: "INT8", 1: "int8", 3: "int4"},
        experts={2: {1: "bfloat16", 5: "bf16", 6: "int4"}},
    )
    assert a == b and a.fingerprint == b.fingerprint and len(a.fingerprint) == 12
    # pinned: cached accuracies are keyed by it, so a change of canonical form must be deliberate
    assert a.fingerprint == "1e585cc4601c"
    assert PrecisionPlan.uniform("int8").fingerprint != PrecisionPlan.uniform("int4").fingerprint
    assert PrecisionPlan.uniform("int4").fingerprint != PrecisionPlan.uniform("int4:g64").fingerprint
    # notes describe origin, they do not change identity
    assert PrecisionPlan(default="int4", note="x").fingerprint == PrecisionPlan(default="int4").fingerprint


def test_fingerprint_is_stable_across_processes():
    import subprocess
    import sys

    code = (
        "from advisor.quant.plan import PrecisionPlan as P; "
        "print(P.parse('default=int4;layers=0-1:int8;experts=2.3:int8').fingerprint)"
    )
    outs = {
        subprocess.run(
            [sys.executable, "-c", code], capture_output=True, text=True, timeout=60
        ).stdout.strip()
        for _ in range(2)
    }
    here = PrecisionPlan.parse("int4;layers=1:int8,0:int8;experts=2.3:int8").fingerprint
    assert outs == {here}


def test_string_spec_round_trip_and_json_round_trip(tmp_path):
    p = PrecisionPlan.parse("default=int4:g64;layers=0-1:int8,3:bf16;experts=2.0-3:int8,2.7:fp8")
    assert p.format_for(1, 0) == "int8" and p.format_for(2, 3) == "int8" and p.format_for(2, 7) == "fp8"
    assert p.format_for(2, 4) == "int4:g64" and p.format_for(3, 0) == "bf16"
    assert PrecisionPlan.parse(p.spec) == p
    doc = json.loads(p.to_json())
    assert doc["fingerprint"] == p.fingerprint and doc["default"] == "int4:g64"
    path = tmp_path / "plan.json"
    path.write_text(p.to_json())
    assert PrecisionPlan.parse(str(path)) == p == PrecisionPlan.from_json(p.to_json())
    assert PrecisionPlan.parse(p.to_json()) == p  # inline JSON
    assert PrecisionPlan.parse("int8") == PrecisionPlan.uniform("int8")
    assert PrecisionPlan.parse("layers=0-1:int8").default == "bf16"  # unlisted layers stay full precision


@pytest.mark.parametrize(
    "spec",
    [
        "",
        "int5",
        "layers=0-1",
        "layers=a-b:int8",
        "layers=3-1:int8",
        "experts=2:int8",
        "colours=0:int8",
        "layers=0:int4:g7",
        "missing.json",
        "{not json",
        '{"layers": {"0": "int8"}}',
        '{"default": "int8", "x": 1}',
        '{"default": "int8", "layers": {"zero": "int8"}}',
    ],
)
def test_malformed_specs_raise_one_line_user_errors(spec):
    with pytest.raises(UserError) as err:
        PrecisionPlan.parse(spec)
    msg = str(err.value)
    assert "\n" not in msg and "precision plan" in msg


def test_malformed_json_file(tmp_path):
    bad = tmp_path / "bad.json"
    bad.write_text('{"default": "int8", "layers": [1, 2]}')
    with pytest.raises(UserError, match="bad precision plan"):
        PrecisionPlan.parse(str(bad))


def test_describe_is_readable():
    assert PrecisionPlan.uniform("int8").describe() == "int8 for every expert"
    text = PrecisionPlan.parse("int4;layers=0-1:int8,5:int8").describe()
    assert text == "int4 by default; layers 0-1+5: int8"


def test_grid_round_trip_one_spelling_and_short_description():
    grid = [["int4"] * 6 + ["bf16"] * 2, ["int4"] * 8, ["int8"] * 7 + ["bf16"], ["int8"] * 8]
    plan = PrecisionPlan.from_grid(grid)
    assert plan.grid([8, 8, 8, 8]) == grid
    assert plan.fingerprint == PrecisionPlan.parse(plan.spec).fingerprint
    assert plan.describe([8, 8, 8, 8]) == "L0-1:int4 L2-3:int8 (+hot bf16 x1/layer, bf16 x2/layer)"
    assert PrecisionPlan.from_grid([["int8"] * 4] * 2).describe([4, 4]) == "int8"
    assert hot_experts([3, 9, 9, 1], 0.5) == [1, 2] and hot_experts([3, 9], 0.0) == []


def test_a_plan_spec_longer_than_a_file_name_is_read_as_a_spec():
    """A hot/cold plan of a real model spells out many experts: its spec (what `advisor studies` shows) runs past
    255 characters, and asking the filesystem whether it names a file raised OSError (name too long)."""
    from typer.testing import CliRunner

    from advisor.cli import app

    grid = [["int4" if e % 3 else "int8" for e in range(64)] for _ in range(4)]  # the bundled model: 4 x 64
    plan = PrecisionPlan.from_grid(grid)
    assert len(plan.spec) > 255 and PrecisionPlan.parse(plan.spec) == plan
    result = CliRunner().invoke(app, ["eval", "bundled", "--precision", plan.spec, "--limit", "1",
                                      "--fidelity-prompts", "0", "--no-progress", "--threads", "1"])
    assert result.exit_code == 0, result.output
    assert f"precision: {plan.describe()}" in " ".join(result.output.split())


def test_eval_prints_a_plan_files_note(tmp_path):
    """A plan file's note (a hot/cold plan's 'hot/cold: top 10% most routed ...') ends `describe` in brackets,
    which eval's 'precision:' line printed as rich markup: the note vanished ('int8 for every expert')."""
    from typer.testing import CliRunner

    from advisor.cli import app

    plan = tmp_path / "plan.json"
    plan.write_text(json.dumps({"version": 1, "default": "int8", "note": "hot/cold: my plan"}))
    result = CliRunner().invoke(app, ["eval", "bundled", "--precision", str(plan), "--limit", "1",
                                      "--fidelity-prompts", "0", "--no-progress", "--threads", "1"])
    assert result.exit_code == 0, result.output
    assert "precision: int8 for every expert [hot/cold: my plan]" in " ".join(result.output.split()), result.output
