"""Cache policies and Belady's MIN: the rules every policy obeys, and MIN as a true, tight upper bound."""

from __future__ import annotations

import itertools
import random

import pytest

from advisor.errors import UserError
from advisor.offload.policies import POLICIES, Ctx, make_policy
from advisor.offload.simulate import replay_sets, sequences_from_sets
from advisor.offload.slots import resolve_slots
from tests.offload_helpers import block_ctxs, random_sets


def brute_force_hits(sets: list[list[int]], cap: int) -> int:
    """Optimal hits by exhaustive search over cache states (the relaxed model MIN solves: after a forward the
    cache may hold any <= cap experts from what it held plus what the forward used)."""
    states = {frozenset(): 0}
    for s in sets:
        s = frozenset(s)
        nxt: dict[frozenset, int] = {}
        for cache, h in states.items():
            gained = h + len(cache & s)
            pool = list(cache | s)
            for r in range(min(cap, len(pool)) + 1):
                for keep in itertools.combinations(pool, r):
                    k = frozenset(keep)
                    if nxt.get(k, -1) < gained:
                        nxt[k] = gained
        states = nxt
    return max(states.values())


def _kw(policy: str, n_experts: int, n_layers: int = 1) -> dict:
    return {"hot": {i: list(range(n_experts)) for i in range(n_layers)}} if policy == "static_hot" else {}


def test_belady_equals_brute_force_optimum_on_small_traces():
    rng = random.Random(1)
    checked = 0
    for _ in range(120):
        n_exp, cap, n_fwd = rng.randint(2, 5), rng.randint(0, 4), rng.randint(1, 6)
        sets = [rng.sample(range(n_exp), rng.randint(1, n_exp)) for _ in range(n_fwd)]
        got = replay_sets(sequences_from_sets([sets]), "belady", cap).hits
        assert got == brute_force_hits(sets, cap), (sets, cap)
        checked += 1
    assert checked == 120


@pytest.mark.parametrize("seed", range(4))
def test_belady_bounds_every_policy_on_random_traces(seed):
    sets = random_sets(2, 60, 12, 6, seed)
    seqs = sequences_from_sets(sets, block_ctxs(60, 5))
    for cap in (1, 3, 6, 10):
        bound = replay_sets(seqs, "belady", cap).hits
        for p in POLICIES:
            assert replay_sets(seqs, p, cap, **_kw(p, 12, 2)).hits <= bound, (p, cap)


