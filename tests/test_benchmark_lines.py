"""What the benchmark scripts print, run as the README runs them (`python -m benchmarks.<name>`)."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]


def _bench(*args: str, timeout: float = 120) -> list[str]:
    r = subprocess.run([sys.executable, "-m", *args], cwd=ROOT, capture_output=True, text=True, timeout=timeout)
    assert r.returncode == 0, r.stdout + r.stderr
    return r.stdout.strip().splitlines()


def test_trace_scale_loop_line_prints_only_what_it_measured():
    """The loop line printed a remembered '33 ns on this host when idle' beside the measured figure, in every
    run, on every host (the idle run it named measured 23 ns): only the measured number, with its source."""
    lines = _bench("benchmarks.trace_scale", "--tokens", "256")
    loop = [ln for ln in lines if ln.startswith("python loop ")]
    assert len(loop) == 1, lines
    assert "measured:wall-clock" in loop[0] and "33 ns" not in loop[0], loop[0]
    assert lines[-1].startswith("RESULT bytes_per_lookup_disk="), lines[-1]


def test_offload_strategies_limit_row_copies_nothing():
    """The 'limit (all resident, bf16)' row is timed as device compute only, but printed the cold-start
    replay's hit rate (0.984) and first-touch copies (0.05 MiB/token) beside it: an all-resident row that
    copies. Every expert resident means every look-up hits and nothing is copied."""
    import json

    from advisor.models import tiny
    from advisor.models.load import loaded_from
    from advisor.offload.timing import CpuProfile
    from advisor.offload.trace import record_random_prompts
    from benchmarks.offload_strategies import Case, link_profile

    loaded = loaded_from(tiny.llada_moe_shaped(0), None, "llada_moe", "llada-moe-shaped")
    trace = record_random_prompts(loaded, 1, max_new_tokens=8, block_length=8, steps=8)
    saved = ROOT / "benchmarks" / "results" / "2026-12-04_cpu-2-cores-shared_offload_strategies.json"
    cpu = CpuProfile.from_dict(json.loads(saved.read_text())["cpu_profile"])
    case = Case(trace, (2048, 1024), 0.25, cpu, link_profile())
    cold = case.run("bf16", max(case.ne), "lru", "copy")
    assert cold["h2d_bytes_per_token"] > 0  # the replay behind the row does start empty
    lim = case.limit()
    assert lim["hit_rate"] == 1.0 and lim["h2d_bytes_per_token"] == 0.0, lim
    assert lim["ms_per_token"] == lim["terms_per_token"]["gpu_ms"] < cold["ms_per_token"]
    # the saved terms are the row's too: device compute only (they kept the cold replay's copy time)
    assert cold["terms_per_token"]["copy_ms"] > 0
    assert {k: v for k, v in lim["terms_per_token"].items() if v} == {"gpu_ms": lim["ms_per_token"],
                                                                       "layer_ms": lim["ms_per_token"]}


def test_every_listed_benchmark_ends_with_a_result_line():
    """quant_formats, accuracy_vs_precision and cli_speed printed only their tables, where every other script the
    README lists ends with `RESULT name=value ...`: the line each run is compared by (smallest runs here)."""
    runs = {
        "benchmarks.quant_formats": (["--repeats", "1", "--formats", "bf16,int4"],
                                     ["bf16_vs_fp16=1.000", "int4_rel_err=", "formats_failed=0"]),
        "benchmarks.accuracy_vs_precision": (["--limit", "2", "--formats", "fp32,int2"],
                                             ["fp32_accuracy=", "fp32_kl=0.00e+00", "int2_top1=", "n=2"]),
        "benchmarks.cli_speed": (["--runs", "1", "--points", "20"],
                                 ["recommend_wall_s=", "help_wall_s=", "recommend_cpu_s=", "help_cpu_s="]),
    }
    for module, (args, keys) in runs.items():
        last = _bench(module, *args)[-1]
        assert last.startswith("RESULT ") and all(k in last for k in keys), (module, last)
        assert all("=" in kv for kv in last.split()[1:]), (module, last)



def test_big_model_child_peak_rss_is_its_own(tmp_path):
    """big_model's per-plan child (`--child PATH PLAN`) took getrusage's ru_maxrss as its peak RSS; Linux carries
    that over from the parent, and the parent had just written the checkpoints (holding a shard), so a fresh
    `--quick` run reported peak_rss_ratio 1.9-4.4 where the same children measure 1.1 after an earlier run
    wrote them. Here the parent holds 1.2 GiB before it starts the child (which peaks near 0.5 GiB)."""
    import json

    from benchmarks.big_model import SHAPES, write_checkpoint

    path = tmp_path / "list-quick"
    write_checkpoint(path, "list", SHAPES["quick"])
    # the official config.json names the class: llama.cpp's convert_hf_to_gguf.py refused the checkpoint without it
    assert json.loads((path / "config.json").read_text())["architectures"] == ["LLaDAMoEModelLM"]
    parent = (
        "import subprocess, sys\n"
        "held = bytearray(1200 * 2**20)\n"
        "for i in range(0, len(held), 4096):\n"
        "    held[i] = 1\n"
        f"cmd = [sys.executable, 'benchmarks/big_model.py', '--child', {str(path)!r}, 'int4']\n"
        "print(subprocess.run(cmd, capture_output=True, text=True, check=True).stdout)\n"
    )
    r = subprocess.run([sys.executable, "-c", parent], cwd=ROOT, capture_output=True, text=True, timeout=300)
    assert r.returncode == 0, r.stderr[-3000:]
    child = json.loads(r.stdout.strip().splitlines()[-1])
    assert child["rss_after_imports"] < child["peak_rss"] < 1024 * 2**20, child


def test_gpu_check_counts_skipped_sections_apart(tmp_path):
    """Without CUDA every section's gpu_checks() returns {"skipped": ...}, which gpu_check counted as ok:
    `RESULT sections_ok=4 sections_run=4` on a CPU-only host that measured nothing."""
    import pytest
    import torch

    if torch.cuda.is_available():
        pytest.skip("the sections measure on a CUDA host")
    lines = _bench("benchmarks.gpu_check", "--only", "quant,eval", "--out", str(tmp_path))
    assert any(ln.startswith("[quant] skipped: CUDA not available") for ln in lines), lines
    assert lines[-1] == "RESULT sections_ok=0 sections_skipped=2 sections_run=2", lines[-1]


def test_every_benchmark_script_has_committed_output_named_by_date_and_device():
    """Speed targets live in benchmarks/ and their output is committed under benchmarks/results/ with date and
    device: quant_formats and cli_speed had none (their RESULT lines were never kept). Each script's output is a
    file or folder `YYYY-MM-DD_DEVICE_<name>...`, its name the script's (or the one below, for a GPU script whose
    files say what it measured)."""
    import re

    results = ROOT / "benchmarks" / "results"
    named = re.compile(r"^(\d{4}-\d{2}-\d{2})_(cpu(?:-[\w-]+?)?|h100|h200)_(.+)$")
    outputs = {}
    for p in results.iterdir():
        m = named.match(p.name)
        assert m, f"benchmarks/results/{p.name} does not start with its date and device"
        outputs.setdefault(m.group(3), []).append(p.name)
    other_name = {"offload_gpu": "offload.json", "gpu_miss_study": "miss_study"}
    scripts = sorted(p.stem for p in (ROOT / "benchmarks").glob("*.py") if p.stem != "__init__")
    missing = [s for s in scripts if not any(rest.startswith(other_name.get(s, s)) for rest in outputs)]
    assert missing == [], f"no committed output under benchmarks/results/ for {missing}"


def test_readme_quotes_the_newest_trace_scale_and_offload_strategies_runs():
    """Both scripts were fixed after their committed runs (the loop line's remembered '33 ns', the limit row's
    hit rate and copies), and the README quoted only those runs. Each is rerun; the README cites the newest dated
    output and quotes its figures (offload_strategies: its RESULT line; trace_scale: the replay speed range)."""
    import re

    readme = " ".join((ROOT / "README.md").read_text().split())
    results = ROOT / "benchmarks" / "results"
    newest = {name: max(results.glob(f"????-??-??_cpu*_{name}.txt")) for name in ("trace_scale", "offload_strategies")}
    for path in newest.values():
        assert f"(benchmarks/results/{path.name})" in readme, path.name
    result = newest["offload_strategies"].read_text().strip().splitlines()[-1]
    assert result.startswith("RESULT ") and f"`{result}`" in readme, result
    run = newest["trace_scale"].read_text()
    assert "33 ns" not in run
    speeds = [float(s) for s in re.findall(r"^  replay \w+ +([\d.]+) M look-ups/s", run, flags=re.M)]
    assert f"{min(speeds):.2f}-{max(speeds):.2f} M look-ups/s per policy on {newest['trace_scale'].name[:10]}" in readme


def test_readme_cpu_expert_times_are_the_newest_offload_strategies_profile():
    """'Where CPU execution stands here' quoted the 2026-12-03 run's CPU profile (0.84/0.31/0.27 ms) after two
    re-runs measured their own: the times it quotes are the newest run's, from the JSON it links."""
    import json
    import re

    readme = " ".join((ROOT / "README.md").read_text().split())
    m = re.search(r"one LLaDA-MoE-shaped expert for one token in ([\d.]+) ms \(bf16\), ([\d.]+) ms \(int8\) and "
                  r"([\d.]+) ms \(int4\) \([^\[]*\[the benchmark's JSON\]\(benchmarks/results/([^)]+)\)", readme)
    assert m, "the README's CPU expert time sentence changed; update this test with it"
    newest = max((ROOT / "benchmarks" / "results").glob("????-??-??_cpu*_offload_strategies.json"))
    assert m.group(4) == newest.name
    table = json.loads(newest.read_text())["cpu_profile"]["table"]["2048x1024"]
    one_token = {fmt: dict(rows)[1] for fmt, rows in table.items()}
    assert tuple(map(float, m.group(1, 2, 3))) == tuple(float(f"{one_token[f]:.2g}") for f in ("bf16", "int8", "int4"))


