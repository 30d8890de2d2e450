"""Expert-cache eviction policies: ONE implementation used by the live runtime and by the trace simulator.

A policy manages the expert slots of one MoE layer. Each model forward asks it once, with the sorted
distinct experts that layer needs (`Policy.access`). The semantics every policy obeys (and Belady's
MIN in `simulate` obeys too, so it is a true upper bound):

* **hits stay**: an expert needed in this forward that is resident is a hit and cannot be evicted in the
  same forward (its slot is being computed with);
* **misses** are admitted while the layer has a free slot or a resident that this forward does not use
  (the policy picks that victim); a policy may also decline to admit (static-hot does);
* misses beyond that are **streamed**: copied through a temporary buffer, used once and dropped. They
  count as misses, copies and bytes but occupy no slot and evict nothing. A block-diffusion forward can
  need more distinct experts than a layer has slots; streaming is what a real runtime must then do.

Prefetch (`Policy.prefetch`) admits experts ahead of use with the same victim rule; it is not an access
(it adds no use counts), and the copies it causes are H2D bytes like any other.

Per-lookup Python is kept small because the simulator replays millions of look-ups through these very
objects: set/dict membership; per-expert numbers in lists indexed by expert id, updated in one plain loop
(`PerExpert`); orders by several keys as stable sorts with C-method keys (`_ordered`), not a lambda building
a tuple per expert. tests/policy_reference.py holds the straightforward versions; the policies must decide
exactly as they do (tests/test_offload_policy_decisions.py).
"""

from __future__ import annotations

from collections import OrderedDict
from collections.abc import Callable, Iterable, Mapping, Sequence
from typing import Any, ClassVar, NamedTuple

from advisor.errors import UserError
from advisor.registry import Registry


class Ctx(NamedTuple):
    """Where a look-up happens: running forward index, denoising step and block (-1 when unknown). Step -1 in a
    known block: a forward of the block that is none of its denoising steps (`ForwardInfo.step`)."""

    forward: int
    step: int = -1
    block: int = -1

    @property
    def off_step(self) -> bool:
        """A forward of a known block that is none of its denoising steps (`off_step`): TIDE never refreshes on
        it, and prev_step prefetch never predicts a denoising step from its routing."""
        return off_step(self.step, self.block)


def off_step(step: int, block: int) -> bool:
    """Whether a forward at (`step`, `block`) belongs to a known block but is none of its denoising steps (step -1
    in block >= 0: DiffusionGemma's encoder pass, over the prompt or the canvas just committed, into the KV
    cache). One rule for the policies (`Ctx.off_step`) and the report's block statistics."""
    return step < 0 <= block


class Access(NamedTuple):
    """What one look-up did: experts hit, admitted into slots, evicted from slots, streamed."""

    hits: list[int]
    admitted: list[int]
    evicted: list[int]
    streamed: list[int]


def one_token(expert: int) -> int:
    """Routed tokens of an expert when a look-up gives no token counts: one each."""
    return 1


def _ordered(experts: Iterable[int], *keys: Callable[[int], Any], reverse: bool = False) -> list[int]:
    """`experts` ordered by keys[0], ties by keys[1], ..., last ties in their given order (every key
    descending with `reverse`). One stable sort per key, least significant first, with C-method keys: the
    same order as one sort on a tuple key, without a tuple and a lambda call per expert."""
    *major, minor = keys
    out = sorted(experts, key=minor, reverse=reverse)  # reverse keeps ties in their order too
    for key in reversed(major):
        out.sort(key=key, reverse=reverse)
    return out


