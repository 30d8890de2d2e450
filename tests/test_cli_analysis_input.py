"""The analysis commands (`simulate`, `profile`, `inspect`) on what a new user fed them: each test failed before
its fix.

- `advisor simulate` on a trace whose arrays and meta disagree (another model's meta beside these arrays, an
  expert id beyond its layer, a damaged compressed member) crashed with a traceback or replayed it as if valid;
- `advisor profile --expert-shape 40x24` (an input width not divisible by 16) killed the process with SIGSEGV in
  torch's int8 CPU kernel; `--expert-shape 99999999x99999` crashed allocating 36 TiB;
- a damaged hardware profile (bandwidth 0 or "fast", negative latency, a CPU time table without points) crashed
  `--gpu` users with ZeroDivisionError/TypeError or modelled negative copy times;
- `advisor inspect` at 80 columns dropped the caption saying its bytes are counted;
- `advisor simulate --gpu X` did not say which profile (catalogue or measured) its modelled times came from;
- `advisor quant-report` did not say on which device it computed, and printed a bitsandbytes warning;
- a study priced with CPU expert times from a profile measured on another host called them the profile's, as if
  measured here: profiles now record the CPU (model, logical cores) and the run names both.
"""

from __future__ import annotations

import json
import subprocess
import sys
import zipfile
from pathlib import Path

import numpy as np
import pytest
from cli_helpers import advisor_entry, advisor_in_process, flat
from tune_helpers import FIDELITY_SPACE, few_problems_quick_space
from typer.testing import CliRunner

from advisor.errors import UserError


def _cli(*args: str, cwd: Path) -> subprocess.CompletedProcess:
    """`advisor ARGS` through the console entry point, in this process (`advisor_entry`), at 80 columns: each
    `advisor` subprocess that loads a model re-imported torch and transformers (~4-5 s of CPU)."""
    return advisor_entry(*args, cwd=cwd, env={"COLUMNS": "80"})


def _one_error_line(r: subprocess.CompletedProcess, needle: str) -> None:
    everything = r.stdout + r.stderr
    assert r.returncode == 2, everything
    assert "Traceback" not in everything, everything
    lines = r.stderr.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("error:") and needle in lines[0], r.stderr


@pytest.fixture(scope="module")
def trace_file(tmp_path_factory) -> Path:
    from tests.offload_helpers import cli_trace

    out = tmp_path_factory.mktemp("trace") / "tiny.npz"
    cli_trace(CliRunner(), out)
    return out


def _variant(src: Path, dst: Path, **changes) -> Path:
    with np.load(src) as z:
        arrays = {k: z[k] for k in z.files}
    meta = json.loads(str(arrays["meta"]))
    meta.update(changes.pop("meta", {}))
    arrays["meta"] = np.array(json.dumps(meta))
    arrays.update(changes)
    np.savez_compressed(dst, **arrays)
    return dst


