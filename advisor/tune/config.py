"""From knob values to a concrete configuration: a per-expert precision map, GPU slots per layer, policy.

Torch-free on purpose: the memory constraint is decided here from counted bytes, before any model runs,
and `recommend`/`report` can rebuild a stored configuration without importing torch.

The precision plan is built from its explicit grid (one format per (layer, expert), `PrecisionPlan.from_grid`)
before it is fingerprinted, so two knob settings that produce the same weights - a hot set in the layers' own
format, a hot fraction that rounds to no expert - share one fingerprint, hence one accuracy measurement and
one routing trace.
"""

from __future__ import annotations

import functools
import json
from collections.abc import Mapping, Sequence
from dataclasses import asdict, dataclass, field
from typing import Any

from advisor.quant.plan import PrecisionPlan, hot_experts
from advisor.quant.spec import canonical_name, expert_nbytes_of
from advisor.results.config_view import cache_of, plan_of, precision_of
from advisor.tune.space import SearchSpace


@dataclass(frozen=True)
class ModelShape:
    """What the tuner needs to know about a model, as plain numbers (counted from its weights)."""

    num_experts: tuple[int, ...]  # per MoE layer
    top_k: tuple[int, ...]
    hidden: tuple[int, ...]
    intermediate: tuple[int, ...]
    native_format: str  # the experts' stored dtype as a format name ("bf16", "fp32", ...)
    resident_bytes: int
    """Bytes that stay on the GPU whatever the cache: every weight except routed experts (counted)."""
    activation_bytes: int = 0
    """Activation allowance of one forward (offloaded models: measured by a probe forward), added to the peak."""
    staging: bool = False
    """Offloaded models: count the staging buffers of streamed experts in the peak (their weights are nowhere
    else on the device)."""

    @property
    def n_layers(self) -> int:
        return len(self.num_experts)

    @property
    def min_experts(self) -> int:
        return min(self.num_experts)

    def expert_bytes(self, layer: int, fmt: str) -> int:
        """Exact bytes of one expert of `layer` in format `fmt` (payload + scales)."""
        return _expert_nbytes(fmt, self.hidden[layer], self.intermediate[layer])

    def full_bytes(self) -> int:
        """Counted bytes of the whole model at its own dtype (resident + every expert)."""
        return self.resident_bytes + sum(
            n * self.expert_bytes(layer, self.native_format) for layer, n in enumerate(self.num_experts)
        )

    def to_json(self) -> dict[str, Any]:
        return asdict(self)


@functools.cache
def _expert_nbytes(fmt: str, hidden: int, intermediate: int) -> int:
    """Memoised: a budget-aware study counts the bytes of thousands of experts per trial (advisor.tune.budget)."""
    return expert_nbytes_of(fmt, hidden, intermediate)


@dataclass(frozen=True)
class TrialConfig:
    """One point of the search space made concrete for one model."""

    params: dict[str, Any]
    plan: PrecisionPlan
    layer_formats: tuple[str, ...]
    hot_fraction: float
    hot_format: str
    slots: tuple[int, ...]
    policy: str
    prefetch: str
    miss: str = "copy"
    """Miss policy (advisor.offload.miss): where a missed expert computes."""
    tau: int = 0
    """Refresh interval of the tide policy (0 = not used)."""
    peak_bytes: int = 0
    """Counted GPU bytes: resident weights + the largest experts that fit the slots of each layer."""
    expert_store_bytes: int = 0
    """Counted bytes of every expert at its planned format (the host-side store)."""
    notes: dict[str, Any] = field(default_factory=dict)
    num_experts: tuple[int, ...] = ()
    """Routed experts per MoE layer of the model the configuration is for (the plan's grid)."""

    @property
    def cache_key(self) -> tuple:
        return (tuple(self.slots), self.policy, self.prefetch, self.miss, self.tau)

    def to_json(self) -> dict[str, Any]:
        """The configuration as stored with a trial and a front point (what `recommend`/`export` read)."""
        return {
            "params": dict(self.params),
            "precision": json.loads(self.plan.to_json()),
            "precision_spec": self.plan.spec,
            "precision_description": self.plan.describe(self.num_experts),
            "plan_fingerprint": self.plan.fingerprint,
            "layer_formats": list(self.layer_formats),
            "hot_fraction": self.hot_fraction,
            "hot_format": self.hot_format,
            "slots_per_layer": list(self.slots),
            "policy": self.policy,
            "prefetch": self.prefetch,
            "miss_policy": self.miss,
            "tau": self.tau,
            "counted_peak_gpu_bytes": self.peak_bytes,
            "counted_expert_store_bytes": self.expert_store_bytes,
        }

    @classmethod
    def from_json(cls, d: Mapping[str, Any], num_experts: Sequence[int]) -> TrialConfig:
        """The inverse of `to_json` for a model with `num_experts` routed experts per MoE layer (the stored
        plan is sparse; the grid needs the counts). The plan and the cache are read as the read-only side reads
        them (`advisor.results.config_view`); derived keys (spec, description, fingerprint) are not read."""
        cache = cache_of(d, num_experts)
        return cls(
            params=dict(d.get("params") or {}),
            plan=plan_of(precision_of(d)),
            layer_formats=tuple(d["layer_formats"]),
            hot_fraction=float(d["hot_fraction"]),
            hot_format=str(d["hot_format"]),
            slots=cache.slots,
            policy=cache.policy,
            prefetch=cache.prefetch,
            miss=cache.miss,
            tau=cache.tau,
            peak_bytes=int(d.get("counted_peak_gpu_bytes", 0)),
            expert_store_bytes=int(d.get("counted_expert_store_bytes", 0)),
            num_experts=tuple(int(n) for n in num_experts),
        )


