"""Hardware profiles: catalogue look-up by loose names, budgets, measured profiles winning, no torch on import."""

from __future__ import annotations

import subprocess
import sys

import pytest

from advisor.errors import UserError
from advisor.hardware.profiles import (
    CATALOGUE,
    DEFAULT_PROFILE,
    GiB,
    HardwareProfile,
    get_gpu,
    load_profiles,
    parse_budget,
    save_profile,
)


@pytest.mark.parametrize("name", ["4090", "rtx4090", "RTX 4090", "NVIDIA GeForce RTX 4090", "rtx-4090 24GB"])
def test_loose_names_find_the_4090(name):
    p = get_gpu(name, "/nonexistent")
    assert p.name == "RTX 4090 24GB" and p.memory_bytes == 24 * GiB and p.h2d_gbps_pinned == 25.0
    assert p.source == "catalogue (nominal)"


@pytest.mark.parametrize("name,expected,bw", [
    ("NVIDIA A100-SXM4-80GB", "A100 SXM 80GB", 25.0),
    ("NVIDIA A100 80GB PCIe", "A100 80GB", 25.0),
    ("Tesla T4", "T4 16GB", 12.0),
    ("NVIDIA H100 80GB HBM3", "H100 SXM 80GB", 50.0),
    ("NVIDIA H100 PCIe", "H100 80GB", 50.0),
    ("A10G", "A10G 24GB", 25.0),
    ("RTX 4060 Ti 16GB", "RTX 4060 Ti 16GB", 12.5),
    ("H200", "H200 141GB", 50.0),
    ("NVIDIA H200 NVL", "H200 NVL 141GB", 50.0),
    ("NVIDIA H100 NVL", "H100 NVL 94GB", 50.0),
    ("H100 94GB", "H100 NVL 94GB", 50.0),
])
def test_nvidia_smi_style_names(name, expected, bw):
    p = get_gpu(name, "/nonexistent")
    assert (p.name, p.h2d_gbps_pinned, p.h2d_gbps_pageable) == (expected, bw, bw / 2)


def test_ambiguous_and_unknown_names_list_choices():
    with pytest.raises(UserError, match="ambiguous.*A100 40GB.*A100 80GB"):
        get_gpu("A100", "/nonexistent")
    with pytest.raises(UserError, match="unknown GPU '4091'; close matches: RTX 4090 24GB"):
        get_gpu("4091", "/nonexistent")
    with pytest.raises(UserError, match="unknown GPU"):
        get_gpu("RTX 4090 48GB", "/nonexistent")


def test_catalogue_covers_the_common_gpus():
    names = {p.name for p in CATALOGUE}
    for n in ["RTX 3060 12GB", "RTX 3080 10GB", "RTX 3090 24GB", "RTX 4060 Ti 16GB", "RTX 4070 12GB", "RTX 4080 16GB",
              "RTX 5090 32GB", "A10 24GB", "L4 24GB", "L40S 48GB", "A100 40GB", "A100 80GB", "H100 80GB",
              "H200 141GB", "T4 16GB", "V100 16GB", "V100 32GB"]:
        assert n in names


@pytest.mark.parametrize("text,expected", [
    ("12GiB", 12 * 2**30), ("12 GB", 12 * 10**9), ("12000MiB", 12000 * 2**20), ("0.5TiB", 2**39),
    ("24G", 24 * 2**30), (8 * 2**30, 8 * 2**30), ("123456789", 123456789),
])
def test_parse_budget(text, expected):
    assert parse_budget(text) == expected


@pytest.mark.parametrize("bad", ["12 potatoes", "12", "", "GB", "-1GB", "0GiB", 0, -5])
def test_parse_budget_rejects(bad):
    with pytest.raises(UserError):
        parse_budget(bad)


def test_bad_budget_message_names_examples():
    with pytest.raises(UserError) as e:
        parse_budget("12 potatoes")
    assert str(e.value) == "budget '12 potatoes' is not a size; use e.g. 12GiB, 24GB, 8000MiB"


