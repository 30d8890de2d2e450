"""The seam every expert computes through: resident default, custom runtimes, observers, both layouts."""

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