def test_simulate_refuses_a_damaged_or_foreign_trace_in_one_line(tmp_path, trace_file):
    from advisor.cli import app

    with np.load(trace_file) as z:
        experts, layers = z["experts"].copy(), z["rec_layer"].copy()
    experts[0] = 500  # the tiny model has 8 experts per layer
    cases = {
        "foreign_meta.npz": ({"meta": {"num_experts": [8], "hidden": [16], "intermediate": [32], "top_k": [2]}},
                             "records name MoE layers outside the 1 its meta lists"),
        "expert_range.npz": ({"experts": experts}, "look-ups name experts beyond their layer's count"),
        "no_shapes.npz": ({"meta": {"hidden": None}}, "meta 'hidden' is not a list of positive integers"),
        "float_tokens.npz": ({"tokens": np.ones(len(experts), dtype=np.float32)}, "not 1-D integer arrays"),
        "bad_layer.npz": ({"rec_layer": layers + 5}, "records name MoE layers outside the 2"),
    }
    runner = CliRunner()
    for name, (change, why) in cases.items():
        bad = _variant(trace_file, tmp_path / name, **change)
        res = runner.invoke(app, ["simulate", str(bad), "--json", str(tmp_path / "out.json")])
        assert isinstance(res.exception, UserError), (name, res.output, res.exception)
        assert why in str(res.exception) and "re-record it" in str(res.exception), (name, res.exception)
        assert not (tmp_path / "out.json").exists()

    # a member whose compressed bytes are damaged (zlib error or bad CRC), through the real CLI: one line, exit 2
    damaged = tmp_path / "damaged.npz"
    data = bytearray(trace_file.read_bytes())
    with zipfile.ZipFile(trace_file) as zf:
        info = zf.getinfo("experts.npy")
    start = info.header_offset + 30 + len(info.filename.encode()) + len(info.extra)
    for i in range(start + info.compress_size // 3, start + info.compress_size // 3 + 8):
        data[i] ^= 0x5A
    damaged.write_bytes(bytes(data))
    _one_error_line(_cli("simulate", str(damaged), cwd=tmp_path), "is not a routing trace this tool wrote")


def test_simulate_refuses_a_trace_whose_look_ups_or_meta_no_recorder_writes(tmp_path, trace_file):
    """Look-ups replay as the runtime makes them: distinct experts in increasing order, each with a routed token,
    its block tokens among them. A record naming an expert twice (counted as two look-ups and two copies), out of
    order (the policies' admission order follows the ids), with no or negative tokens, or with more block tokens
    than tokens was replayed as if valid; a meta 'steps_per_block' or 'dtype' of the wrong type crashed with a
    traceback. Each is now one line naming what is wrong, exit 2."""
    from advisor.cli import app

    with np.load(trace_file) as z:
        experts, tokens, ptr, block = z["experts"].copy(), z["tokens"], z["rec_ptr"], z["block_tokens"]
    r = int(np.argmax(np.diff(ptr) >= 2))  # a record of at least two look-ups
    a = int(ptr[r])
    twice, backwards = experts.copy(), experts.copy()
    twice[a + 1] = twice[a]
    backwards[a:a + 2] = experts[a:a + 2][::-1]
    zero, negative = tokens.copy(), tokens.astype(np.int32)
    zero[a] = 0
    negative[a] = -3
    cases = {
        "twice.npz": ({"experts": twice}, "a record's experts are not distinct and in increasing order"),
        "backwards.npz": ({"experts": backwards}, "a record's experts are not distinct and in increasing order"),
        "zero_tokens.npz": ({"tokens": zero}, "a look-up has no routed tokens"),
        "negative_tokens.npz": ({"tokens": negative}, "a look-up has no routed tokens"),
        "block_above.npz": ({"block_tokens": tokens.astype(np.int64) + 1}, "block tokens are negative or more"),
        "steps_text.npz": ({"meta": {"steps_per_block": "4"}}, "meta 'steps_per_block' is not a non-negative"),
        "steps_negative.npz": ({"meta": {"steps_per_block": -3}}, "meta 'steps_per_block' is not a non-negative"),
        "dtype_list.npz": ({"meta": {"dtype": ["bfloat16"]}}, "meta 'dtype' is not a string"),
    }
    assert block.size and (block <= tokens).all()  # the recorded file itself passes every check
    runner = CliRunner()
    for name, (change, why) in cases.items():
        bad = _variant(trace_file, tmp_path / name, **change)
        res = runner.invoke(app, ["simulate", str(bad), "--policy", "lru,tide"])
        assert isinstance(res.exception, UserError), (name, res.output, res.exception)
        assert why in str(res.exception) and "re-record it" in str(res.exception), (name, res.exception)
    # the text steps_per_block through the real CLI (it was a ValueError traceback): one line, exit 2
    _one_error_line(_cli("simulate", str(tmp_path / "steps_text.npz"), cwd=tmp_path), "steps_per_block")


def test_simulate_refuses_a_trace_of_another_format_version_or_an_impossible_expert_count(tmp_path, trace_file):
    """A trace whose meta says format 3 (a newer moe-advisor's) or 'x' was replayed as if format 2; one whose
    meta gave a layer 10**12 experts ran until host memory ran out (the replay keeps per-expert state). Each is
    one line now: a newer format says to upgrade, the rest that the file is damaged."""
    cases = {
        "v3.npz": ({"format_version": 3}, "a routing trace of format 3, written by a newer moe-advisor"),
        "vx.npz": ({"format_version": "x"}, "meta 'format_version' is 'x', not 2"),
        "many.npz": ({"num_experts": [2**20 + 1, 8]}, "has a layer of 1048577 experts; no MoE model has more"),
        # each layer within 2**20, but five of them: the replay's per-expert state over 5 million experts
        "all.npz": ({"num_experts": [2**20] * 5, "hidden": [8] * 5, "intermediate": [8] * 5},
                    "lists 5242880 experts in all; no MoE model has more than 4194304"),
    }
    for name, (meta, why) in cases.items():
        r = _cli("simulate", str(_variant(trace_file, tmp_path / name, meta=meta)), "--json", "out.json", cwd=tmp_path)
        _one_error_line(r, why)
        assert not (tmp_path / "out.json").exists()


def test_simulate_of_a_trace_without_a_token_count_shows_totals_and_says_so(tmp_path, trace_file):
    """A trace that does not record its generated tokens (a bare `TraceRecorder`'s) was shown as "tokens: 1
    generated (counted)", its totals in the per-token columns and the JSON's `h2d_bytes_per_token`; now the columns
    and the line say they are totals and the JSON has no per-token values."""
    from advisor.cli import app

    bare = _variant(trace_file, tmp_path / "bare.npz", meta={"generated_tokens": 0})
    js = tmp_path / "r.json"
    res = CliRunner().invoke(app, ["simulate", str(bare), "--policy", "lru", "--json", str(js)], terminal_width=200)
    assert res.exit_code == 0, res.output
    text = " ".join(res.output.split())
    assert "tokens: none recorded in the trace, so H2D and transfer are totals" in text, text
    assert "1 generated" not in text and "per token" not in text and "ms total" in text, text
    rows = json.loads(js.read_text())["results"]
    assert rows and all("h2d_bytes_per_token" not in r and r["bytes_h2d"] > 0 for r in rows), rows


def test_simulate_names_the_link_its_times_are_modelled_for(trace_file):
    from advisor.cli import app

    runner = CliRunner()
    plain = runner.invoke(app, ["simulate", str(trace_file), "--policy", "lru"])
    assert plain.exit_code == 0, plain.output
    assert "[default PCIe 4.0 x16 link: assumption:PCIe 4.0 x16 nominal]" in " ".join(plain.output.split())
    assert "counts: counted (replayed trace recorded on cpu)" in " ".join(plain.output.split()), plain.output
    assert "slots 50% (= 4 per layer)" in " ".join(plain.output.split()), plain.output  # 8 experts per layer
    big = runner.invoke(app, ["simulate", str(trace_file), "--policy", "lru", "--slots", "200"])
    assert "slots 200 (= 8 per layer)" in " ".join(big.output.split()), big.output  # said "slots 200" only
    for typed in ("4", "4,4"):  # said "slots 4 (= 4 per layer)": the count twice
        same = runner.invoke(app, ["simulate", str(trace_file), "--policy", "lru", "--slots", typed])
        assert f"slots {typed} per layer," in " ".join(same.output.split()) and "(=" not in same.output, same.output
    h200 = runner.invoke(app, ["simulate", str(trace_file), "--policy", "lru", "--gpu", "H200"])
    text = " ".join(h200.output.split())  # rich wraps the legend at the terminal's width
    assert "modelled:pcie(bw=50.0GB/s,lat=10us) [H200 141GB: catalogue (nominal)]" in text, h200.output


def test_simulate_prints_a_policy_named_twice_once_and_says_what_json_it_wrote(trace_file, tmp_path):
    """`simulate --policy lru,LRU` printed two equal lru rows (and stored both in --json), `--json` wrote its
    file without a word, where eval, quant-report and export say what they wrote; `--miss gpu` is refused naming
    the miss policies simulate takes."""
    from advisor.cli import app

    js = tmp_path / "s.json"
    res = CliRunner().invoke(app, ["simulate", str(trace_file), "--policy", "lru,LRU,flru", "--json", str(js)])
    assert res.exit_code == 0, res.output
    assert [ln.split()[0] for ln in res.stdout.splitlines() if ln.startswith(("lru ", "flru "))] == ["lru", "flru"]
    assert [r["policy"] for r in json.loads(js.read_text())["results"]] == ["lru", "flru", "belady (bound)"]
    assert f"wrote {js}" in " ".join(res.stderr.split()), res.stderr  # a long path goes to a line of its own
    gpu = CliRunner().invoke(app, ["simulate", str(trace_file), "--miss", "gpu"])  # names the three it takes
    assert str(gpu.exception) == "--miss must be copy, cpu or hybrid, got 'gpu'", gpu.exception


def test_a_json_plan_file_takes_ranges_as_the_string_form_does(trace_file, tmp_path):
    """`--precision plan.json` holding {"layers": {"0-1": "int8"}} was refused with Python's "invalid literal for
    int() with base 10: '0-1'", while `layers=0-1:int8` is the documented string form of the same plan."""
    from advisor.cli import app

    plan = tmp_path / "plan.json"
    plan.write_text(json.dumps({"default": "int4", "layers": {"0-1": "int8"}, "experts": {"1": {"0-2": "bf16"}}}))
    runner, base = CliRunner(), ["simulate", str(trace_file), "--policy", "lru", "--json"]
    from_file = runner.invoke(app, [*base, str(tmp_path / "a.json"), "--precision", str(plan)])
    typed = runner.invoke(app, [*base, str(tmp_path / "b.json"), "--precision",
                                "default=int4;layers=0-1:int8;experts=1.0-2:bf16"])
    assert from_file.exit_code == 0 == typed.exit_code, (from_file.output, from_file.exception)
    rows = [json.loads((tmp_path / f).read_text())["results"] for f in ("a.json", "b.json")]
    assert rows[0] == rows[1] and rows[0][0]["bytes_h2d"] > 0
    plan.write_text(json.dumps({"default": "int4", "layers": {"0-x": "int8"}}))
    bad = runner.invoke(app, [*base, str(tmp_path / "c.json"), "--precision", str(plan)])
    assert "'0-x' is not a number or a range like 0-3" in str(bad.exception), bad.exception


def test_a_plan_nested_past_the_json_parsers_stack_is_one_line(trace_file, tmp_path):
    """`--precision FILE` (or the JSON typed inline) nested deeper than Python's JSON parser recurses printed a
    RecursionError traceback (CLI fuzzing, 2026-12-06); now the plan's one refusal, nothing written."""
    deep = "[" * 100_000 + "]" * 100_000
    (tmp_path / "deep.json").write_text(deep)
    for plan, shown in ((str(tmp_path / "deep.json"), "deep.json"), ('{"default": ' + deep + "}", '{"default": [[')):
        r = _cli("simulate", str(trace_file), "--policy", "lru", "--json", "o.json", "--precision", plan,
                 cwd=tmp_path)
        _one_error_line(r, "invalid JSON (nested too deeply")
        assert shown in r.stderr and not (tmp_path / "o.json").exists()


def test_profile_measures_odd_expert_shapes_and_refuses_impossible_ones(tmp_path):
    r = _cli("profile", "--cpu", "--repeats", "1", "--profiles-dir", "p", "--expert-shape", "32x16",
             "--expert-shape", "40x24", cwd=tmp_path)
    assert r.returncode == 0, (r.returncode, r.stdout, r.stderr)  # was -11: SIGSEGV in torch._weight_int8pack_mm
    [saved] = (tmp_path / "p").glob("*.json")
    cpu = json.loads(saved.read_text())["cpu_experts"]
    table = cpu["table"]["40x24"]
    assert {"bf16", "int8", "int4", "int3"} <= set(table) and all(ms >= 0 for _n, ms in table["int8"])
    # the label names every kernel a format used (it named the last shape's only)
    assert "int8:int8pack_mm(bf16>=32)/dequantize" in cpu["source"], cpu["source"]

    r = _cli("profile", "--cpu", "--profiles-dir", "q", "--expert-shape", "99999999x99999", cwd=tmp_path)
    _one_error_line(r, "bad --expert-shape '99999999x99999': measuring it needs")
    assert not (tmp_path / "q").exists()


def test_int8_experts_with_an_odd_input_width_compute_on_the_cpu():
    """The int8 format's own CPU matmul and the CPU miss kernel take the dequantize path on widths the kernel
    crashes on (run in a child process: a crash there must fail this test, not end the test run)."""
    code = (
        "import torch\n"
        "from advisor.quant.formats import get_format\n"
        "from advisor.offload.cpu_experts import kernel_for\n"
        "w = torch.randn(16, 40)\n"
        "qt = get_format('int8').quantize(w)\n"
        "x = torch.randn(4, 40, dtype=torch.bfloat16)\n"
        "y = get_format('int8').linear(qt, x)\n"
        "name, fn = kernel_for(qt)\n"
        "assert name == 'dequantize', name\n"
        "ref = x.float() @ qt.format.dequantize(qt, torch.float32).t()\n"
        "assert torch.allclose(y.float(), ref, atol=0.1) and torch.allclose(fn(x).float(), ref, atol=0.1)\n"
        "print('ok')\n"
    )
    r = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=300)
    assert r.returncode == 0 and r.stdout.strip() == "ok", (r.returncode, r.stdout, r.stderr)


