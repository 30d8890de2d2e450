"""What the read-only commands print says what the study modelled, run as a user runs them on the committed
example study (`studies/example`, read-only) or on a small front saved to real SQLite: the miss policy and
TIDE's tau in front rows, every kind of a summed source, time per token named as such, a budget and a point
that round alike shown apart, and the miss policy in every export."""

from __future__ import annotations

import json
import shutil
import subprocess
import sys
from pathlib import Path

import pytest
from cli_helpers import advisor_entry, advisor_in_process, flat
from example_study import EXAMPLE_DB, example_trial, example_trials
from recommend_helpers import make_db, model_meta, point

# the example's int4 point with 52 slots/layer (flru, hybrid misses): `recommend --budget 1.97MiB --prefer latency`
INT4_52 = dict(precision_spec="int4", slots_per_layer=[52] * 4, policy="flru", miss_policy="hybrid")


def advisor(*args: str, cwd: Path) -> subprocess.CompletedProcess:
    """`advisor ARGS`, which must succeed, through the CLI in this process (`advisor_in_process`): what these tests
    read is the printed labels, not the process (each subprocess paid ~1-3 s of CPU starting Python and the
    CLI's imports, pareto's matplotlib). The refusals below stay fresh processes."""
    r = advisor_in_process(*args, cwd=cwd)
    assert r.returncode == 0, r.stdout + r.stderr
    return r


def test_front_rows_name_the_miss_policy_and_tides_tau(tmp_path):
    shutil.copy(EXAMPLE_DB, tmp_path / "ex.db")  # pareto writes plots beside the working directory
    out = advisor("pareto", "bundled-example", "--storage", "ex.db", cwd=tmp_path).stdout
    assert "trial 11: int2; 64 slots/layer, lru, misses hybrid" in out
    assert "trial 14: fp16; 1 slot/layer, lru, misses hybrid" in out  # singular: "1 slots/layer" read wrong
    # `*` marks the study's objectives (time_per_token, accuracy, peak_gpu_bytes), as `tune` prints the front
    assert "time ms/tok * 0.120 · H2D/token 8.50 KiB · accuracy * 0.935" in out and "peak GPU * 1.76 MiB" in out
    # four TIDE trials with tau 1/2/4/8 are four rows, not one "trial 161, 162, 163, 164: ... tide"
    for tau in (1, 2, 4, 8):
        n = example_trial(precision_spec="int2", slots_per_layer=[64] * 4, policy="tide", miss_policy="hybrid", tau=tau)
        assert f"trial {n}: int2; 64 slots/layer, tide (tau {tau}), misses hybrid" in out
    wide = advisor("pareto", "bundled-example", "--storage", "ex.db", "--wide", cwd=tmp_path).stdout
    # latency_ms_per_token is measured:wall-clock(..)+modelled:pcie(..): the header keeps both kinds
    assert "measured+modelled" in wide
    # the front's accuracies with their Wilson 95% intervals (200 examples each), in the sources legend: 0.935 and
    # 0.960 overlap, which the bare values did not say
    assert ("accuracy: measured:exact-match:toy(n=200,cpu); 95% intervals (Wilson): 0.935 is 0.892-0.962, 0.945 is "
            "0.904-0.969, 0.950 is 0.910-0.973, 0.960 is 0.923-0.980") in flat(out), out


def test_recommend_names_time_per_token_and_shows_budget_and_use_apart(tmp_path):
    out = advisor("recommend", "--storage", str(EXAMPLE_DB), "--budget", "1.97MiB", "--max-accuracy-drop", "0.01",
                  "--prefer", "latency", cwd=tmp_path).stdout
    assert f"trial #{example_trial(**INT4_52)} " in out and "misses hybrid" in out
    assert "fits 1.97 MiB (--budget 1.97MiB): uses 1.963 MiB" in out  # both were "2.0 MiB"
    assert "lowest time per token among 15 feasible point(s)" in out
    assert "next best bundled-example#119 has 1.94x the time per token" in out
    assert "Measured on" not in out and "Stored values (trial run on cpu" in out