def build_plan(layer_formats: Sequence[str], hot_fraction: float, hot_format: str, shape: ModelShape,
               counts: Mapping[int, Sequence[int]] | None) -> PrecisionPlan:
    """Per-layer formats, with each layer's hottest `hot_fraction` of experts in `hot_format`."""
    frozen = None if counts is None else tuple((layer, tuple(c)) for layer, c in counts.items())
    return _build_plan(tuple(layer_formats), hot_fraction, hot_format, tuple(shape.num_experts), frozen)


@functools.lru_cache(maxsize=128)  # a plan of a 256-expert, 60-layer model holds thousands of overrides
def _build_plan(layer_formats: tuple[str, ...], hot_fraction: float, hot_format: str, num_experts: tuple[int, ...],
                frozen: tuple[tuple[int, tuple[int, ...]], ...] | None) -> PrecisionPlan:
    """`build_plan` on hashable arguments, memoised (one plan object per setting, fingerprinted once): a
    budget-aware study counts thousands of configurations of a few plans (`advisor.tune.budget`)."""
    counts = dict(frozen) if frozen is not None else None
    rows = []
    for layer, n in enumerate(num_experts):
        base = canonical_name(layer_formats[layer])
        row = [base] * n
        if canonical_name(hot_format) != base:
            layer_counts = list(counts[layer]) if counts and layer in counts else [0] * n
            for e in hot_experts(layer_counts, hot_fraction):
                row[e] = canonical_name(hot_format)
        rows.append(row)
    return PrecisionPlan.from_grid(rows)


def allocate_slots(total: int, shape: ModelShape, rule: str, counts: Mapping[int, Sequence[int]] | None) -> list[int]:
    """Split a total GPU expert budget over layers (each layer gets 1..its experts).

    "uniform": equal shares. "by_frequency": in proportion to each layer's working set - the number of
    experts that carry 90% of its calibration routing - since a layer whose routing is concentrated needs
    fewer slots for the same hit rate.
    """
    frozen = tuple((layer, tuple(c)) for layer, c in counts.items()) if rule == "by_frequency" and counts else None
    return list(_allocate_slots(total, tuple(shape.num_experts), frozen))


@functools.lru_cache(maxsize=1024)
def _allocate_slots(total: int, num_experts: tuple[int, ...],
                    frozen: tuple[tuple[int, tuple[int, ...]], ...] | None) -> tuple[int, ...]:
    """`allocate_slots` on hashable arguments, memoised: by frequency where routing counts are given (`frozen`),
    else uniform. A budget-aware study allocates a few totals thousands of times (`advisor.tune.budget`)."""
    counts = dict(frozen) if frozen is not None else None
    n = len(num_experts)
    caps = list(num_experts)
    total = max(n, min(total, sum(caps)))
    if counts:
        weights = []
        for layer in range(n):
            c = sorted(counts.get(layer, [1] * caps[layer]), reverse=True)
            s, acc, ws = sum(c) or 1, 0, 0
            for x in c:
                acc += x
                ws += 1
                if acc >= 0.9 * s:
                    break
            weights.append(max(ws, 1))
    else:
        weights = [1] * n
    slots = [1] * n
    remaining = total - n
    # largest-remainder apportionment of what is left, respecting per-layer caps
    while remaining > 0:
        open_layers = [i for i in range(n) if slots[i] < caps[i]]
        if not open_layers:
            break
        wsum = sum(weights[i] for i in open_layers)
        shares = {i: remaining * weights[i] / wsum for i in open_layers}
        given = 0
        for i in open_layers:
            add = min(int(shares[i]), caps[i] - slots[i])
            slots[i] += add
            given += add
        if given == 0:  # hand out single slots by largest fractional share
            for i in sorted(open_layers, key=lambda i: (-(shares[i] - int(shares[i])), i)):
                if remaining - given <= 0:
                    break
                if slots[i] < caps[i]:
                    slots[i] += 1
                    given += 1
        remaining -= given
    return tuple(slots)