def test_readme_cpu_only_baseline_ratios_are_the_newest_offload_strategies_run():
    """'Where CPU execution stands here' gives how much slower every CPU-only baseline is than Mixtral-offloading-
    style's copying, fused and eager device model: typed by hand, so recomputed here from the newest committed
    output (each cell's CPU-only strategy time over that cell's Mixtral-offloading-style time), to the
    decimals the README gives."""
    import re

    readme = " ".join((ROOT / "README.md").read_text().split())
    m = re.search(r"is ([\d.]+)-([\d.]+)x slower than Mixtral-offloading-style's copying with the fused device model "
                  r"\([^)]*\)\. With the eager one it is ([\d.]+)-([\d.]+)x", readme)
    assert m, "the README's CPU-only baseline sentence changed; update this test with it"
    newest = max((ROOT / "benchmarks" / "results").glob("????-??-??_cpu*_offload_strategies.txt"))
    ratios: dict[str, list[float]] = {"fused": [], "eager": []}
    cell: dict[str, float] = {}
    device = ""
    for line in newest.read_text().splitlines() + [""]:
        if (head := re.match(r"^\S+ at \d+% of bf16 expert bytes .*device model (\w+):", line)) or not line.strip():
            if "Mixtral-offloading-style" in cell:
                ratios[device] += [t / cell["Mixtral-offloading-style"] for s, t in cell.items()
                                   if s in ("Fiddler-style", "TIDE-style", "llama.cpp-style")]
            cell, device = {}, head.group(1) if head else ""
        elif (row := re.match(r"^\s+(\S+-style) \(.*?\)\s+([\d.]+)\s", line)) and device:
            cell[row.group(1)] = float(row.group(2))
    def decimals(text: str) -> int:
        return len(text.partition(".")[2])

    for (low, high), device in ((m.group(1, 2), "fused"), (m.group(3, 4), "eager")):
        got = min(ratios[device]), max(ratios[device])
        assert (float(low), float(high)) == (round(got[0], decimals(low)), round(got[1], decimals(high))), (device, got)


