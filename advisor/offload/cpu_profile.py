"""Measure this host's CPU expert time per format and tokens per expert, on given expert shapes.

Each point is the fastest of `repeats` wall-clock times (on a shared host the minimum is the kernel's cost,
the rest is other processes' load) of one SwiGLU expert forward through the CPU kernel the runtime
uses for that format (`advisor.offload.cpu_experts`), on random weights of the exact shape, with torch's
current intra-op threads. Stored in the hardware profile (`HardwareProfile.cpu_experts`) by
`advisor profile --expert-shape HxI` / `--model`, and read by the time model (`advisor.offload.timing`).
"""

from __future__ import annotations

import datetime as dt
import time
from collections.abc import Sequence

import torch

from advisor.offload.timing import CPU_FORMATS, TOKENS, CpuProfile, shape_key


def _min_ms(fn, x: torch.Tensor, repeats: int) -> float:
    fn(x)  # warm-up (first-call allocations, int4 layout conversion already done)
    times = []
    for _ in range(repeats):
        t0 = time.perf_counter()
        fn(x)
        times.append(time.perf_counter() - t0)
    return min(times) * 1e3


def measure_cpu_experts(shapes: Sequence[tuple[int, int]], formats: Sequence[str] = CPU_FORMATS,
                        tokens: Sequence[int] = TOKENS, repeats: int = 3, seed: int = 0) -> CpuProfile:
    """CPU expert forward time (ms) at each (hidden, expert FFN) shape, format and token count, on this
    host's CPU (recorded with them: times measured elsewhere are labelled so where they are used)."""
    from advisor.hardware.profiles import host_cpu
    from advisor.models.experts import ExpertWeights
    from advisor.offload.cpu_experts import CpuExpert, kernel_label
    from advisor.quant.expert import quantize_expert

    g = torch.Generator().manual_seed(seed)
    table: dict[str, dict[str, list[list[float]]]] = {}
    kernels: dict[str, dict[str, None]] = {}  # per format, the kernels its shapes used (in order, no repeats)
    for hidden, inter in shapes:
        w = ExpertWeights(torch.randn(inter, hidden, generator=g) * 0.02, torch.randn(inter, hidden, generator=g)
                          * 0.02, torch.randn(hidden, inter, generator=g) * 0.02)
        row: dict[str, list[list[float]]] = {}
        for fmt in formats:
            expert = CpuExpert(quantize_expert(w, fmt), torch.nn.functional.silu)
            kernels.setdefault(fmt, {})[kernel_label(expert.kernel_name)] = None
            x_all = torch.randn(max(tokens), hidden, generator=g).to(torch.bfloat16)
            # the fallback kernel's time is affine in tokens (dequantize once, then a dense multiply): 3 points
            pts = tokens if expert.kernel_name != "dequantize" else sorted({tokens[0], tokens[len(tokens) // 2],
                                                                            tokens[-1]})
            row[fmt] = [[int(n), round(_min_ms(expert, x_all[:n], repeats), 5)] for n in pts]
        table[shape_key(hidden, inter)] = row
    threads = torch.get_num_threads()
    ks = ", ".join(f"{f}:{'/'.join(k)}" for f, k in kernels.items())  # "int8:int8pack_mm/dequantize": shapes differ
    return CpuProfile(table, threads, f"measured:wall-clock({dt.date.today().isoformat()}, {threads} threads, "
                                      f"min of {repeats}, kernels {ks})", host_cpu())