@pytest.mark.parametrize("change, why", [
    ({"h2d_gbps_pinned": 0}, "'h2d_gbps_pinned' is not a positive number"),
    ({"h2d_gbps_pinned": "fast"}, "'h2d_gbps_pinned' is not a positive number"),
    ({"copy_latency_us": -5}, "'copy_latency_us' is not a number >= 0"),
    ({"cpu_experts": {"table": {"128x16": {"bf16": [[1]]}}, "threads": 1, "source": "x"}},
     "'cpu_experts' is not a table of CPU expert times"),
])
def test_a_damaged_hardware_profile_is_refused_in_one_line(tmp_path, monkeypatch, trace_file, change, why):
    from advisor.cli import app

    profile = {"name": "NVIDIA H200", "memory_bytes": 150109880320, "h2d_gbps_pinned": 55.3,
               "h2d_gbps_pageable": 15.7, "copy_latency_us": 20.75, "source": "measured:2026-11-30 cuda-events",
               "link": "measured", "free_bytes": None, "cpu_experts": None}
    (tmp_path / "nvidia-h200.json").write_text(json.dumps({**profile, **change}))
    monkeypatch.setenv("ADVISOR_PROFILES_DIR", str(tmp_path))
    res = CliRunner().invoke(app, ["simulate", str(trace_file), "--gpu", "H200", "--policy", "lru"])
    assert isinstance(res.exception, UserError), (res.output, res.exception)
    assert "nvidia-h200.json" in str(res.exception) and why in str(res.exception), res.exception


def test_inspect_at_80_columns_keeps_how_its_bytes_were_obtained():
    from advisor.cli import app

    res = CliRunner().invoke(app, ["inspect", "tiny:llada2"], terminal_width=80)
    assert res.exit_code == 0, res.output
    assert "MoE 0: model.layers.1.mlp.experts" in res.output, res.output  # the block layout
    assert "bytes: counted from the stored tensors" in res.output, res.output


@pytest.mark.parametrize(("model", "said"), [
    ("tiny:llada_moe", "steps=one per new token, block_length=32, temperature=0.0, remasking=low_confidence"),
    ("tiny:llada2", "steps=32, block_length=32, threshold=0.95, temperature=0.0"),
])
def test_inspect_prints_the_default_decoding_as_key_value_pairs(model, said):
    """`advisor inspect` printed a model's default decoding as a Python dict's repr, `{'steps': None,
    'block_length': 32, ...}`, LLaDA-MoE's unset steps as `None`; it prints `key=value` pairs, the unset steps as
    what LLaDA-MoE then decodes."""
    from advisor.cli import app

    res = CliRunner().invoke(app, ["inspect", model])
    assert res.exit_code == 0, res.output
    decoding = flat(res.output).split("; default decoding: ")[1]  # (the line wraps at 80 columns)
    assert decoding.startswith(said), decoding
    assert "{" not in decoding and "'" not in decoding and "None" not in decoding, decoding


