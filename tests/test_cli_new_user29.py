"""Found by a new user (pass 29) with an RTX 4090, an RTX 3060 12GB, an L4 and an A10G, reading README's GPU and
budget options and what every printed number means (2026-12-07)."""

from __future__ import annotations

import re

from cli_helpers import advisor_entry, one_error_line


def test_inspect_budget_given_as_a_share_says_it_takes_a_size(tmp_path):
    """`inspect bundled --budget 80%` said "--budget '80%' is not a size; use e.g. 12GiB", though `tune` and
    `recommend` say that --budget takes a size, not a share, and what to give. inspect now says so too, before the
    model loads; 0% is still "must be positive", as 0B is."""
    r = advisor_entry("inspect", "bundled", "--budget", "80%", cwd=tmp_path)
    line = one_error_line(r, "--budget takes a size (e.g. 24GiB), not a share", "`advisor profile --list`")
    assert "is not a size" not in line, line
    one_error_line(advisor_entry("inspect", "bundled", "--budget", "0%", cwd=tmp_path), "'0%' must be positive")


def test_readme_says_where_a_hardware_profiles_figures_come_from_and_quotes_the_catalogue():
    """README's "What every number means" listed every metric's source but not a hardware profile's own
    (`catalogue (nominal)`, `measured:`, `measured-cpu:`), which `profile --list`, `simulate`, `recommend` and
    `tune`'s header print, nor `modelled:host-copy(...)`, the transfer label of a CPU profile. It now does, quoting
    four catalogue rows; this checks those quoted figures against the catalogue (tests only: README text)."""
    import re
    from pathlib import Path

    from advisor.hardware.profiles import NOMINAL, get_gpu

    readme = (Path(__file__).parent.parent / "README.md").read_text()
    section = " ".join(readme.split("\n## What every number means")[1].split("\n## ")[0].split())
    for source in ("`catalogue (nominal)`", "`measured:DATE cuda-events", "`measured-cpu:DATE host memcpy",
                   "`modelled:host-copy(bw=…,lat=…)`"):
        assert source in section, source
    quoted = re.search(r"from the vendor's spec sheet \((RTX 4090: [^)]*)\)", section).group(1)
    for row in quoted.split("; "):
        name, figures = row.split(": ")
        bw, tflops = (float(x.split()[0]) for x in figures.split(", "))
        dev = NOMINAL[get_gpu(name, "/nonexistent").name]
        assert (dev.mem_gbps, dev.tflops) == (bw, tflops), (name, dev)


def test_inspect_fit_table_headers_are_not_cut_at_80_columns(monkeypatch):
    """`inspect Qwen3-30B-A3B/config.json --budget 24GB` at 80 columns (or piped) headed both slot columns
    "slots/laye…": rich narrows the columns to about 11 cells where a host RAM cell says "needs 54.0 GiB", and the
    header's word "slots/layer," is 12. No header word is wider than "slots/layer" now. fit_table is what inspect
    prints (called directly with that model's counted shape: through the CLI the config-only model's activation
    probe takes a minute)."""
    import io

    from rich.console import Console

    import advisor.models.load as load
    from advisor.commands.models import fit_table
    from advisor.terminal import print_table
    from advisor.tune.config import ModelShape

    monkeypatch.setattr(load, "host_available_bytes", lambda: 16 * 2**30)  # less than bf16's and int8's stores
    shape = ModelShape(num_experts=(128,) * 48, top_k=(8,) * 48, hidden=(2048,) * 48, intermediate=(768,) * 48,
                       native_format="bf16", resident_bytes=int(2.87 * 2**30), activation_bytes=4 << 20, staging=True)
    out = io.StringIO()
    print_table(Console(file=out, width=80), fit_table(shape, 24 * 10**9, "probe", "--budget 24GB"))
    text = out.getvalue()
    assert "…" not in text and "needs 54.0" in text, text
    assert text.count("slots/layer") == 2 and "(copied" in text and "(CPU" in text, text
    assert max(len(line) for line in text.splitlines()) <= 80, text


def test_the_loading_note_labels_the_free_memory_it_measured(tmp_path):
    """`inspect MODEL` without --budget said "loading: resident: the whole model on cpu (counted 7.23 MiB of
    checkpoint tensors <= free cpu memory 18.68 GiB)": the counted side labelled, the measured one not (inspect's
    fit table and tune's header say "available RAM, measured now" of the same number). It is labelled now."""
    from cli_helpers import advisor_in_process, flat

    r = advisor_in_process("inspect", "bundled", cwd=tmp_path)
    assert r.returncode == 0, r.stdout + r.stderr
    assert re.search(r"<= free cpu memory [0-9.]+ [KMGT]iB \(available RAM, measured now\)\)", flat(r.stdout)), r.stdout


