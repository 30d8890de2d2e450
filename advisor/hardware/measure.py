"""Measure a hardware profile on this machine (imports torch; kept apart from the torch-free `advisor.hardware.profiles`).

CUDA: host-to-device copies of a few sizes from pinned and from pageable host memory, timed with CUDA events,
median of repeats; bandwidth is the slope of time over size, latency its intercept (so a fixed per-copy
cost does not pollute the bandwidth). Free and total memory come from `torch.cuda.mem_get_info`.
CPU (no CUDA): the same fit over host-to-host copies between two buffers, timed by wall clock; the result is
a profile for *modelled* times on this host only, and its source says so.
"""

from __future__ import annotations

import datetime as dt
import os
import platform
import statistics
import time
from collections.abc import Callable, Sequence
from typing import Any

from advisor.errors import UserError
from advisor.hardware.profiles import HardwareProfile

MiB = 1 << 20
DEFAULT_SIZES = (1 * MiB, 8 * MiB, 32 * MiB, 128 * MiB)
LATENCY_BYTES = 4096
MAX_REPEATS = 100
"""The most timed repeats per size `advisor profile --repeats` takes. Each repeat copies every size once more
(169 MiB; on a GPU from pinned and from pageable memory): 100 took 10.6 s of host memcpy on the 2-core host
(measured 2026-12-06), and a median of 100 copies is as steady as the host's noise lets it be, so more only
took longer - `--repeats 99999999` ran for days without a word."""


def check_repeats(repeats: int) -> int:
    """`repeats` for `measure_profile` / `measure_cpu_profile`, refused in one line outside 1..`MAX_REPEATS`."""
    if not 1 <= repeats <= MAX_REPEATS:
        raise UserError(f"--repeats {repeats}: give 1 to {MAX_REPEATS} (the median of a size's copies; each "
                        f"repeat copies all {len(DEFAULT_SIZES)} sizes, {sum(DEFAULT_SIZES) // MiB} MiB, once more, "
                        f"and a median of {MAX_REPEATS} is already steady)")
    return repeats


def device_text(device: Any) -> str:
    """A device as trials and evaluations name it: "cpu", or "cuda:0 (NVIDIA H200)" (which GPU measured)."""
    import torch

    device = torch.device(device)
    if device.type == "cuda":
        idx = device.index if device.index is not None else torch.cuda.current_device()
        return f"cuda:{idx} ({torch.cuda.get_device_name(idx)})"
    return device.type


def cuda_available() -> bool:
    import torch

    return bool(torch.cuda.is_available())


def profile_name(cuda: bool, device: Any = None) -> str:
    """The name a profile measured here is stored under without --name: the CUDA device's (`device`, default the
    current one), else this host's (`measure_profile`, `measure_cpu_profile`); known before the measuring, so a
    name taken is said first."""
    if cuda:
        import torch

        return torch.cuda.get_device_name(torch.cuda.current_device() if device is None else device)
    return f"cpu {platform.machine()} {platform.node()}".strip()


def _fit(sizes: Sequence[int], seconds: Sequence[float]) -> tuple[float, float]:
    """Least-squares line time = a + size / bw; returns (GB/s, intercept in us). Falls back to the largest
    size's throughput when the fit is degenerate (noise can make the slope non-positive)."""
    n = len(sizes)
    mx, my = sum(sizes) / n, sum(seconds) / n
    sxx = sum((x - mx) ** 2 for x in sizes)
    slope = sum((x - mx) * (y - my) for x, y in zip(sizes, seconds, strict=True)) / sxx if sxx else 0.0
    if slope <= 0:
        return sizes[-1] / seconds[-1] / 1e9, 0.0
    intercept = max(0.0, my - slope * mx)
    return 1.0 / slope / 1e9, intercept * 1e6


def _bandwidth(sizes: Sequence[int], seconds: Sequence[float], latency_s: float) -> float:
    """GB/s for a profile that prices a copy as bytes / bandwidth + the separately measured per-copy latency: the
    fitted slope, but never faster than the largest copy was with that latency taken off. On a loaded host the
    copies' times can be nearly flat in their size (a time slice dominating each), and the slope then claimed
    thousands of GB/s while the intercept that carried the time was dropped."""
    gbps, _ = _fit(sizes, seconds)
    big = max(range(len(sizes)), key=lambda i: sizes[i])
    spent = seconds[big] - latency_s
    if spent > 0:
        gbps = min(gbps, sizes[big] / spent / 1e9)
    return gbps


