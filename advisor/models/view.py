"""One view over the MoE layers of any supported model, whatever its family or expert layout.

Every later stage (quantization, offloading, routing traces, export) addresses experts as
(MoE layer index, expert id). This module decides that numbering once: MoE layers are numbered
0..n_moe-1 in module order, skipping dense layers (DeepSeek-V3's first layers, LLaDA2's layer 0).

DiffusionGemma is special: its encoder and decoder stacks *share* expert weights (tied parameters),
so one MoE layer index covers both the decoder's experts module and its encoder twin (`aliases`);
both route through the same runtime, because they hold the same experts. If the ties are undone
(``tie_word_embeddings=False``), the encoder's experts become MoE layers of their own.
"""

from __future__ import annotations

import re
from collections.abc import Iterable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from typing import Any

import torch
from torch import nn

from advisor.errors import UserError
from advisor.models import SUPPORTED_TEXT
from advisor.models import experts as seam

_ROUTER_NAMES = ("gate", "router")
_SHARED_NAMES = ("shared_experts", "shared_expert", "shared_mlp")
_TOP_K_ATTRS = ("top_k", "num_experts_per_tok", "top_k_experts", "moe_topk", "num_selected_experts")


@dataclass
class MoELayer:
    """One MoE layer: its routed experts (read/replace through `experts`), router and shared experts."""

    index: int
    decoder_layer: int
    name: str
    experts_module: nn.Module
    experts: seam.ExpertSet
    router: nn.Module | None
    num_experts: int
    top_k: int
    shared: nn.Module | None
    hidden_size: int
    intermediate_size: int
    dtype: torch.dtype
    aliases: tuple[nn.Module, ...] = field(default=(), repr=False)
    """Other experts modules holding the *same* (tied) weights, e.g. DiffusionGemma's encoder twin."""

    @property
    def layout(self) -> str:
        return self.experts.layout

    @property
    def expert_nbytes(self) -> int:
        """Bytes of one routed expert (gate + up + down) at its stored dtype; counted, not estimated."""
        return self.expert_nbytes_as(self.dtype)

    def expert_nbytes_as(self, dtype: torch.dtype) -> int:
        """Bytes of one routed expert (gate + up + down) held in `dtype` (e.g. dequantized to float32)."""
        return 3 * self.hidden_size * self.intermediate_size * torch.empty((), dtype=dtype).element_size()

    @property
    def shared_nbytes(self) -> int:
        if self.shared is None:
            return 0
        return sum(p.numel() * p.element_size() for p in self.shared.parameters())

    @property
    def modules(self) -> tuple[nn.Module, ...]:
        """Every experts module computing with this layer's experts (the primary one first)."""
        return (self.experts_module, *self.aliases)


def _model_type(model: nn.Module) -> str:
    config = getattr(model, "config", None)
    return str(getattr(config, "model_type", None) or type(model).__name__)


def _is_experts_module(module: nn.Module) -> bool:
    if isinstance(module, seam.ExpertList):
        return True
    gate_up = getattr(module, "gate_up_proj", None)
    down = getattr(module, "down_proj", None)
    return isinstance(gate_up, torch.Tensor) and isinstance(down, torch.Tensor) and gate_up.dim() == 3


def _layer_number(name: str) -> int:
    found = re.findall(r"(?:^|\.)(?:layers|h|blocks)\.(\d+)(?:\.|$)", name)
    return int(found[-1]) if found else -1


def _find_top_k(module: nn.Module, parent: nn.Module, router: nn.Module | None, config: object) -> int:
    for owner in (router, parent, module, getattr(module, "config", None), config):
        if owner is None:
            continue
        for attr in _TOP_K_ATTRS:
            value = getattr(owner, attr, None)
            if isinstance(value, int) and not isinstance(value, bool) and value > 0:
                return value
    raise UserError(f"cannot tell how many experts each token uses (top-k) for {type(module).__name__}")


def _child(parent: nn.Module, names: tuple[str, ...]) -> nn.Module | None:
    for name in names:
        child = getattr(parent, name, None)
        if isinstance(child, nn.Module):
            return child
    return None


