"""The seam every expert computes through: resident default, custom runtimes, observers, both layouts."""

import pytest
import torch
from torch import nn

from advisor.models.experts import (
    ExpertList,
    ExpertWeights,
    advisor_experts_forward,
    attach,
    combine,
    detach,
    expert_set,
    swiglu,
)


class _MLP(nn.Module):
    def __init__(self, h: int, i: int):
        super().__init__()
        self.gate_proj = nn.Linear(h, i, bias=False)
        self.up_proj = nn.Linear(h, i, bias=False)
        self.down_proj = nn.Linear(i, h, bias=False)

    def forward(self, x):
        return self.down_proj(nn.functional.silu(self.gate_proj(x)) * self.up_proj(x))


def _routing(t: int, e: int, k: int, seed: int = 0):
    g = torch.Generator().manual_seed(seed)
    idx = torch.stack([torch.randperm(e, generator=g)[:k] for _ in range(t)])
    w = torch.rand(t, k, generator=g).softmax(-1)
    return idx, w


def test_expert_list_matches_reference_loop():
    torch.manual_seed(0)
    experts = ExpertList([_MLP(16, 8) for _ in range(6)], nn.functional.silu)
    x = torch.randn(10, 16)
    idx, w = _routing(10, 6, 2)
    want = torch.zeros_like(x)
    for t in range(10):
        for j in range(2):
            want[t] += w[t, j] * experts[int(idx[t, j])](x[t])
    torch.testing.assert_close(experts(x, idx, w), want)


def test_attached_runtime_supplies_weights_and_observers_see_routing():
    torch.manual_seed(0)
    experts = ExpertList([_MLP(16, 8) for _ in range(4)], nn.functional.silu)
    x = torch.randn(5, 16)
    idx, w = _routing(5, 4, 2, seed=1)
    asked, seen = [], []

    class Doubling:  # an expert runtime whose experts output twice the resident value
        def experts_for(self, layer, ids):
            asked.append((layer, ids))
            view = expert_set(experts)
            return {e: (lambda f: (lambda h: 2 * f(h)))(swiglu(view.act, view.get(e))) for e in ids}

    attach({3: experts}, Doubling(), observers=[lambda layer, i, _w: seen.append((layer, i.clone()))])
    resident = ExpertList(list(experts), nn.functional.silu)  # same weights, not attached
    torch.testing.assert_close(experts(x, idx, w), 2 * resident(x, idx, w))
    assert asked == [(3, sorted(set(idx.flatten().tolist())))]
    assert seen[0][0] == 3 and torch.equal(seen[0][1], idx)
    detach([experts])
    torch.testing.assert_close(experts(x, idx, w), resident(x, idx, w))


def test_set_then_get_roundtrip_list_layout():
    experts = ExpertList([_MLP(8, 4) for _ in range(3)], nn.functional.silu)
    view = expert_set(experts)
    new = ExpertWeights(gate=torch.ones(4, 8), up=2 * torch.ones(4, 8), down=3 * torch.ones(8, 4))
    view.set(1, new)
    got = view.get(1)
    assert torch.equal(got.gate, new.gate) and torch.equal(got.down, new.down)
    assert got.nbytes == 3 * 32 * 4


def test_combine_ignores_experts_nobody_routed_to():
    x = torch.randn(3, 4)
    idx = torch.tensor([[0], [0], [0]])
    w = torch.ones(3, 1)
    out = combine(x, idx, w, {0: lambda h: h, 1: lambda h: 100 * h})
    torch.testing.assert_close(out, x)


def test_unattached_fused_module_behaves_like_eager():
    class Fused(nn.Module):
        def __init__(self):
            super().__init__()
            self.gate_up_proj = nn.Parameter(torch.randn(4, 2 * 8, 16) * 0.1)
            self.down_proj = nn.Parameter(torch.randn(4, 16, 8) * 0.1)
            self.act_fn = nn.functional.silu

    m = Fused()
    x = torch.randn(6, 16)
    idx, w = _routing(6, 4, 2, seed=2)
    want = torch.zeros_like(x)
    for t in range(6):
        for j in range(2):
            e = int(idx[t, j])
            g, u = (m.gate_up_proj[e] @ x[t]).chunk(2)
            want[t] += w[t, j] * (m.down_proj[e] @ (nn.functional.silu(g) * u))
    torch.testing.assert_close(advisor_experts_forward(m, x, idx, w), want, atol=1e-5, rtol=1e-5)


@pytest.mark.parametrize("dtype", [torch.float32, torch.bfloat16])
@pytest.mark.parametrize("index_dtype", [torch.int64, torch.int32])
def test_combine_is_bitwise_the_eager_loop(dtype, index_dtype):
    """`combine` groups tokens by expert with one sort; its sum must stay bitwise that of the eager loop
    (`torch.where` per expert), including ids no expert has (-1, >= E), experts nobody routed to, and keys that
    are not Python ints."""
    import numpy as np

    from advisor.models.experts import combine

    g = torch.Generator().manual_seed(0)
    tokens, k, n_exp, hidden = 37, 3, 8, 16
    idx = torch.stack([torch.randperm(n_exp + 2, generator=g)[:k] - 1 for _ in range(tokens)]).to(index_dtype)
    w = torch.rand(tokens, k, generator=g).to(dtype)
    h = torch.randn(tokens, hidden, generator=g).to(dtype)
    mats = {e: torch.randn(hidden, hidden, generator=g).to(dtype) for e in range(n_exp)}
    fns = {e: (lambda x, m=m: x @ m) for e, m in mats.items()}
    fns[n_exp + 5] = lambda x: x * 0 + 1  # nobody routes to it

    def eager(experts):
        out = torch.zeros_like(h)
        for e, fn in experts.items():
            token_idx, k_pos = torch.where(idx == e)
            if token_idx.numel():
                out.index_add_(0, token_idx, (fn(h[token_idx]) * w[token_idx, k_pos, None]).to(out.dtype))
        return out

    assert torch.equal(combine(h, idx, w, fns), eager(fns))
    keyed = {np.int64(e): f for e, f in fns.items()}
    assert torch.equal(combine(h, idx, w, keyed), eager(fns))
    assert torch.equal(combine(h, idx, w, {}), torch.zeros_like(h))


def test_combine_runs_no_per_expert_ops_besides_the_experts():
    """An `index_add_` (with its own index arithmetic, weight gather and cast) per expert made a CPU decode step
    many small ops: beside the experts' own computation, `combine` runs the gather of its inputs, a multiply by
    the weights and one copy per routed expert, and otherwise the same ops for 4 routed experts as for 64."""
    from collections import Counter

    from torch.utils._python_dispatch import TorchDispatchMode

    class Count(TorchDispatchMode):
        def __init__(self):
            super().__init__()
            self.ops = Counter()

        def __torch_dispatch__(self, func, types, args=(), kwargs=None):
            if not func.is_view:
                self.ops[str(func)] += 1
            return func(*args, **(kwargs or {}))

    counts, routed = [], []
    for n_exp in (4, 64):
        idx, w = _routing(32, n_exp, 4, seed=3)
        h = torch.randn(32, 8)
        with Count() as c:
            combine(h, idx, w, {e: (lambda x: x) for e in range(n_exp)})
        counts.append(c.ops)
        routed.append(len(idx.unique()))
    more = routed[1] - routed[0]  # routed experts (nobody routed to the others: they run nothing)
    assert counts[1] - counts[0] == Counter({"aten.index.Tensor": more, "aten.mul.Tensor": more,
                                             "aten.copy_.default": more})
    assert not counts[0] - counts[1]
