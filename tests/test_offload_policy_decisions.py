"""The cache policies take exactly the decisions of their straightforward reference (tests/policy_reference.py).

The policies are tuned for replay speed (the simulator pushes millions of look-ups through them); the live
runtime runs the same objects, so a speed-up must not change one decision. Long random traces with the
awkward cases (ties in counts and tokens, new blocks, skipped forwards, unknown steps, forwards of a block that
are none of its steps (DiffusionGemma's encoder pass), count rescaling, prefetches between look-ups, unsorted
expert lists) are replayed through both, call by call.
"""

from __future__ import annotations

import random

import pytest

from advisor.offload.policies import POLICIES, Ctx, make_policy
from tests.policy_reference import REFERENCES

VARIANTS = [(p, {}) for p in POLICIES if p != "static_hot"] + [
    ("lfu_decay", {"decay": 0.1}),  # the increment passes 1e100 within ~100 forwards: counts get rescaled
    ("flru", {"decay": 0.05}),
    ("tide", {"tau": 1}),
    ("tide", {"tau": 3, "steps_per_block": 4}),
    ("tide", {"tau": 2, "steps_per_block": 1}),  # autoregressive decoding: every tau-th forward
]


def random_calls(seed: int, n_calls: int = 2500):
    """(kind, ids, ctx, tokens) calls: look-ups (and some prefetches) of a random block-diffusion-like run."""
    rng = random.Random(seed)
    n_exp = rng.choice((6, 12, 40))
    steps = rng.choice((1, 4, 8))
    forward, calls = 0, []
    for _ in range(n_calls):
        forward += rng.choice((1, 1, 1, 2, 5))  # forwards skipped now and then (growth ** gap)
        r = rng.random()  # a step of a block; a forward of a block that is none of its steps; no step context
        step, block = (forward % steps, forward // steps) if r > 0.15 else (-1, forward // steps) if r > 0.1 else (-1, -1)
        ids = rng.sample(range(n_exp), rng.randint(1, n_exp))
        if rng.random() < 0.8:
            ids.sort()  # what the runtime and the simulator pass; unsorted lists must work too
        tokens = tuple(rng.choice((1, 1, 2, 3, 8)) for _ in ids) if rng.random() < 0.9 else None
        ctx = Ctx(forward, step, block)
        if rng.random() < 0.15:
            calls.append(("prefetch", tuple(rng.sample(range(n_exp), rng.randint(1, n_exp))), ctx, None))
        calls.append(("access", tuple(ids), ctx, tokens))
    return n_exp, calls


def replay_both(policy: str, cap: int, kw: dict, calls) -> None:
    """Replay `calls` through the policy and its reference, asserting the same decision and slot order each call."""
    fast, ref = make_policy(policy, cap, **kw), REFERENCES[policy](cap, **kw)
    for i, (kind, ids, ctx, tokens) in enumerate(calls):
        if kind == "prefetch":
            got, want = fast.prefetch(ids, ctx), ref.prefetch(ids, ctx)
        else:
            got, want = tuple(fast.access(ids, ctx, tokens)), ref.access(ids, ctx, tokens)
        assert got == tuple(want), (policy, kw, cap, i, kind)
        assert list(fast.resident) == list(ref.resident), (policy, kw, cap, i)  # slot order too


@pytest.mark.parametrize("seed", range(3))
@pytest.mark.parametrize(("policy", "kw"), VARIANTS + [("static_hot", {})], ids=str)
def test_policies_decide_exactly_as_the_reference(policy, kw, seed):
    n_exp, calls = random_calls(seed)
    rng = random.Random(seed)
    for cap in (0, 1, n_exp // 4, n_exp // 2, n_exp - 1):
        if policy == "static_hot":
            kw = {"hot": rng.sample(range(n_exp), rng.randint(0, n_exp))}
        replay_both(policy, cap, kw, calls)


@pytest.mark.parametrize(("policy", "kw"), VARIANTS, ids=str)
def test_a_prefetched_expert_never_used_can_be_evicted(policy, kw):
    """An expert a prefetch admits before any look-up uses it (a higher id than any used yet) is then a victim
    candidate: the per-expert policies must have its numbers (the random traces above use high ids at once)."""
    calls = [("prefetch", (9, 7), Ctx(0, 0, 0), None), ("access", (0,), Ctx(1, 1, 0), (2,)),
             ("access", (1, 2), Ctx(2, 2, 0), (1, 3)), ("prefetch", (11,), Ctx(3, 0, 1), None),
             ("access", (3,), Ctx(3, 0, 1), None)]
    for cap in (1, 2):
        replay_both(policy, cap, kw, calls)
