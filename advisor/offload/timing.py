"""Time per token, modelled from a routing trace: device expert compute + copies + CPU expert compute.

Per look-up (one MoE layer of one forward) the cache layer adds, from a `LayerCosts`:

* ``gpu_ms`` - experts computed on the device (hits, copied misses). Two device models:
  `DeviceRoofline` (the default: a fused-MoE runtime as users deploy - llama.cpp, vLLM, SGLang/KTransformers -
  reads each routed expert's stored bytes once from device memory or does its matmul FLOPs, whichever is
  slower, plus a fixed launch cost per MoE layer; `device_roofline` prices the GPU the profile names) and
  `DeviceCompute` (this project's eager per-expert forwards, measured on an H200 and scaled by weight count;
  what `--mode live` runs);
* ``copy_ms`` - demand copies (`HardwareProfile.transfer_ms`, the one transfer-time formula);
* ``cpu_ms`` - misses computed on the host: this host's measured CPU expert time for the expert's format,
  shape and token count (`CpuProfile`, from `advisor profile`), experts one after another (each kernel uses
  the intra-op threads);
* ``background_ms`` - copies off the critical path (placement of experts computed on the CPU, prefetch - a
  prefetch copy is charged to the next look-up of its layer, the one it serves);

and the look-up's time, with the CPU running beside the device: ``max(copy + gpu, cpu, copy + background)``.
Every term carries its source. Torch-free: `recommend`/`report` read these numbers.
"""

from __future__ import annotations

import bisect
import functools
import math
from collections.abc import Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass
from typing import Any, Protocol

TOKENS = (1, 2, 4, 8, 16, 32, 64, 128, 256)
"""Tokens per expert at which CPU expert time is measured."""
CPU_FORMATS = ("bf16", "int8", "int4", "int3")
"""Formats measured: one per CPU kernel (int3 stands for every format that dequantizes first)."""


INT4_KERNEL_GROUPS = (32, 64, 128, 256)
"""Group sizes torch's CPU int4 kernel takes (asymmetric int4 only; `advisor.offload.cpu_experts`)."""


@functools.cache
def kernel_format(fmt: str) -> str:
    """The measured format whose CPU kernel `fmt` uses (the rule of `advisor.offload.cpu_experts.kernel_for`,
    read from the parsed format, so "int4:g128" or "int4:asym" is priced as the int4 kernel it runs)."""
    from advisor.quant.spec import parse_format

    spec = parse_format(fmt)
    if spec.kind == "fp32":  # F.linear in fp32: not among CPU_FORMATS, priced with bf16's times and labelled so
        return "fp32"
    if spec.kind in ("bf16", "fp16"):
        return "bf16"
    if spec.kind == "int8":
        return "int8"
    if spec.kind == "int4" and not spec.symmetric and spec.group in INT4_KERNEL_GROUPS:
        return "int4"
    return "int3"


def plan_kernels(plan: Any) -> list[str]:
    """The measured CPU kernels (`CPU_FORMATS`) whose times price a precision plan's formats: fp32 is priced
    with bf16's (`ModelCosts.source` says so)."""
    from advisor.quant.plan import PrecisionPlan

    found = {kernel_format(f) for f in PrecisionPlan.parse(plan).formats_used()}
    return [f for f in CPU_FORMATS if f in found or (f == "bf16" and "fp32" in found)]


def shape_key(hidden: int, intermediate: int) -> str:
    return f"{int(hidden)}x{int(intermediate)}"


def kernels_text(key: str, fmts: Iterable[str]) -> str:
    """An expert shape's CPU kernels as labels name them: "HxI" for all of them, else "HxI:int8,int3"."""
    fmts = list(fmts)
    return key if set(fmts) >= set(CPU_FORMATS) else f"{key}:{','.join(fmts)}"


