"""The one seam through which every expert of every supported MoE model computes.

Two layouts exist in the wild: transformers 5.x fuses a layer's experts into 3-D tensors
(`gate_up_proj` [E, 2I, H], `down_proj` [E, H, I]) behind `@use_experts_implementation`; the LLaDA
family keeps a list of SwiGLU MLPs (`experts.{j}.{gate,up,down}_proj`). Both call the same function,
`advisor_experts_forward(module, hidden [T,H], top_k_index [T,k], top_k_weights [T,k])`:

* fused modules reach it through transformers' own `ExpertsInterface` (registered here as
  ``"advisor"``; select it with ``model.set_experts_implementation("advisor")``) - no monkeypatching;
* the project's list-layout modules (`ExpertList`) call it from their ``forward``.

What weights an expert computes with is decided by an `ExpertRuntime` attached to the model
(`attach`): the default reads the module's own weights (resident); quantization and offloading
supply their own runtimes. Observers (routing-trace recorders) see every routing decision.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass, field
from typing import Protocol

import torch
from torch import nn

ExpertFn = Callable[[torch.Tensor], torch.Tensor]
"""Maps token activations [n, H] to one expert's SwiGLU output [n, H]."""


@dataclass(frozen=True)
class ExpertWeights:
    """One expert's SwiGLU weights in `nn.Linear` orientation: gate/up [I, H], down [H, I]."""

    gate: torch.Tensor
    up: torch.Tensor
    down: torch.Tensor

    def tensors(self) -> dict[str, torch.Tensor]:
        return {"gate": self.gate, "up": self.up, "down": self.down}

    @property
    def nbytes(self) -> int:
        return sum(t.numel() * t.element_size() for t in self.tensors().values())


class ExpertSet(Protocol):
    """Read/replace access to the routed experts of one MoE layer, whatever the storage layout."""

    num_experts: int
    layout: str  # "fused" | "list"

    def get(self, e: int) -> ExpertWeights: ...
    def set(self, e: int, weights: ExpertWeights) -> None: ...
    def act(self, x: torch.Tensor) -> torch.Tensor: ...


class FusedExperts:
    """Experts stored as transformers' fused 3-D parameters (concatenated [gate; up], not transposed)."""

    layout = "fused"

    def __init__(self, module: nn.Module):
        if getattr(module, "is_transposed", False) or not getattr(module, "is_concatenated", True):
            raise NotImplementedError(
                f"{type(module).__name__}: transposed or interleaved fused experts are not supported yet"
            )
        if not getattr(module, "has_gate", True):
            raise NotImplementedError(f"{type(module).__name__}: non-gated experts are not supported yet")
        self.module = module
        self.num_experts = int(module.gate_up_proj.shape[0])

    def get(self, e: int) -> ExpertWeights:
        gate, up = self.module.gate_up_proj[e].chunk(2, dim=0)
        return ExpertWeights(gate=gate, up=up, down=self.module.down_proj[e])

    def set(self, e: int, weights: ExpertWeights) -> None:
        with torch.no_grad():
            inter = weights.gate.shape[0]
            self.module.gate_up_proj[e, :inter].copy_(weights.gate)
            self.module.gate_up_proj[e, inter:].copy_(weights.up)
            self.module.down_proj[e].copy_(weights.down)

    def act(self, x: torch.Tensor) -> torch.Tensor:
        return self.module.act_fn(x)


class ListExperts:
    """Experts stored as a list of MLP modules with `gate_proj`, `up_proj`, `down_proj` Linear layers."""

    layout = "list"

    def __init__(self, module: nn.ModuleList, act_fn: Callable[[torch.Tensor], torch.Tensor]):
        self.module = module
        self.num_experts = len(module)
        self._act = act_fn

    def get(self, e: int) -> ExpertWeights:
        m = self.module[e]
        return ExpertWeights(gate=m.gate_proj.weight, up=m.up_proj.weight, down=m.down_proj.weight)

    def set(self, e: int, weights: ExpertWeights) -> None:
        m = self.module[e]
        with torch.no_grad():
            m.gate_proj.weight.copy_(weights.gate)
            m.up_proj.weight.copy_(weights.up)
            m.down_proj.weight.copy_(weights.down)

    def act(self, x: torch.Tensor) -> torch.Tensor:
        return self._act(x)

    def fn(self, e: int) -> ExpertFn:
        """Calls the expert's own Linear modules, so quantized replacements (bitsandbytes Linear8bitLt /
        Linear4bit, whose weights are packed) compute through their own kernels."""
        m = self.module[e]

        def run(x: torch.Tensor) -> torch.Tensor:
            return m.down_proj(self._act(m.gate_proj(x)) * m.up_proj(x))

        return run


