"""Straightforward reference versions of the cache policies (advisor.offload.policies before its speed-up).

The fast policies must take exactly these decisions (hits, admitted, evicted, streamed: the same experts in the
same order, and the same slot order) on any routing: the live runtime and every stored result depend on them.
Written for clarity - one sort key per rule, a plain loop per count - not for speed.
"""

from __future__ import annotations

from collections.abc import Sequence

from advisor.offload.policies import Ctx

Decision = tuple[list[int], list[int], list[int], list[int]]


class Ref:
    """Base rules: hits stay, misses take free slots or unused residents' slots, the rest are streamed."""

    def __init__(self, capacity: int):
        self.capacity = capacity
        self.resident: dict[int, None] = {}
        self.tokens: Sequence[int] | None = None

    def touch(self, hits: list[int], ids: Sequence[int], ctx: Ctx) -> None:
        pass

    def order(self, misses: list[int]) -> list[int]:
        return misses

    def victims(self, n: int, protected: set[int]) -> list[int]:
        return [k for k in self.resident if k not in protected][:n]

    def room(self, hits: list[int], misses: list[int]) -> int:
        return min(len(misses), self.capacity - len(hits))

    def _place(self, misses: list[int], present: list[int], ids: Sequence[int]) -> tuple[list[int], list[int]]:
        n_admit = self.room(present, misses)
        if n_admit <= 0:
            return [], []
        n_evict = n_admit - (self.capacity - len(self.resident))
        evicted = self.victims(n_evict, set(ids)) if n_evict > 0 else []
        for k in evicted:
            del self.resident[k]
        for e in misses[:n_admit]:
            self.resident[e] = None
        return misses[:n_admit], evicted

    def access(self, ids: Sequence[int], ctx: Ctx, tokens: Sequence[int] | None = None) -> Decision:
        self.tokens = tokens
        hits = [e for e in ids if e in self.resident]
        self.touch(hits, ids, ctx)
        misses = self.order([e for e in ids if e not in self.resident])
        admitted, evicted = self._place(misses, hits, ids)
        return hits, admitted, evicted, misses[len(admitted):]

    def prefetch(self, ids: Sequence[int], ctx: Ctx) -> tuple[list[int], list[int]]:
        missing = [e for e in ids if e not in self.resident]
        if isinstance(self, RefStaticHot):
            missing = self.order(missing)
        return self._place(missing, [e for e in ids if e in self.resident], ids)


class RefLRU(Ref):
    def touch(self, hits, ids, ctx):
        for e in hits:
            self.resident[e] = self.resident.pop(e)


class RefLFU(Ref):
    """Count every use (weight per forward from `weight`); victim: lowest count, then least recently used."""

    def __init__(self, capacity: int):
        super().__init__(capacity)
        self.count: dict[int, float] = {}
        self.last: dict[int, int] = {}
        self.clock = 0

    def weight(self, ctx: Ctx) -> float:
        return 1.0

    def touch(self, hits, ids, ctx):
        w = self.weight(ctx)
        self.clock += 1
        for e, n in zip(ids, self.tokens_of(ids), strict=True):
            self.count[e] = self.count.get(e, 0.0) + self.scaled(w, n)
            self.last[e] = self.clock

    def tokens_of(self, ids: Sequence[int]) -> Sequence[int]:
        return [1] * len(ids)

    def scaled(self, w: float, n: int) -> float:
        return w

    def order(self, misses):
        return sorted(misses, key=lambda e: -self.count[e])

    def victims(self, n, protected):  # an expert only prefetched so far has no use yet: count 0
        cands = [k for k in self.resident if k not in protected]
        return sorted(cands, key=lambda k: (self.count.get(k, 0.0), self.last.get(k, 0)))[:n]


class RefLFUDecay(RefLFU):
    """Counts fade by `decay` per forward: the increment grows by 1/decay per forward instead, rescaled
    (all counts and the increment) once it passes 1e100."""

    def __init__(self, capacity: int, decay: float = 0.8):
        super().__init__(capacity)
        self.growth, self.inc, self.t = 1.0 / decay, 1.0, None

    def weight(self, ctx):
        if self.t is None:
            self.t = ctx.forward
        elif ctx.forward != self.t:
            self.inc *= self.growth ** max(0, ctx.forward - self.t)
            self.t = ctx.forward
            if self.inc > 1e100:
                self.count = {k: v * (1.0 / self.inc) for k, v in self.count.items()}
                self.inc = 1.0
        return self.inc