def test_recommend_reasons_label_each_number_as_pareto_and_the_json_sources_do(tmp_path):
    """The reasons said "uses 1.963 MiB", "accuracy 0.960 >= floor 0.940 (= 0.950 of trial #14 ...)" and "1.76x the
    time per token, accuracy 0.945" (and, when nothing fits, "meets the accuracy floor with 1.2 MiB") without how
    any was obtained, where pareto's header row and the stored values label the same quantities. Each number now
    carries the kind pareto's header gives it (one definition, `short_source`), here checked against the full
    sources `recommend --json` gives."""
    from advisor.results.front import short_source

    args = ("recommend", "--storage", str(EXAMPLE_DB), "--budget", "1.97MiB", "--max-accuracy-drop", "0.01",
            "--prefer", "latency")
    out = flat(advisor(*args, cwd=tmp_path).stdout)
    src = json.loads(advisor(*args, "--json", cwd=tmp_path).stdout)["chosen"]["sources"]
    peak, acc, time = (short_source(src[m]) for m in ("peak_gpu_bytes", "accuracy", "time_per_token"))
    assert (peak, acc, time) == ("counted", "measured", "modelled"), src
    assert f"- fits 1.97 MiB (--budget 1.97MiB): uses 1.963 MiB ({peak})" in out, out
    assert (f"- accuracy 0.960 ({acc}, n=200, 95% CI 0.923-0.980) >= floor 0.940 (= 0.950 of trial #0, {acc}, "
            "minus 0.01; ") in out, out
    assert (f"next best bundled-example#119 has 1.94x the time per token ({time}), accuracy 0.945 ({acc}, n=200, "
            "95% CI 0.904-0.969)") in out, out
    r = subprocess.run([sys.executable, "-m", "advisor", "recommend", "--storage", str(EXAMPLE_DB), "--budget", "1MiB"],
                       cwd=tmp_path, capture_output=True, text=True, timeout=120)
    assert r.returncode == 1, r.stdout + r.stderr  # nothing fits: what would change, labelled as well
    assert "more memory: bundled-example#210 meets the accuracy floor with 1.227 MiB (counted; 232.500 KiB over the " \
           "budget)" in flat(r.stdout), r.stdout


def test_recommend_says_the_next_best_stores_the_same_value_not_1_00x(tmp_path):
    """Trials #8 and #189 of the example store the same values (64 slots: the policy never evicts), and the reason
    said "next best bundled-example#189 has 1.00x the transfer", which reads as a difference rounded away (in the
    regenerated example #8 and #197, lru and flru). Equal values are said to be the same; a real difference that
    rounds to 1.00x gets the digits that show it."""
    out = flat(advisor("recommend", "--storage", str(EXAMPLE_DB), "--prefer", "transfer", cwd=tmp_path).stdout)
    first, second = example_trials(precision_spec="int4", slots_per_layer=[64] * 4, miss_policy="hybrid")[:2]
    assert f"Recommended: study 'bundled-example', trial #{first} " in out, out
    assert f"- next best bundled-example#{second} has the same transfer (counted), accuracy 0.960 (measured, n=200, 95% CI 0.923-0.980)" in out, out
    url = make_db(tmp_path / "a.db", [point("s", 0, "int8", 4, acc=0.9, h2d=1000.0, peak_gib=1),
                                      point("s", 1, "int8", 2, acc=0.9, h2d=1001.0, peak_gib=1)])
    out = flat(advisor("recommend", "--storage", url, cwd=tmp_path).stdout)
    assert "next best s#1 has 1.0010x the transfer (counted)" in out and "1.00x" not in out, out


def test_every_export_says_the_miss_policy_the_study_modelled(tmp_path):
    db = str(EXAMPLE_DB)
    ex = {t: advisor("export", "bundled-example", str(example_trial(**INT4_52)), "--storage", db, "--to", t,
                     cwd=tmp_path)
          for t in ("llama.cpp", "hf", "json")}
    for t in ("llama.cpp", "hf"):
        assert "# the study's cache: GPU expert slots per MoE layer 52 in each of 4, policy flru, prefetch none, " \
               "miss policy hybrid" in ex[t].stdout, t
        assert "# measured: " not in ex[t].stdout  # the values are counted, measured and modelled
    # the recipe's runtime balances hybrid misses by the study's time model, as the study modelled
    assert "miss='hybrid'" in ex["hf"].stdout and "costs=costs" in ex["hf"].stdout
    assert "miss policy hybrid: the recipe's OffloadRuntime balances each layer's misses" in flat(ex["hf"].stderr)
    assert "as the study modelled" in flat(ex["hf"].stderr) and "speed differs" not in flat(ex["hf"].stderr)
    # one wording of hybrid in every target's note (llama.cpp's is the one the README quotes)
    hybrid = ("the study modelled miss policy hybrid (per layer and forward, each missed expert computed on the CPU or "
              "copied to the GPU, whichever balanced the two); ")
    assert hybrid + "llama.cpp copies the experts each forward uses of the CPU blocks to the GPU" in ex["llama.cpp"].stdout
    doc = json.loads(ex["json"].stdout)
    assert doc["cache"]["miss_policy"] == "hybrid"
    # tuned without --gpu: the link its copies were priced on (was {}), as the metric sources say
    assert doc["hardware"]["h2d_gbps_pinned"] == 25.0 and doc["hardware"]["copy_latency_us"] == 10.0
    assert "pcie(bw=25.0GB/s,lat=10us)" in doc["metrics"]["transfer_ms_per_token"]["source"]