def test_quant_report_says_where_it_computed_and_prints_no_third_party_warning(tmp_path):
    out = tmp_path / "q.json"
    r = subprocess.run([sys.executable, "-m", "advisor", "quant-report", "tiny:llada_moe", "--max-experts", "1",
                        "--json", str(out)], cwd=tmp_path, capture_output=True, text=True, timeout=300)  # its stderr
    assert r.returncode == 0, r.stdout + r.stderr
    assert "fp32 compute on cpu." in " ".join(r.stdout.split()), r.stdout
    assert json.loads(out.read_text())["device"] == "cpu"
    assert "kernels-community" not in r.stdout + r.stderr, r.stdout + r.stderr  # bitsandbytes' nf4 import noise


def test_a_study_priced_with_another_hosts_cpu_times_says_so(tmp_path):
    """A hardware profile copied from the GPU machine carries that host's CPU expert times: legitimate (it
    models the deployment host), but the run must not present them as this host's."""
    pts = [[1, 0.02], [256, 0.1]]
    profile = {"name": "NVIDIA H200", "memory_bytes": 150109880320, "h2d_gbps_pinned": 55.3,
               "h2d_gbps_pageable": 15.7, "copy_latency_us": 20.75, "source": "measured:2026-11-30 cuda-events",
               "link": "measured", "free_bytes": None,
               "cpu_experts": {"table": {"128x16": {f: pts for f in ("bf16", "int8", "int4", "int3")}}, "threads": 1,
                               "source": "measured:wall-clock(2026-11-30, 1 threads, min of 3)",
                               "host": "Other CPU 9000, 192 logical cores"}}
    (tmp_path / "profiles").mkdir()
    (tmp_path / "profiles" / "nvidia-h200.json").write_text(json.dumps(profile))
    (tmp_path / "quick.toml").write_text(few_problems_quick_space())  # a trial in ~2 s: the times' line is the check
    r = advisor_in_process("tune", "bundled", "--space", "quick.toml", "--gpu", "H200", "--trials", "1", "--storage",
                           "sqlite:///s.db", "--study", "s", cwd=tmp_path,
                           env={"ADVISOR_PROFILES_DIR": str(tmp_path / "profiles")})
    assert r.returncode == 0, r.stdout + r.stderr
    text = " ".join(r.stdout.split())
    assert "from the hardware profile 'NVIDIA H200' (measured on another CPU: Other CPU 9000, 192 logical cores; " \
           "this host: " in text, r.stdout


def test_profile_records_the_cpu_its_expert_times_were_measured_on(tmp_path):
    from advisor.hardware.profiles import host_cpu

    r = _cli("profile", "--cpu", "--repeats", "1", "--profiles-dir", "p", "--expert-shape", "32x16", cwd=tmp_path)
    assert r.returncode == 0, r.stdout + r.stderr
    [saved] = (tmp_path / "p").glob("*.json")
    assert json.loads(saved.read_text())["cpu_experts"]["host"] == host_cpu()
    assert f"CPU: {host_cpu()}" in r.stdout, r.stdout




def test_report_on_a_fidelity_study_says_why_accuracy_is_missing_and_which_prompts_it_traced(tmp_path):
    """A tokenizer-less model is tuned on fidelity: its report said "no FP16 plan in the study" (there was one),
    claimed a toy-task accuracy workload that never ran, and "the task's first N prompts" for random ids."""
    (tmp_path / "space.toml").write_text(FIDELITY_SPACE)
    r = _cli("tune", "tiny:llada2", "--space", "space.toml", "--budget", "200KiB", "--trials", "3",
             "--storage", "sqlite:///s.db", "--study", "f", cwd=tmp_path)
    assert r.returncode == 0, r.stdout + r.stderr
    r = _cli("report", "f", "--storage", "s.db", "-o", "rep", "--block-lengths", "", cwd=tmp_path)
    assert r.returncode == 0, r.stdout + r.stderr
    md = (tmp_path / "rep" / "report.md").read_text()
    assert "no FP16 plan in the study" not in md
    assert "no trial of the study measured task accuracy (not among its objectives)" in md
    assert "Workload (accuracy): none, no trial measured it." in md
    assert "2 prompts of random token ids, seed 0 (the model has no tokenizer)" in md
    assert "the task's first" not in md
    # recommend applies no accuracy floor to a study without task accuracy: the caption does not claim one
    assert "the study stores no task accuracy, so no accuracy floor applies" in md
    assert "accuracy at most 0.05" not in md


def test_trace_reads_a_local_task_file_and_says_when_it_traced_random_ids(tmp_path):
    """Offline, `advisor trace MODEL --task gsm8k` said "pass --data path/to/gsm8k.jsonl", an option trace lacked;
    on a tokenizer-less model it traced random ids instead of the --prompt text without a word."""
    from advisor.cli import app
    from advisor.offload.trace import RoutingTrace

    data = tmp_path / "g.jsonl"
    data.write_text('{"question": "Ann has 3 apples and buys 4. How many?", "answer": "#### 7"}\n'
                    '{"question": "Bob has 10 pens and loses 2. How many?", "answer": "#### 8"}\n')
    runner = CliRunner()
    res = runner.invoke(app, ["trace", "bundled", "--task", "gsm8k", "--data", str(data), "--limit", "1",
                              "--max-new-tokens", "8", "-o", str(tmp_path / "g.npz")])
    assert res.exit_code == 0, res.output
    assert RoutingTrace.load(tmp_path / "g.npz").generated_tokens == 8

    res = runner.invoke(app, ["trace", "tiny:llada_moe", "--prompt", "hello", "--max-new-tokens", "8",
                              "-o", str(tmp_path / "t.npz")])
    assert res.exit_code == 0, res.output
    assert "note: tiny:llada_moe has no tokenizer: traced 1 prompt of random token ids (seed 0), not the " \
           "--prompt text" in " ".join(res.output.split()), res.output


def test_trace_refuses_a_limit_or_data_file_that_prompt_texts_leave_unread(tmp_path):
    """`trace --prompt TEXT --limit 3` traced the one text and `--prompt TEXT --data FILE` never read the file,
    each without a word (`eval --style` for toy, `simulate --tau` without tide are refused alike)."""
    from advisor.cli import app
    from advisor.errors import UserError

    for extra, flag in ((["--limit", "3"], "--limit"), (["--task", "gsm8k", "--data", "g.jsonl"], "--data")):
        res = CliRunner().invoke(app, ["trace", "bundled", "--prompt", "2+2=", *extra, "-o", str(tmp_path / "t.npz")])
        assert isinstance(res.exception, UserError), res.output
        assert str(res.exception) == (f"{flag} picks the task's prompts, but --prompt gives them (1 text); drop "
                                      f"{flag} or --prompt")
    assert not (tmp_path / "t.npz").exists()


