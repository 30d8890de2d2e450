"""The exact offline optimum of the expert cache under the rules every policy plays by.

Belady's MIN (`simulate.belady`) solves a relaxed model in which a hit may be replaced by one of the
same forward's misses once the layer is done; its hit count bounds every policy but is not reachable
by them. The policies obey the strict rules of `policies`: a resident expert that a forward uses is a
hit and stays; a miss may take a free slot or the slot of a resident that forward does not use, or be
streamed. Under these rules the farthest-next-use greedy is not optimal (an expert kept while it keeps
being used cannot be replaced), so the optimum is solved as a small integer program per layer, with
c[g, x] = 1 when expert x is resident after forward g (S_g: the experts forward g uses):

    c[g, x] - c[g-1, x] >= 0   for x in S_g       (hits stay)
    c[g, x] - c[g-1, x] <= 0   for x not in S_g   (only what forward g uses can be admitted)
    sum_x c[g, x] <= capacity
    maximise  sum_g  sum_{x in S_g} c[g-1, x]      (hits)

Any resident set sequence the policies can produce is feasible here and every feasible one can be
played by a (clairvoyant) policy, so this is the optimum, not a bound (tests check it against brute
force). It needs the future, so it is a yardstick for the benchmarks, never a policy. (`tide` alone may
demote an expert its forward uses, on a refresh: its ratio is against the optimum of these stricter rules.) Solved with
HiGHS (scipy, a core dependency); the benchmark traces take well under a second per layer.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any, NamedTuple

import numpy as np

from advisor.offload.slots import resolve_slots
from advisor.offload.trace import RoutingTrace, Seq


class Optimum(NamedTuple):
    """Optimal hits of a whole trace (all layers) and its look-ups."""

    hits: int
    lookups: int

    @property
    def hit_rate(self) -> float:
        return self.hits / self.lookups if self.lookups else 0.0


def optimum_hits(sets: Sequence[Sequence[int]], capacity: int) -> int:
    """Most hits any policy obeying the strict rules can get on one layer's forwards `sets`."""
    from scipy.optimize import Bounds, LinearConstraint, milp
    from scipy.sparse import coo_matrix

    universe = sorted({int(e) for s in sets for e in s})
    g_n, n = len(sets), len(universe)
    if capacity <= 0 or g_n < 2 or n == 0:
        return 0
    col = {e: i for i, e in enumerate(universe)}
    used = np.zeros((g_n, n), dtype=bool)
    for g, s in enumerate(sets):
        used[g, [col[int(e)] for e in s]] = True
    nv = g_n * n
    var = np.arange(nv).reshape(g_n, n)
    # chain rows (one per g, x): +c[g, x] and, from the second forward on, -c[g-1, x]
    rows = [np.arange(nv), np.arange(n, nv)]
    cols = [var.ravel(), var[:-1].ravel()]
    vals = [np.ones(nv), -np.ones(nv - n)]
    lo = np.where(used.ravel(), 0.0, -np.inf)
    hi = np.where(used.ravel(), np.inf, 0.0)
    # capacity rows (one per forward)
    rows.append(nv + np.repeat(np.arange(g_n), n))
    cols.append(var.ravel())
    vals.append(np.ones(nv))
    lo = np.concatenate([lo, np.full(g_n, -np.inf)])
    hi = np.concatenate([hi, np.full(g_n, float(capacity))])
    a = coo_matrix((np.concatenate(vals), (np.concatenate(rows), np.concatenate(cols))),
                   shape=(nv + g_n, nv)).tocsr()
    cost = np.zeros(nv)
    cost[: nv - n] = -used[1:].ravel().astype(float)  # a hit at forward g is c[g-1, x] with x in S_g
    res = milp(cost, constraints=LinearConstraint(a, lo, hi), integrality=np.ones(nv), bounds=Bounds(0, 1))
    if res.status != 0:
        raise RuntimeError(f"optimum: the solver did not finish ({res.message})")
    return int(round(-res.fun))


def optimum(trace: RoutingTrace | None, slots_per_layer: Any, *, token_scope: str = "all",
            sequences: Sequence[Seq] | None = None) -> Optimum:
    """The exact optimum on `trace` (or on prebuilt `sequences`) with `slots_per_layer` slots."""
    if sequences is None:
        if trace is None:
            raise ValueError("optimum needs a trace or sequences")
        sequences = trace.access_sequences(token_scope)
    if trace is not None:
        caps = resolve_slots(slots_per_layer, trace.num_experts)
    elif isinstance(slots_per_layer, int):
        caps = [slots_per_layer] * len(sequences)
    else:
        caps = list(slots_per_layer)
    hits = sum(optimum_hits([look[0] for look in seq], caps[i]) for i, seq in enumerate(sequences))
    lookups = sum(len(look[0]) for seq in sequences for look in seq)
    return Optimum(hits, lookups)
