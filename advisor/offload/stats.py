"""Counters of the expert cache, kept in one place for the runtime and the simulator.

`CacheLayer` wraps one layer's policy and counts what each look-up and prefetch did (hits, misses,
bytes, copies, evictions, streamed experts), in total and per forward. The runtime and the simulator
both call `CacheLayer.lookup`, so on the same routing their counters cannot differ.
`CacheStats` is the read-only summary with the transfer time and where that time came from.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any

from advisor.hardware.profiles import DEFAULT_PROFILE, HardwareProfile
from advisor.offload.miss import check_miss_policy, split_misses
from advisor.offload.policies import Access, Ctx, Policy, one_token
from advisor.offload.timing import lookup_ms

COUNTERS = ("lookups", "hits", "misses", "streamed", "bytes_h2d", "copies", "evictions",
            "prefetch_copies", "prefetch_bytes", "prefetch_hits", "demand_bytes", "cpu_experts", "cpu_tokens",
            "placement_bytes")
"""hits: served from a slot; prefetch_hits: served from the prefetch staging area (no demand copy);
misses: served from neither (lookups = hits + prefetch_hits + misses), each either copied on the critical
path (demand_bytes) or computed on the CPU (cpu_experts, cpu_tokens: the miss policy decides);
streamed: misses not kept in a slot; placement_bytes: copies into slots of experts computed on the CPU this
forward (off the critical path); bytes_h2d: every byte copied host->device (demand + placement + prefetch)."""
FORWARD_COUNTERS = ("lookups", "hits", "misses", "bytes_h2d", "copies", "cpu_tokens")
TIME_TERMS = ("gpu_ms", "copy_ms", "cpu_ms", "background_ms", "layer_ms")
"""Modelled per look-up (when the layer has a cost model): device expert compute, demand copies, CPU
expert compute, off-critical-path copies, and the look-up's time with CPU work overlapped:
max(copy + gpu, cpu, copy + background). A prefetch copy is background of the next look-up of its layer (the
one it serves): the link must carry it by the end of that look-up, so prefetching hides copies behind device
and CPU work but never makes the link free."""


class CacheLayer:
    """One MoE layer's cache: a policy plus exact counters. Shared by runtime and simulator."""

    def __init__(self, policy: Policy, expert_bytes: Sequence[int], stage_limit: int | None = None, *,
                 miss: str = "copy", threshold: Sequence[int] | None = None, costs: Any = None):
        self.policy = policy
        self.miss = check_miss_policy(miss)
        self.threshold = list(threshold) if threshold is not None else None
        self.costs = costs  # optional cost model (advisor.offload.timing.LayerCosts): per look-up times
        self._need_tokens = self.miss != "copy" or costs is not None
        self.stage_limit = policy.capacity if stage_limit is None else int(stage_limit)
        self.staged: dict[int, None] = {}
        self.expert_bytes = list(int(b) for b in expert_bytes)
        sizes = set(self.expert_bytes)
        self._uniform = self.expert_bytes[0] if len(sizes) == 1 else None
        self.reset_counters()

    def reset_counters(self) -> None:
        for name in COUNTERS:
            setattr(self, name, 0)
        for name in TIME_TERMS:
            setattr(self, name, 0.0)
        self._prefetch_ms = 0.0  # link time of prefetch copies not yet charged to the look-up they serve
        self.forward_ids: list[int] = []
        self.per_forward: list[list[int]] = []  # per forward: FORWARD_COUNTERS
        self._cur: list[int] | None = None
        self._cur_id: int | None = None

    def _row(self, forward: int) -> list[int]:
        if forward != self._cur_id:
            self._cur_id = forward
            self._cur = [0, 0, 0, 0, 0, 0]
            self.forward_ids.append(forward)
            self.per_forward.append(self._cur)
        return self._cur  # type: ignore[return-value]

    def _bytes(self, experts: list[int]) -> int:
        if self._uniform is not None:
            return self._uniform * len(experts)
        eb = self.expert_bytes
        return sum(eb[e] for e in experts)

    def lookup(self, ids: Sequence[int], ctx: Ctx, tokens: Sequence[int] | None = None
               ) -> tuple[Access, list[int], list[int]]:
        """Serve the distinct experts `ids` of one forward (`tokens`: routed tokens of each); count it.

        Returns the policy's decision, the misses served from the prefetch staging area (which is
        emptied: staged experts not used now were wasted bytes) and the misses computed on the CPU.
        """
        acc = self.policy.access(ids, ctx, tokens)
        n = len(ids)
        nh = len(acc.hits)
        nm = n - nh
        self.lookups += n
        self.hits += nh
        row = self._row(ctx.forward)
        row[0] += n
        row[1] += nh
        from_stage: list[int] = []
        on_cpu: list[int] = []
        placed: list[int] = []
        tok = dict(zip(ids, tokens, strict=True)) if tokens is not None and self._need_tokens else None
        copied = acc.admitted + acc.streamed  # the misses (until some come from staging or go to the CPU)
        if self.staged:  # staged experts serve this look-up only
            staged, self.staged = self.staged, {}
            from_stage = [e for e in copied if e in staged]
            if from_stage:
                copied = [e for e in copied if e not in staged]
        if nm:
            if self.miss != "copy":  # cpu: every miss on the CPU; hybrid: per expert (split_misses)
                copied, on_cpu = split_misses(copied, tok, self.miss, self.threshold, self.costs,
                                              acc.hits + from_stage, acc.admitted, self._prefetch_ms)
            if on_cpu:
                adm = set(acc.admitted)
                placed = [e for e in on_cpu if e in adm]
                ct = self.cpu_tokens
                for e in on_cpu:
                    ct += tok[e] if tok is not None else 1
                row[5] += ct - self.cpu_tokens
                self.cpu_tokens = ct
                self.cpu_experts += len(on_cpu)
            b = self._bytes(copied)
            pb = self._bytes(placed) if placed else 0
            self.prefetch_hits += len(from_stage)
            self.misses += nm - len(from_stage)
            self.streamed += len(acc.streamed)
            self.bytes_h2d += b + pb
            self.demand_bytes += b
            self.placement_bytes += pb
            self.copies += len(copied) + len(placed)
            self.evictions += len(acc.evicted)
            row[2] += nm - len(from_stage)
            row[3] += b + pb
            row[4] += len(copied) + len(placed)
        if self.costs is not None:
            self._time(ids, tok, copied, on_cpu, placed)
        return acc, from_stage, on_cpu

    def _time(self, ids: Sequence[int], tok: dict[int, int] | None, copied: list[int], on_cpu: list[int],
              placed: list[int]) -> None:
        cpu_set = set(on_cpu)
        gpu, copy, cpu, bg = self.costs.lookup_terms([e for e in ids if e not in cpu_set], copied, on_cpu, placed,
                                                     tok.__getitem__ if tok is not None else one_token)
        self.gpu_ms += gpu
        self.cpu_ms += cpu
        self.copy_ms += copy
        self.background_ms += bg
        link_bg, self._prefetch_ms = bg + self._prefetch_ms, 0.0  # the prefetch copies this look-up waited on
        self.layer_ms += lookup_ms(gpu, copy, cpu, link_bg)

    def prefetch(self, ids: Sequence[int], ctx: Ctx) -> tuple[list[int], list[int], list[int]]:
        """Copy `ids` (most wanted first) ahead of use: into slots where the policy admits them, the rest
        into the staging area (up to `stage_limit`). Returns (admitted, evicted, staged); all copies count.
        """
        admitted, evicted = self.policy.prefetch(ids, ctx)
        res, staged = self.policy.resident, self.staged
        room = self.stage_limit - len(staged)
        new_staged = []
        if room > 0:
            for e in ids:
                if e not in res and e not in staged:
                    new_staged.append(e)
                    if len(new_staged) == room:
                        break
            for e in new_staged:
                staged[e] = None
        n = len(admitted) + len(new_staged)
        if n:
            b = self._bytes(admitted) + self._bytes(new_staged)
            self.prefetch_copies += n
            self.prefetch_bytes += b
            self.bytes_h2d += b
            self.copies += n
            self.evictions += len(evicted)
            row = self._row(ctx.forward)
            row[3] += b
            row[4] += n
            if self.costs is not None:
                t = self.costs.copy_ms(admitted + new_staged)
                self.background_ms += t
                self._prefetch_ms += t
        return admitted, evicted, new_staged