def test_trace_refuses_denoising_options_for_an_autoregressive_model(tmp_path):
    """`trace tiny:qwen3_moe --steps 4 --block-length 4` wrote the same routing as without them: an
    autoregressive model's generate ignored both, without a word."""
    from advisor.cli import app
    from advisor.errors import UserError

    res = CliRunner().invoke(app, ["trace", "tiny:qwen3_moe", "--steps", "4", "--block-length", "4", "--threads", "1",
                                   "-o", str(tmp_path / "t.npz")])
    assert isinstance(res.exception, UserError), res.output
    assert str(res.exception) == ("--steps and --block-length: tiny:qwen3_moe (qwen3_moe) decodes autoregressively, "
                                  "one token per forward, with no denoising steps or blocks; drop them")
    assert not (tmp_path / "t.npz").exists()


@pytest.mark.parametrize("model", ["tiny:qwen3_moe", "local"])
def test_trace_refuses_denoising_options_before_torch(tmp_path, model):
    """For a tiny:<family> or a local directory the family is in config.json: `trace --steps` for an autoregressive
    one is refused before torch imports (torch blocked here: importing it fails), not after the model loaded."""
    from advisor.models import family_of
    from advisor.models.llada2 import MODEL_TYPE as LLADA2
    from advisor.models.llada_moe import MODEL_TYPE as LLADA
    from tests.cli_helpers import one_error_line

    assert (family_of(LLADA), family_of(LLADA2)) == ("llada_moe", "llada2")  # the published names, torch-free
    if model == "local":
        model = str(tmp_path / "m")
        Path(model).mkdir()
        Path(model, "config.json").write_text(json.dumps({"model_type": "qwen3_moe"}))
        Path(model, "model.safetensors").write_bytes(b"")  # a weights file, as check_model_spec asks (never read)
    blocked = "import sys; sys.modules['torch'] = None; from advisor.cli import run; run()"
    r = subprocess.run([sys.executable, "-c", blocked, "trace", model, "--steps", "4", "-o", str(tmp_path / "t.npz")],
                       capture_output=True, text=True, timeout=120)
    one_error_line(r, f"--steps: {model} (qwen3_moe) decodes autoregressively")
    assert not (tmp_path / "t.npz").exists()


def test_profile_keeps_the_cpu_times_it_does_not_remeasure(tmp_path):
    """`advisor profile --model B` after `--model A`, or a plain `advisor profile` re-measuring the link, dropped
    every CPU expert time measured before; a time under 0.05 ms printed as "0.0"."""
    def table(r):
        assert r.returncode == 0, r.stdout + r.stderr
        [saved] = (tmp_path / "p").glob("*.json")
        return json.loads(saved.read_text())["cpu_experts"]

    base = ("profile", "--cpu", "--repeats", "1", "--profiles-dir", "p")
    first = table(_cli(*base, "--expert-shape", "32x16", cwd=tmp_path))
    r = _cli(*base, "--expert-shape", "48x16", cwd=tmp_path)
    both = table(r)
    assert set(both["table"]) == {"32x16", "48x16"} and both["table"]["32x16"] == first["table"]["32x16"]
    assert "kept the CPU expert times of the profile this replaces for 32x16" in " ".join(r.stdout.split()), r.stdout
    assert "+ 32x16 measured:wall-clock(" in both["source"], both["source"]  # whose times are whose
    # and the new ones by their shape, not "(this run)": stored, that label reached `profile --list`, tune's "CPU
    # expert times" line and every trial's time_per_token source, where "this run" measured none of them
    assert both["source"].startswith("48x16 measured:wall-clock(") and "this run" not in both["source"], both["source"]
    assert "/0.0," not in r.stdout and "/0.0 " not in r.stdout, r.stdout
    r = _cli(*base, cwd=tmp_path)  # the link alone
    assert table(r) == both and "kept the CPU expert times of the profile this replaces" in " ".join(r.stdout.split())
    r = _cli(*base[:-2], "--list", "--profiles-dir", "p", cwd=tmp_path)
    assert r.returncode == 0 and "CPU expert times for 48x16, 32x16 on " in r.stdout, r.stdout
    r = _cli(*base, "--expert-shape", "32x16", "--threads", "2", cwd=tmp_path)  # other conditions: not mixed
    assert set(table(r)["table"]) == {"32x16"} and "were not kept" in " ".join(r.stdout.split()), r.stdout


def test_accuracy_figure_says_which_plans_were_not_measured(tmp_path, monkeypatch):
    """An empty accuracy panel (a fidelity study) read as accuracy 0; it now says the plans were not measured."""
    from advisor.report import plots
    from advisor.report.select import AccuracyRow

    shown = []
    real_save = plots._save
    monkeypatch.setattr(plots, "_save", lambda fig, path: (shown.extend(t.get_text() for ax in fig.axes
                                                                        for t in ax.texts), real_save(fig, path))[1])
    rows = [AccuracyRow("fp16", "a", [0], None, None, None, None, 1e-8, 1.0, "-"),
            AccuracyRow("int4", "b", [1], 0.9, 0.8, 0.95, 100.0, 1e-4, 0.95, "measured:exact-match:toy(n=100,cpu)")]
    assert plots.accuracy_by_plan(rows, tmp_path / "a.png").stat().st_size > 0
    assert "not measured: fp16" in shown, shown


def test_report_never_deletes_a_users_files_in_its_output_directory(tmp_path):
    """`advisor report STUDY -o DIR` replaced DIR as a whole: every other file in it was deleted (`-o .` in a
    project directory took the project). Now one line, before the model loads, and nothing touched."""
    example = Path(__file__).resolve().parents[1] / "studies" / "example" / "advisor.db"
    work = tmp_path / "work"
    work.mkdir()
    (work / "notes.txt").write_text("mine")
    for out in (str(work), "."):
        r = subprocess.run([sys.executable, "-m", "advisor", "report", "bundled-example", "--storage", str(example),
                            "-o", out], cwd=work, capture_output=True, text=True, timeout=600)
        _one_error_line(r, "holds other files (notes.txt), which writing there would delete")
        assert "loading the study's model" not in r.stdout + r.stderr
        assert sorted(p.name for p in work.iterdir()) == ["notes.txt"] and (work / "notes.txt").read_text() == "mine"


