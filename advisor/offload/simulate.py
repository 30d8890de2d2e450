"""Replay a routing trace through the SAME policy objects and counters as the live runtime.

`simulate` builds per-layer `CacheLayer`s exactly as `OffloadRuntime` does and feeds them the trace's
per-forward expert sets, so on the trace the runtime produced, the counters are identical (a test checks
it). Times are modelled from a hardware profile. Prefetch:

* ``prev_step`` - before each forward, the layer's set of the previous denoising step is prefetched (the
  previous forward's, except that a forward which is no denoising step - DiffusionGemma's encoder pass,
  `Ctx.off_step` - predicts nothing: the first denoising step of a block is predicted from the last step
  of the block before, not from the encoder's routing of the prompt or committed canvas): identical to the
  runtime, which does the same from its own history;
* ``lookahead`` - the runtime predicts the next layer's experts with that layer's router on the current
  hidden state; the simulator has no hidden states and uses the *recorded* next-layer routing instead,
  i.e. a perfect (oracle) predictor. Its numbers are a bound for look-ahead, and are labelled so.

`belady` is Belady's MIN: after each forward keep the experts whose next use is soonest; a miss used
never again is streamed. It solves a slightly *relaxed* model: an expert hit in this forward may be
replaced by one of this forward's misses once the layer is done (a real runtime could do that with a
device-to-device move of the streamed miss). Every policy obeys the stricter rule (hits stay for the
forward), so MIN's hit count is an upper bound for all of them; it is the exact optimum of the relaxed
model (checked against brute force in the tests), not necessarily reachable under the strict rule.
It needs the future, so it exists only here.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from typing import Any

from advisor.errors import UserError
from advisor.offload.policies import Access, Ctx, Policy, build_policies
from advisor.offload.slots import PREFETCH, resolve_slots
from advisor.offload.stats import CacheLayer, CacheStats
from advisor.offload.trace import RoutingTrace, Seq
from advisor.units import dtype_format


def trace_expert_bytes(trace: RoutingTrace, plan: Any = None, expert_bytes: Any = None) -> list[list[int]]:
    """Per layer, per expert bytes: from `expert_bytes` (int or nested lists) or the plan and trace shapes."""
    ne = trace.num_experts
    if expert_bytes is not None:
        if isinstance(expert_bytes, int):
            return [[expert_bytes] * e for e in ne]
        return [list(map(int, row)) for row in expert_bytes]
    m = trace.meta
    if not m.get("hidden") or not m.get("intermediate"):
        raise UserError("the trace has no expert shapes (hidden/intermediate); pass expert_bytes explicitly")
    if plan is None:
        plan = dtype_format(m.get("dtype")) or "bf16"

    return plan_expert_bytes(plan, ne, m["hidden"], m["intermediate"])


def replay(seqs: Sequence[Seq], layers: Sequence[CacheLayer], prefetch: str = "none") -> None:
    """Feed each layer's access sequence to its cache layer (the hot loop: keep it minimal)."""
    if prefetch not in PREFETCH:
        raise UserError(f"unknown prefetch '{prefetch}'; choose one of: {', '.join(PREFETCH)}")
    for li, seq in enumerate(seqs):
        lay = layers[li]
        lookup = lay.lookup
        if prefetch == "none" or (prefetch == "lookahead" and li == 0):
            for ids, ctx, tokens in seq:
                lookup(ids, ctx, tokens)
        elif prefetch == "prev_step":
            prev: tuple[int, ...] | None = None
            last_fwd = None
            for ids, ctx, tokens in seq:
                if prev is not None and ctx.forward != last_fwd:
                    lay.prefetch(prev, ctx)
                last_fwd = ctx.forward
                lookup(ids, ctx, tokens)
                if not ctx.off_step:  # no denoising step (DiffusionGemma's encoder pass): predicts none
                    prev = ids
        else:  # lookahead with the recorded routing as a perfect predictor
            for ids, ctx, tokens in seq:
                lay.prefetch(ids, ctx)
                lookup(ids, ctx, tokens)


