"""Apply a precision plan to a model: every routed expert quantized, then computed through the expert seam.

The model's own expert parameters are left untouched (fused 3-D tensors and MLP lists alike): the quantized
copies live in a `QuantizedRuntime` that the seam asks for expert functions, so detaching it restores full
precision and one model can be evaluated under many plans. Routers, norms, embeddings, LM head and shared
experts are never touched (see `advisor.quant.plan`).
"""

from __future__ import annotations

from collections.abc import Callable, Iterable, Iterator, Mapping
from dataclasses import dataclass, field

import torch

from advisor.models.experts import ExpertFn, RoutingObserver, Session, swiglu
from advisor.models.view import model_and_moe
from advisor.quant.expert import QuantizedExpert, quantize_expert
from advisor.quant.plan import PrecisionPlan

Key = tuple[int, int]


@dataclass
class QuantizedRuntime:
    """An `ExpertRuntime` whose experts compute with their quantized weights (`store[(layer, expert)]`)."""

    plan: PrecisionPlan
    store: dict[Key, QuantizedExpert]
    acts: dict[int, Callable[[torch.Tensor], torch.Tensor]]
    session: Session | None = field(default=None, repr=False)

    def experts_for(self, layer: int, expert_ids: list[int]) -> Mapping[int, ExpertFn]:
        act = self.acts[layer]
        return {e: self.store[(layer, e)].fn(act) for e in expert_ids}

    @property
    def nbytes(self) -> int:
        """Counted bytes of every routed expert as stored."""
        return sum(q.nbytes for q in self.store.values())

    def formats(self) -> dict[Key, str]:
        return {k: q.format.name for k, q in self.store.items()}


class DequantizedCache:
    """Serves a quantized runtime's experts from weights dequantized once, instead of on every call.

    Same numbers on the float32 CPU path, where a format's `linear` is dequantize-then-matmul anyway; many
    times faster for evaluation (every expert is called at every denoising step). Used only there. An expert is
    dequantized when first called (an offload runtime's packed one from its host bytes, as its slot copy holds
    them), so the cache holds at most every routed expert in float32."""

    def __init__(self, runtime, dtype):
        self.runtime, self.dtype = runtime, dtype
        self._cache: dict = {}

    def experts_for(self, layer: int, expert_ids: list[int]):
        act = self.runtime.acts[layer]
        moe = getattr(self.runtime, "moe", None)  # an offload runtime's layers: ids outside them it leaves out too
        if moe is not None:
            expert_ids = [e for e in expert_ids if 0 <= e < moe[layer].num_experts]
        out = {}
        for e in expert_ids:
            w = self._cache.get((layer, e))
            if w is None:
                q = self.runtime.store[(layer, e)]
                if not isinstance(q, QuantizedExpert):  # an offload store's packed expert: its host bytes
                    q = q.view(q.host)
                w = self._cache[(layer, e)] = q.dequantize(self.dtype)
            out[e] = swiglu(act, w)
        return out


DEQUANTIZED_SHARE = 0.25
"""An offloaded model's experts are dequantized once for evaluation only where every routed expert in float32
fits this share of the host's available memory (and, with --host-memory, what the limit leaves beside the store);
otherwise each call dequantizes its expert again (the same numbers, slower)."""


def dequantized_bytes(moe: list, dtype: torch.dtype = torch.float32) -> int:
    """Bytes of every routed expert of `moe` dequantized to `dtype`."""
    return sum(m.num_experts * m.expert_nbytes_as(dtype) for m in moe)


def fast_runtime(loaded, runtime, *, outputs_only: bool = False):
    """`runtime`, or its dequantized cache where that gives identical numbers (float32 on CPU). `outputs_only`:
    the run uses the runtime's outputs alone (accuracy, fidelity), not its slots' traffic or its wall clock as an
    offload runtime (a routing trace's), so an offload runtime's packed store may be served dequantized as well,
    where that fits the host's memory (`DEQUANTIZED_SHARE`)."""
    plain = loaded.device.type == "cpu" and loaded.dtype == torch.float32
    if not plain or not hasattr(runtime, "acts"):
        return runtime
    store = getattr(runtime, "store", None)
    if isinstance(store, dict):  # a quantized runtime's dict of experts
        return DequantizedCache(runtime, torch.float32)
    if outputs_only and hasattr(runtime, "dequantized_for_outputs"):  # an offload runtime (a layer above this one)
        return runtime.dequantized_for_outputs()
    return runtime


def iter_quantized(moe: list, plan: PrecisionPlan) -> Iterator[tuple[Key, QuantizedExpert]]:
    """Every routed expert quantized per `plan`, one at a time: only one expert's full-precision weights are
    held at once (an offloaded model's view reads each from its checkpoint)."""
    plan.check_fits([m.num_experts for m in moe])
    with torch.no_grad():
        for layer in moe:
            for e in range(layer.num_experts):
                yield (layer.index, e), quantize_expert(layer.experts.get(e), plan.format_for(layer.index, e))


def build_store(moe: list, plan: PrecisionPlan) -> dict[Key, QuantizedExpert]:
    """Quantize every routed expert of the given MoE layers per `plan`, on the device its weights live on."""
    return dict(iter_quantized(moe, plan))


def quantize_experts(
    loaded_or_model,
    plan: PrecisionPlan | str,
    *,
    attach: bool = True,
    observers: Iterable[RoutingObserver] = (),
) -> QuantizedRuntime:
    """Quantize every routed expert of every MoE layer per `plan` and (by default) attach the runtime to the
    model.

    `loaded_or_model`: a `LoadedModel`, an `nn.Module`, or a list of `MoELayer`s (then nothing is attached).
    Undo with `advisor.models.view.detach_runtime(model)`.
    """
    plan = PrecisionPlan.parse(plan)
    model, moe = model_and_moe(loaded_or_model)
    runtime = QuantizedRuntime(
        plan=plan, store=build_store(moe, plan), acts={m.index: m.experts.act for m in moe}
    )
    if attach and model is not None:
        from advisor.models.view import attach_runtime

        runtime.session = attach_runtime(model, runtime, observers, layers=moe)
    return runtime