def test_report_into_a_place_that_takes_no_directory_is_one_line_before_the_work(tmp_path):
    """`report -o FILE/sub` (a path under a file) and `-o /proc/rep` (a file system that takes no directory)
    loaded the model, traced and replayed, then ended in a FileExistsError or FileNotFoundError traceback.
    Now one line before the model loads, and nothing is created."""
    example = Path(__file__).resolve().parents[1] / "studies" / "example" / "advisor.db"
    (tmp_path / "afile").write_text("mine")
    for out, needle in (("afile/sub", "afile is not a directory"), ("afile/a/b", "afile is not a directory"),
                        ("/proc/advisor-report", "/proc does not take directories")):
        r = _cli("report", "bundled-example", "--storage", str(example), "-o", out, cwd=tmp_path)
        _one_error_line(r, needle)
        assert "loading the study's model" not in r.stdout + r.stderr
    assert sorted(p.name for p in tmp_path.iterdir()) == ["afile"] and (tmp_path / "afile").read_text() == "mine"
    assert not Path("/proc/advisor-report").exists()
    # a --json file under a file: its directory is no directory (it said "afile does not exist")
    _one_error_line(_cli("eval", "--json", "afile/x.json", "--limit", "1", cwd=tmp_path), "afile is not a directory")
    assert sorted(p.name for p in tmp_path.iterdir()) == ["afile"]


def test_profile_checks_where_it_saves_before_it_measures(tmp_path, monkeypatch):
    """`profile --profiles-dir FILE` measured (a minute with expert shapes) and then said "cannot write
    FILE/cpu-....json: File exists"; a --name too long for a file name was found after measuring too. Both are
    refused before anything is measured now."""
    from advisor.cli import app
    from advisor.hardware import measure

    def measured(*args, **kwargs):
        raise AssertionError("measured before the refusal")

    monkeypatch.setattr(measure, "measure_cpu_profile", measured)
    monkeypatch.setattr(measure, "measure_profile", measured)
    (tmp_path / "afile").write_text("mine")
    for args, needle in ((["--profiles-dir", str(tmp_path / "afile")], "is a file, not a directory"),
                         (["--profiles-dir", str(tmp_path / "p"), "--name", "n" * 300], "a name of 305 bytes"),
                         # without --name (the device's): a directory under a file, a place that takes no files
                         (["--profiles-dir", str(tmp_path / "afile" / "sub")], "afile is not a directory"),
                         (["--profiles-dir", "/proc/advisor-profiles"], "/proc does not take files")):
        res = CliRunner().invoke(app, ["profile", "--cpu", "--repeats", "1", *args])
        assert isinstance(res.exception, UserError), (args, res.output, res.exception)
        assert needle in str(res.exception), res.exception
    assert sorted(p.name for p in tmp_path.iterdir()) == ["afile"]


def test_quant_report_refuses_layers_the_model_lacks():
    """`quant-report --layers 0,9` on a 2-layer model reported layer 0 and dropped 9 without a word."""
    from advisor.cli import app

    res = CliRunner().invoke(app, ["quant-report", "tiny:llada_moe", "--layers", "0,9", "--max-experts", "1"])
    assert isinstance(res.exception, UserError), res.output
    assert str(res.exception) == "--layers names MoE layer(s) 9 but tiny:llada_moe has 2 (0-1)", res.exception


def test_quant_report_says_when_it_reads_the_experts_offloaded(tmp_path):
    """`eval` and `trace` say `loading: offloaded: ...` for a checkpoint whose experts stay in its files;
    `quant-report`, which then reads each expert from them, said nothing."""
    import torch

    from advisor.cli import app
    from advisor.models.tiny import build_tiny

    build_tiny("qwen3_moe", dtype=torch.bfloat16).save_pretrained(tmp_path / "ck")
    args = ["quant-report", str(tmp_path / "ck"), "--layers", "0", "--max-experts", "1", "-f", "int8", "--threads", "1"]
    res = CliRunner().invoke(app, [*args, "--offload"])
    assert res.exit_code == 0, res.output
    assert "loading: offloaded: routed experts stream from the checkpoint (--offload)" in res.stderr, res.stderr
    assert "loading:" not in CliRunner().invoke(app, [*args, "--resident"]).stderr


def test_quant_report_fits_80_columns_and_prints_the_table_when_wide():
    """Piped to a file, `quant-report` printed its 7-column table 108 columns wide (a console forced to 120),
    where the README says tables fit the terminal (80 piped): now one block per row there, the table at a
    terminal wide enough or with --wide, the same numbers either way."""
    from advisor.cli import app

    args = ["quant-report", "tiny:qwen3_moe", "--layers", "0", "--formats", "int8,int4", "--threads", "1"]
    narrow = CliRunner().invoke(app, args, env={"COLUMNS": "80"})
    wide = CliRunner().invoke(app, [*args, "--wide"], env={"COLUMNS": "80"})
    assert narrow.exit_code == 0 == wide.exit_code, narrow.output + wide.output
    assert max(len(ln) for ln in narrow.stdout.splitlines()) <= 80, narrow.stdout
    blocks = [ln for ln in narrow.stdout.splitlines() if ln.startswith(("int8, MoE 0", "int4, MoE 0"))]
    assert len(blocks) == 2 and "weight err (mean / max)" in wide.stdout, narrow.stdout
    row = next(ln for ln in wide.stdout.splitlines() if "int4" in ln and "│" in ln)
    size, ratio = (c.strip() for c in row.split("│")[5:7])
    assert f"per expert {size} · vs fp16 {ratio}" in narrow.stdout, narrow.stdout


def test_simulate_pads_no_line_with_spaces_at_80_columns(trace_file):
    """simulate's title was left-justified by rich, so filled with spaces to the table's width ("misses  ",
    "64 tokens" + 60 spaces), and its counts line kept the space where rich broke it: piped, lines ended in them."""
    from advisor.cli import app

    res = CliRunner().invoke(app, ["simulate", str(trace_file), "--prefetch", "lookahead"], env={"COLUMNS": "80"})
    assert res.exit_code == 0, res.output
    lines = res.stdout.splitlines()
    assert lines[0].startswith(f"{trace_file.name}: slots 50% (= 4 per layer)"), lines
    assert any(ln.startswith("counts: counted") for ln in lines) and max(map(len, lines)) <= 80, res.stdout
    assert [ln for ln in lines if ln.endswith(" ")] == [], res.stdout


def test_quant_report_per_expert_shows_each_experts_error_once(tmp_path):
    """`quant-report --per-expert` showed "mean / max" of a group of one expert: the same number twice
    ("0.0041 / 0.0041"). Each row there now shows its one error, under headers without "(mean / max)"."""
    import json

    from advisor.cli import app

    js = tmp_path / "r.json"
    args = ["quant-report", "tiny:qwen3_moe", "--layers", "0", "--max-experts", "2", "--formats", "int4",
            "--threads", "1", "--per-expert", "--json", str(js)]
    wide = CliRunner().invoke(app, [*args, "--wide"], env={"COLUMNS": "200"})
    narrow = CliRunner().invoke(app, args, env={"COLUMNS": "80"})
    assert wide.exit_code == 0 == narrow.exit_code, wide.output + narrow.output
    assert " / " not in wide.stdout and "mean / max" not in narrow.stdout, wide.stdout + narrow.stdout
    rows = json.loads(js.read_text())["rows"]
    table = [ln for ln in wide.stdout.splitlines() if ln.lstrip("│ ").startswith("int4")]
    assert len(table) == len(rows) == 2, wide.stdout
    for line, r in zip(table, rows, strict=True):
        cells = [c.strip() for c in line.strip("│ ").split("│")]
        assert cells[-2:] == [f"{r['weight_rel_err']:.4f}", f"{r['output_rel_err']:.4f}"], line