@dataclass(frozen=True)
class CpuProfile:
    """This host's measured CPU expert time: ms per expert forward by shape, format and tokens."""

    table: Mapping[str, Mapping[str, Sequence[Sequence[float]]]]  # "HxI" -> format -> [[tokens, ms], ...]
    threads: int
    source: str  # e.g. "measured:wall-clock(2026-12-03, 2 threads, min of 3, kernels ...)"
    host: str = ""
    """The CPU that measured them (`advisor.hardware.profiles.host_cpu`; "A + B" when completed on another);
    "" when not recorded (times stored before it was)."""

    @classmethod
    def from_dict(cls, d: Mapping[str, Any]) -> CpuProfile:
        return cls(table=d["table"], threads=int(d["threads"]), source=str(d["source"]), host=str(d.get("host") or ""))

    def to_dict(self) -> dict[str, Any]:
        d = {"table": {k: dict(v) for k, v in self.table.items()}, "threads": self.threads, "source": self.source}
        return {**d, "host": self.host} if self.host else d

    def lacking(self, shapes: Iterable[tuple[int, int]],
                kernels: Iterable[str] = CPU_FORMATS) -> dict[tuple[int, int], list[str]]:
        """Per expert shape (hidden, FFN) that lacks any, the CPU kernels (of `kernels`) without times here."""
        kernels = list(kernels)
        out = {}
        for h, i in shapes:
            fmts = [f for f in kernels if f not in self.table.get(shape_key(h, i), {})]
            if fmts:
                out[(h, i)] = fmts
        return out

    def filled(self, measured: Iterable[CpuProfile], origin: str) -> CpuProfile:
        """These times (from `origin`, e.g. "study"), and each of `measured`'s where these have none (never
        replacing one): the source names both parts, e.g. "<source> (profile) + 2048x1408:int3 <source>", and the
        host the CPUs that measured them. Without an origin (times stored for later readers, as a hardware
        profile's, where "this run" would be whichever run reads them), these times' own shapes name them, as
        the others' do: "64x32 <source> + 128x16 <source>"."""
        table = {k: dict(v) for k, v in self.table.items()}
        parts, hosts = [], [self.host]
        for m in measured:
            added = []
            for k, row in m.table.items():
                new = {f: pts for f, pts in row.items() if f not in table.get(k, {})}
                if new:
                    table.setdefault(k, {}).update(new)
                    added.append(kernels_text(k, new))
            if added:
                parts.append(f"{', '.join(added)} {m.source}")
                hosts.append(m.host)
        if not parts:
            return self
        host = "" if "" in hosts else " + ".join(dict.fromkeys(hosts))  # one part's CPU unknown: all unknown
        head = (f"{self.source} ({origin})" if origin else
                f"{', '.join(kernels_text(k, row) for k, row in self.table.items())} {self.source}")
        return CpuProfile(table, self.threads, " + ".join([head, *parts]), host)

    def nearest(self, key: str) -> str:
        """The measured shape closest in weight count to `key` ("HxI")."""
        size = _size(key)
        return min(self.table, key=lambda k: abs(math.log(_size(k) / size)))

    def ms(self, fmt: str, hidden: int, intermediate: int, tokens: int) -> tuple[float, bool]:
        """(ms, scaled): piecewise linear in tokens (linear beyond the last point); a shape not measured is
        scaled by weight count from the nearest measured one (`scaled` True)."""
        key = shape_key(hidden, intermediate)
        scaled = key not in self.table
        if scaled:
            key = self.nearest(key)
        rows = self.table[key].get(kernel_format(fmt)) or self.table[key]["bf16"]  # `ModelCosts.source` says so
        ms = _interp(rows, tokens)
        return (ms * hidden * intermediate / _size(key) if scaled else ms), scaled


def _size(key: str) -> int:
    h, i = key.split("x")
    return int(h) * int(i)