def test_export_headers_do_not_call_counted_and_modelled_values_measured(tmp_path):
    """Every export's header said "measured on cpu" above the stored values of trial 129 (#137 since the example was
    regenerated), whose time per token is modelled for an H200 and whose bytes are counted (`recommend` had said
    "Measured on cpu" too, and heads them "Stored values (trial run on cpu; ...)" since). Where the trial ran is said
    as that; each value keeps its own label."""
    for target in ("llama.cpp", "hf"):
        out = advisor("export", "bundled-example", str(example_trial(**INT4_52)), "--storage", str(EXAMPLE_DB),
                      "--to", target, cwd=tmp_path).stdout
        head = out.splitlines()[:5]
        assert any(line.endswith("task toy; trial run on cpu") for line in head), head
        assert not any("measured on" in line for line in head), head
        (values,) = [line for line in head if "stored values [how each was obtained]:" in line]
        assert "time_per_token=0.553 ms [modelled:gpu=modelled:roofline(H200 141GB" in values, values


def test_a_tide_point_exports_its_tau(tmp_path):
    """Trial 154 (162 in the regenerated example) ran TIDE at tau 2: the header says so (as the front row does) and
    the advisor recipe runs it at tau 2, not the runtime's default 4, with the study's 8 steps per block (its
    last-step rule)."""
    n = example_trial(precision_spec="int2", slots_per_layer=[64] * 4, policy="tide", miss_policy="hybrid", tau=2)
    args = ("export", "bundled-example", str(n), "--storage", str(EXAMPLE_DB))
    gguf = advisor(*args, "--to", "llama.cpp", cwd=tmp_path)
    assert "# the study's cache: GPU expert slots per MoE layer 64 in each of 4, policy tide (tau 2), " in gguf.stdout
    hf = advisor(*args, "--to", "hf", "--opt", "method=advisor", cwd=tmp_path).stdout
    assert "policy='tide', prefetch='none', miss='hybrid', policy_kw={'tau': 2, 'steps_per_block': 8}, " in hf
    compile(hf, "recipe.py", "exec")  # still parses as it prints


def test_a_cpu_miss_study_exports_a_recipe_that_computes_misses_on_the_cpu(tmp_path):
    p = point("cpu-misses", 3, "int8", 4, acc=0.9, h2d=1e6, peak_gib=2.0, meta=model_meta("qwen3_moe"))
    p.config["miss_policy"] = "cpu"
    hybrid = point("cpu-misses", 4, "int8", 4, acc=0.9, h2d=1e6, peak_gib=2.0, meta=model_meta("qwen3_moe"))
    hybrid.config["miss_policy"] = "hybrid"
    url = make_db(tmp_path / "a.db", [p, hybrid])
    hf = advisor("export", "cpu-misses", "3", "--storage", url, "--to", "hf", "--opt", "method=advisor", cwd=tmp_path)
    assert "miss='cpu'" in hf.stdout
    assert "miss policy cpu: the recipe's OffloadRuntime computes the experts it keeps off the GPU on the CPU, " \
           "as the study modelled" in flat(hf.stderr)
    kt = advisor("export", "cpu-misses", "3", "--storage", url, "--to", "ktransformers", cwd=tmp_path)
    assert "miss policy cpu: kt-kernel computes the experts it keeps off the GPU on the CPU, as the study " \
           "modelled" in flat(kt.stderr)
    kt = advisor("export", "cpu-misses", "4", "--storage", url, "--to", "ktransformers", cwd=tmp_path)
    assert ("the study modelled miss policy hybrid (per layer and forward, each missed expert computed on the CPU or "
            "copied to the GPU, whichever balanced the two); kt-kernel") in flat(kt.stderr)


def test_profile_list_names_where_measured_profiles_live_and_the_per_copy_latency(tmp_path):
    out = advisor("profile", "--list", "--profiles-dir", str(tmp_path), cwd=tmp_path).stdout
    assert flat(out).startswith(f"0 measured profile(s) in {tmp_path} (`advisor profile` measures this machine's)")
    (rtx,) = [e for e in " ".join(out.split("\n    ")).splitlines() if e.startswith("RTX 4090 24GB:")]
    # the time model's copy = bytes / bandwidth + a per-copy latency: both are listed
    assert "pinned 25.0 GB/s, pageable 12.5 GB/s, 10.0 us/copy, PCIe 4.0 x16" in rtx
    measured = {"name": "NVIDIA GeForce RTX 4090", "memory_bytes": 24 << 30, "h2d_gbps_pinned": 21.7,
                "h2d_gbps_pageable": 9.8, "copy_latency_us": 14.0, "source": "measured:2026-12-01"}
    (tmp_path / "rtx-4090.json").write_text(json.dumps(measured))
    out = flat(advisor("profile", "--list", "--profiles-dir", str(tmp_path), cwd=tmp_path).stdout)
    assert out.startswith(f"1 measured profile(s) in {tmp_path}")
    mine = out[out.index("NVIDIA GeForce RTX 4090:"):]
    assert mine.index("14.0 us/copy") < mine.index("RTX 3060 12GB:")  # measured first, then the catalogue