def counted_peak_bytes(shape: ModelShape, plan: PrecisionPlan, slots: Sequence[int], prefetch: str = "none",
                       miss: str = "copy") -> int:
    """Resident weights + for each layer the `slots` largest experts of its plan (the most its cache can hold);
    for offloaded models also the activation allowance and the staging buffers: at worst every expert of one
    layer that has no slot streams at once (none when misses are computed on the CPU, `miss` "cpu"), plus what
    prefetch stages - at most a layer's slot count of experts without a slot (the runtime's staging limit):
    the next layer's for "lookahead", every layer's at once for "prev_step" (staged at the forward's start).
    The device kernels' workspace is not counted (the CUDA allocator measured a little more on the H200:
    benchmarks/results/2026-12-04_h200_miss_study_note.md); a live CUDA trial checks the measured peak."""
    total = shape.resident_bytes + shape.activation_bytes
    demand, staged = 0, []
    per_layer = expert_sizes(shape, plan)
    for layer, s in enumerate(slots):
        sizes = per_layer[layer]
        total += sum(sizes[:s])
        unslotted = len(sizes) - min(s, len(sizes))
        demand = max(demand, unslotted * (sizes[0] if sizes else 0))
        staged.append(min(s, unslotted) * (sizes[0] if sizes else 0))
    if shape.staging:
        total += demand * (miss != "cpu")
        if prefetch == "prev_step":
            total += sum(staged)
        elif prefetch != "none":
            total += max(staged, default=0)
    return total


def peak_source(shape: ModelShape, prefetch: str = "none", miss: str = "copy") -> str:
    """What `counted_peak_bytes` counts for these settings, as the trial's `peak_gpu_bytes` source: staging only
    where it counts some (copied misses, or prefetch), the activation allowance for offloaded models."""
    if not getattr(shape, "staging", False):  # as the objective read it: a test backend's shape may lack it
        return "counted:resident-weights+slots*expert-bytes"
    staged = miss != "cpu" or prefetch != "none"
    return "counted:resident-weights+slots*expert-bytes" + ("+staging" if staged else "") + "+activation-allowance"


def uniform_peak_bytes(shape: ModelShape, fmt: str, slots: int | Sequence[int], prefetch: str = "none",
                       miss: str = "copy") -> int:
    """`counted_peak_bytes` of every expert in `fmt` with `slots` per MoE layer (one count for every layer, or one
    per layer; capped at each layer's experts): the configurations `advisor inspect --budget` sizes, counted as a
    study counts them."""
    plan = build_plan([fmt] * shape.n_layers, 0.0, fmt, shape, None)
    return counted_peak_bytes(shape, plan, layer_slots(shape, slots), prefetch, miss)


def layer_slots(shape: ModelShape, slots: int | Sequence[int]) -> list[int]:
    """Slots per MoE layer from one count for every layer or one per layer, capped at each layer's experts."""
    per_layer = [slots] * shape.n_layers if isinstance(slots, int) else slots
    return [min(s, e) for s, e in zip(per_layer, shape.num_experts, strict=True)]


def expert_store_bytes(shape: ModelShape, plan: PrecisionPlan) -> int:
    return sum(map(sum, expert_sizes(shape, plan)))


@functools.lru_cache(maxsize=128)  # one size per expert: tens of thousands on a large model
def expert_sizes(shape: ModelShape, plan: PrecisionPlan) -> tuple[tuple[int, ...], ...]:
    """Exact bytes of every routed expert of `plan` on `shape`, per MoE layer, largest first. Memoised: a
    budget-aware study counts the peak of thousands of configurations of a few plans (`advisor.tune.budget`)."""
    return tuple(tuple(sorted((shape.expert_bytes(layer, f) for f in fs), reverse=True))
                 for layer, fs in enumerate(plan.grid(shape.num_experts)))


def build_config(space: SearchSpace, params: Mapping[str, Any], shape: ModelShape,
                 counts: Mapping[int, Sequence[int]] | None) -> TrialConfig:
    """Make knob values concrete for `shape` (calibration routing `counts` place hot sets and budgets)."""
    n = shape.n_layers
    layer_formats = tuple(str(params[f"fmt_g{space.group_of(layer, n)}"]) for layer in range(n))
    hot_fraction = float(params.get("hot_fraction", 0.0))
    hot_format = str(params.get("hot_format", layer_formats[0]))
    plan = build_plan(layer_formats, hot_fraction, hot_format, shape, counts)
    if "slots_per_layer" in params:  # explicit per-layer counts (0: the layer's experts stay on the host)
        slots = [min(int(s), e) for s, e in zip(params["slots_per_layer"], shape.num_experts, strict=True)]
    elif "slots" in params:
        slots = [min(int(params["slots"]), e) for e in shape.num_experts]
    else:
        slots = allocate_slots(int(params["expert_budget"]), shape, str(params.get("allocation", "uniform")), counts)
    return TrialConfig(
        params=dict(params), plan=plan, layer_formats=layer_formats, hot_fraction=hot_fraction,
        hot_format=hot_format, slots=tuple(slots), policy=str(params["policy"]), prefetch=str(params["prefetch"]),
        miss=str(params.get("miss", "copy")), tau=int(params["tau"]) if params.get("policy") == "tide" else 0,
        peak_bytes=counted_peak_bytes(shape, plan, slots, str(params["prefetch"]), str(params.get("miss", "copy"))),
        expert_store_bytes=expert_store_bytes(shape, plan), num_experts=tuple(shape.num_experts),
    )