def test_gpu_check_time_limit_is_not_swallowed_by_a_section(tmp_path, monkeypatch):
    """Sections go on past one item's error (`except Exception` per tiny family, per format), and the time limit's
    exception was an Exception: a section over its limit took it for one item's error and ran on, unbounded, on
    a lent GPU's few minutes. The limit now ends the section."""
    import json
    import time
    import types

    from benchmarks import gpu_check

    def keeps_going() -> dict:
        done = []
        end = time.perf_counter() + 4
        while time.perf_counter() < end:
            try:
                time.sleep(0.05)
                done.append(1)
            except Exception as e:  # what tiny.gpu_checks and quant_formats do per item
                done.append(str(e))
        return {"done": len(done)}

    module = types.ModuleType("fake_gpu_section")
    module.keeps_going = keeps_going
    monkeypatch.setitem(sys.modules, "fake_gpu_section", module)
    monkeypatch.setattr(gpu_check, "SECTIONS", {"slow": ("fake_gpu_section", "keeps_going", 1)})
    monkeypatch.setattr(sys, "argv", ["gpu_check", "--out", str(tmp_path)])
    t0 = time.perf_counter()
    gpu_check.main()
    section = json.loads((tmp_path / "gpu_results.json").read_text())["sections"]["slow"]
    assert section["status"] == "timeout after 1s", section
    assert time.perf_counter() - t0 < 3.5