def _interp(rows: Sequence[Sequence[float]], n: float) -> float:
    xs = [r[0] for r in rows]
    if n <= xs[0]:
        return float(rows[0][1])
    j = bisect.bisect_left(xs, n)
    if j >= len(xs):  # beyond the last point: linear from the last two
        (x0, y0), (x1, y1) = rows[-2], rows[-1]
    else:
        (x0, y0), (x1, y1) = rows[j - 1], rows[j]
    return float(y0 + (y1 - y0) * (n - x0) / (x1 - x0))


class DeviceModel(Protocol):
    """What the cost model asks of a device model (`DeviceRoofline`, `DeviceCompute`)."""

    @property
    def layer_ms(self) -> float:
        """Fixed ms per MoE layer and forward that computes any expert on the device."""
        ...

    @property
    def source(self) -> str: ...

    def expert_terms(self, fmt: str, hidden: int, intermediate: int, nbytes: int) -> tuple[float, float]:
        """(fixed ms, ms per routed token) of one expert forward; it takes the larger of the two."""
        ...


@dataclass(frozen=True)
class DeviceCompute:
    """Device-side expert forward time: measured per format at one reference shape and token count."""

    ref_ms: Mapping[str, float]  # format -> ms per expert forward
    hidden: int
    intermediate: int
    tokens: int
    source: str

    layer_ms = 0.0
    """No fixed cost per layer: the measured forwards carry their own launch overhead."""

    def ms(self, fmt: str) -> float:
        base = self.ref_ms.get(fmt) or self.ref_ms.get(fmt.split(":")[0]) or self.ref_ms.get("int4") or \
            max(self.ref_ms.values())
        return float(base)

    def scale(self, hidden: int, intermediate: int) -> float:
        return hidden * intermediate / (self.hidden * self.intermediate)

    def expert_terms(self, fmt: str, hidden: int, intermediate: int, nbytes: int) -> tuple[float, float]:
        """(fixed ms, ms per routed token) of one expert forward on the device."""
        return self.ms(fmt) * self.scale(hidden, intermediate), 0.0

    @classmethod
    def from_gpu_check(cls, path: str) -> DeviceCompute:
        """From a `benchmarks/gpu_check.py` result file (its quant section's measured expert forwards;
        formats without a forward time, e.g. a kernel the device lacked, are left out)."""
        import json

        with open(path) as f:
            d = json.load(f)
        q = d["sections"]["quant"]["result"]["formats"]
        e = q["expert"]
        return cls({r["format"]: float(r["forward_ms"]) for r in q["rows"] if r.get("forward_ms") is not None},
                   int(e["hidden"]), int(e["intermediate"]), int(e["tokens"]),
                   f"measured:cuda-events({q['device']},{e['hidden']}x{e['intermediate']},{e['tokens']} tokens)"
                   " scaled by weight count")


RECORDED_H200 = DeviceCompute(
    {"fp32": 0.2107, "bf16": 0.1218, "fp16": 0.1706, "int8": 0.2962, "fp8": 0.2811, "int4": 0.9119,
     "int4:g64": 0.7805, "int4:sym": 0.7355, "int3": 1.0619, "int2": 0.9870},
    2048, 1024, 32,
    "measured:cuda-events(NVIDIA H200, 2026-11-30, 2048x1024, 32 tokens; benchmarks/results/"
    "2026-11-30_h200_gpu_check.json) scaled by weight count",
)
"""This project's eager expert forwards (one expert at a time, int4 dequantized first) on an H200."""


@dataclass(frozen=True)
class DeviceRoofline:
    """Device expert compute of a fused-MoE kernel: an expert forward reads the expert's stored bytes once
    (memory-bound below a few hundred tokens per expert) or does 6 x hidden x FFN FLOPs per routed token,
    whichever takes longer; one fixed launch cost per MoE layer and forward. Quantized experts read fewer
    bytes (what llama.cpp's and Marlin-style kernels exploit at decode batch sizes)."""

    hbm_gbps: float  # device memory bandwidth, GB/s
    tflops: float  # dense matmul throughput, TFLOP/s
    layer_us: float  # fixed cost per MoE layer and forward (routing + grouped-GEMM launches)
    source: str

    @property
    def layer_ms(self) -> float:
        return self.layer_us / 1e3

    def expert_terms(self, fmt: str, hidden: int, intermediate: int, nbytes: int) -> tuple[float, float]:
        """(ms to read the weights, ms of matmul per routed token); the forward takes the larger."""
        return nbytes / (self.hbm_gbps * 1e6), 6.0 * hidden * intermediate / (self.tflops * 1e9)