def policy_args(policy: str, trace: RoutingTrace | None, kw: dict[str, Any] | None) -> dict[str, Any]:
    """Policy keywords with what the trace knows filled in (tide: its steps per block)."""
    out = dict(kw or {})
    if policy == "tide" and trace is not None:
        out.setdefault("steps_per_block", trace.steps_per_block())
    return out


def simulate(
    trace: RoutingTrace,
    *,
    slots_per_layer: Any,
    policy: str,
    plan: Any = None,
    expert_bytes: Any = None,
    prefetch: str = "none",
    profile: Any = None,
    hot: dict[int, Sequence[int]] | None = None,
    policy_kw: dict[str, Any] | None = None,
    stage_limit: int | None = None,
    token_scope: str = "all",
    sequences: Sequence[Seq] | None = None,
    miss: str = "copy",
    costs: Any = None,
) -> CacheStats:
    """Counters of `policy` with `slots_per_layer` on `trace` (bytes from `plan` or `expert_bytes`).

    static_hot without `hot` profiles the hot set on this same trace (an optimistic, in-sample profile;
    noted in the result). Pass `sequences` (from `trace.access_sequences()`) to skip rebuilding them.
    `miss` is the miss policy (`advisor.offload.miss`); `costs` (an `advisor.offload.timing.ModelCosts`)
    models time per look-up and gives hybrid its copy thresholds.
    """
    seqs = trace.access_sequences(token_scope) if sequences is None else sequences
    caps = resolve_slots(slots_per_layer, trace.num_experts)
    eb = trace_expert_bytes(trace, plan, expert_bytes)
    notes = []
    if policy == "static_hot" and hot is None:
        hot = trace.hot_sets()
        notes.append("static_hot profiled on this same trace (in-sample)")
    if prefetch == "lookahead":
        notes.append("lookahead prefetch uses the recorded next-layer routing (oracle predictor)")
    policies = build_policies(policy, caps, hot=hot, **policy_args(policy, trace, policy_kw))
    layers = [CacheLayer(p, eb[i], stage_limit, miss=miss, **layer_costs(costs, i, eb[i]))
              for i, p in enumerate(policies)]
    replay(seqs, layers, prefetch)
    return CacheStats.from_layers(layers, profile=profile, policy=policy, prefetch=prefetch, notes=notes,
                                  time_source=costs.source if costs is not None else "")


def layer_costs(costs: Any, layer: int, expert_bytes: Sequence[int]) -> dict[str, Any]:
    """CacheLayer keywords (cost model, hybrid copy thresholds) of one layer from a model cost model."""
    if costs is None:
        return {}
    lc = costs.layer(layer, expert_bytes)
    return {"costs": lc, "threshold": lc.thresholds()}


class Belady(Policy):
    """Belady's MIN for this cache model; knows the layer's whole future access sequence."""

    name = "belady"

    def __init__(self, capacity: int, seq: Sequence[tuple[int, ...]]):
        super().__init__(capacity)
        self.resident: dict[int, float] = {}  # expert -> next use (access index)
        nxt: list[tuple[float, ...]] = [()] * len(seq)
        last: dict[int, float] = {}
        for t in range(len(seq) - 1, -1, -1):
            ids = seq[t]
            nxt[t] = tuple(last.get(e, math.inf) for e in ids)
            for e in ids:
                last[e] = t
        self._next = nxt
        self._t = 0

    def access(self, ids: Sequence[int], ctx: Ctx, tokens: Sequence[int] | None = None) -> Access:
        nu = self._next[self._t]
        self._t += 1
        res = self.resident
        hits, misses = [], []
        for e, n in zip(ids, nu, strict=True):
            if e in res:
                res[e] = n
                hits.append(e)
            else:
                misses.append((n, e))
        if not misses:
            return Access(hits, [], [], [])
        misses.sort()
        free = self.capacity - len(res)
        # relaxed model: a hit may be replaced once this forward is done with it (see module docstring)
        others = sorted(((n, e) for e, n in res.items()), reverse=True)  # farthest next use first
        admitted, evicted, streamed = [], [], []
        oi = 0
        for n, e in misses:
            if n == math.inf:
                streamed.append(e)
            elif free > 0:
                free -= 1
                admitted.append(e)
                res[e] = n
            elif oi < len(others) and others[oi][0] > n:
                victim = others[oi][1]
                oi += 1
                del res[victim]
                evicted.append(victim)
                admitted.append(e)
                res[e] = n
            else:
                streamed.append(e)
        return Access(hits, admitted, evicted, streamed)

    def prefetch(self, ids, ctx):
        raise NotImplementedError("Belady's MIN is a demand-only bound; it does not prefetch")