def test_measured_profile_wins_over_catalogue(tmp_path):
    measured = HardwareProfile("NVIDIA GeForce RTX 4090", 24 * GiB - 300 * 2**20, 22.1, 9.8, 7.5,
                               "measured:2026-01-01 cuda-events", "measured", free_bytes=23 * GiB)
    path = save_profile(measured, tmp_path)
    assert path.exists() and not list(tmp_path.glob("*.tmp"))
    assert load_profiles(tmp_path) == [measured]
    assert get_gpu("rtx 4090", tmp_path) == measured
    assert get_gpu("RTX 3090", tmp_path).source == "catalogue (nominal)"


def test_corrupt_profile_is_a_user_error(tmp_path):
    (tmp_path / "x.json").write_text("{not json")
    with pytest.raises(UserError, match="not valid JSON"):
        load_profiles(tmp_path)


def test_transfer_model_and_default_profile():
    assert DEFAULT_PROFILE.h2d_gbps_pinned == 25.0 and DEFAULT_PROFILE.h2d_gbps_pageable == 12.5
    assert DEFAULT_PROFILE.tag == "pcie(bw=25.0GB/s,lat=10us)"
    # 25 MB over 25 GB/s = 1 ms, plus 2 copies x 10 us
    assert DEFAULT_PROFILE.transfer_ms(25e6, copies=2) == pytest.approx(1.02)
    assert DEFAULT_PROFILE.transfer_ms(25e6, copies=0, pinned=False) == pytest.approx(2.0)


def test_hardware_module_does_not_import_torch():
    code = "import sys, advisor.hardware.profiles; print('torch' in sys.modules)"
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True).stdout
    assert out.strip() == "False"


def test_cpu_profile_is_measured_and_labelled():
    from advisor.hardware.measure import measure_cpu_profile

    p = measure_cpu_profile(sizes=(1 << 18, 1 << 20, 1 << 22), repeats=3)
    assert p.h2d_gbps_pinned > 0.1 and p.copy_latency_us > 0 and p.memory_bytes > 0
    assert p.source.startswith("measured-cpu:")


@pytest.mark.parametrize("device_name,row", [
    ("NVIDIA RTX 6000 Ada Generation", "RTX 6000 Ada 48GB"),
    ("NVIDIA RTX PRO 6000 Blackwell Workstation Edition", "RTX PRO 6000 Blackwell 96GB"),
    ("NVIDIA RTX PRO 6000 Blackwell Server Edition", "RTX PRO 6000 Blackwell 96GB"),
])
def test_the_device_names_cuda_reports_find_their_catalogue_row(device_name, row, tmp_path):
    """`advisor profile` stores torch.cuda.get_device_name(), e.g. "NVIDIA RTX 6000 Ada Generation": that name
    matched no catalogue row, so the profile's device time was priced as an H200's, and `--gpu "RTX 6000 Ada"`
    took the nominal catalogue link over the one measured on that GPU."""
    from advisor.hardware.profiles import nominal_device, priced_device

    assert get_gpu(device_name, "/nonexistent").name == row
    measured = HardwareProfile(device_name, 47 * GiB, 21.0, 9.0, 8.0, "measured:2026-01-01 cuda-events", "measured")
    save_profile(measured, tmp_path)
    assert get_gpu(row.rsplit(" ", 1)[0], tmp_path) == measured
    assert nominal_device(measured).gpu == row and priced_device(measured)[0].gpu == row


def test_a_max_q_card_is_not_priced_as_the_full_power_one():
    """The 300 W Max-Q Workstation Edition has no row of its own: it matches nothing rather than the 600 W card."""
    from advisor.hardware.profiles import nominal_device

    p = HardwareProfile("NVIDIA RTX PRO 6000 Blackwell Max-Q Workstation Edition", 96 * GiB, 50.0, 25.0, 8.0,
                        "measured:2026-01-01 cuda-events", "measured")
    assert nominal_device(p) is None


def test_the_rtx_5060_ti_is_sold_with_8_and_16_gb():
    """The RTX 5060 Ti ships as 8 GB and 16 GB (both 448 GB/s, PCIe 5.0 x8); the catalogue had only the 16 GB
    card, so `--gpu "RTX 5060 Ti"` on an 8 GB card took a budget of twice its memory without a word."""
    with pytest.raises(UserError, match="ambiguous: RTX 5060 Ti 8GB, RTX 5060 Ti 16GB"):
        get_gpu("NVIDIA GeForce RTX 5060 Ti", "/nonexistent")
    small = get_gpu("RTX 5060 Ti 8GB", "/nonexistent")
    assert small.memory_bytes == 8 * GiB and small.link == "PCIe 5.0 x8"


