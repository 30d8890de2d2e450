"""Host-side expert store: every routed expert quantized per the precision plan, packed into ONE flat buffer.

Packing each expert (all its payload/scale tensors) into one contiguous byte buffer means a cache miss is
exactly one host-to-device copy of exactly `QuantizedExpert.nbytes` bytes - what the counters say is what
the copy engine (and the CUDA profiler) sees. Tensors are laid out by decreasing element size, so every
tensor starts at an offset that is a multiple of its element size: no padding, and typed views of a
device slot buffer rebuild the expert without another copy. On CUDA hosts the buffers are pinned, so
copies are asynchronous and run at full link speed.
"""

from __future__ import annotations

import logging
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Any

import torch

from advisor.errors import UserError
from advisor.units import format_bytes

_PARTS = ("gate", "up", "down")


@dataclass(frozen=True)
class _Piece:
    part: str  # gate | up | down
    key: str  # QTensor.tensors key
    dtype: torch.dtype
    shape: tuple[int, ...]
    offset: int
    nbytes: int


class PackedExpert:
    """One quantized expert as a flat uint8 host buffer plus the layout that turns bytes back into QTensors."""

    __slots__ = ("host", "pieces", "formats", "shapes", "nbytes")

    def __init__(self, qe: Any, pin: bool = False):
        """Raises RuntimeError when `pin` is set and pinned memory cannot be allocated."""
        tensors = []
        for part in _PARTS:
            qt = getattr(qe, part)
            for key, t in qt.tensors.items():
                tensors.append((part, key, t.detach().contiguous()))
        tensors.sort(key=lambda item: -item[2].element_size())  # stable: keeps gate/up/down order per size
        pieces, offset = [], 0
        for part, key, t in tensors:
            n = t.numel() * t.element_size()
            pieces.append(_Piece(part, key, t.dtype, tuple(t.shape), offset, n))
            offset += n
        host = torch.empty(offset, dtype=torch.uint8, pin_memory=pin)
        for piece, (_, _, t) in zip(pieces, tensors, strict=True):
            host[piece.offset:piece.offset + piece.nbytes].copy_(t.cpu().reshape(-1).view(torch.uint8))
        self.host = host
        self.pieces = tuple(pieces)
        self.formats = {p: getattr(qe, p).format for p in _PARTS}
        self.shapes = {p: getattr(qe, p).shape for p in _PARTS}
        self.nbytes = offset

    def view(self, buf: torch.Tensor) -> Any:
        """The expert computing directly from `buf` (a uint8 buffer holding this expert's bytes)."""
        from advisor.quant.expert import QuantizedExpert
        from advisor.quant.formats import QTensor

        parts: dict[str, dict[str, torch.Tensor]] = {p: {} for p in _PARTS}
        for pc in self.pieces:
            parts[pc.part][pc.key] = buf[pc.offset:pc.offset + pc.nbytes].view(pc.dtype).view(pc.shape)
        return QuantizedExpert(*(QTensor(self.formats[p], self.shapes[p], parts[p]) for p in _PARTS))


def check_host_memory(need: int, what: str, host_limit: int | None = None,
                      advice: Callable[[int], str] | None = None) -> None:
    """`UserError` (before anything is read) if a host store of `need` bytes exceeds `host_limit` (default:
    the host's available RAM); `advice(limit)` says what to do (a caller that knows which formats fit names
    them), asked only then."""
    from advisor.models.load import host_available_bytes

    limit = host_available_bytes() if host_limit is None else host_limit
    if need > limit:
        todo = advice(limit) if advice else "choose a smaller format (int4, int3) or free memory"
        raise UserError(f"the expert store for plan {what} needs {format_bytes(need, 2)} of host memory but "
                        f"{format_bytes(limit, 2)} is {'available' if host_limit is None else 'allowed (--host-memory)'}"
                        f"; {todo}")


def resolve_plan(plan: Any) -> Any:
    """A `PrecisionPlan` from a plan, a spec string ("int8", "layers=0-1:int8,2-3:int4", a JSON path)."""
    from advisor.quant.plan import PrecisionPlan

    return PrecisionPlan.parse(plan)


class ExpertStore:
    """Every routed expert of the given MoE layers, quantized per `plan`, packed in host memory.

    Experts are quantized and packed one at a time (for an offloaded model, read one at a time from the
    checkpoint), so building the store holds the store plus one expert. The counted size of the store is
    checked against `host_limit` (default: the host's available RAM) before anything is read. When pinned
    memory cannot be allocated the store falls back to pageable memory and says so (`pin_note`)."""

    def __init__(self, moe: Sequence[Any], plan: Any, *, pin: bool = False, host_limit: int | None = None):
        from advisor.quant.apply import iter_quantized, plan_store_bytes

        self.plan = resolve_plan(plan)
        for i, layer in enumerate(moe):
            if layer.index != i:
                raise UserError(f"MoE layers must be numbered 0..n-1 in order; got index {layer.index} at {i}")
        need = plan_store_bytes(list(moe), self.plan)
        check_host_memory(need, self.plan.spec, host_limit)
        self.host_limit = host_limit  # (--host-memory: what an evaluation's dequantized copy may add is within it)
        self.pinned = bool(pin)
        self.pin_note = ""
        self.layers: list[list[PackedExpert]] = [[] for _ in moe]
        for (layer, _), qe in iter_quantized(list(moe), self.plan):
            self.layers[layer].append(self._pack(qe))

    def _pack(self, qe: Any) -> PackedExpert:
        if not self.pinned:
            return PackedExpert(qe)
        try:
            return PackedExpert(qe, pin=True)
        except RuntimeError as e:
            self.pinned = False
            self.pin_note = (f"pinned host memory could not be allocated ({str(e).splitlines()[0][:120]}); the "
                             "expert store uses pageable memory: copies run at roughly half the pinned rate and "
                             "do not overlap compute")
            logging.getLogger("advisor").warning("warning: %s", self.pin_note)
            return PackedExpert(qe)

    def __getitem__(self, key: tuple[int, int]) -> PackedExpert:
        return self.layers[key[0]][key[1]]

    def expert_bytes(self, layer: int) -> list[int]:
        return [p.nbytes for p in self.layers[layer]]

    def max_bytes(self, layer: int) -> int:
        return max(self.expert_bytes(layer), default=0)

    @property
    def nbytes(self) -> int:
        return sum(p.nbytes for row in self.layers for p in row)