def test_simulate_at_80_columns_cuts_no_number_and_prices_belady_with_the_same_miss_policy(tmp_path):
    import contextlib

    from typer.testing import CliRunner

    from advisor.cli import app
    from tests.offload_helpers import cli_trace

    runner = CliRunner()
    trace = tmp_path / "tr.npz"
    cli_trace(runner, trace)
    for miss in ("copy", "cpu"):
        js = tmp_path / f"{miss}.json"
        with contextlib.chdir(tmp_path):  # 'wrote PATH': a path longer than a line stays whole, for the terminal
            res = runner.invoke(app, ["simulate", "tr.npz", "--slots", "3", "--miss", miss, "--json", js.name],
                                terminal_width=80)  # to fold (pytest-xdist's tmp paths run past 80 columns)
        assert res.exit_code == 0, res.output
        assert "…" not in res.output and max(len(ln) for ln in res.output.splitlines()) <= 80, res.output
        rows = {r["policy"]: r for r in json.loads(js.read_text())["results"]}
        # the bound's misses compute where the policies' do: under --miss cpu it copies no missed expert
        bound, lru = rows["belady (bound)"], rows["lru"]
        assert bound["miss"] == lru["miss"] == miss
        assert (bound["cpu_tokens"] > 0) == (miss == "cpu") and bound["demand_bytes"] <= lru["demand_bytes"]


@pytest.fixture(scope="module")
def tiny_trace(tmp_path_factory) -> Path:
    """`advisor trace` of the tiny LLaDA-MoE (32x16 experts, fp32), recorded once for this module's simulate tests."""
    from typer.testing import CliRunner

    from tests.offload_helpers import cli_trace

    out = tmp_path_factory.mktemp("trace") / "tr.npz"
    cli_trace(CliRunner(), out)
    return out


def _host_profile(directory: Path, name: str, table: dict[str, list[list[float]]],
                  cpu_source: str = "measured:wall-clock(test)", latency_us: float = 10.0) -> dict:
    """A measured hardware profile `name` (10 GB/s link) with CPU expert times `table` (shape -> [[tokens, ms]]
    for every CPU kernel), written to `directory`; returns its dict."""
    cpu = {"table": {k: {f: v for f in ("bf16", "int8", "int4", "int3")} for k, v in table.items()}, "threads": 1,
           "source": cpu_source, "host": "Test CPU"}
    profile = {"name": name, "memory_bytes": 0, "h2d_gbps_pinned": 10.0, "h2d_gbps_pageable": 5.0,
               "copy_latency_us": latency_us, "source": "measured:test", "cpu_experts": cpu}
    directory.mkdir(exist_ok=True)
    (directory / f"{name}.json").write_text(json.dumps(profile))
    return profile


