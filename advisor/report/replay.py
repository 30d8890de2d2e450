"""Transfer curves by trace replay: bytes and time per generated token vs GPU expert slots.

Caching never changes outputs, so one routing trace per precision plan answers every cache size and
policy: the trace is replayed through the same policy objects the live runtime uses
(`advisor.offload.simulate`), with each expert's bytes at the plan's format (counted exactly, scales
included). Belady's MIN on the same trace gives the bound no policy can beat.

The no-cache baseline is a replay with zero slots: every distinct expert a forward routes to in a layer is
copied once for that forward, at 16-bit size (the study's full precision, bf16 or fp16: the same bytes) -
``sum over forwards, layers of |distinct experts| x 16-bit expert bytes``, divided by generated tokens.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

BASELINE_FORMAT = "fp16"


@dataclass(frozen=True)
class SweepPoint:
    precision: str
    policy: str  # a policy name, or "belady" for the bound
    slots: int  # per MoE layer
    cache_bytes: int  # GPU expert-cache bytes over all MoE layers (slots x expert bytes, counted)
    bytes_per_token: float
    transfer_ms_per_token: float
    hit_rate: float


@dataclass
class TraceInfo:
    """Size of one replayed trace (for the provenance section)."""

    precision: str
    forwards: int
    layers: int
    routed_pairs: int  # (token, expert) pairs the router chose: tokens x top-k, summed over forwards and layers
    lookups: int  # distinct experts asked of the cache, per forward and layer, summed
    tokens: int


@dataclass
class Sweep:
    points: list[SweepPoint]
    baseline_bytes_per_token: float
    baseline_ms_per_token: float
    baseline_lookups: int
    time_source: str
    expert_bytes: dict[str, list[int]]  # precision -> one expert's bytes per MoE layer
    traces: dict[str, TraceInfo] = field(default_factory=dict)
    slot_grid: list[int] = field(default_factory=list)
    policies: list[str] = field(default_factory=list)
    baseline_format: str = BASELINE_FORMAT
    """The 16-bit format the baseline was replayed at, as it is named (`advisor.baselines.full_precision`)."""

    def curve(self, precision: str, policy: str) -> list[SweepPoint]:
        return sorted((p for p in self.points if p.precision == precision and p.policy == policy),
                      key=lambda p: p.slots)


def layer_expert_bytes(trace: Any, fmt: str) -> list[int]:
    """One expert's exact bytes per MoE layer of the trace's model at format `fmt`."""
    from advisor.quant.spec import expert_nbytes_of

    m = trace.meta
    return [expert_nbytes_of(fmt, int(h), int(i)) for h, i in zip(m["hidden"], m["intermediate"], strict=True)]


def slot_grid(num_experts: Sequence[int], points: int = 8) -> list[int]:
    """Slot counts from one expert to every expert of the smallest layer, roughly evenly spaced."""
    e = min(num_experts)
    grid = {max(1, round(e * (i + 1) / points)) for i in range(points)} | {1, e}
    return sorted(grid)


def no_cache(trace: Any, fmt: str = BASELINE_FORMAT, profile: Any = None) -> Any:
    """Replay with zero slots: every distinct routed expert of every forward and layer is copied."""
    from advisor.offload.simulate import simulate

    eb = layer_expert_bytes(trace, fmt)
    return simulate(trace, slots_per_layer=0, policy="lru", expert_bytes=[[b] * n for b, n in
                                                                           zip(eb, trace.num_experts, strict=True)],
                    profile=profile)


def replays(traces: Mapping[str, Any], profile: Any = None) -> dict[str, Replay]:
    """Each precision's routing trace ready to replay (`traces` maps a format name - "bf16", "int8", "int4" - to
    the trace recorded under that uniform plan): built once, for `sweep` and `equal_memory` both."""
    return {fmt: Replay(trace, fmt, profile) for fmt, trace in traces.items()}


def sweep(
    replayed: Mapping[str, Replay],
    *,
    policies: Sequence[str],
    slots: Sequence[int] | None = None,
    baseline_trace: Any = None,
    with_belady: bool = True,
    baseline_format: str = BASELINE_FORMAT,
) -> Sweep:
    """Replay each precision's trace (from `replays`) at every slot count with every policy (and Belady's MIN).

    The baseline uses `baseline_trace` (default: the `baseline_format` trace, else the first one) at the bytes
    of `baseline_format` (a 16-bit format: the study's full precision).
    """
    from advisor.offload.simulate import belady

    if not replayed:
        raise ValueError("no traces to replay")
    first = next(iter(replayed.values()))
    profile = first.profile
    grid = list(slots) if slots is not None else slot_grid(first.trace.num_experts)
    base_trace = baseline_trace or replayed.get(baseline_format, first).trace
    base = no_cache(base_trace, baseline_format, profile)
    tokens = max(1, base_trace.generated_tokens)
    out = Sweep(
        points=[],
        baseline_bytes_per_token=base.bytes_h2d / tokens,
        baseline_ms_per_token=base.transfer_ms / tokens,
        baseline_lookups=base.lookups,
        time_source=base.transfer_source,
        expert_bytes={},
        slot_grid=grid,
        policies=list(policies),
        baseline_format=baseline_format,
    )
    for fmt, r in replayed.items():
        trace = r.trace
        out.expert_bytes[fmt] = r.expert_bytes
        lookups = sum(len(ids) for seq in r.seqs for ids, *_ in seq)
        out.traces[fmt] = TraceInfo(fmt, trace.n_forwards, trace.n_layers, int(trace.tokens.sum()), lookups,
                                    r.tokens)
        for s in grid:
            runs = r.policies(s, policies)
            if with_belady:
                runs.append(("belady", belady(trace, r.caps(s), expert_bytes=r.per_expert, profile=profile,
                                              sequences=r.seqs)))
            out.points += [r.point(s, p, st) for p, st in runs]
    return out


class Replay:
    """One precision's trace, ready to replay at any slot count: its experts' bytes at the format, its access
    sequences (computed once) and its generated tokens; what `sweep` and `equal_memory` share."""

    def __init__(self, trace: Any, fmt: str, profile: Any) -> None:
        self.trace, self.fmt, self.profile = trace, fmt, profile
        self.expert_bytes = layer_expert_bytes(trace, fmt)
        self.per_expert = [[b] * n for b, n in zip(self.expert_bytes, trace.num_experts, strict=True)]
        self.seqs = trace.access_sequences()
        self.tokens = max(1, trace.generated_tokens)

    def caps(self, slots: int) -> list[int]:
        return [min(slots, n) for n in self.trace.num_experts]

    def cache_bytes(self, slots: int) -> int:
        """Counted GPU expert-cache bytes at `slots` per MoE layer (each layer at most its experts)."""
        return sum(c * b for c, b in zip(self.caps(slots), self.expert_bytes, strict=True))

    def policies(self, slots: int, policies: Sequence[str]) -> list[tuple[str, Any]]:
        """(policy, simulation) for each policy at `slots` per MoE layer."""
        from advisor.offload.simulate import simulate

        caps = self.caps(slots)
        return [(p, simulate(self.trace, slots_per_layer=caps, policy=p, expert_bytes=self.per_expert,
                             profile=self.profile, sequences=self.seqs)) for p in policies]

    def point(self, slots: int, policy: str, st: Any) -> SweepPoint:
        return SweepPoint(self.fmt, policy, slots, self.cache_bytes(slots), st.bytes_h2d / self.tokens,
                          st.transfer_ms / self.tokens, st.hit_rate)


def equal_memory(replayed: Mapping[str, Replay], cache_bytes: int, *,
                 policies: Sequence[str]) -> dict[str, SweepPoint | None]:
    """Per precision (from `replays`), the replay at the most slots per layer whose cache fits `cache_bytes`
    (the exact count, not the nearest point of the sweep's grid), with the policy that moves the fewest bytes;
    None when not one slot per layer fits."""
    out: dict[str, SweepPoint | None] = {}
    for fmt, r in replayed.items():
        s = max((s for s in range(1, max(r.trace.num_experts) + 1) if r.cache_bytes(s) <= cache_bytes), default=0)
        if not s:
            out[fmt] = None
            continue
        p, st = min(r.policies(s, policies), key=lambda run: run[1].bytes_h2d)
        out[fmt] = r.point(s, p, st)
    return out