def _median_time(run: Callable[[], float], repeats: int) -> float:
    run()  # warm-up
    return statistics.median(run() for _ in range(repeats))


def _today() -> str:
    return dt.date.today().isoformat()


def measure_profile(device: int | None = None, sizes: Sequence[int] = DEFAULT_SIZES, repeats: int = 5) -> HardwareProfile:
    """Profile the current (or given) CUDA device: pinned/pageable H2D GB/s, per-copy latency, memory."""
    import torch

    if not torch.cuda.is_available():
        raise RuntimeError("measure_profile needs CUDA; use measure_cpu_profile() on a host without a GPU")
    dev = torch.device("cuda", torch.cuda.current_device() if device is None else device)
    torch.cuda.set_device(dev)
    free, total = torch.cuda.mem_get_info(dev)
    start, end = torch.cuda.Event(enable_timing=True), torch.cuda.Event(enable_timing=True)

    def timed_copy(src: torch.Tensor, dst: torch.Tensor) -> Callable[[], float]:
        def run() -> float:
            start.record()
            dst.copy_(src, non_blocking=True)
            end.record()
            end.synchronize()
            return start.elapsed_time(end) / 1e3

        return run

    times: dict[bool, list[float]] = {}
    for pinned in (True, False):
        times[pinned] = []
        for n in sizes:
            src = torch.empty(n, dtype=torch.uint8, pin_memory=pinned)
            dst = torch.empty(n, dtype=torch.uint8, device=dev)
            times[pinned].append(_median_time(timed_copy(src, dst), repeats))
            del src, dst
    small_src = torch.empty(LATENCY_BYTES, dtype=torch.uint8, pin_memory=True)
    small_dst = torch.empty(LATENCY_BYTES, dtype=torch.uint8, device=dev)
    latency_us = _median_time(timed_copy(small_src, small_dst), max(repeats, 20)) * 1e6
    results = {pinned: _bandwidth(sizes, t, latency_us / 1e6) for pinned, t in times.items()}
    torch.cuda.empty_cache()
    return HardwareProfile(
        name=profile_name(cuda=True, device=dev),
        memory_bytes=int(total),
        h2d_gbps_pinned=round(results[True], 3),
        h2d_gbps_pageable=round(results[False], 3),
        copy_latency_us=round(latency_us, 2),
        source=f"measured:{_today()} cuda-events median of {repeats}, sizes {[s // MiB for s in sizes]} MiB",
        link="measured",
        free_bytes=int(free),
    )


def measure_cpu_profile(sizes: Sequence[int] = DEFAULT_SIZES, repeats: int = 5) -> HardwareProfile:
    """A host memcpy profile (two host buffers), for modelled transfer times on a machine without CUDA."""
    import torch

    def timed_copy(src: torch.Tensor, dst: torch.Tensor) -> Callable[[], float]:
        def run() -> float:
            t0 = time.perf_counter()
            dst.copy_(src)
            return time.perf_counter() - t0

        return run

    times = []
    for n in sizes:
        src = torch.ones(n, dtype=torch.uint8)
        dst = torch.empty(n, dtype=torch.uint8)
        times.append(_median_time(timed_copy(src, dst), repeats))
    small = torch.ones(LATENCY_BYTES, dtype=torch.uint8), torch.empty(LATENCY_BYTES, dtype=torch.uint8)
    latency_us = _median_time(timed_copy(*small), max(repeats, 20)) * 1e6
    gbps = _bandwidth(sizes, times, latency_us / 1e6)
    try:
        total = os.sysconf("SC_PAGE_SIZE") * os.sysconf("SC_PHYS_PAGES")
        free = os.sysconf("SC_PAGE_SIZE") * os.sysconf("SC_AVPHYS_PAGES")
    except (ValueError, OSError, AttributeError):
        total, free = 0, None
    return HardwareProfile(
        name=profile_name(cuda=False),
        memory_bytes=int(total),
        h2d_gbps_pinned=round(gbps, 3),
        h2d_gbps_pageable=round(gbps, 3),
        copy_latency_us=round(latency_us, 2),
        source=f"measured-cpu:{_today()} host memcpy wall-clock median of {repeats} (no GPU: for modelled times only)",
        link="host memcpy",
        free_bytes=free,
    )
