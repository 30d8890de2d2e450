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
from collections.abc import Iterator, Sequence
from contextlib import contextmanager

import torch

from advisor.offload.timing import CPU_FORMATS, TOKENS, CpuProfile, shape_key
from advisor.units import count


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
    from advisor.offload.cpu_experts import kernel_label

    table: dict[str, dict[str, list[list[float]]]] = {}
    kernels: dict[str, dict[str, None]] = {}  # per format, the kernels its shapes used (in order, no repeats)
    for key, fmt, expert, x_all in _experts(shapes, formats, max(tokens), seed):
        kernels.setdefault(fmt, {})[kernel_label(expert.kernel_name)] = None
        # the fallback kernel's time is affine in tokens (dequantize once, then a dense multiply): 3 points
        pts = tokens if expert.kernel_name != "dequantize" else sorted({tokens[0], tokens[len(tokens) // 2],
                                                                        tokens[-1]})
        table.setdefault(key, {})[fmt] = [[int(n), round(_min_ms(expert, x_all[:n], repeats), 5)] for n in pts]
    threads = torch.get_num_threads()
    ks = ", ".join(f"{f}:{'/'.join(k)}" for f, k in kernels.items())  # "int8:int8pack_mm/dequantize": shapes differ
    return CpuProfile(table, threads, f"measured:wall-clock({dt.date.today().isoformat()}, {count(threads, 'thread')}, "
                                      f"min of {repeats}, kernels {ks})", host_cpu())


def _experts(shapes: Sequence[tuple[int, int]], formats: Sequence[str], tokens: int,
             seed: int) -> Iterator[tuple[str, str, object, torch.Tensor]]:
    """(shape key, format, CPU expert on seeded random weights, `tokens` bf16 inputs) for every shape and format."""
    from advisor.models.experts import ExpertWeights
    from advisor.offload.cpu_experts import CpuExpert
    from advisor.quant.expert import quantize_expert

    g = torch.Generator().manual_seed(seed)
    for hidden, inter in shapes:
        w = ExpertWeights(torch.randn(inter, hidden, generator=g) * 0.02, torch.randn(inter, hidden, generator=g)
                          * 0.02, torch.randn(hidden, inter, generator=g) * 0.02)
        for fmt in formats:
            expert = CpuExpert(quantize_expert(w, fmt), torch.nn.functional.silu)
            yield shape_key(hidden, inter), fmt, expert, torch.randn(tokens, hidden, generator=g).to(torch.bfloat16)


@contextmanager
def one_thread() -> Iterator[None]:
    """torch's intra-op pool at one thread for the block, the caller's count put back after: many small ops on a busy
    host only wait for each other on more threads (a 2-core host's 20-32 ms against 0.02-0.8 ms per expert)."""
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    try:
        yield
    finally:
        torch.set_num_threads(threads)


def thread_contention(profile: CpuProfile, shapes: Sequence[tuple[int, int]], repeats: int = 3,
                      factor: float = 3.0, seed: int = 0) -> str | None:
    """Why `profile`'s times (measured on several threads) do not price this CPU, or None: each format's
    smallest and largest token count measured again on one thread. Several threads are never `factor` times
    slower than one on the same kernel unless other work holds the cores and the threads wait for each other
    (on a busy 2-core host: 20-32 ms against 0.02-0.8 ms), which a minimum of a few runs does not remove."""
    if profile.threads <= 1:
        return None
    worst: tuple[float, str] | None = None
    with one_thread():
        formats = list(next(iter(profile.table.values())))
        most = int(max(rows[-1][0] for row in profile.table.values() for rows in row.values()))
        for key, fmt, expert, x_all in _experts(shapes, formats, most, seed):
            for n, many in (profile.table[key][fmt][0], profile.table[key][fmt][-1]):
                one = _min_ms(expert, x_all[: int(n)], repeats)
                if many > factor * one + 0.05 and (worst is None or many / one > worst[0]):
                    worst = (many / one, f"{fmt} {key} at {count(int(n), 'token')}: {many:.3g} ms on "
                                         f"{count(profile.threads, 'thread')}, {one:.3g} ms on 1")
    if worst is None:
        return None
    return (f"CPU expert times measured on {profile.threads} threads are up to {worst[0]:.0f}x one thread's "
            f"({worst[1]}): other work holds these cores and the threads wait for each other, so these times do "
            "not price this CPU; measure again on an idle host, or with fewer --threads")
