"""The device side of the time model follows the GPU the user names: every catalogue GPU carries nominal
device figures, a named GPU's roofline prices an expert at its bytes over that GPU's bandwidth, and
`advisor tune --gpu` stores a time per token whose source names the GPU and whose device side moves as the
bandwidths say (measured profiles with one link, so only the device differs)."""

from __future__ import annotations

import subprocess
import sys

import optuna
import pytest

from advisor.hardware.profiles import (
    CATALOGUE,
    DEFAULT_PROFILE,
    NOMINAL,
    GiB,
    HardwareProfile,
    get_gpu,
    nominal_device,
    save_profile,
)
from advisor.offload.timing import CpuProfile, LayerCosts, device_roofline


def _measured(name: str, mem_gib: float) -> HardwareProfile:
    """A profile as `advisor profile` stores it on a GPU (input: one link for every GPU of a test)."""
    return HardwareProfile(name, int(mem_gib * GiB), 20.0, 10.0, 10.0, "measured:2026-12-03 cuda-events", "measured")


def test_every_catalogue_gpu_has_nominal_device_figures():
    assert set(NOMINAL) == {p.name for p in CATALOGUE}
    for p in CATALOGUE:
        dev = nominal_device(p)
        assert dev is NOMINAL[p.name] and dev.gpu == p.name
        assert 200 <= dev.mem_gbps <= 5000 and 20 <= dev.tflops <= 1000, p.name
        assert dev.dtype == ("fp16" if p.name.split()[0] in ("T4", "V100", "V100S") else "bf16")
        assert device_roofline(p).hbm_gbps == dev.mem_gbps and device_roofline(p).tflops == dev.tflops


def test_a_named_gpus_roofline_is_bytes_over_its_bandwidth_or_flops_over_its_tflops():
    from advisor.quant.spec import expert_nbytes_of

    h, i = 2048, 1024
    nbytes = expert_nbytes_of("bf16", h, i)
    cpu = CpuProfile({f"{h}x{i}": {"bf16": [[1, 1.0], [256, 100.0]]}}, 1, "test-profile")
    for name, gbps, tflops in (("RTX 4090", 1008, 165.2), ("H200", 4800, 989), ("T4", 320, 65)):
        gpu = get_gpu(name, "/nonexistent")
        dev = device_roofline(gpu)
        assert (dev.hbm_gbps, dev.tflops) == (gbps, tflops)
        assert dev.source.startswith(f"modelled:roofline({gpu.name} nominal: {gbps:g} GB/s, {tflops:g} TFLOP/s")
        lc = LayerCosts(["bf16"], [nbytes], h, i, cpu, dev, gpu)
        assert lc.gpu_ms(0, 1) == pytest.approx(nbytes / (gbps * 1e9) * 1e3, rel=1e-12)  # memory-bound
        assert lc.gpu_ms(0, 4096) == pytest.approx(4096 * 6 * h * i / (tflops * 1e12) * 1e3, rel=1e-12)
        assert lc.gpu_layer_ms == pytest.approx(0.020)


def test_measured_profiles_find_their_catalogue_gpu_and_unknown_ones_say_they_are_priced_as_the_h200():
    assert device_roofline(_measured("NVIDIA GeForce RTX 3080", 11.8)).hbm_gbps == 912  # memory picks 12GB
    assert device_roofline(_measured("NVIDIA GeForce RTX 3080", 9.8)).hbm_gbps == 760
    sxm = device_roofline(_measured("NVIDIA A100-SXM4-80GB", 79.3))
    assert sxm.hbm_gbps == 2039 and "roofline(NVIDIA A100-SXM4-80GB as A100 SXM 80GB nominal: 2039 GB/s" in sxm.source
    assert device_roofline(_measured("NVIDIA A100 80GB PCIe", 79.3)).hbm_gbps == 1935
    for default in (None, DEFAULT_PROFILE):
        assert device_roofline(default) == device_roofline()
        assert (device_roofline(default).hbm_gbps, device_roofline(default).tflops) == (4800, 989)
    assert "H200 141GB nominal, no GPU named: 4800 GB/s, 989 TFLOP/s" in device_roofline().source
    unknown = device_roofline(_measured("NVIDIA B200", 178))
    assert (unknown.hbm_gbps, unknown.tflops) == (4800, 989)
    assert "roofline(H200 141GB nominal, no figures for 'NVIDIA B200': 4800 GB/s" in unknown.source


def test_the_device_model_is_torch_free():
    code = ("import sys; from advisor.offload.timing import device_roofline; "
            "from advisor.hardware.profiles import get_gpu; device_roofline(get_gpu('4090', '/nonexistent')); "
            "print('torch' in sys.modules)")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True).stdout
    assert out.strip() == "False"