def test_profile_says_when_its_threads_were_held_up_by_other_work(tmp_path, monkeypatch):
    """`advisor profile --model M --threads 2` on a 2-core host other jobs shared stored 20-32 ms per CPU expert
    where one thread took 0.02-0.8 ms (the threads wait for each other while the cores run other work), and
    said nothing: every hybrid/cpu decision priced with it was wrong. Each format's smallest and largest token
    count is now measured again on one thread, and a profile several times slower on more threads says so.
    Here the slowdown is made deterministic: the expert forward sleeps when torch runs on more than one thread."""
    import time

    import torch

    from advisor.cli import app
    from advisor.offload import cpu_experts

    forward = cpu_experts.CpuExpert.__call__

    def held_up(self, x, *a, **kw):
        if torch.get_num_threads() > 1:
            time.sleep(0.004)  # a time slice spent waiting for the other thread
        return forward(self, x, *a, **kw)

    monkeypatch.setattr(cpu_experts.CpuExpert, "__call__", held_up)
    threads = torch.get_num_threads()
    try:
        args = ["profile", "--cpu", "--repeats", "1", "--expert-shape", "32x16"]
        busy = CliRunner().invoke(app, [*args, "--profiles-dir", str(tmp_path / "p2"), "--threads", "2"])
        one = CliRunner().invoke(app, [*args, "--profiles-dir", str(tmp_path / "p1"), "--threads", "1"])
    finally:
        torch.set_num_threads(threads)
    assert busy.exit_code == 0, busy.output
    note = " ".join(busy.stderr.split()).partition("note: CPU expert times measured on 2 threads")[2]  # wrapped
    assert "x one thread's" in note and "with fewer --threads" in note, busy.stderr
    assert list((tmp_path / "p2").glob("*.json")), "the profile is still saved, with the note"
    assert one.exit_code == 0 and "note: CPU expert times" not in one.output + one.stderr, one.output


def test_profile_reads_a_checkpoints_expert_shapes_without_loading_its_experts(tmp_path, monkeypatch):
    """`advisor profile --model DIR` (the README's first step for a real model) loaded the whole checkpoint into
    host RAM - every expert of a 7B model - to read four numbers, and on a machine without CUDA it did so before
    saying `no CUDA device here`. Now the checkpoint loads offloaded (its experts stay in the files), and
    without CUDA and --cpu nothing loads."""
    import torch

    from advisor.cli import app
    from advisor.models import load, tiny

    if torch.cuda.is_available():
        pytest.skip("the no-CUDA refusal needs a machine without CUDA")
    d = tmp_path / "m"
    tiny.build_tiny("llada_moe").save_pretrained(str(d))
    calls: list[dict] = []
    real = load.load_model

    def recording(spec, **kw):
        calls.append(kw)
        return real(spec, **kw)

    monkeypatch.setattr(load, "load_model", recording)
    r = CliRunner().invoke(app, ["profile", "--model", str(d)])
    assert isinstance(r.exception, UserError) and "no CUDA device here" in str(r.exception), r.output
    assert calls == [], calls  # refused before the model loaded
    r = CliRunner().invoke(app, ["profile", "--cpu", "--repeats", "1", "--model", str(d), "--profiles-dir",
                                 str(tmp_path / "p")])
    assert r.exit_code == 0, r.output
    assert [c.get("offload") for c in calls] == [True], calls
    assert "CPU expert 32x16" in r.output, r.output


def test_report_says_a_precision_left_out_by_the_budget_cannot_fit_it(tmp_path):
    """A study of tiny:llada2 at 144 KiB: its fp16 experts cannot fit (139.06 KiB resident + one 3 KiB expert
    per each of 2 MoE layers = 145.06 KiB, counted), so `tune` leaves fp16 out of the search, and the report's
    headline said "fp16: no trial of this precision in the study", as if no one had run it. It says the format
    cannot fit the budget, with the counted bytes; the formats that fit keep their trials."""
    (tmp_path / "space.toml").write_text(FIDELITY_SPACE)
    r = _cli("tune", "tiny:llada2", "--space", "space.toml", "--budget", "144KiB", "--trials", "3",
             "--storage", "sqlite:///s.db", "--study", "f", cwd=tmp_path)
    assert r.returncode == 0, r.stdout + r.stderr
    assert "expert precision: fp16 left out - cannot fit one expert per layer in the budget" in " ".join(
        (r.stdout + r.stderr).split()), r.stdout + r.stderr
    r = _cli("report", "f", "--storage", "s.db", "-o", "rep", "--block-lengths", "", cwd=tmp_path)
    assert r.returncode == 0, r.stdout + r.stderr
    said = " ".join(r.stdout.split())
    assert ("fp16: cannot fit in 144.00 KiB: even its least configuration (the resident weights and one fp16 "
            "expert per MoE layer) needs 145.06 KiB (counted); the study has no trial of it") in said, r.stdout
    assert "no trial of this precision" not in said and "int8: trial #" in said, r.stdout
    assert max(map(len, r.stdout.splitlines())) <= 80, r.stdout  # wrapped at the terminal's width, 80 here
    md = " ".join((tmp_path / "rep" / "report.md").read_text().split())
    assert "fp16: cannot fit in 144.00 KiB: even its least configuration" in md and "needs 145.06 KiB (counted)" in md


def test_report_cannot_fit_row_is_not_said_of_a_format_whose_stored_trial_needs_less(tmp_path):
    """A `--budgets 1%` study of tiny:qwen3_moe holds bf16 baseline trials with no expert on the GPU (90.75 KiB,
    counted), below bf16's one-slot-per-layer least (96.75 KiB). At --memory 90.5KiB the headline said "bf16:
    cannot fit in 90.50 KiB: even its least configuration ... needs 96.75 KiB" beside the baseline rows' 90.8 KiB:
    its own study contradicts it. Such a row says no trial of it fits; the formats with no such trial keep it."""
    r = _cli("tune", "tiny:qwen3_moe", "--space", "quick", "--budget", "200KiB", "--trials", "13", "--budgets", "1%",
             "--storage", "sqlite:///s.db", "--study", "q", cwd=tmp_path)
    assert r.returncode == 0, r.stdout + r.stderr
    r = _cli("report", "q", "--storage", "s.db", "-o", "rep", "--block-lengths", "", "--memory", "90.5KiB,1%",
             cwd=tmp_path)
    assert r.returncode == 0, r.stdout + r.stderr
    head = flat(r.stdout.split("at 1% (")[0])
    assert "bf16: no trial of this precision fits" in head and "bf16: cannot fit" not in head, r.stdout
    assert "int8: cannot fit in 90.50 KiB: even its least configuration" in head, r.stdout