def _shared_of(parent: nn.Module, grandparent: nn.Module | None, experts_name: str) -> nn.Module | None:
    """Always-active expert weights beside the routed ones: shared experts, or DiffusionGemma's dense MLP."""
    shared = _child(parent, _SHARED_NAMES)
    if shared is None and grandparent is not None:  # LLaDA-MoE keeps `shared_expert` on the decoder layer
        shared = _child(grandparent, _SHARED_NAMES)
    if shared is not None:
        return shared
    mlp = getattr(parent, "mlp", None)
    # A dense MLP that is a *sibling* of the experts (DiffusionGemma) runs for every token like a shared expert.
    if experts_name != "mlp" and isinstance(mlp, nn.Module) and hasattr(mlp, "gate_proj"):
        return mlp
    return None


def _count_experts(module: nn.Module, view: seam.ExpertSet) -> int:
    """Routed experts in the module. A list layout whose activation is an nn.Module also holds that module
    as a child of the ModuleList, so `len()` over-counts by one; count the SwiGLU children instead and
    correct the view, so `range(view.num_experts)` never reaches the activation."""
    if isinstance(module, seam.ExpertList):
        view.num_experts = sum(1 for child in module.children() if hasattr(child, "gate_proj"))
    return view.num_experts


def _same_storage(a: nn.Module, b: nn.Module) -> bool:
    if isinstance(a, seam.ExpertList) or isinstance(b, seam.ExpertList):
        return False
    if a.gate_up_proj.is_meta:  # offloaded: meta tensors have no storage; tied twins share the parameter
        return a.gate_up_proj is b.gate_up_proj and a.down_proj is b.down_proj
    return (
        a.gate_up_proj.data_ptr() == b.gate_up_proj.data_ptr()
        and a.down_proj.data_ptr() == b.down_proj.data_ptr()
        and a.gate_up_proj.shape == b.gate_up_proj.shape
    )


def _group_tied(found: list[tuple[str, nn.Module]]) -> list[list[tuple[str, nn.Module]]]:
    """Group experts modules holding the same tensors; the decoder's module leads (it runs every step)."""
    groups: list[list[tuple[str, nn.Module]]] = []
    for name, module in found:
        group = next((g for g in groups if _same_storage(g[0][1], module)), None)
        if group is None:
            groups.append([(name, module)])
        else:
            group.append((name, module))
    return [sorted(g, key=lambda item: "decoder" not in item[0]) for g in groups]


def moe_layers(model: nn.Module) -> list[MoELayer]:
    """Every MoE layer of `model`, numbered 0..n-1; `UserError` if the model has none this project understands."""
    modules = dict(model.named_modules())
    found = [(n, m) for n, m in modules.items() if _is_experts_module(m)]
    if not found:
        raise UserError(
            f"model type '{_model_type(model)}' has no MoE layers this tool understands; supported: {SUPPORTED_TEXT}"
        )
    config = getattr(model, "config", None)
    layers: list[MoELayer] = []
    for group in _group_tied(found):
        name, module = group[0]
        parent_name, _, attr = name.rpartition(".")
        parent = modules[parent_name]
        grandparent = modules.get(parent_name.rpartition(".")[0]) if parent_name else None
        try:
            view = seam.expert_set(module)
        except NotImplementedError as e:
            raise UserError(f"model type '{_model_type(model)}': {e}; supported: {SUPPORTED_TEXT}") from e
        router = _child(parent, _ROUTER_NAMES)
        # sizes and dtype only: a checkpoint view gives them without reading the expert from disk (this runs
        # at every load, attach and detach)
        shapes = getattr(view, "shapes", None)
        first = shapes(0) if shapes is not None else view.get(0)
        hidden, inter = _dims(view, first)
        layers.append(
            MoELayer(
                index=len(layers),
                decoder_layer=_layer_number(name),
                name=name,
                experts_module=module,
                experts=view,
                router=router,
                num_experts=_count_experts(module, view),
                top_k=_find_top_k(module, parent, router, config),
                shared=_shared_of(parent, grandparent, attr),
                hidden_size=hidden,
                intermediate_size=inter,
                dtype=first.gate.dtype,
                aliases=tuple(m for _, m in group[1:]),
            )
        )
    return layers