def test_simulate_models_the_cpu_compute_of_missed_experts_or_says_it_does_not(tmp_path, tiny_trace):
    """`simulate --miss cpu` showed the placement copies ("transfer") and the CPU tokens, but the CPU's compute of
    the missed experts was in no column, so it looked far faster than `--miss copy`. Where the --gpu profile has
    CPU expert times for the trace's shapes, a table gives each policy's time per token from the tuner's own time
    model (device + copies + CPU, overlapped) with its terms; elsewhere a note says the CPU is not modelled."""
    import contextlib

    from typer.testing import CliRunner

    from advisor.cli import app
    from advisor.hardware.profiles import HardwareProfile
    from advisor.offload.simulate import simulate
    from advisor.offload.timing import model_costs
    from advisor.offload.trace import RoutingTrace

    runner = CliRunner()
    shutil.copy(tiny_trace, tmp_path / "tr.npz")  # tiny LLaDA-MoE: 32x16 experts, fp32
    profile = _host_profile(tmp_path / "p", "host", {"32x16": [[1, 0.5], [256, 2.0]]})
    cpu = profile["cpu_experts"]
    _host_profile(tmp_path / "p", "other", {"128x16": [[1, 0.5], [256, 2.0]]})

    def run(miss: str, *gpu: str) -> tuple[str, dict]:
        with contextlib.chdir(tmp_path):
            res = runner.invoke(app, ["simulate", "tr.npz", "--slots", "3", "--policy", "lru,tide", "--miss", miss,
                                      *gpu, "--json", "s.json"], terminal_width=80)
        assert res.exit_code == 0, res.output
        assert "…" not in res.output and max(len(ln) for ln in res.output.splitlines()) <= 80, res.output
        # a `command` the note names is on one line: rich broke `advisor profile --model` | `tiny:llada_moe`
        assert all(ln.count("`") % 2 == 0 for ln in res.output.splitlines()), res.output
        return flat(res.output), json.loads((tmp_path / "s.json").read_text())

    for gpu, whose in (((), "the default link (no --gpu)"),
                       (("--gpu", "other", "--profiles-dir", "p"), "profile 'other'")):
        out, js = run("cpu", *gpu)
        assert (f"note: the CPU compute of the misses is not modelled: {whose} has no measured CPU expert times for "
                f"32x16:bf16") in out and "`advisor profile --model tiny:llada_moe`" in out, out
        assert "modelled time" not in out and js["time_not_modelled"] in out
        assert "time_per_token_ms" not in js["results"][0]
    # --miss copy computes no miss on the CPU: its --json said 'the CPU compute of the misses is not modelled ...
    # --miss cpu looks faster than it is' all the same; it says why no time per token is given
    out, js = run("copy")
    assert "note:" not in out and "CPU compute of the misses" not in js["time_not_modelled"], js
    assert js["time_not_modelled"].startswith("time per token is not modelled: the tuner's time model needs CPU "
                                              "expert times (it prices misses on the CPU too), and the default "
                                              "link (no --gpu) has no measured CPU expert times for 32x16:bf16; "
                                              "`advisor profile --model tiny:llada_moe`"), js
    trace = RoutingTrace.load(tmp_path / "tr.npz")
    costs = model_costs("fp32", trace.meta["hidden"], trace.meta["intermediate"], cpu, HardwareProfile.from_dict(profile))
    per_token = {}
    for miss in ("copy", "cpu"):
        out, js = run(miss, "--gpu", "host", "--profiles-dir", "p")
        assert f"modelled time, misses {miss}" in out and "not modelled" not in out, out
        assert f"times: {costs.source}" in out and "cpu=measured:wall-clock(test)" in costs.source
        lru = js["results"][0]
        assert js["time_model"] == lru["sources"]["times_ms"] == costs.source
        # the tuner's time model, the same numbers as a study's replay
        expected = simulate(trace, slots_per_layer="3", policy="lru", plan="fp32", miss=miss, costs=costs)
        assert lru["times_ms"] == expected.times
        per_token[miss] = lru["time_per_token_ms"]
        row = out.split("modelled time")[1].split("lru ")[1].split("tide")[0]  # lru's row of the time table
        assert row.split()[-1] == f"{per_token[miss]:.3f}", out  # its last column: the time
        assert (lru["times_ms"]["cpu_ms"] > 0) == (miss == "cpu")
    # 33 misses computed at >= 0.5 ms each on this CPU: slower than copying them, not 5x faster as 'transfer' said
    assert per_token["cpu"] > per_token["copy"] > 0


def test_simulate_splits_misses_hybrid_as_the_tuner_does_or_refuses_in_one_line(tmp_path, tiny_trace):
    """`simulate --miss hybrid` was refused although the tuner runs it. With a --gpu profile holding CPU expert
    times for the trace's shapes it now splits each look-up's misses by the tuner's time model (the costs a
    study's replay passes), so its counters are the replay's; without them one line says what is missing."""
    import contextlib

    from typer.testing import CliRunner

    from advisor.cli import app
    from advisor.hardware.profiles import HardwareProfile
    from advisor.offload.simulate import simulate
    from advisor.offload.timing import model_costs
    from advisor.offload.trace import RoutingTrace

    shutil.copy(tiny_trace, tmp_path / "tr.npz")
    # a CPU as fast as a copy at 3 tokens: a mix of copied and CPU misses
    profile = _host_profile(tmp_path / "p", "host", {"32x16": [[1, 0.001], [256, 2.0]]})
    _host_profile(tmp_path / "p", "other", {"128x16": [[1, 0.001], [256, 2.0]]})
    sim = ["simulate", "tr.npz", "--slots", "3", "--policy", "lru,tide", "--json", "s.json"]
    for gpu, whose in (((), "the default link (no --gpu)"),
                       (("--gpu", "other", "--profiles-dir", "p"), "profile 'other'")):
        res = advisor_entry(*sim, "--miss", "hybrid", *gpu, cwd=tmp_path)
        assert res.returncode == 2 and res.stdout == "" and not (tmp_path / "s.json").exists(), res
        assert res.stderr == (f"error: --miss hybrid splits each layer's misses between the CPU and the link by "
                              f"measured CPU expert times, but {whose} has no measured CPU expert times for "
                              "32x16:bf16; `advisor profile --model tiny:llada_moe` (with --cpu on a host without "
                              "CUDA) measures them; then give that profile as --gpu\n"), res.stderr
    runner = CliRunner()
    trace = RoutingTrace.load(tmp_path / "tr.npz")
    link = HardwareProfile.from_dict(profile)
    costs = model_costs("fp32", trace.meta["hidden"], trace.meta["intermediate"], profile["cpu_experts"], link)
    times = {}
    for miss in ("copy", "cpu", "hybrid"):
        with contextlib.chdir(tmp_path):
            res = runner.invoke(app, [*sim, "--miss", miss, "--gpu", "host", "--profiles-dir", "p"],
                                terminal_width=80)
        assert res.exit_code == 0, res.output
        js = json.loads((tmp_path / "s.json").read_text())
        times[miss] = [r["time_per_token_ms"] for r in js["results"][:2]]
        if miss != "hybrid":
            continue
        assert "misses hybrid" in flat(res.output) and "modelled time, misses hybrid" in flat(res.output)
        for got, policy in zip(js["results"], ("lru", "tide"), strict=False):
            # the replay a study runs: ModelBackend.replay's simulate with the plan's model_costs
            kw = {"tau": 4, "steps_per_block": trace.steps_per_block()} if policy == "tide" else None
            want = simulate(trace, slots_per_layer="3", policy=policy, plan="fp32", miss="hybrid", profile=link,
                            costs=costs, policy_kw=kw).to_dict(n_tokens=trace.generated_tokens)
            assert {k: got[k] for k in want} == want, policy
            assert got["copies"] > 0 and got["cpu_experts"] > 0, got  # a split, not all one way
        bound = js["results"][-1]
        assert bound["policy"] == "belady (bound)" and "times_ms" not in bound and bound["cpu_experts"] > 0
    # the split is the model's best per look-up: never slower than copying or computing every miss on the CPU
    assert all(h < min(c, p) for h, c, p in zip(times["hybrid"], times["copy"], times["cpu"], strict=True)), times