def test_report_counts_a_formats_least_configuration_in_the_studys_own_space(tmp_path):
    """An offloaded checkpoint tuned with the quick space, whose misses are only copied (each stages a layer's
    streamed experts), at 124 KiB: tune leaves bf16, int8 and int4 out - not even one slot per layer fits. The
    report counted each format's least configuration with misses computed on the CPU (no staging), which the
    space does not hold, and on the model loaded whole (no activation allowance): int4 "needed" 118 KiB, under
    the budget, so its row read "no trial of this precision in the study", as if no one had tried. It counts the
    study's own space and peaks now, and says what it counted."""
    from advisor.models import tiny

    tiny.build_tiny("qwen3_moe").save_pretrained(str(tmp_path / "ckpt"))
    r = _cli("tune", "ckpt", "--offload", "--space", "quick", "--budget", "124KiB", "--trials", "3",
             "--storage", "sqlite:///s.db", "--study", "q", cwd=tmp_path)
    assert r.returncode == 0, r.stdout + r.stderr
    assert "int4 left out - cannot fit one expert per layer" in flat(r.stdout + r.stderr), r.stdout + r.stderr
    r = _cli("report", "q", "--storage", "s.db", "-o", "rep", "--block-lengths", "", cwd=tmp_path)
    assert r.returncode == 0, r.stdout + r.stderr
    said = flat(r.stdout)
    assert "no trial of this precision" not in said and "int2: trial #" in said, r.stdout
    for fmt in ("int8", "int4"):
        counted = (f"{fmt}: cannot fit in 124.00 KiB: even its least configuration (the resident weights, the "
                   f"activation allowance, one {fmt} expert per MoE layer and the staging buffers of its copied "
                   "misses) needs ")
        assert counted in said, r.stdout
        need = float(said.split(counted)[1].split(" KiB (counted)")[0])
        assert need > 124, said
    assert counted in flat((tmp_path / "rep" / "report.md").read_text())


def test_report_counts_a_resident_studys_least_configuration_resident_where_it_loads_offloaded(tmp_path,
                                                                                             monkeypatch):
    """A checkpoint tuned `--resident` at 95 KiB: bf16 is left out (one slot per layer needs 96.75 KiB, counted
    resident). Reported on a host without the RAM to load it whole, the report loads it offloaded and counted the
    least configuration with an activation allowance and staging the study never counted: "needs 143.01 KiB" (the
    row is labelled fp16, the report's 16-bit row). It counts as the study did, whichever way the model loads."""
    from advisor.models import load, tiny

    tiny.build_tiny("qwen3_moe").save_pretrained(str(tmp_path / "ckpt"))
    r = advisor_in_process("tune", "ckpt", "--resident", "--space", "quick", "--budget", "95KiB", "--trials", "2",
                           "--storage", "s.db", "--study", "q", cwd=tmp_path)
    assert r.returncode == 0 and "bf16 left out" in flat(r.stdout), r.stdout + r.stderr
    monkeypatch.setattr(load, "device_free_bytes", lambda device: 1)  # no room here: the report loads it offloaded
    r = advisor_in_process("report", "q", "--storage", "s.db", "-o", "rep", "--block-lengths", "", cwd=tmp_path)
    assert r.returncode == 0, r.stdout + r.stderr
    assert ("fp16: cannot fit in 95.00 KiB: even its least configuration (the resident weights and one fp16 expert "
            "per MoE layer) needs 96.75 KiB (counted)") in flat(r.stdout), r.stdout


def test_report_summary_says_what_fits_means_and_when_nothing_fits(tmp_path):
    """`advisor report STUDY --memory 10%,25%,50%` on a study whose trials fit only the largest printed
    "fp16: no trial of this precision fits" without saying fits what, and "  at 10%: " with nothing after it.
    The summary now states the headline's GPU memory, each budget's size, and "no stored trial fits"; the report's
    markdown states the headline's memory as its rows do."""
    (tmp_path / "space.toml").write_text(FIDELITY_SPACE)
    r = _cli("tune", "tiny:llada2", "--space", "space.toml", "--budget", "200KiB", "--trials", "3",
             "--storage", "sqlite:///s.db", "--study", "f", cwd=tmp_path)
    assert r.returncode == 0, r.stdout + r.stderr
    r = _cli("report", "f", "--storage", "s.db", "-o", "rep", "--block-lengths", "", "--memory", "1KiB,200KiB",
             cwd=tmp_path)
    assert r.returncode == 0, r.stdout + r.stderr
    lines = r.stdout.splitlines()
    # one text of the budget throughout: the headline said "at 1.0 KiB" above its rows' "cannot fit in 1.00 KiB"
    assert any(ln.startswith("  at 1.00 KiB of GPU memory (1KiB, given with --memory),") for ln in lines), r.stdout
    assert "at 1.00 KiB of GPU memory (1KiB, given with --memory), against fp16 without cache: fp16: cannot fit " \
           "in 1.00 KiB" in " ".join(r.stdout.split()), r.stdout  # broken between its parts at 80 columns
    assert "  at 1KiB (1.00 KiB): no stored trial fits" in lines, r.stdout
    [at] = [i for i, ln in enumerate(lines) if ln.startswith("  at 200KiB (200.00 KiB), against ")]
    big = lines[at + 1]
    assert big.startswith("    ") and " #" in big and "transfer cut" in big and "(counted)" in big, big
    md = " ".join((tmp_path / "rep" / "report.md").read_text().split())
    assert "Reference memory: **1.00 KiB**" in md and "1KiB = 1.00 KiB; 200KiB = 200.00 KiB" in md, md[:3000]


@pytest.mark.parametrize("slots", ["5_0%", "1e1%", "0.5e0"])
def test_simulate_slots_share_takes_the_number_syntax_of_shares(trace_file, slots):
    """A share of --slots is read as `tune --budgets`' and `report --memory`'s shares are (`advisor.units.DECIMAL`):
    float() took '5_0%' as 50%, '1e1%' as 10% and '0.5e0' as half, which those refuse."""
    from advisor.cli import app

    r = CliRunner().invoke(app, ["simulate", str(trace_file), "--policy", "lru", "--slots", slots])
    assert isinstance(r.exception, UserError), (r.exit_code, r.output)
    assert str(r.exception).startswith(f"bad slots '{slots}': not a number"), str(r.exception)