def _dims(view: seam.ExpertSet, first: seam.ExpertWeights) -> tuple[int, int]:
    """(hidden, expert FFN width). List layouts read the gate Linear's declared sizes: a bitsandbytes 4-bit
    replacement packs its weight into another shape."""
    module = getattr(view, "module", None) if view.layout == "list" else None
    gate = getattr(module[0], "gate_proj", None) if module is not None else None
    if gate is not None and hasattr(gate, "in_features"):
        return int(gate.in_features), int(gate.out_features)
    return int(first.gate.shape[1]), int(first.gate.shape[0])


def _native_configs(layers: list[MoELayer]) -> list[object]:
    """The distinct configs the fused experts modules read their implementation from."""
    configs: list[object] = []
    for layer in layers:
        for module in layer.modules:
            config = getattr(module, "config", None)
            if layer.layout == "fused" and config is not None and all(config is not c for c in configs):
                configs.append(config)
    return configs


def use_seam(model: nn.Module, layers: list[MoELayer]) -> None:
    """Fused experts compute through the advisor seam (transformers' ExpertsInterface "advisor"). Offloaded
    models use it from the start: their own expert parameters are meta, so no stock kernel can run them."""
    seam.register_with_transformers()
    configs = _native_configs(layers)
    if configs and hasattr(model, "set_experts_implementation"):
        model.set_experts_implementation("advisor")
    for config in configs:  # sub-configs that set_experts_implementation did not reach (shared text configs)
        if config._experts_implementation != "advisor":
            config._experts_implementation_internal = "advisor"


def attach_runtime(
    model: nn.Module,
    runtime: seam.ExpertRuntime | None = None,
    observers: Iterable[seam.RoutingObserver] = (),
    *,
    layers: list[MoELayer] | None = None,
) -> seam.Session:
    """Make every expert of `model` compute through the advisor seam with `runtime` (default: resident weights).

    Native models switch to transformers' "advisor" experts implementation (the official ExpertsInterface);
    list-layout models already call the seam. Tied twins (DiffusionGemma's encoder) share the same session.
    """
    layers = moe_layers(model) if layers is None else layers
    configs = _native_configs(layers)
    if configs and not hasattr(model, "_advisor_previous_experts"):
        whole = model.get_experts_implementation() if hasattr(model, "get_experts_implementation") else None
        model._advisor_previous_experts = (whole, [(c, c._experts_implementation) for c in configs])
    use_seam(model, layers)
    session = seam.attach({lay.index: lay.experts_module for lay in layers}, runtime, observers)
    for lay in layers:
        for alias in lay.aliases:
            alias._advisor = lay.experts_module._advisor
    return session


def detach_runtime(model: nn.Module) -> None:
    """Undo `attach_runtime`: experts compute with their own weights through the previous implementation."""
    layers = moe_layers(model)
    seam.detach([m for lay in layers for m in lay.modules])
    previous = getattr(model, "_advisor_previous_experts", None)
    if previous is not None:
        whole, per_config = previous
        if whole is not None:
            model.set_experts_implementation(whole)
        for config, implementation in per_config:
            config._experts_implementation_internal = implementation
        del model._advisor_previous_experts


@contextmanager
def through_seam(loaded) -> Iterator[None]:
    """The model's own weights computed through the advisor seam, as every plan's runtime computes (bitwise
    transformers' eager experts loop): a resident fused model otherwise runs transformers' default kernel
    (`grouped_mm`), whose bf16 rounding differs (a bf16 DiffusionGemma: top-1 agreement 0.9 for its own bf16
    plan), so the reference would not be the plan's full-precision twin. Kept as it is when a runtime is
    attached; an offloaded model computes through the seam already."""
    if getattr(loaded, "offloaded", False) or getattr(loaded.moe[0].experts_module, "_advisor", None) is not None:
        yield
        return
    attach_runtime(loaded.model, None, layers=loaded.moe)
    try:
        yield
    finally:
        detach_runtime(loaded.model)


def model_and_moe(x: Any) -> tuple[nn.Module | None, list[MoELayer]]:
    """(model, MoE layers) from a LoadedModel, a model, or an already found list of MoE layers (model None)."""
    if isinstance(x, list | tuple):
        return None, list(x)
    model = getattr(x, "model", x)
    moe = getattr(x, "moe", None)
    return model, list(moe) if moe else moe_layers(model)