def expert_set(module: nn.Module) -> ExpertSet:
    """The `ExpertSet` view of an experts module (fused transformers module or project `ExpertList`); for an
    offloaded model, the checkpoint view its loader attached (its own parameters are meta)."""
    source = module.__dict__.get("_advisor_source")
    if source is not None:
        return source
    if isinstance(module, ExpertList):
        return ListExperts(module, module.act_fn)
    if hasattr(module, "gate_up_proj") and hasattr(module, "down_proj"):
        return FusedExperts(module)
    raise TypeError(f"{type(module).__name__} is not an experts module this project understands")


def swiglu(act: Callable[[torch.Tensor], torch.Tensor], w: ExpertWeights) -> ExpertFn:
    """A full-precision expert: down(act(gate x) * up x)."""

    def fn(x: torch.Tensor) -> torch.Tensor:
        g = nn.functional.linear(x, w.gate.to(x.dtype))
        u = nn.functional.linear(x, w.up.to(x.dtype))
        return nn.functional.linear(act(g) * u, w.down.to(x.dtype))

    return fn


def expert_fn(experts: ExpertSet, e: int) -> ExpertFn:
    """What expert `e` computes with its resident weights: the set's own `fn` when it has one (list layouts call
    their Linear modules, which may be bitsandbytes-quantized), else SwiGLU over its weights."""
    own = getattr(experts, "fn", None)
    return own(e) if own is not None else swiglu(experts.act, experts.get(e))


class ExpertRuntime(Protocol):
    """Decides what each expert computes with. Called once per MoE layer per forward."""

    def experts_for(self, layer: int, expert_ids: list[int]) -> Mapping[int, ExpertFn]: ...


RoutingObserver = Callable[[int, torch.Tensor, torch.Tensor], None]
"""Called as observer(layer, top_k_index [T,k], top_k_weights [T,k]) before the experts run."""


class ResidentRuntime:
    """Default: every expert computes with the weights held by its own module."""

    def __init__(self, layers: Mapping[int, ExpertSet]):
        self.layers = layers

    def experts_for(self, layer: int, expert_ids: list[int]) -> Mapping[int, ExpertFn]:
        experts = self.layers[layer]
        return {e: expert_fn(experts, e) for e in expert_ids}


@dataclass
class Session:
    """What is attached to a model: the runtime that supplies experts and the routing observers."""

    runtime: ExpertRuntime
    observers: list[RoutingObserver] = field(default_factory=list)


@dataclass(frozen=True)
class _Handle:
    layer: int
    session: Session


def attach(
    experts_modules: Mapping[int, nn.Module],
    runtime: ExpertRuntime | None = None,
    observers: Iterable[RoutingObserver] = (),
) -> Session:
    """Route the given experts modules (MoE layer index -> module) through `runtime` and `observers`."""
    if runtime is None:
        runtime = ResidentRuntime({i: expert_set(m) for i, m in experts_modules.items()})
    session = Session(runtime=runtime, observers=list(observers))
    for layer, module in experts_modules.items():
        module._advisor = _Handle(layer, session)  # plain attribute: not a parameter, not saved
    return session


def detach(experts_modules: Iterable[nn.Module]) -> None:
    for module in experts_modules:
        if hasattr(module, "_advisor"):
            del module._advisor