SPACE = """
name = "device-test"
[precision]
formats = ["bf16"]
groups = 1
[cache]
slots_per_layer = { low = 1, high = "all" }
policies = ["lru"]
[objectives]
time_per_token = "minimize"
accuracy = "maximize"
[evaluation]
task = "toy"
limit = 4
trace_prompts = 1
fidelity_prompts = 1
max_new_tokens = 8
"""


def test_tune_with_gpu_stores_a_time_per_token_whose_device_side_is_the_named_gpus(shm_tmp_path, monkeypatch):
    """Three measured profiles with the same link and CPU times: the same copies, but the RTX 4090's time per
    token is longer than the H200's (its device reads the experts at 1008, not 4800 GB/s); a GPU without
    figures is priced as the H200 and its source says so. One warm-start trial each (misses copied)."""
    from typer.testing import CliRunner

    from advisor.cli import app
    from advisor.models.load import load_model
    from advisor.offload.cpu_profile import measure_cpu_experts
    from advisor.tune.model_backend import model_shape

    shape = model_shape(load_model("bundled"))
    cpu = measure_cpu_experts([(shape.hidden[0], shape.intermediate[0])], ["bf16"], repeats=1).to_dict()
    monkeypatch.setenv("ADVISOR_PROFILES_DIR", str(shm_tmp_path / "profiles"))
    for name, mem in (("NVIDIA GeForce RTX 4090", 23.6), ("NVIDIA H200", 139.8), ("NVIDIA B200", 178.4)):
        save_profile(HardwareProfile(**{**_measured(name, mem).to_dict(), "cpu_experts": cpu}))
    (shm_tmp_path / "space.toml").write_text(SPACE)
    url = f"sqlite:///{shm_tmp_path}/d.db"
    got = {}
    for gpu in ("RTX 4090", "H200", "B200"):
        study = gpu.replace(" ", "")
        r = CliRunner().invoke(app, ["tune", "bundled", "--space", str(shm_tmp_path / "space.toml"), "--gpu", gpu,
                                     "--trials", "1", "--storage", url, "--study", study])
        assert r.exit_code == 0, r.output
        (t,) = [t for t in optuna.load_study(study_name=study, storage=url).trials if t.values]
        got[gpu] = (t.values[0], t.user_attrs["sources"]["time_per_token"], t.user_attrs["values"])
    (t4090, src4090, v4090), (th200, src_h200, v_h200), (tb200, src_b200, _) = got.values()
    assert "roofline(NVIDIA GeForce RTX 4090 as RTX 4090 24GB nominal: 1008 GB/s, 165.2 TFLOP/s" in src4090
    assert "roofline(NVIDIA H200 as H200 141GB nominal: 4800 GB/s, 989 TFLOP/s" in src_h200
    assert "roofline(H200 141GB nominal, no figures for 'NVIDIA B200'" in src_b200
    assert v4090["h2d_bytes_per_token"] == v_h200["h2d_bytes_per_token"]  # same routing, same copies
    assert v4090["transfer_ms_per_token"] == v_h200["transfer_ms_per_token"]  # same link
    assert t4090 > th200 and tb200 == pytest.approx(th200, rel=1e-12)


def _entries(output: str) -> list[str]:
    """`advisor profile --list`'s entries, one a profile, its continuation lines (indented 4) joined."""
    return " ".join(output.split("\n    ")).splitlines()


def test_profile_list_shows_the_device_figures_each_gpu_is_priced_with(tmp_path):
    from typer.testing import CliRunner

    from advisor.cli import app

    save_profile(_measured("NVIDIA B200", 178), tmp_path)
    entries = _entries(CliRunner().invoke(app, ["profile", "--list", "--profiles-dir", str(tmp_path)]).output)
    (b200,) = [e for e in entries if e.startswith("NVIDIA B200:")]
    (rtx,) = [e for e in entries if e.startswith("RTX 4090 24GB:")]
    assert "device not in the catalogue (priced as the H200)" in b200
    assert "device 1008 GB/s 165.2 TFLOP/s bf16 [catalogue (nominal)]" in rtx


