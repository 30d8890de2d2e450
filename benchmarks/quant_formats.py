"""Precision formats on one LLaDA-MoE-shaped expert (hidden 2048, expert FFN 1024, SwiGLU).

Per format: bytes (counted), ratio to fp16, quantize time, expert forward time (dequantize + matmul, or the
format's fused kernel) relative to a dense reference, and relative output error against the fp32 expert.

    python -m benchmarks.quant_formats [--tokens 32] [--repeats 5] [--threads 1] [--json PATH]

Ends with `RESULT <format>_vs_fp16=.. <format>_forward_vs_ref=.. <format>_rel_err=.. ... formats_failed=<n>`
(the table's bytes ratio, forward time ratio and output error per format that ran).

CPU: reference = the fp32 dense expert with fp32 activations (fp16/bf16 matmuls are slow on CPU and would
flatter the quantized formats); times are wall clock, median of --repeats after one warm-up. CUDA
(`gpu_checks()`, for the lead's prepared GPU run): reference = the bf16 dense expert with bf16 activations,
timed with CUDA events, plus probes of torch/bitsandbytes kernels (fused int8/int4/fp8 matmuls) that may serve
later.
"""

from __future__ import annotations

import argparse
import json
import statistics
import time
from collections.abc import Callable

import torch

from advisor.models.experts import ExpertWeights, swiglu
from advisor.quant.expert import expert_nbytes, quantize_expert

HIDDEN, INTER = 2048, 1024
FORMATS = ["fp32", "bf16", "fp16", "int8", "fp8", "int4", "int4:g64", "int4:sym", "nf4", "int3", "int2"]


def llada_expert(device: str = "cpu", seed: int = 0) -> ExpertWeights:
    gen = torch.Generator().manual_seed(seed)

    def w(rows: int, cols: int) -> torch.Tensor:
        return (torch.randn(rows, cols, generator=gen) * 0.02).to(device)

    return ExpertWeights(gate=w(INTER, HIDDEN), up=w(INTER, HIDDEN), down=w(HIDDEN, INTER))


def _timer(device: str) -> tuple[Callable[[Callable[[], object], int], float], str]:
    """(median-seconds timer, source label) for the device."""
    if device.startswith("cuda"):

        def cuda_time(fn: Callable[[], object], repeats: int) -> float:
            fn()
            torch.cuda.synchronize()
            times = []
            for _ in range(repeats):
                start, end = torch.cuda.Event(enable_timing=True), torch.cuda.Event(enable_timing=True)
                start.record()
                fn()
                end.record()
                torch.cuda.synchronize()
                times.append(start.elapsed_time(end) / 1e3)
            return statistics.median(times)

        return cuda_time, "measured:cuda-events"

    def wall_time(fn: Callable[[], object], repeats: int) -> float:
        fn()
        times = []
        for _ in range(repeats):
            t0 = time.perf_counter()
            fn()
            times.append(time.perf_counter() - t0)
        return statistics.median(times)

    return wall_time, "measured:wall-clock"