def combine(
    hidden_states: torch.Tensor,
    top_k_index: torch.Tensor,
    top_k_weights: torch.Tensor,
    experts: Mapping[int, ExpertFn],
) -> torch.Tensor:
    """Weighted sum of each token's top-k expert outputs, bitwise that of transformers' eager loop: each expert
    computes its tokens, and each token's weighted outputs are added to zeros one by one in ascending expert id.
    The tokens are grouped by expert with one stable sort and one host read of all experts' bounds (the eager
    loop's `torch.where` waits for the device once per expert), so on a GPU the experts' kernels queue without
    waiting for each other. Per expert, beside its own computation, only its inputs' gather, the weighting and
    one copy into a shared output tensor run; the sum is then k gathers and adds for all experts at once (slot j
    of each token: its j-th expert's output, or a zero row). An `index_add_` per expert, with its own index
    arithmetic, made a CPU decode step many small ops (benchmarks/combine.py). The one temporary as large as
    all routed outputs is that shared tensor (more such tensors cost a CPU host page faults on every call)."""
    out = torch.zeros_like(hidden_states)
    tokens, k = top_k_index.shape
    routed, order = torch.sort(top_k_index.reshape(-1), stable=True)  # token-major positions, grouped by expert
    ids = torch.tensor([int(e) for e in experts], dtype=routed.dtype, device=routed.device)
    lows, highs = torch.stack([torch.searchsorted(routed, ids), torch.searchsorted(routed, ids, right=True)]).tolist()
    runs = [(fn, lo, hi) for fn, lo, hi in zip(experts.values(), lows, highs, strict=True) if lo < hi]
    if not runs:
        return out
    pos = torch.cat([order[lo:hi] for _, lo, hi in runs])  # the experts' positions, one expert after another
    token, w = pos // k, top_k_weights.reshape(-1)[pos, None]
    y = out.new_empty(len(pos) + 1, out.shape[-1])
    y[-1] = 0  # the row of a slot that no expert in `experts` fills
    at = 0
    for fn, lo, hi in runs:
        rows = slice(at, at + hi - lo)
        y[rows] = fn(hidden_states[token[rows]]) * w[rows]
        at += hi - lo
    slot = top_k_index.argsort(dim=-1, stable=True).argsort(dim=-1).reshape(-1)[pos]  # the expert's rank in its token
    src = torch.full((k * tokens,), len(pos), dtype=pos.dtype, device=pos.device)
    src[slot * tokens + token] = torch.arange(len(pos), dtype=pos.dtype, device=pos.device)
    for j in range(k):
        out += y[src[j * tokens:(j + 1) * tokens]]
    return out


def advisor_experts_forward(
    self: nn.Module,
    hidden_states: torch.Tensor,
    top_k_index: torch.Tensor,
    top_k_weights: torch.Tensor,
) -> torch.Tensor:
    """The experts implementation registered with transformers as "advisor" (and used by `ExpertList`)."""
    handle: _Handle | None = getattr(self, "_advisor", None)
    if handle is None:  # not attached: behave like the stock eager implementation
        experts = expert_set(self)
        ids = [int(e) for e in torch.unique(top_k_index).tolist() if 0 <= e < experts.num_experts]
        fns = {e: expert_fn(experts, e) for e in ids}
        return combine(hidden_states, top_k_index, top_k_weights, fns)
    for observe in handle.session.observers:
        observe(handle.layer, top_k_index, top_k_weights)
    runtime = handle.session.runtime
    if getattr(runtime, "wants_tokens", False):  # tokens routed to each expert (sorted ids, as below)
        uniq, counts = torch.unique(top_k_index, return_counts=True)
        fns = runtime.experts_for(handle.layer, uniq.tolist(), counts.tolist())
    else:
        ids = sorted({int(e) for e in torch.unique(top_k_index).tolist()})
        fns = runtime.experts_for(handle.layer, ids)
    own = getattr(runtime, "combine", None)  # a runtime may sum its experts itself (CPU experts beside GPU ones)
    if own is not None:
        return own(hidden_states, top_k_index, top_k_weights, fns)
    return combine(hidden_states, top_k_index, top_k_weights, fns)


class ExpertList(nn.ModuleList):
    """List-layout experts (`experts.{j}.{gate,up,down}_proj`) that compute through the advisor seam."""

    def __init__(self, experts: Iterable[nn.Module], act_fn: Callable[[torch.Tensor], torch.Tensor]):
        super().__init__(experts)
        # Kept out of the module registry: an activation module (ACT2FN) would otherwise become an extra
        # list element, and len(self) must be the number of experts.
        self.__dict__["act_fn"] = act_fn

    def forward(  # type: ignore[override]
        self, hidden_states: torch.Tensor, top_k_index: torch.Tensor, top_k_weights: torch.Tensor
    ) -> torch.Tensor:
        return advisor_experts_forward(self, hidden_states, top_k_index, top_k_weights)


def register_with_transformers() -> None:
    """Register "advisor" in transformers' ExpertsInterface (idempotent)."""
    from transformers.integrations.moe import ALL_EXPERTS_FUNCTIONS, ExpertsInterface

    if "advisor" not in ALL_EXPERTS_FUNCTIONS:
        ExpertsInterface.register("advisor", advisor_experts_forward)