def test_nvidia_smis_rtx_3060_is_two_cards_and_neither_is_assumed(tmp_path):
    """nvidia-smi names the 8GB RTX 3060 (128-bit, 240 GB/s) and the 12GB one (192-bit, 360 GB/s) alike, "NVIDIA
    GeForce RTX 3060", and the catalogue held the 12GB card alone: `--gpu "NVIDIA GeForce RTX 3060"` on an 8GB card
    budgeted 12.00 GiB and priced 360 GB/s. That name, or `3060`, is ambiguous now, as `RTX 4060 Ti` is (8/16GB);
    with the memory each card is its own."""
    from cli_helpers import flat
    from example_study import EXAMPLE_DB

    db = str(EXAMPLE_DB)
    for name in ("NVIDIA GeForce RTX 3060", "3060"):
        one_error_line(advisor_entry("recommend", "--storage", db, "--gpu", name, cwd=tmp_path),
                       f"GPU '{name}' is ambiguous: RTX 3060 8GB, RTX 3060 12GB; add the memory")
    for name, fits in (("RTX 3060 8GB", "fits 8.00 GiB (--gpu RTX 3060 8GB, catalogue (nominal))"),
                       ("NVIDIA GeForce RTX 3060 12GB", "fits 12.00 GiB (--gpu RTX 3060 12GB, catalogue (nominal))")):
        r = advisor_entry("recommend", "--storage", db, "--gpu", name, cwd=tmp_path)
        assert r.returncode == 0 and fits in flat(r.stdout), r.stdout + r.stderr
    listed = flat(advisor_entry("profile", "--list", "--profiles-dir", "p", cwd=tmp_path).stdout)
    assert "RTX 3060 8GB: 8.00 GiB" in listed and "device 240 GB/s 25.5 TFLOP/s bf16" in listed, listed


def test_a_budget_over_the_cards_memory_is_named_as_typed(tmp_path):
    """`recommend --gpu 4090 --budget 30GB` (and tune) said "--budget 27.94 GiB is more than the RTX 4090 24GB's
    memory": 30GB is SI, so the bytes were right, but the user typed no 27.94 GiB. The refusal names the value as
    typed beside its bytes now, as tune's header and recommend's reasons do: "27.94 GiB (--budget 30GB)"."""
    from example_study import EXAMPLE_DB

    for cmd in (("recommend", "--storage", str(EXAMPLE_DB)), ("tune", "--storage", str(tmp_path / "s.db"))):
        r = advisor_entry(*cmd, "--gpu", "4090", "--budget", "30GB ", cwd=tmp_path)
        one_error_line(r, "error: 27.94 GiB (--budget 30GB) is more than the RTX 4090 24GB's memory (24.00 GiB, "
                          "catalogue (nominal))")
    assert not (tmp_path / "s.db").exists()


def test_the_v100_sxm2_v100s_and_rtx_3080_ti_are_priced_by_rows_of_their_own(tmp_path):
    """nvidia-smi's 'Tesla V100-SXM2-16GB' was priced by the PCIe card's row (112 fp16 TFLOP/s, not the SXM2's
    125); 'Tesla V100S-PCIE-32GB' (1134 GB/s) and 'NVIDIA GeForce RTX 3080 Ti' (12 GB, 912 GB/s) were unknown
    GPUs. Each has its row now, the Volta ones priced at fp16 (no bf16 tensor cores)."""
    from example_study import EXAMPLE_DB

    from advisor.hardware.profiles import NOMINAL

    for typed, row, figures in (("Tesla V100-SXM2-16GB", "V100 SXM 16GB", (900, 125, "fp16")),
                                ("Tesla V100S-PCIE-32GB", "V100S 32GB", (1134, 130, "fp16")),
                                ("NVIDIA GeForce RTX 3080 Ti", "RTX 3080 Ti 12GB", (912, 68.2, "bf16"))):
        r = advisor_entry("recommend", "--storage", str(EXAMPLE_DB), "--gpu", typed, cwd=tmp_path)
        assert r.returncode == 0 and f"(--gpu {row}, catalogue (nominal))" in " ".join(r.stdout.split()), r.stdout
        dev = NOMINAL[row]
        assert (dev.mem_gbps, dev.tflops, dev.dtype) == figures


def test_inspect_says_an_autoregressive_model_has_no_mask_token_not_none():
    """inspect printed 'mask token: None' for an autoregressive model (and DiffusionGemma, whose denoising starts
    from random tokens), which reads as a setting missing from its config."""
    from typer.testing import CliRunner

    from advisor.cli import app

    for spec, said in (("tiny:qwen3_moe", "no mask token (autoregressive);"),
                       ("tiny:diffusion_gemma", "no mask token (its denoising starts from random tokens);")):
        res = CliRunner().invoke(app, ["inspect", spec], terminal_width=200)
        assert res.exit_code == 0 and said in res.output and "None" not in res.output, res.output