def measure(
    device: str = "cpu", formats: list[str] | None = None, tokens: int = 32, repeats: int = 5
) -> dict:
    """Run every format on `device`; returns JSON-able rows plus how they were measured."""
    formats = formats or FORMATS
    timer, source = _timer(device)
    act = torch.nn.functional.silu
    weights = llada_expert(device)
    dtype = torch.bfloat16 if device.startswith("cuda") else torch.float32
    dtype_name = str(dtype).removeprefix("torch.")
    x = torch.randn(tokens, HIDDEN, generator=torch.Generator().manual_seed(1)).to(device)
    with torch.no_grad():
        exact = swiglu(act, weights)(x)  # fp32 truth
        dense = ExpertWeights(**{k: t.to(dtype) for k, t in weights.tensors().items()})
        ref_fn = swiglu(act, dense)
        xd = x.to(dtype)
        ref_s = timer(lambda: ref_fn(xd), repeats)
        fp16_bytes = expert_nbytes("fp16", HIDDEN, INTER)
        rows = []
        for name in formats:
            row: dict = {"format": name}
            try:
                q_s = timer(lambda name=name: quantize_expert(weights, name), max(1, repeats // 2))
                q = quantize_expert(weights, name)
                fn = q.fn(act)
                f_s = timer(lambda fn=fn: fn(xd), repeats)
                out = fn(xd).float()
                assert q.nbytes == expert_nbytes(name, HIDDEN, INTER)
                row.update(
                    nbytes=q.nbytes,
                    ratio_to_fp16=q.nbytes / fp16_bytes,
                    quantize_ms=q_s * 1e3,
                    forward_ms=f_s * 1e3,
                    forward_vs_reference=f_s / ref_s,
                    output_rel_err=float((out - exact).norm() / exact.norm()),
                )
            except Exception as e:  # one broken format must not hide the others
                row["error"] = f"{type(e).__name__}: {e}"
            rows.append(row)
    return {
        "device": torch.cuda.get_device_name(0)
        if device.startswith("cuda")
        else f"cpu ({torch.get_num_threads()} threads)",
        "expert": {"hidden": HIDDEN, "intermediate": INTER, "tokens": tokens},
        "reference": f"dense {dtype_name} expert, {dtype_name} activations",
        "reference_forward_ms": ref_s * 1e3,
        "time_source": f"{source}, median of {repeats} after 1 warm-up",
        "bytes_source": "counted",
        "error_source": "measured: relative Frobenius error of the expert output vs the fp32 expert",
        "rows": rows,
    }


def _probe(fn: Callable[[], dict]) -> dict:
    try:
        return fn()
    except Exception as e:
        return {"error": f"{type(e).__name__}: {str(e)[:300]}"}


def kernel_probes(device: str = "cuda", tokens: int = 32, repeats: int = 10) -> dict:
    """Fused library kernels on one [1024, 2048] projection, vs the bf16 dense matmul (CUDA only)."""
    timer, source = _timer(device)
    gen = torch.Generator().manual_seed(2)
    w = (torch.randn(INTER, HIDDEN, generator=gen) * 0.02).to(device)
    x = torch.randn(tokens, HIDDEN, generator=gen).to(device, torch.bfloat16)
    ref = x.float() @ w.T
    dense = w.to(torch.bfloat16)
    base = timer(lambda: x @ dense.T, repeats)

    def result(y: torch.Tensor, seconds: float) -> dict:
        return {
            "ms": seconds * 1e3,
            "vs_bf16_matmul": seconds / base,
            "rel_err": float((y.float() - ref).norm() / ref.norm()),
        }

    def int8_pack() -> dict:
        s = w.abs().amax(1) / 127
        q = torch.round(w / s[:, None]).clamp(-127, 127).to(torch.int8)
        sb = s.to(torch.bfloat16)
        return result(
            torch._weight_int8pack_mm(x, q, sb), timer(lambda: torch._weight_int8pack_mm(x, q, sb), repeats)
        )

    def int4_tinygemm() -> dict:
        group = 128
        g = w.reshape(INTER, HIDDEN // group, group)
        lo, hi = g.amin(-1), g.amax(-1)
        scale = (hi - lo).clamp(min=1e-8) / 15
        q = (
            torch.round((g - lo[..., None]) / scale[..., None])
            .clamp(0, 15)
            .reshape(INTER, HIDDEN)
            .to(torch.int32)
        )
        zero = lo + 8 * scale  # tinygemm form: w = (q - 8) * scale + zero
        sz = torch.stack([scale, zero], -1).transpose(0, 1).contiguous().to(torch.bfloat16)
        # CUDA's op takes uint8 [N, K/2], even columns in the high nibble (as torch's own tests pack it)
        packed = torch._convert_weight_to_int4pack((q[:, ::2] << 4 | q[:, 1::2]).to(torch.uint8), 8)
        return result(
            torch._weight_int4pack_mm(x, packed, group, sz),
            timer(lambda: torch._weight_int4pack_mm(x, packed, group, sz), repeats),
        )

    def fp8_scaled_mm() -> dict:  # W8A8: activations quantized per token too (a different numeric than ours)
        sw = (w.abs().amax(1, keepdim=True) / 448).float()
        wq = (w / sw).to(torch.float8_e4m3fn)

        def run() -> torch.Tensor:
            sx = (x.float().abs().amax(1, keepdim=True) / 448).clamp(min=1e-12)
            xq = (x.float() / sx).to(torch.float8_e4m3fn)
            return torch._scaled_mm(xq, wq.T, scale_a=sx, scale_b=sw.T.contiguous(), out_dtype=torch.bfloat16)

        return result(run(), timer(run, repeats))

    def nf4_bnb() -> dict:
        from advisor.quant.formats import get_format

        qt = get_format("nf4").quantize(w)
        return result(qt.linear(x), timer(lambda: qt.linear(x), repeats))

    with torch.no_grad():
        return {
            "time_source": f"{source}, median of {repeats}",
            "bf16_matmul_ms": base * 1e3,
            "int8_weight_int8pack_mm": _probe(int8_pack),
            "int4_tinygemm_weight_int4pack_mm": _probe(int4_tinygemm),
            "fp8_scaled_mm_w8a8_rowwise": _probe(fp8_scaled_mm),
            "nf4_bitsandbytes_matmul_4bit": _probe(nf4_bnb),
        }


def gpu_checks() -> dict:
    """This area's CUDA measurements for the prepared GPU run (JSON-able; errors recorded, not raised)."""
    if not torch.cuda.is_available():
        return {"skipped": "CUDA not available"}
    out = {"formats": _probe(lambda: measure("cuda", tokens=32, repeats=10))}
    out["formats_tokens_256"] = _probe(
        lambda: measure("cuda", formats=["bf16", "int8", "fp8", "int4", "nf4"], tokens=256, repeats=10)
    )
    out["kernels"] = _probe(lambda: kernel_probes("cuda"))
    return out


def print_table(result: dict) -> None:
    from rich.console import Console
    from rich.table import Table

    table = Table(
        title=f"expert precision formats - LLaDA-MoE expert {HIDDEN}x{INTER} SwiGLU, "
        f"{result['expert']['tokens']} tokens, {result['device']}"
    )
    for col in (
        "format",
        "bytes",
        "vs fp16",
        "quantize ms",
        "forward ms",
        "forward vs ref",
        "output rel err",
    ):
        table.add_column(col, justify="left" if col == "format" else "right")
    for r in result["rows"]:
        if "error" in r:
            table.add_row(r["format"], "-", "-", "-", "-", "-", r["error"][:40])
            continue
        table.add_row(
            r["format"],
            f"{r['nbytes']:,}",
            f"{r['ratio_to_fp16']:.3f}",
            f"{r['quantize_ms']:.1f}",
            f"{r['forward_ms']:.2f}",
            f"{r['forward_vs_reference']:.2f}x",
            f"{r['output_rel_err']:.4f}",
        )
    console = Console(width=None if Console().is_terminal else 120)
    console.print(table)
    console.print(
        f"reference: {result['reference']} ({result['reference_forward_ms']:.2f} ms). "
        f"bytes: {result['bytes_source']}. times: {result['time_source']}. "
        f"error: {result['error_source']}."
    )


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--device", default="cpu")
    ap.add_argument("--tokens", type=int, default=32)
    ap.add_argument("--repeats", type=int, default=5)
    ap.add_argument("--threads", type=int, default=1)
    ap.add_argument("--formats", default=",".join(FORMATS))
    ap.add_argument("--json", default=None, help="also write the results here")
    args = ap.parse_args()
    torch.set_num_threads(args.threads)
    result = measure(args.device, [f for f in args.formats.split(",") if f], args.tokens, args.repeats)
    print_table(result)
    ok = [r for r in result["rows"] if "error" not in r]
    print("RESULT " + " ".join(f"{r['format']}_vs_fp16={r['ratio_to_fp16']:.3f} "
                               f"{r['format']}_forward_vs_ref={r['forward_vs_reference']:.2f} "
                               f"{r['format']}_rel_err={r['output_rel_err']:.4f}" for r in ok)
          + f" formats_failed={len(result['rows']) - len(ok)}")
    if args.json:
        with open(args.json, "w") as fh:
            json.dump(result, fh, indent=1)


if __name__ == "__main__":
    main()
