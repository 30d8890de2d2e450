"""The formats benchmark runs (CPU path, the same code `gpu_checks` runs on CUDA) and reports what it measured."""

import torch

from benchmarks.quant_formats import gpu_checks, kernel_probes, measure


def test_benchmark_rows_on_cpu():
    result = measure("cpu", formats=["bf16", "int8", "int4", "nf4"], tokens=4, repeats=1)
    rows = {r["format"]: r for r in result["rows"]}
    assert all("error" not in r for r in rows.values()), rows
    assert rows["bf16"]["ratio_to_fp16"] == 1.0
    assert 0.50 < rows["int8"]["ratio_to_fp16"] < 0.51 and 0.26 < rows["int4"]["ratio_to_fp16"] < 0.27
    errs = [rows[f]["output_rel_err"] for f in ("bf16", "int8", "int4")]
    assert errs == sorted(errs) and errs[0] > 0
    assert all(r["quantize_ms"] >= 0 and r["forward_ms"] > 0 for r in rows.values())
    assert result["time_source"].startswith("measured:wall-clock") and result["bytes_source"] == "counted"


def test_gpu_checks_are_safe_without_cuda_and_probes_record_errors():
    if not torch.cuda.is_available():
        assert gpu_checks() == {"skipped": "CUDA not available"}
    probes = kernel_probes("cpu", tokens=4, repeats=1)
    assert probes["time_source"].startswith("measured:wall-clock")
    for key in (
        "int8_weight_int8pack_mm",
        "int4_tinygemm_weight_int4pack_mm",
        "nf4_bitsandbytes_matmul_4bit",
    ):
        assert "rel_err" in probes[key] or "error" in probes[key]
    assert probes["nf4_bitsandbytes_matmul_4bit"]["rel_err"] < 0.15
    # the kernels torch runs on this device measure, and measure right (an error or a wrong scale passed above):
    # int8 weight-only is within int8 rounding (~0.9%), fp8 W8A8 within fp8's (~4%, activations quantized too)
    for key, bound in (("int8_weight_int8pack_mm", 0.02), ("fp8_scaled_mm_w8a8_rowwise", 0.06)):
        assert "error" not in probes[key] and 0 < probes[key]["rel_err"] < bound and probes[key]["ms"] > 0, probes[key]