class Policy:
    """One layer's slot bookkeeping. Subclasses choose victims (and optionally admission order)."""

    name = "base"

    def __init__(self, capacity: int):
        if capacity < 0:
            raise ValueError(f"capacity must be >= 0, got {capacity}")
        self.capacity = int(capacity)
        self.resident: dict[int, None] = OrderedDict()
        self.tokens: Sequence[int] | None = None

    # -- hooks -------------------------------------------------------------------------------------
    def _touch(self, hits: list[int], ids: Sequence[int], ctx: Ctx) -> None:
        """Record a use of `ids` (of which `hits` were resident)."""

    def _order_misses(self, misses: list[int], ctx: Ctx) -> list[int]:
        """Admission order when not every miss fits (default: as given, i.e. by expert id)."""
        return misses

    def _victims(self, n: int, protected: Iterable[int] | set[int], ctx: Ctx) -> list[int]:
        """`n` residents outside `protected` to evict (default: oldest insertion/use order first)."""
        out = []
        for k in self.resident:
            if k not in protected:
                out.append(k)
                if len(out) == n:
                    break
        return out

    def _inserted(self, keys: list[int], ctx: Ctx) -> None:
        for k in keys:
            self.resident[k] = None

    def _removed(self, keys: list[int]) -> None:
        for k in keys:
            del self.resident[k]

    def _room(self, hits: list[int], misses: list[int], ctx: Ctx) -> int:
        """How many of the (ordered) misses may be admitted."""
        return min(len(misses), self.capacity - len(hits))

    # -- interface ---------------------------------------------------------------------------------
    def access(self, ids: Sequence[int], ctx: Ctx, tokens: Sequence[int] | None = None) -> Access:
        """Serve one forward's distinct experts of this layer (see the module docstring for the rules);
        `tokens` are the routed tokens of each (policies that weigh experts by tokens read them)."""
        self.tokens = tokens
        res = self.resident
        hits = [e for e in ids if e in res]
        self._touch(hits, ids, ctx)
        if len(hits) == len(ids):
            return Access(hits, [], [], [])
        misses = [e for e in ids if e not in res]
        if len(misses) > 1:
            misses = self._order_misses(misses, ctx)
        n_admit = self._room(hits, misses, ctx)
        if n_admit <= 0:
            return Access(hits, [], [], misses)
        n_evict = n_admit - (self.capacity - len(res))
        evicted = self._victims(n_evict, set(ids), ctx) if n_evict > 0 else []
        if evicted:
            self._removed(evicted)
        admitted = misses[:n_admit]
        self._inserted(admitted, ctx)
        return Access(hits, admitted, evicted, misses[n_admit:])

    def prefetch(self, ids: Sequence[int], ctx: Ctx) -> tuple[list[int], list[int]]:
        """Bring `ids` (most wanted first) into slots ahead of use; returns (admitted, evicted)."""
        res = self.resident
        missing = [e for e in ids if e not in res]
        if not missing:
            return [], []
        if isinstance(self, StaticHot):  # hot experts first: the room arithmetic assumes it
            missing = self._order_misses(missing, ctx)
        present = [e for e in ids if e in res]
        n_admit = self._room(present, missing, ctx)
        if n_admit <= 0:
            return [], []
        n_evict = n_admit - (self.capacity - len(res))
        evicted = self._victims(n_evict, set(ids), ctx) if n_evict > 0 else []
        if evicted:
            self._removed(evicted)
        admitted = missing[:n_admit]
        self._inserted(admitted, ctx)
        return admitted, evicted


class LRU(Policy):
    """Least recently used: a hit moves to the young end; victims come from the old end."""

    name = "lru"

    def _touch(self, hits, ids, ctx):
        move = self.resident.move_to_end
        for e in hits:
            move(e)


class FIFO(Policy):
    """First in, first out: hits do not refresh; the longest-resident unused expert goes first."""

    name = "fifo"


class PerExpert(Policy):
    """A policy that keeps numbers per expert (use counts, last use) in lists indexed by expert id (0 ..
    experts - 1), 0 for an expert not seen yet: the per-look-up loop indexes a list about twice as fast as it
    updates a dict. The lists grow as experts appear (a policy is told its capacity, not its expert count)."""

    lists: ClassVar[tuple[str, ...]] = ()  # attribute names of the per-expert lists

    def __init__(self, capacity: int):
        super().__init__(capacity)
        self._size = 0
        for name in self.lists:
            setattr(self, name, [])

    def _cover(self, ids: Iterable[int]) -> None:
        """Grow the lists to cover `ids`."""
        top = max(ids, default=-1) + 1
        if top > self._size:
            for name in self.lists:
                getattr(self, name).extend([0] * (top - self._size))
            self._size = top

    def prefetch(self, ids, ctx):
        self._cover(ids)  # a prefetched expert may not have been used yet (a look-up's `_touch` covers its own)
        return super().prefetch(ids, ctx)