def belady(
    trace: RoutingTrace,
    slots_per_layer: Any,
    *,
    plan: Any = None,
    expert_bytes: Any = None,
    profile: Any = None,
    token_scope: str = "all",
    sequences: Sequence[Seq] | None = None,
    miss: str = "copy",
    costs: Any = None,
) -> CacheStats:
    """Belady's MIN on `trace`: the most hits (fewest demand copies) any policy can get with these slots;
    `miss` prices its misses as the policies it bounds are priced: hybrid splits them by `costs` (the
    policies' `ModelCosts`), whose times it does not keep (MIN bounds hits, not time)."""
    seqs = trace.access_sequences(token_scope) if sequences is None else sequences
    caps = resolve_slots(slots_per_layer, trace.num_experts)
    eb = trace_expert_bytes(trace, plan, expert_bytes)
    layers = [CacheLayer(Belady(caps[i], [look[0] for look in seq]), eb[i], miss=miss,
                         **(layer_costs(costs, i, eb[i]) if miss == "hybrid" else {}))
              for i, seq in enumerate(seqs)]
    replay(seqs, layers, "none")
    stats = CacheStats.from_layers(layers, profile=profile, policy="belady",
                                   notes=["Belady's MIN: needs the future; an upper bound, not a policy"])
    stats.times = {}
    return stats


def sequences_from_sets(sets_per_layer: Sequence[Sequence[Sequence[int]]],
                        ctxs: Sequence[Ctx] | None = None) -> list[Seq]:
    """Access sequences from plain expert sets (tests, synthetic traces): one Ctx per forward; a set given
    as a mapping expert -> tokens keeps its token counts (else one token each)."""
    out = []
    for sets in sets_per_layer:
        seq: Seq = []
        for t, s in enumerate(sets):
            ctx = ctxs[t] if ctxs is not None else Ctx(t)
            counts = {int(e): int(n) for e, n in s.items()} if isinstance(s, dict) else dict.fromkeys(map(int, s), 1)
            ids = tuple(sorted(counts))
            seq.append((ids, ctx, tuple(counts[e] for e in ids)))
        out.append(seq)
    return out


def replay_sets(seqs: Sequence[Seq], policy: str, capacity: int | Sequence[int], *, expert_bytes: int = 1,
                hot: dict[int, Sequence[int]] | None = None, prefetch: str = "none", miss: str = "copy",
                **kw: Any) -> CacheStats:
    """Simulate plain access sequences (no trace file): policy name or "belady"."""
    caps = [capacity] * len(seqs) if isinstance(capacity, int) else list(capacity)
    if policy == "belady":
        pols: list[Policy] = [Belady(c, [look[0] for look in seq]) for c, seq in zip(caps, seqs, strict=True)]
    else:
        pols = build_policies(policy, caps, hot=hot, **kw)
    n_exp = [max((max(look[0]) for look in seq if look[0]), default=0) + 1 for seq in seqs]
    layers = [CacheLayer(p, [expert_bytes] * n, miss=miss) for p, n in zip(pols, n_exp, strict=True)]
    replay(seqs, layers, prefetch)
    return CacheStats.from_layers(layers, policy=policy, prefetch=prefetch)


def plan_expert_bytes(
    plan: Any, num_experts: Sequence[int], hidden: Sequence[int], intermediate: Sequence[int]
) -> list[list[int]]:
    """Exact bytes of every expert under `plan` (per layer, per expert), from shapes alone: no weights, no
    torch, so replaying a trace stays cheap."""
    from advisor.quant.plan import PrecisionPlan
    from advisor.quant.spec import expert_nbytes_of

    plan = PrecisionPlan.parse(plan)
    return [
        [expert_nbytes_of(plan.format_for(layer, e), int(hidden[layer]), int(intermediate[layer])) for e in range(ne)]
        for layer, ne in enumerate(num_experts)
    ]