def test_simulates_times_line_breaks_between_the_sources_parts(tmp_path, tiny_trace):
    """The `times:` line after simulate's time table is one source whose parts are joined by ';' without spaces,
    so rich folded it at the edge inside a word ('...wall-clock(2026-12' above '-07, 1 thread'). It is now
    wrapped as other sources are (`print_wrapped`): between words, or after a ';' or ',' within a longer word."""
    import contextlib
    import re

    from typer.testing import CliRunner

    from advisor.cli import app

    shutil.copy(tiny_trace, tmp_path / "tr.npz")
    cpu = ("measured:wall-clock(2026-12-07, 1 thread, min of 3, kernels bf16:dense, int8:int8pack_mm(bf16>=32), "
           "int4:int4pack_mm(bf16>=64)+dequantize, int3:dequantize)")
    _host_profile(tmp_path / "p", "host", {"32x16": [[1, 0.5], [256, 2.0]]}, cpu_source=cpu, latency_us=10.25)
    with contextlib.chdir(tmp_path):
        res = CliRunner().invoke(app, ["simulate", "tr.npz", "--slots", "3", "--policy", "lru", "--gpu", "host",
                                       "--profiles-dir", "p", "--json", "s.json"], terminal_width=80)
    assert res.exit_code == 0, res.output
    source = json.loads((tmp_path / "s.json").read_text())["time_model"]
    assert source.startswith("modelled:gpu=") and f";cpu={cpu}" in source  # the label itself is unchanged
    lines = res.stdout.split("times: ", 1)[1].splitlines()
    assert max(map(len, lines)) <= 80 and len(lines) > 2, res.stdout
    # read back with a space at each break: only a break after a separator adds one the label has not
    said = re.sub(r"([;,]) ", r"\1", flat(" ".join(lines)))
    assert said == re.sub(r"([;,]) ", r"\1", source), res.stdout


def test_an_empty_gpu_or_budget_is_refused_not_ignored(tmp_path):
    """`--gpu "$GPU"` with GPU unset used to tune against the default budget and H200 device, silently."""
    tune = ["tune", "--trials", "1", "--storage", f"sqlite:///{tmp_path}/t.db"]
    for args, needle in (([*tune, "--gpu", ""], "empty GPU name"),
                         ([*tune, "--budget", ""], "budget '' is not a size"),
                         (["recommend", "--storage", str(EXAMPLE_DB), "--gpu", ""], "empty GPU name")):
        r = subprocess.run([sys.executable, "-m", "advisor", *args], cwd=tmp_path, capture_output=True, text=True,
                           timeout=120)
        assert r.returncode == 2 and "Traceback" not in r.stderr, r.stdout + r.stderr
        assert len(r.stderr.strip().splitlines()) == 1 and needle in r.stderr, r.stderr
        assert "advisor tune" not in r.stdout  # refused before the model loads
    assert not (tmp_path / "t.db").exists()