LAYER_US = 20.0
"""Assumed fixed cost per MoE layer and forward of a fused-MoE runtime (routing + grouped-GEMM launches)."""


def device_roofline(profile: Any = None) -> DeviceRoofline:
    """The fused-MoE device model of the GPU a hardware profile names, from its catalogue (nominal) memory
    bandwidth and dense bf16 TFLOP/s (`advisor.hardware.profiles.nominal_device`: a measured profile by its
    device's name). No GPU named (None, or the default modelling profile): the H200. A named GPU without
    catalogue figures (an uncatalogued GPU's or a host's measured profile) is priced as the H200 too, and the
    source says so: the profile's measured link and CPU times stay usable, and no label names a GPU whose
    figures were not used."""
    from advisor.hardware.profiles import priced_device

    dev, label = priced_device(profile)
    return DeviceRoofline(
        dev.mem_gbps, dev.tflops, LAYER_US,
        f"modelled:roofline({label}: {dev.mem_gbps:g} GB/s, {dev.tflops:g} TFLOP/s dense {dev.dtype}; "
        f"{LAYER_US:g} us per MoE layer, assumed)",
    )


def model_costs(plan: Any, hidden: Sequence[int], intermediate: Sequence[int], cpu: CpuProfile | Mapping[str, Any],
                profile: Any = None) -> ModelCosts:
    """The time model `hybrid` misses are balanced with: `cpu`'s expert times (a `CpuProfile`, or the dict a
    study stores), the link of hardware `profile` (a `HardwareProfile` or its dict; None or {}: the modelling
    default) and a fused-MoE device at its GPU's roofline. One definition for a study's trials
    (`ModelBackend.costs`) and an exported recipe, which rebuilds it from what the study stored."""
    from advisor.hardware.profiles import DEFAULT_PROFILE, HardwareProfile

    if isinstance(cpu, Mapping):
        cpu = CpuProfile.from_dict(cpu)
    if isinstance(profile, Mapping):
        profile = HardwareProfile.from_dict(dict(profile)) if profile else None
    return ModelCosts(plan, hidden, intermediate, cpu, device_roofline(profile), profile or DEFAULT_PROFILE)


def link_ms(gpu: float, copy: float, background: float) -> float:
    """A look-up's device side: demand copies precede device compute and the background copies (same link)."""
    return copy + max(gpu, background)


def lookup_ms(gpu: float, copy: float, cpu: float, background: float) -> float:
    """A look-up's time, max(copy + gpu, cpu, copy + background): the CPU runs beside the device side."""
    return max(link_ms(gpu, copy, background), cpu)