class RefFreqLRU(RefLFUDecay):
    def __init__(self, capacity: int, decay: float = 0.3):
        super().__init__(capacity, decay)

    def tokens_of(self, ids):
        return self.tokens if self.tokens is not None else [1] * len(ids)

    def scaled(self, w, n):
        return w * n


class RefStaticHot(Ref):
    def __init__(self, capacity: int, hot: Sequence[int] = ()):
        super().__init__(capacity)
        self.hot = set(list(dict.fromkeys(hot))[:capacity])

    def touch(self, hits, ids, ctx):
        for e in hits:
            if e not in self.hot:
                self.resident[e] = self.resident.pop(e)

    def order(self, misses):
        return [e for e in misses if e in self.hot] + [e for e in misses if e not in self.hot]

    def room(self, hits, misses):
        n_hot = len([e for e in misses if e in self.hot])
        cold_hits = len([e for e in hits if e not in self.hot])
        return n_hot + min(len(misses) - n_hot, self.capacity - len(self.hot) - cold_hits)

    def victims(self, n, protected):
        return [k for k in self.resident if k not in protected and k not in self.hot][:n]


class RefBlockAware(Ref):
    def __init__(self, capacity: int):
        super().__init__(capacity)
        self.block_count: dict[int, int] = {}
        self.prev: set[int] = set()
        self.cur: set[int] = set()
        self.last: dict[int, int] = {}
        self.block: int | None = None
        self.clock = 0

    def touch(self, hits, ids, ctx):
        if ctx.block != self.block:
            self.block, self.block_count = ctx.block, {}
        self.clock += 1
        self.prev = self.cur
        for e in ids:
            self.last[e] = self.clock
        if ctx.step < 0 and ctx.block >= 0:  # a forward of a block that is none of its denoising steps
            return
        self.cur = set(ids)
        for e in ids:
            self.block_count[e] = self.block_count.get(e, 0) + 1

    def order(self, misses):
        return sorted(misses, key=lambda e: (e not in self.prev, -self.block_count.get(e, 0)))

    def victims(self, n, protected):
        cands = [k for k in self.resident if k not in protected]
        key = lambda k: (k in self.prev, self.block_count.get(k, 0), self.last.get(k, 0))  # noqa: E731
        return sorted(cands, key=key)[:n]


class RefIntervalRefresh(Ref):
    def __init__(self, capacity: int, tau: int = 4, steps_per_block: int = 0):
        super().__init__(capacity)
        self.tau, self.steps_per_block = tau, steps_per_block
        self.steps_forwards: list[int] = []  # the forwards seen that are steps, in order

    def refreshes(self, ctx: Ctx) -> bool:
        if ctx.step < 0 and ctx.block >= 0:  # a forward of a block that is none of its denoising steps
            return False
        if ctx.step < 0 or self.steps_per_block == 1:  # no step context, or one step per block: every tau-th step
            return self.steps_forwards.index(ctx.forward) % self.tau == 0
        if self.steps_per_block and ctx.step == self.steps_per_block - 1:
            return False
        return ctx.block == 0 or ctx.step % self.tau == 0

    def access(self, ids, ctx, tokens=None):
        if not (ctx.step < 0 and ctx.block >= 0) and ctx.forward not in self.steps_forwards:
            self.steps_forwards.append(ctx.forward)
        res = self.resident
        hits = [e for e in ids if e in res]
        misses = [e for e in ids if e not in res]
        if not misses or not self.refreshes(ctx) or self.capacity == 0:
            return hits, [], [], misses
        count = dict(zip(ids, tokens, strict=True)) if tokens is not None else {}
        wanted = sorted(ids, key=lambda e: (-count.get(e, 1), e))[: self.capacity]
        promote = [e for e in wanted if e not in res]
        need = max(0, len(promote) - (self.capacity - len(res)))
        unused = [k for k in res if k not in ids]
        demoted_used = sorted((k for k in res if k in ids and k not in wanted), key=lambda e: (count.get(e, 1), e))
        victims = (unused + demoted_used)[:need]
        admitted = promote[: self.capacity - len(res) + len(victims)]
        for v in victims:
            del res[v]
        for e in admitted:
            res[e] = None
        return ([e for e in hits if e not in victims], admitted, victims,
                [e for e in ids if e not in res and e not in admitted])

    def prefetch(self, ids, ctx):
        return [], []


REFERENCES: dict[str, type[Ref]] = {
    "lru": RefLRU, "lfu": RefLFU, "lfu_decay": RefLFUDecay, "fifo": Ref, "static_hot": RefStaticHot,
    "block_aware": RefBlockAware, "flru": RefFreqLRU, "tide": RefIntervalRefresh,
}
