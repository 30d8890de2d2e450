"""`advisor inspect --budget` on an offloaded model answers what `advisor tune` accepts at that budget."""

from __future__ import annotations

import json

import pytest
from typer.testing import CliRunner

from advisor.cli import app

# the bundled model's default space ("quick") but for the miss policies, with no accuracy objective (faster): the
# same evaluation settings, so the same activation probe
SPACE = """
name = "inspect-check"
[precision]
formats = ["bf16", "int8"]
groups = 1
[cache]
slots_per_layer = { low = 1, high = "all" }
policies = ["lru"]
prefetch = ["none"]
miss = ["copy", "cpu"]
[objectives]
h2d_bytes_per_token = "minimize"
fidelity_top1 = "maximize"
peak_gpu_bytes = "minimize"
[evaluation]
task = "toy"
limit = 32
trace_prompts = 2
fidelity_prompts = 2
"""


@pytest.fixture(autouse=True)
def _cache_dir(tmp_path, monkeypatch):
    monkeypatch.setenv("ADVISOR_CACHE_DIR", str(tmp_path / "cache"))


def _fit_rows(output: str) -> dict[str, list[str]]:
    """The fit table's cells per format (the last table of the output)."""
    rows = {}
    for line in output.splitlines():
        cells = [c.strip() for c in line.strip().strip("│").split("│")]
        if len(cells) > 3 and cells[0] in ("bf16", "fp8", "int8", "int4", "nf4", "int3", "int2"):
            rows[cells[0]] = cells
    return rows


def _slots(cell: str) -> int:
    return 0 if cell == "none" else int(cell.split()[0])


def test_inspect_slots_of_an_offloaded_model_are_what_a_study_at_that_budget_runs(tmp_path):
    """Inspect said bf16 fits 16 slots/layer of the offloaded bundled model at 2 MiB, counting neither the staging
    buffers of copied misses nor the activation allowance; a study there could not fit one bf16 slot with copied
    misses. Now each cell is the largest cache a study at that budget runs, per miss policy (at 2.4 MiB since the
    allowance is the bytes the probe step's tensors hold, 478 KiB: at 2 MiB int8 with copied misses fits none)."""
    res = CliRunner().invoke(app, ["inspect", "bundled", "--budget", "2.4MiB"], terminal_width=80)
    assert res.exit_code == 0, res.output
    out = " ".join(res.output.split())
    assert "offloaded" in out and "…" not in res.output, res.output
    assert "activation allowance" in out and "measured:live-tensors(probe decoding step" in out, out  # as tune says
    rows = _fit_rows(res.output)
    assert len(rows) == 7 and all(len(r) == 6 for r in rows.values()), res.output  # copy and CPU columns
    copy = {f: _slots(r[3]) for f, r in rows.items()}
    cpu = {f: _slots(r[4]) for f, r in rows.items()}
    assert all(copy[f] <= cpu[f] for f in rows) and copy["bf16"] < cpu["bf16"], rows  # CPU misses stage nothing
    # bf16's "none" cell: the caption says what it means (it said nothing)
    assert out.endswith('"none": not even one slot per MoE layer fits in what is left (for copied misses, with the '
                        "layer's staging buffers)"), out

    space = tmp_path / "space.toml"
    space.write_text(SPACE)
    db = f"sqlite:///{tmp_path / 's.db'}"
    tune = CliRunner().invoke(app, ["tune", "bundled", "--budget", "2.4MiB", "--space", str(space), "--trials", "3",
                                    "--storage", db, "--study", "s"])
    assert tune.exit_code == 0, tune.output
    import optuna

    ran = {}
    for t in optuna.load_study(study_name="s", storage=db).get_trials(deepcopy=False):
        if t.state == optuna.trial.TrialState.COMPLETE:  # the warm start: each plan's most cache, per miss policy
            config = t.user_attrs["config"]
            if isinstance(config, str):
                config = json.loads(config)
            ran[(config["layer_formats"][0], config["miss_policy"])] = set(config["slots_per_layer"])
    # bf16 with copied misses does not fit one slot, so the study has no such trial; the other three ran
    assert set(ran) == {("bf16", "cpu"), ("int8", "copy"), ("int8", "cpu")}, ran
    assert copy["bf16"] == 0
    for (fmt, miss), slots in ran.items():
        assert slots == {(copy if miss == "copy" else cpu)[fmt]}, (fmt, miss, slots, rows)


def test_inspect_takes_a_gpu_by_name_as_tune_does(tmp_path):
    """`advisor inspect` took no --gpu, where tune and recommend take `--gpu NAME` (a catalogue GPU or a measured
    profile) for the card's memory: "does it fit my RTX 4090" needed its memory looked up and typed as --budget. It
    takes --gpu now, as tune does: the card's memory is the budget, labelled as coming from it (and where its figure
    came from); with --budget, at most that; a CPU profile (the host's RAM) is refused in one line,
    before torch imports."""
    from tests.test_cli_new_user14 import _refused_light

    def run(*args: str) -> str:
        res = CliRunner().invoke(app, ["inspect", "bundled", *args], terminal_width=200)
        assert res.exit_code == 0, res.output
        return res.output

    card = run("--gpu", "4090")
    assert '"none"' not in card, card  # every cell holds slots: no word on "none"
    assert "budget 24.00 GiB (--gpu RTX 4090 24GB, catalogue (nominal)):" in " ".join(card.split()), card
    assert _fit_rows(card) == _fit_rows(run("--budget", "24GiB")) and len(_fit_rows(card)) == 7, card
    assert "budget 20.00 GiB (--budget 20GiB):" in " ".join(run("--gpu", "4090", "--budget", "20GiB").split())
    assert _refused_light(tmp_path, "inspect", "bundled", "--gpu", "RTX 4090", "--budget", "30GiB").startswith(
        "error: 30.00 GiB (--budget 30GiB) is more than the RTX 4090 24GB's memory (24.00 GiB, catalogue (nominal))")
    (tmp_path / "p").mkdir()
    (tmp_path / "p" / "host.json").write_text(json.dumps(
        {"name": "cpu x86_64 vm", "memory_bytes": 16 << 30, "h2d_gbps_pinned": 2.8, "h2d_gbps_pageable": 2.8,
         "copy_latency_us": 3.0, "source": "measured-cpu:2026-12-06"}))
    assert _refused_light(tmp_path, "inspect", "bundled", "--gpu", "cpu x86_64 vm", "--profiles-dir", "p") == (
        "error: --gpu cpu x86_64 vm is a CPU profile (`advisor profile --cpu`: a host memcpy, no GPU): its 16.00 GiB "
        "is this host's RAM, no device memory to say what fits in; give --budget SIZE, or a GPU's name")
    (tmp_path / "p" / "host.json").write_text(json.dumps(  # a GPU's profile that gives no memory: not "a CPU profile"
        {"name": "acme gpu", "memory_bytes": 0, "h2d_gbps_pinned": 20.0, "h2d_gbps_pageable": 9.0,
         "copy_latency_us": 10.0, "source": "measured:2026-12-06"}))
    assert _refused_light(tmp_path, "inspect", "bundled", "--gpu", "acme gpu", "--profiles-dir", "p") == (
        "error: --gpu acme gpu's profile (measured:2026-12-06) gives no memory to say what fits in; give --budget "
        "SIZE, or a GPU's name")