class LayerCosts:
    """One MoE layer's per-expert cost functions (tables precomputed: the replay loop calls these)."""

    def __init__(self, fmts: Sequence[str], expert_bytes: Sequence[int], hidden: int, intermediate: int,
                 cpu: CpuProfile, device: DeviceModel, link: Any):
        self.expert_bytes = list(expert_bytes)
        self.link = link
        terms = [device.expert_terms(f, hidden, intermediate, b) for f, b in zip(fmts, expert_bytes, strict=True)]
        self._gpu_fixed = [t[0] for t in terms]
        self._gpu_per_token = [t[1] for t in terms]
        self.gpu_layer_ms = float(device.layer_ms)
        by_fmt = {f: [cpu.ms(f, hidden, intermediate, n)[0] for n in range(TOKENS[-1] + 1)] for f in set(fmts)}
        self._cpu_tab = [by_fmt[f] for f in fmts]
        self._slope = [(t[-1] - t[TOKENS[-2]]) / (TOKENS[-1] - TOKENS[-2]) for t in self._cpu_tab]

    def gpu_ms(self, e: int, n: int) -> float:
        return max(self._gpu_fixed[e], self._gpu_per_token[e] * n)

    def cpu_ms(self, e: int, n: int) -> float:
        tab = self._cpu_tab[e]
        return tab[n] if n < len(tab) else tab[-1] + self._slope[e] * (n - len(tab) + 1)

    def cpu_batch_ms(self, work: Sequence[tuple[int, int]]) -> float:
        return sum(self.cpu_ms(e, n) for e, n in work)

    def copy_ms(self, experts: Sequence[int]) -> float:
        eb = self.expert_bytes
        return float(self.link.transfer_ms(sum(eb[e] for e in experts), len(experts)))

    def lookup_terms(self, on_device: Sequence[int], copied: Sequence[int], on_cpu: Sequence[int],
                     placed: Sequence[int], n: Callable[[int], int]) -> tuple[float, float, float, float]:
        """(gpu, copy, cpu, background) ms of one look-up (`n`: routed tokens of an expert); its time is
        `lookup_ms` of them."""
        gpu = sum(self.gpu_ms(e, n(e)) for e in on_device) + (self.gpu_layer_ms if on_device else 0.0)
        cpu = self.cpu_batch_ms([(e, n(e)) for e in on_cpu]) if on_cpu else 0.0
        return gpu, self.copy_ms(copied) if copied else 0.0, cpu, self.copy_ms(placed) if placed else 0.0

    def thresholds(self) -> list[int]:
        """Per expert, the fewest routed tokens for which copying (and computing on the device) is
        cheaper than computing on the CPU: hybrid's rule. Experts with the same costs (a layer's experts
        usually share format and size) are searched once."""
        found: dict[tuple[Any, ...], int] = {}
        out = []
        for e in range(len(self.expert_bytes)):
            key = (self._gpu_fixed[e], self._gpu_per_token[e], id(self._cpu_tab[e]), self.expert_bytes[e])
            if key not in found:
                copy = self.copy_ms([e])
                found[key] = next((n for n in range(1, 4097) if self.cpu_ms(e, n) >= copy + self.gpu_ms(e, n)),
                                  1 << 30)
            out.append(found[key])
        return out


class ModelCosts:
    """Cost model of a whole model: formats from the precision plan, shapes from the trace meta."""

    def __init__(self, plan: Any, hidden: Sequence[int], intermediate: Sequence[int], cpu: CpuProfile,
                 device: DeviceModel, link: Any):
        from advisor.quant.plan import PrecisionPlan

        self.plan = PrecisionPlan.parse(plan)
        self.hidden, self.intermediate = list(hidden), list(intermediate)
        self.cpu, self.device, self.link = cpu, device, link
        keys = [shape_key(h, i) for h, i in zip(self.hidden, self.intermediate, strict=True)]
        scaled = any(k not in cpu.table for k in keys)
        rows = [cpu.table[k] if k in cpu.table else cpu.table[cpu.nearest(k)] for k in keys]
        as_bf16 = sorted(f for f in self.plan.formats_used() if any(kernel_format(f) not in r for r in rows))
        self.source = (f"modelled:gpu={device.source};copies={link.tag};"
                       f"cpu={cpu.source}{' scaled to this shape' if scaled else ''}"
                       f"{'; ' + ', '.join(as_bf16) + ' priced with bf16 times (not measured)' if as_bf16 else ''}")

    def layer(self, layer: int, expert_bytes: Sequence[int]) -> LayerCosts:
        fmts = [self.plan.format_for(layer, e) for e in range(len(expert_bytes))]
        return LayerCosts(fmts, expert_bytes, self.hidden[layer], self.intermediate[layer], self.cpu,
                          self.device, self.link)