def test_a_profile_stored_under_its_own_name_is_priced_as_the_gpu_it_measured(tmp_path, monkeypatch):
    """README: measure with `advisor profile --model M --threads N --name host-tN`, then `tune --gpu host-tN`.
    The profile kept only the new name, so the GPU it measured (here an RTX 4090, its measurement substituted:
    no CUDA here) was looked up as 'host-t16', found in no catalogue row, and its device side priced as the
    H200's (4800 GB/s instead of 1008)."""
    from typer.testing import CliRunner

    from advisor.cli import app
    from advisor.hardware import measure

    monkeypatch.setattr(measure, "cuda_available", lambda: True)
    monkeypatch.setattr(measure, "measure_profile", lambda repeats=5: _measured("NVIDIA GeForce RTX 4090", 23.6))
    r = CliRunner().invoke(app, ["profile", "--name", "host-t16", "--profiles-dir", str(tmp_path)])
    assert r.exit_code == 0, r.output
    assert r.output.startswith("host-t16: 23.60 GiB, pinned 20.0 GB/s")
    out = _entries(CliRunner().invoke(app, ["profile", "--list", "--profiles-dir", str(tmp_path)]).output)
    (line,) = [ln for ln in out if ln.startswith("host-t16:")]
    assert "device 1008 GB/s 165.2 TFLOP/s bf16 [measured:" in line, line
    dev = device_roofline(get_gpu("host-t16", tmp_path))
    assert dev.hbm_gbps == 1008
    assert dev.source.startswith("modelled:roofline(host-t16 as RTX 4090 24GB nominal: 1008 GB/s"), dev.source


def test_sxm_boards_are_priced_as_sxm_and_pcie_cards_as_pcie(tmp_path):
    """nvidia-smi's names of SXM boards (an H100 SXM5 is "NVIDIA H100 80GB HBM3") find the SXM rows, of NVL cards
    the NVL rows; PCIe names the PCIe rows: in `advisor profile --list` (measured profiles and the catalogue)
    and in `tune --gpu`."""
    from typer.testing import CliRunner

    from advisor.cli import app

    for name in ("NVIDIA H100 80GB HBM3", "NVIDIA H100 PCIe", "NVIDIA A100-SXM4-80GB", "NVIDIA A100 80GB PCIe"):
        save_profile(_measured(name, 79.6), tmp_path)
    save_profile(_measured("NVIDIA H100 NVL", 93.6), tmp_path)  # 95830 MiB as nvidia-smi reports it
    out = _entries(CliRunner().invoke(app, ["profile", "--list", "--profiles-dir", str(tmp_path)]).output)

    def line(start: str) -> str:
        (ln,) = [ln for ln in out if ln.startswith(start + ":")]
        return ln

    for start, link, device in (
            ("NVIDIA H100 80GB HBM3", "measured", "device 3350 GB/s 989 TFLOP/s"),
            ("NVIDIA H100 PCIe", "measured", "device 2000 GB/s 756 TFLOP/s"),
            ("NVIDIA H100 NVL", "measured", "device 3900 GB/s 835 TFLOP/s"),
            ("NVIDIA A100-SXM4-80GB", "measured", "device 2039 GB/s 312 TFLOP/s"),
            ("NVIDIA A100 80GB PCIe", "measured", "device 1935 GB/s 312 TFLOP/s"),
            ("H100 SXM 80GB", "PCIe 5.0 x16", "device 3350 GB/s 989 TFLOP/s"),
            ("H100 80GB", "PCIe 5.0 x16", "device 2000 GB/s 756 TFLOP/s"),
            ("H100 NVL 94GB", "PCIe 5.0 x16", "device 3900 GB/s 835 TFLOP/s"),
            ("A100 SXM 40GB", "PCIe 4.0 x16", "device 1555 GB/s 312 TFLOP/s"),
            ("A100 SXM 80GB", "PCIe 4.0 x16", "device 2039 GB/s 312 TFLOP/s"),
            ("A100 80GB", "PCIe 4.0 x16", "device 1935 GB/s 312 TFLOP/s"),
            ("H200 141GB", "PCIe 5.0 x16", "device 4800 GB/s 989 TFLOP/s"),
            ("H200 NVL 141GB", "PCIe 5.0 x16", "device 4800 GB/s 835 TFLOP/s")):
        assert link in line(start) and device in line(start), line(start)
    (tmp_path / "space.toml").write_text(SPACE)
    url = f"sqlite:///{tmp_path}/d.db"
    r = CliRunner().invoke(app, ["tune", "bundled", "--space", str(tmp_path / "space.toml"), "--gpu", "H100 SXM",
                                 "--trials", "1", "--storage", url, "--study", "sxm"])
    assert r.exit_code == 0, r.output
    (t,) = [t for t in optuna.load_study(study_name="sxm", storage=url).trials if t.values]
    assert "roofline(H100 SXM 80GB nominal: 3350 GB/s, 989 TFLOP/s" in t.user_attrs["sources"]["time_per_token"]
    assert "budget: 80.00 GiB (--gpu H100 SXM 80GB, catalogue (nominal))" in " ".join(r.output.split())