class LFU(PerExpert):
    """Least frequently used, counting every use since the start (also while not resident).

    Victim: lowest count, then least recently used. Misses are admitted most-frequent first.
    """

    name = "lfu"
    lists = ("count", "last")
    count: list[float]
    last: list[int]

    def __init__(self, capacity: int):
        super().__init__(capacity)
        self._clock = 0

    def _weight(self, ctx: Ctx) -> float:
        return 1.0

    def _touch(self, hits, ids, ctx):
        w = self._weight(ctx)  # first: it may rescale (replace) self.count
        self._cover(ids)
        self._clock = clock = self._clock + 1
        count, last = self.count, self.last
        for e in ids:
            count[e] += w
            last[e] = clock

    def _order_misses(self, misses, ctx):
        return _ordered(misses, self.count.__getitem__, reverse=True)

    def _victims(self, n, protected, ctx):
        cands = [k for k in self.resident if k not in protected]
        return _ordered(cands, self.count.__getitem__, self.last.__getitem__)[:n]


class LFUDecay(LFU):
    """LFU whose counts fade by `decay` per forward, so old popularity stops protecting an expert.

    Implemented with a growing increment (count += g**t with g = 1/decay) so that no count is rewritten
    per forward; counts are rescaled when the increment gets large.
    """

    name = "lfu_decay"

    def __init__(self, capacity: int, decay: float = 0.8):
        super().__init__(capacity)
        if not 0.0 < decay <= 1.0:
            raise ValueError(f"decay must be in (0, 1], got {decay}")
        self.growth = 1.0 / decay
        self._inc = 1.0
        self._t: int | None = None

    def _weight(self, ctx):
        if self._t is None:
            self._t = ctx.forward
        elif ctx.forward != self._t:
            self._inc *= self.growth ** max(0, ctx.forward - self._t)
            self._t = ctx.forward
            if self._inc > 1e100:
                scale = 1.0 / self._inc
                self.count = [v * scale for v in self.count]
                self._inc = 1.0
        return self._inc


class StaticHot(Policy):
    """A profiled hot set is pinned (loaded on first use, never evicted); other slots run LRU.

    `hot` lists experts most-important first; only the first `capacity` are pinned. With as many hot
    experts as slots, cold experts are always streamed.
    """

    name = "static_hot"

    def __init__(self, capacity: int, hot: Sequence[int] = ()):
        super().__init__(capacity)
        self.hot = frozenset(list(dict.fromkeys(int(e) for e in hot))[: self.capacity])
        self.cold_capacity = self.capacity - len(self.hot)

    def _touch(self, hits, ids, ctx):
        move, hot = self.resident.move_to_end, self.hot
        for e in hits:
            if e not in hot:
                move(e)

    def _order_misses(self, misses, ctx):
        hot = self.hot
        return [e for e in misses if e in hot] + [e for e in misses if e not in hot]

    def _room(self, hits, misses, ctx):
        hot = self.hot
        n_hot = len(hot.intersection(misses))
        cold_hits = len(hits) - len(hot.intersection(hits))
        n_cold = len(misses) - n_hot
        return n_hot + min(n_cold, self.cold_capacity - cold_hits)

    def _victims(self, n, protected, ctx):
        out, hot = [], self.hot
        for k in self.resident:
            if k not in protected and k not in hot:
                out.append(k)
                if len(out) == n:
                    break
        return out


class BlockAware(PerExpert):
    """For block diffusion decoding: reuse across the denoising steps of one block.

    Consecutive steps of a block route almost the same tokens the same way, so the experts used in the
    previous step are protected first, then the experts used most often in this block so far; an expert
    unused in the current block is the first victim (its block ended: it is released to the old end).
    Misses are admitted most-used-in-block first. Needs `Ctx.block` (from `ForwardInfo`); without it the
    whole run is one block and the policy is an in-run LFU with previous-step protection. A forward that is no
    denoising step of its block (`Ctx.off_step`: DiffusionGemma's encoder pass) releases the block before it like
    any forward of a new block, but is no step: the step before it stays the previous step (a block's first step
    protects the last step of the block before, as prev_step prefetch predicts it) and its uses count in no
    block's counts; they are uses all the same (the least-recently-used tie-break).
    """

    name = "block_aware"
    lists = ("block_count", "last")
    block_count: list[int]
    last: list[int]

    def __init__(self, capacity: int):
        super().__init__(capacity)
        self.prev: frozenset[int] = frozenset()
        self.cur: frozenset[int] = frozenset()
        self._block: int | None = None
        self._clock = 0

    def _touch(self, hits, ids, ctx):
        if ctx.block != self._block:
            self._block = ctx.block
            self.block_count = [0] * self._size  # release: previous block's counts no longer protect anything
        self._cover(ids)
        self._clock = clock = self._clock + 1
        self.prev = self.cur
        last = self.last
        if ctx.off_step:  # no denoising step (DiffusionGemma's encoder pass): the last step stays the previous one
            for e in ids:
                last[e] = clock
            return
        self.cur = frozenset(ids)
        bc = self.block_count
        for e in ids:
            bc[e] += 1
            last[e] = clock

    def _order_misses(self, misses, ctx):
        return _ordered(misses, self.prev.__contains__, self.block_count.__getitem__, reverse=True)

    def _victims(self, n, protected, ctx):
        cands = [k for k in self.resident if k not in protected]
        return _ordered(cands, self.prev.__contains__, self.block_count.__getitem__, self.last.__getitem__)[:n]