@dataclass
class CacheStats:
    """What the expert cache did over a run: per-layer totals, per-forward rows and the transfer time."""

    per_layer: list[dict[str, int]]
    forward_ids: list[int]
    per_forward: list[list[dict[str, int]]]  # [forward][layer] -> FORWARD_COUNTERS
    transfer_ms: float
    transfer_source: str
    capacity: list[int] = field(default_factory=list)
    policy: str = ""
    prefetch: str = "none"
    notes: list[str] = field(default_factory=list)
    miss: str = "copy"
    times: dict[str, float] = field(default_factory=dict)  # TIME_TERMS totals (ms), when modelled
    time_source: str = ""

    @classmethod
    def from_layers(
        cls,
        layers: Sequence[CacheLayer],
        *,
        transfer_ms: float | None = None,
        transfer_source: str | None = None,
        profile: HardwareProfile | None = None,
        policy: str = "",
        prefetch: str = "none",
        notes: Sequence[str] = (),
        time_source: str = "",
    ) -> CacheStats:
        per_layer = [{name: int(getattr(lay, name)) for name in COUNTERS} for lay in layers]
        fids = sorted({f for lay in layers for f in lay.forward_ids})
        index = {f: i for i, f in enumerate(fids)}
        zero = dict.fromkeys(FORWARD_COUNTERS, 0)
        per_forward = [[dict(zero) for _ in layers] for _ in fids]
        for li, lay in enumerate(layers):
            for f, row in zip(lay.forward_ids, lay.per_forward, strict=True):
                cell = per_forward[index[f]][li]
                for name, v in zip(FORWARD_COUNTERS, row, strict=True):
                    cell[name] += v
        if transfer_ms is None:
            profile = profile or DEFAULT_PROFILE
            transfer_ms = profile.transfer_ms(sum(d["bytes_h2d"] for d in per_layer),
                                              sum(d["copies"] for d in per_layer))
            transfer_source = profile.transfer_source
        return cls(
            per_layer=per_layer,
            forward_ids=fids,
            per_forward=per_forward,
            transfer_ms=float(transfer_ms),
            transfer_source=str(transfer_source),
            capacity=[lay.policy.capacity for lay in layers],
            policy=policy,
            prefetch=prefetch,
            notes=list(notes),
            miss=layers[0].miss if layers else "copy",
            times={t: float(sum(getattr(lay, t) for lay in layers)) for t in TIME_TERMS}
            if layers and any(lay.costs is not None for lay in layers) else {},
            time_source=time_source,
        )

    def total(self, name: str) -> int:
        return sum(d[name] for d in self.per_layer)

    @property
    def lookups(self) -> int:
        return self.total("lookups")

    @property
    def hits(self) -> int:
        return self.total("hits")

    @property
    def misses(self) -> int:
        return self.total("misses")

    @property
    def bytes_h2d(self) -> int:
        return self.total("bytes_h2d")

    @property
    def copies(self) -> int:
        return self.total("copies")

    @property
    def evictions(self) -> int:
        return self.total("evictions")

    @property
    def hit_rate(self) -> float:
        n = self.lookups
        return self.hits / n if n else 0.0

    def counters(self) -> dict[str, Any]:
        """Exact counters only (no times): what runtime and simulator must agree on."""
        return {
            "per_layer": self.per_layer,
            "forward_ids": self.forward_ids,
            "per_forward": self.per_forward,
        }

    def to_dict(self, n_tokens: int | None = None) -> dict[str, Any]:
        """JSON-able summary with canonical metric names and their sources."""
        out: dict[str, Any] = {name: self.total(name) for name in COUNTERS}
        out.update(
            hit_rate=self.hit_rate,
            transfer_ms=self.transfer_ms,
            policy=self.policy,
            prefetch=self.prefetch,
            miss=self.miss,
            capacity=self.capacity,
            forwards=len(self.forward_ids),
            sources={"hits": "counted", "bytes_h2d": "counted", "transfer_ms": self.transfer_source},
            notes=self.notes,
        )
        if n_tokens:
            out["h2d_bytes_per_token"] = self.bytes_h2d / n_tokens
            out["transfer_ms_per_token"] = self.transfer_ms / n_tokens
        if self.times:
            out["times_ms"] = dict(self.times)
            out["sources"]["times_ms"] = self.time_source
            if n_tokens:
                out["time_per_token_ms"] = self.times["layer_ms"] / n_tokens
        return out