def test_gpu_miss_study_checkpoint_is_kept_apart_per_shape(tmp_path, monkeypatch):
    """The study's checkpoint was `<work>/llada-moe-shaped` whatever its shape, and `write_checkpoint` keeps a
    finished one: a `--small` dry run in the default --work left its 16-expert checkpoint there, and the GPU
    run after it studied that instead of the LLaDA-MoE shape, without a word. Each shape has its own now."""
    import torch

    import benchmarks.big_model
    from benchmarks import gpu_miss_study

    written = []

    def record(path, layout, s, seed=0):
        written.append((path, s["experts"]))
        raise RuntimeError("stop here")

    monkeypatch.setattr(benchmarks.big_model, "write_checkpoint", record)
    out, work = str(tmp_path / "out"), str(tmp_path / "work")
    threads = torch.get_num_threads()  # main sets every core's
    try:
        for small in (["--small"], []):
            gpu_miss_study.main(["--device", "cpu", "--only", "study", "--out", out, "--work", work, *small])
    finally:
        torch.set_num_threads(threads)
    assert [e for _, e in written] == [16, 64], written
    assert written[0][0] != written[1][0], written


def test_exports_in_runtimes_says_skip_for_a_llama_cpp_part_it_did_not_run(tmp_path):
    """Without a cached llama.cpp build the script prints "no cached build" and runs no llama.cpp check, yet its
    RESULT line said llama_cpp_types_ok=0, a failed check, where the vLLM part it cannot run says skip. It says
    skip now."""
    r = subprocess.run([sys.executable, "benchmarks/exports_in_runtimes.py", "--llama-cpp", str(tmp_path / "none"),
                        "--workdir", str(tmp_path / "work")], cwd=ROOT, capture_output=True, text=True, timeout=600)
    assert r.returncode == 0, r.stdout + r.stderr
    lines = r.stdout.strip().splitlines()
    assert any(ln.startswith("[llama.cpp] no cached build in ") for ln in lines), lines
    assert lines[-1].startswith("RESULT llama_cpp_types_ok=skip hf_recipes_ok="), lines[-1]