def test_an_autoregressive_tide_point_exports_its_forward_schedule(tmp_path):
    """An autoregressive study decodes one forward per block (steps per block 1): the recipe states TIDE's
    refresh every tau forwards, by the rule the runtime runs (it said "refreshes at steps none")."""
    p = point("ar-tide", 2, "int8", 4, acc=0.9, h2d=1e6, peak_gib=2.0)
    p.config.update(policy="tide", tau=3, decoding={"generate": {"max_new_tokens": 8, "seed": 0}, "steps_per_block": 1})
    url = make_db(tmp_path / "a.db", [p])
    hf = advisor("export", "ar-tide", "2", "--storage", url, "--to", "hf", "--opt", "method=advisor", cwd=tmp_path)
    assert hf.returncode == 0, hf.stderr
    assert "policy_kw={'tau': 3, 'steps_per_block': 1}" in hf.stdout
    # the runtime numbers forwards across generations: a second one does not restart at forward 0
    assert "every 3 forward(s), counted over the whole run: forwards 0, 3, 6, ... of the first generation, and each later generation carries on the count" in " ".join(hf.stdout.split())
    assert "none" not in hf.stdout.split("TIDE (")[1].splitlines()[0]


def test_a_diffusion_gemma_tide_point_at_one_step_per_canvas_exports_its_step_schedule(tmp_path):
    """DiffusionGemma decoding each canvas in one denoising step has one step per block, like autoregressive
    decoding, but an encoder pass beside each: the recipe said autoregressive decoding refreshes every tau
    forwards. It states the rule the runtime runs: every tau-th step, its canvases' steps counted over the run."""
    dg = {**model_meta("qwen3_moe", n_layers=2, n_experts=8, hidden=256, inter=128), "family": "diffusion_gemma",
          "is_diffusion": True}
    p = point("dg-tide", 2, "int8", 4, acc=0.9, h2d=1e6, peak_gib=2.0, meta=dg, model="tiny:diffusion_gemma")
    p.config.update(policy="tide", tau=2, decoding={"generate": {"max_new_tokens": 8, "seed": 0, "steps": 1},
                                                    "steps_per_block": 1, "steps_per_block_counts": "denoising steps"})
    url = make_db(tmp_path / "a.db", [p])
    hf = advisor("export", "dg-tide", "2", "--storage", url, "--to", "hf", "--opt", "method=advisor", cwd=tmp_path)
    assert hf.returncode == 0, hf.stderr
    said = " ".join(hf.stdout.split())
    assert ("every 2 step(s), counted over the whole run (the encoder passes are no steps): the steps of canvases "
            "0, 2, 4, ... of the first generation") in said, said
    assert "autoregressive" not in said, said


def test_fidelity_is_measured_on_the_prompts_the_space_asks_for(tmp_path):
    """Two studies of the bundled model, the `quick` space (2 fidelity prompts) and a copy asking for 4: the
    second reused the fidelity measured on 2 prompts (the cache key held no prompt count), so its space's
    fidelity_prompts did nothing. Accuracy, which does not depend on it, is still measured once."""
    from advisor.tune.space import load_space

    # the quick space scoring 2 problems, not 32 (accuracy is measured once and reused, whatever the count), on 1
    # traced prompt, not 2 (the routing trace is not what is checked), and its copy asking for 4 fidelity prompts
    q2 = (load_space("quick").text.replace("limit = 32", "limit = 2").replace("trace_prompts = 2", "trace_prompts = 1")
          .replace('name = "quick"', 'name = "q2"'))
    assert "limit = 2\n" in q2 and "trace_prompts = 1\n" in q2 and "fidelity_prompts = 2\n" in q2, q2
    (tmp_path / "q2.toml").write_text(q2)
    (tmp_path / "q4.toml").write_text(q2.replace("fidelity_prompts = 2", "fidelity_prompts = 4")
                                      .replace('name = "q2"', 'name = "q4"'))
    db = str(tmp_path / "s.db")
    first = advisor_in_process("tune", "--space", "q2.toml", "--trials", "1", "--storage", db, cwd=tmp_path).stdout
    assert "2 prompts" in first and "accuracy evaluations this run: 1 for 1" in first, first
    second = advisor_in_process("tune", "--space", "q4.toml", "--trials", "1", "--storage", db, cwd=tmp_path).stdout
    legend = " ".join(second.split()).split(" fidelity_top1 [top-1 agree]: ")[1:]  # (the legend line wraps)
    assert legend and legend[0].split(")")[0].endswith(",4 prompts,cpu"), second
    assert "accuracy evaluations this run: 0 for 1 distinct precision plan in the study (1 reused from the cache" \
        in " ".join(second.split()), second