def test_belady_bounds_every_policy_on_adversarial_traces():
    cap = 4
    cyclic = [[i % (cap + 1)] for i in range(50)]  # LRU/FIFO miss every time on a loop of cap+1
    flip = [[0, 1, 2, 3] if (i // 3) % 2 else [4, 5, 6, 7] for i in range(48)]  # frequency goes stale
    wide = [list(range(i % 3, 9 + i % 3)) for i in range(30)]  # every forward needs more than cap
    for sets in (cyclic, flip, wide):
        seqs = sequences_from_sets([sets], block_ctxs(len(sets), 4))
        bound = replay_sets(seqs, "belady", cap).hits
        for p in POLICIES:
            assert replay_sets(seqs, p, cap, **_kw(p, 12)).hits <= bound, p
    lru = replay_sets(sequences_from_sets([cyclic]), "lru", cap)
    assert lru.hits == 0  # the classic worst case really is exercised
    assert replay_sets(sequences_from_sets([cyclic]), "belady", cap).hits > 30


@pytest.mark.parametrize("policy", POLICIES)
def test_rules_hits_stay_capacity_and_accounting(policy):
    rng = random.Random(7)
    pol = make_policy(policy, 4, **({"hot": [0, 1]} if policy == "static_hot" else {}))
    for f in range(200):
        ids = sorted(rng.sample(range(10), rng.randint(1, 7)))
        before = set(pol.resident)
        acc = pol.access(ids, Ctx(f, f % 4, f // 4))
        kept = before - set(acc.evicted)
        assert set(acc.hits) == kept & set(ids)
        assert sorted(acc.admitted + acc.streamed) == sorted(set(ids) - kept)
        if policy != "tide":  # nothing this forward uses is evicted (tide's refresh may demote one: a miss then)
            assert not set(acc.evicted) & set(ids)
        assert set(acc.evicted) <= before
        assert set(pol.resident) == (before - set(acc.evicted)) | set(acc.admitted)
        assert len(pol.resident) <= 4
        if len(acc.streamed):  # streaming only when no slot could be had (or the policy declined)
            assert policy in ("static_hot", "tide") or len(acc.hits) + len(acc.admitted) == 4


def test_lru_fifo_lfu_choose_the_textbook_victims():
    c = [Ctx(i) for i in range(10)]
    lru, fifo, lfu = make_policy("lru", 2), make_policy("fifo", 2), make_policy("lfu", 2)
    for p in (lru, fifo, lfu):
        p.access([0], c[0])
        p.access([1], c[1])
        p.access([0], c[2])  # 0 used again: most recent and most frequent
    assert lru.access([2], c[3]).evicted == [1]
    assert fifo.access([2], c[3]).evicted == [0]
    assert lfu.access([2], c[3]).evicted == [1]


def test_lfu_decay_forgets_old_popularity():
    lfu, dec = make_policy("lfu", 2), make_policy("lfu_decay", 2, decay=0.5)
    for p in (lfu, dec):
        for f in range(6):
            p.access([0], Ctx(f))  # 0: six old uses
        p.access([1], Ctx(6))
        for f in range(7, 10):
            p.access([2], Ctx(f))  # 2: three recent uses
        p.access([3], Ctx(10))  # evict the old favourite 0, or 2?
    assert lfu.resident.keys() == {0, 3}
    assert dec.resident.keys() == {2, 3}


def test_static_hot_never_evicts_hot_and_block_aware_protects_previous_step():
    sh = make_policy("static_hot", 2, hot=[5])
    sh.access([5], Ctx(0))
    for f in range(1, 20):
        sh.access([f % 4], Ctx(f))
        assert 5 in sh.resident
    ba = make_policy("block_aware", 3)
    ba.access([0, 1], Ctx(0, 0, 0))
    ba.access([2], Ctx(1, 1, 0))
    ba.access([0, 1], Ctx(2, 2, 0))  # 0,1 used twice in this block, 2 once
    assert ba.access([3], Ctx(3, 3, 0)).evicted == [2]
    ba.access([4], Ctx(4, 0, 1))  # new block: in-block counts released, previous step's set (3) protected
    assert 3 in ba.resident


def test_unknown_policy_and_bad_slots_are_user_errors():
    with pytest.raises(UserError):
        make_policy("mru", 2)
    with pytest.raises(UserError):
        resolve_slots("abc", [8, 8])
    with pytest.raises(UserError):
        resolve_slots("1,2,3", [8, 8])
    assert resolve_slots("50%", [8, 16]) == [4, 8]
    assert resolve_slots(0.25, [8, 16]) == [2, 4]
    assert resolve_slots("3,20", [8, 16]) == [3, 16]
    assert resolve_slots(5, [8, 4]) == [5, 4]


@pytest.mark.parametrize("policy", ["lfu", "lfu_decay", "flru", "block_aware"])
def test_an_expert_only_prefetched_counts_no_use_when_choosing_a_victim(policy):
    # lookahead prefetch admits the router's prediction, which a forward may then not use (lfu/flru raised KeyError)
    pol = make_policy(policy, 2)
    pol.access([1], Ctx(0, 0, 0))
    pol.prefetch([5], Ctx(1, 1, 0))
    acc = pol.access([2], Ctx(1, 1, 0))
    assert acc.evicted == [5] and acc.admitted == [2]  # never used: fewer uses than expert 1