@pytest.mark.parametrize("name,expected", [
    ("H100 SXM", "H100 SXM 80GB"), ("NVIDIA H100 80GB HBM3", "H100 SXM 80GB"), ("A100-SXM4-80GB", "A100 SXM 80GB"),
    ("NVIDIA H100 NVL", "H100 NVL 94GB"), ("H100", "H100 80GB"), ("RTX 4090 (24GB)", "RTX 4090 24GB"),
    ("H100\u00a0SXM", "H100 SXM 80GB"),  # a no-break space, as a name copied from a web page may carry
    ("A100\u2013SXM4\u201380GB", "A100 SXM 80GB"),  # en dashes
])
def test_the_documented_spellings_and_copied_separators_still_find_their_row(name, expected):
    assert get_gpu(name, "/nonexistent").name == expected


def test_a_gpu_name_with_a_character_no_gpu_name_has_is_unknown_not_the_name_without_it(tmp_path, monkeypatch):
    """Every character but a-z and 0-9 was dropped before matching, so `--gpu "H100é"` (or "H100!") silently priced
    and budgeted an H100. Now only separators (spaces, - _ . , / parentheses, copied dashes) are dropped: one line
    names the character and the close catalogue rows, exit 2, before the model loads; nothing is written. A measured
    profile named with such a character still matches its own name."""
    from typer.testing import CliRunner

    from advisor.cli import app

    monkeypatch.setenv("ADVISOR_PROFILES_DIR", str(tmp_path / "profiles"))
    db = tmp_path / "s.db"
    result = CliRunner().invoke(app, ["tune", "bundled", "--gpu", "H100é", "--trials", "1",
                                      "--storage", f"sqlite:///{db}"])
    assert isinstance(result.exception, UserError) and result.exception.exit_code == 2, result.output
    said = str(result.exception)
    assert said.startswith("unknown GPU 'H100é' (no GPU name has 'é'); close matches: H100 80GB, H100 SXM 80GB, "
                           "H100 NVL 94GB") and "\n" not in said, said
    assert "advisor tune" not in result.output and not db.exists()
    with pytest.raises(UserError, match=r"unknown GPU 'H100!' \(no GPU name has '!'\)"):
        get_gpu("H100!", "/nonexistent")
    own = HardwareProfile("Büro-GPU", 24 * GiB, 20.0, 9.0, 8.0, "measured:2026-01-01 cuda-events", "measured")
    save_profile(own, tmp_path / "profiles")
    assert get_gpu("büro gpu", tmp_path / "profiles") == own
    with pytest.raises(UserError, match="unknown GPU 'Buro-GPU'"):
        get_gpu("Buro-GPU", tmp_path / "profiles")


@pytest.mark.parametrize("name,expected", [
    ("NVIDIA® GeForce RTX™ 4090", "RTX 4090 24GB"),  # as NVIDIA's product pages print it
    ("RTX™ 4090", "RTX 4090 24GB"),
    ("NVIDIA® H100 NVL", "H100 NVL 94GB"),
    ("NVIDIA RTX™ 6000 Ada Generation", "RTX 6000 Ada 48GB"),
])
def test_a_name_copied_with_trademark_signs_finds_its_row(name, expected):
    """b0cdfa2 read a name in its NFKC form, which spells "™" as "tm": "RTX™ 4090" became the unknown key "tm4090"
    and "NVIDIA® GeForce RTX™ 4090" an unknown GPU with "no GPU name has '®'" (before, both were the RTX 4090).
    The marks of a product name are read as the space they stand beside; other characters stay refused."""
    assert get_gpu(name, "/nonexistent").name == expected
    with pytest.raises(UserError, match=r"unknown GPU 'H100é' \(no GPU name has 'é'\)"):
        get_gpu("H100é", "/nonexistent")