def test_every_stored_byte_count_reads_in_binary_units(tmp_path):
    """A live trial of an offloaded model stores `device_bytes` (and on CUDA `allocator_peak_bytes`): `recommend`
    printed them as 1.287e+07 beside `peak_gpu_bytes 15.974 MiB`, and every export's header wrote all bytes so
    (peak_gpu_bytes=1.675e+07). Every *_bytes value now reads as a size, in both."""
    p = point("live", 3, "int8", [27, 26, 26, 26], acc=0.5, h2d=2118368.0, peak_gib=16749568 / 2**30)
    p.values.update(device_bytes=12871680.0, allocator_peak_bytes=13107200.0, time_per_token=24.16)
    p.sources.update(device_bytes="counted:allocated(resident parameters + slot pool,cpu)",
                     allocator_peak_bytes="measured:cuda-allocator", time_per_token="measured:wall-clock(cpu)")
    url = make_db(tmp_path / "a.db", [p])
    out = advisor("recommend", "--storage", url, "--budget", "16MiB", cwd=tmp_path).stdout
    assert "e+0" not in out, out
    for line in ("device_bytes               12.275 MiB", "allocator_peak_bytes       12.500 MiB",
                 "peak_gpu_bytes             15.974 MiB", "h2d_bytes_per_token         2.020 MiB"):
        assert line in out, out
    header = advisor("export", "live", "3", "--storage", url, "--to", "llama.cpp", cwd=tmp_path).stdout.splitlines()[3]
    assert "device_bytes=12.275 MiB [" in header and "peak_gpu_bytes=15.974 MiB [" in header, header
    assert "time_per_token=24.160 ms [" in header and "e+0" not in header, header


def test_recommend_says_the_front_fits_a_budget_that_trials_off_it_exceed(tmp_path):
    """`recommend --budget 2.5MiB` on the example (front up to 2.133 MiB, trials off it up to 2.727 MiB) said "every
    stored configuration fits 2.50 MiB", but stored trials need more; what fits is every point of the stored front,
    the candidates, and the reason now says that."""
    from advisor.recommend import load_trials

    trials = load_trials(str(EXAMPLE_DB))("bundled-example").points
    assert max(t.values["peak_gpu_bytes"] for t in trials) > 2.5 * 2**20  # the premise: some trials do not fit
    shutil.copy(EXAMPLE_DB, tmp_path / "a.db")
    out = flat(advisor_in_process("recommend", "--storage", "a.db", "--budget", "2.5MiB", cwd=tmp_path).stdout)
    assert "every configuration on the stored Pareto front fits 2.50 MiB (--budget 2.5MiB)" in out, out
    assert "every stored configuration" not in out, out


def test_recommend_names_a_budget_as_typed_beside_its_bytes(tmp_path):
    """`recommend --budget 4MB` (SI: 4,000,000 bytes) said "fits 3.8 MiB", read as if 3.8 MiB had been typed; `advisor
    tune` shows "3.81 MiB (--budget 4MB)". Each reason that names the budget now names it as typed beside its bytes
    (`advisor.units.budget_text`), a GPU's memory by its --gpu."""
    shutil.copy(EXAMPLE_DB, tmp_path / "a.db")
    out = flat(advisor_in_process("recommend", "--storage", "a.db", "--budget", "4MB", cwd=tmp_path).stdout)
    assert "every configuration on the stored Pareto front fits 3.81 MiB (--budget 4MB), so transfer" in out, out
    assert "- fits 3.81 MiB (--budget 4MB): uses 2.133 MiB (counted)" in out, out
    assert "less than the 3.81 MiB (--budget 4MB) asked about" in out, out
    out = flat(advisor_in_process("recommend", "--storage", "a.db", "--gpu", "RTX 4090", cwd=tmp_path).stdout)
    assert "- fits 24.00 GiB (--gpu RTX 4090 24GB, catalogue (nominal)): uses 2.133 MiB" in out, out
    out = flat(advisor_in_process("recommend", "--storage", "a.db", "--budget", "1MB", cwd=tmp_path).stdout)
    assert "(39 exceed the memory budget of 976.56 KiB (--budget 1MB), 16 fall below the accuracy floor)" in out, out


def test_simulate_at_no_slots_shows_no_ratio_to_a_bound_that_hits_nothing(tmp_path, tiny_trace):
    """`simulate --slots 0` printed 'vs Belady 1.000' (and 1.0 in --json) for 0 hits of the bound's 0: a ratio of
    0/0. It is '-' in the table, as the report's tables show a value that does not exist, null in --json, and a
    note says why; at slots where the bound hits, the ratio is shown as before."""
    import contextlib

    from typer.testing import CliRunner

    from advisor.cli import app

    shutil.copy(tiny_trace, tmp_path / "tr.npz")
    for slots, ratio in (("0", None), ("3", 1.0)):
        with contextlib.chdir(tmp_path):
            res = CliRunner().invoke(app, ["simulate", "tr.npz", "--slots", slots, "--policy", "lru", "--json",
                                           "s.json"], terminal_width=80)
        assert res.exit_code == 0, res.output
        bound = {r["policy"]: r for r in json.loads((tmp_path / "s.json").read_text())["results"]}["belady (bound)"]
        assert bound["vs_belady_hit_rate"] == ratio, res.output
        row = next(ln for ln in res.stdout.splitlines() if ln.startswith("belady (bound)"))
        assert row.split()[-1] == ("-" if ratio is None else "1.000"), res.stdout
        assert ("Belady's MIN hits nothing at these slots" in flat(res.stdout)) == (ratio is None), res.stdout