class FreqLRU(LFUDecay):
    """Frequency-weighted LRU: an expert's score is its routed tokens, fading by `decay` per forward.

    Recency (the fade) and frequency (tokens, not look-ups: an expert 30 tokens chose is worth more than
    one a single token chose) in one number; the lowest score is evicted, misses are admitted
    highest-score first.
    """

    name = "flru"

    def __init__(self, capacity: int, decay: float = 0.3):
        super().__init__(capacity, decay)

    def _touch(self, hits, ids, ctx):
        if self.tokens is None:  # one token each: lfu_decay's counts
            super()._touch(hits, ids, ctx)
            return
        w = self._weight(ctx)  # first: it may rescale (replace) self.count
        self._cover(ids)
        self._clock = clock = self._clock + 1
        count, last = self.count, self.last
        for e, n in zip(ids, self.tokens, strict=True):
            count[e] += w * n
            last[e] = clock


DEFAULT_TAU = 4
"""TIDE's refresh interval when a configuration names none (the tuner's default `cache.tau`)."""


class IntervalRefresh(Policy):
    """TIDE-style placement for diffusion LLMs (arXiv 2605.20179): the slot set is re-chosen from the
    current denoising step's tokens per expert every `tau` steps, and left alone in between.

    Refresh steps: every step of the first block (block 0: no history yet), else steps with step % tau
    == 0; never a block's last step (`steps_per_block`, 0 = unknown), nor a forward of a block that is none of its
    denoising steps (step -1: DiffusionGemma's encoder forward). On a refresh the slot set becomes
    this forward's experts with the most tokens: each one promoted (copied) takes a free slot, else the
    slot of a resident outside that set - one this forward does not use (oldest first), else the used one
    with the fewest tokens, which then computes as a miss in this forward (TIDE swaps the set even when a
    step touches nearly every expert). Demotions never exceed promotions. Between refreshes nothing is
    admitted: misses are not kept (computed on the CPU, or streamed). Without step context (-1), and with one
    denoising step per block (`steps_per_block` 1: autoregressive decoding, each forward a block; DiffusionGemma
    at one step, where every step is its block's last), every `tau`-th step refreshes, counted over the run from
    0 (`counted`): every forward without step context, every forward of autoregressive decoding, DiffusionGemma's
    decoder forwards but not its encoder passes, which are no step - counting those too, an even `tau` never
    reached a decoder forward (every other forward is an encoder pass) and nothing was ever placed.
    The one policy that may demote an expert its forward uses.
    """

    name = "tide"

    def __init__(self, capacity: int, tau: int = DEFAULT_TAU, steps_per_block: int = 0):
        super().__init__(capacity)
        if tau < 1:
            raise ValueError(f"tau must be >= 1, got {tau}")
        self.tau = int(tau)
        self.steps_per_block = int(steps_per_block)
        self._counted = 0  # steps seen before the current forward (`counted`)
        self._forward: int | None = None
        self._step_no = 0  # the current forward's number among the steps

    def counted(self, ctx: Ctx) -> int:
        """Forward `ctx`'s number among the run's steps so far, from 0, told once per forward in order (`access`
        does): forwards that are no denoising step (`Ctx.off_step`) are not counted. The every-`tau` rule's count."""
        if ctx.forward != self._forward:
            self._forward, self._step_no = ctx.forward, self._counted
            if not ctx.off_step:
                self._counted += 1
        return self._step_no

    def refreshes(self, ctx: Ctx, counted: int | None = None) -> bool:
        """Whether the look-ups of forward `ctx` may change the slot set; `counted`: its number among the steps of
        the run (`counted`; by default `ctx.forward`, right where every forward is a step, numbered from 0)."""
        if ctx.off_step:  # a forward of the block that denoises none of it (DiffusionGemma's encoder)
            return False
        if ctx.step < 0 or self.steps_per_block == 1:  # no step context, or one step per block: every tau-th step
            return (ctx.forward if counted is None else counted) % self.tau == 0
        if self.steps_per_block and ctx.step == self.steps_per_block - 1:
            return False
        return ctx.block == 0 or ctx.step % self.tau == 0

    def schedule(self, blocks: int = 2) -> list[list[int]]:
        """The denoising steps of each of the first `blocks` blocks whose look-ups may refresh the slot set
        (by `refreshes`: what an exported recipe states). Needs `steps_per_block`; each step is numbered as
        `counted` numbers it, so one step per block follows the every-tau-steps rule (block b's step is step b)."""
        spb = self.steps_per_block
        return [[s for s in range(spb) if self.refreshes(Ctx(b * spb + s, s, b))] for b in range(blocks)]

    def access(self, ids: Sequence[int], ctx: Ctx, tokens: Sequence[int] | None = None) -> Access:
        self.tokens = tokens
        counted = self.counted(ctx)
        res = self.resident
        hits = [e for e in ids if e in res]
        if len(hits) == len(ids):
            return Access(hits, [], [], [])
        if not self.refreshes(ctx, counted) or self.capacity == 0:
            return Access(hits, [], [], [e for e in ids if e not in res])
        n_tokens = dict(zip(ids, tokens, strict=True)).__getitem__ if tokens is not None else one_token
        wanted = _ordered(sorted(ids), n_tokens, reverse=True)[: self.capacity]
        promote = [e for e in wanted if e not in res]
        need = len(promote) - (self.capacity - len(res))
        victims: list[int] = []
        if need > 0:  # unused residents first (oldest first), then used ones outside the set, fewest tokens first
            used = set(ids)
            victims = [k for k in res if k not in used][:need]
            if len(victims) < need:
                keep = set(wanted)
                victims += _ordered(sorted([k for k in res if k in used and k not in keep]), n_tokens)[: need - len(victims)]
            for v in victims:
                del res[v]
            hits = [e for e in hits if e not in victims]
        admitted = promote[: self.capacity - len(res)]
        for e in admitted:
            res[e] = None
        return Access(hits, admitted, victims, [e for e in ids if e not in res])

    def prefetch(self, ids, ctx):
        return [], []  # placement changes only on refresh steps


class PolicyInterface(Registry):
    """Cache eviction policies by name (`PolicyInterface.register(name, cls)` adds one)."""

    _global_mapping: ClassVar[dict[str, type[Policy]]] = {
        "lru": LRU,
        "lfu": LFU,
        "lfu_decay": LFUDecay,
        "fifo": FIFO,
        "static_hot": StaticHot,
        "block_aware": BlockAware,
        "flru": FreqLRU,
        "tide": IntervalRefresh,
    }
    unknown = "unknown cache policy '{name}'; choose one of: {names}"


POLICIES = PolicyInterface()


def make_policy(name: str, capacity: int, **kw) -> Policy:
    """A policy for one layer with `capacity` slots. kw: `decay` (lfu_decay, flru), `hot` (static_hot),
    `tau` and `steps_per_block` (tide)."""
    return POLICIES.get_or_raise(name)(capacity, **kw)


def hot_order(counts: Sequence[float]) -> list[int]:
    """static_hot's profile of one layer: its experts by routed tokens, most first (ties: lower index first)."""
    return sorted(range(len(counts)), key=lambda e: (-counts[e], e))


def build_policies(
    name: str,
    capacities: Sequence[int],
    *,
    hot: Mapping[int, Sequence[int]] | None = None,
    **kw,
) -> list[Policy]:
    """One policy per MoE layer (runtime and simulator both build theirs here, so they match).

    `hot` maps layer -> experts most-used first (required by static_hot: a profile, e.g.
    `advisor.offload.trace.RoutingTrace.hot_sets()`).
    """
    if name == "static_hot":
        if hot is None:
            raise UserError("policy static_hot needs a profiled hot set per layer (hot={layer: [experts]})")
        return [make_policy(name, c, hot=hot.get(i, ()), **kw) for i, c in enumerate(capacities)]
    return [make_policy(name, c, **kw) for c in capacities]
