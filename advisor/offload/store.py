"""Host-side expert store: every routed expert quantized per the precision plan, packed into ONE flat buffer.

Packing each expert (all its payload/scale tensors) into one contiguous byte buffer means a cache miss is
exactly one host-to-device copy of exactly `QuantizedExpert.nbytes` bytes - what the counters say is what
the copy engine (and the CUDA profiler) sees. Tensors are laid out by decreasing element size, so every
tensor starts at an offset that is a multiple of its element size: no padding, and typed views of a
device slot buffer rebuild the expert without another copy. On CUDA hosts the buffers are pinned, so
copies are asynchronous and run at full link speed.

An expert's buffer is a view into an arena (`HostArenas`): torch's pinned allocator rounds every request up
to a power of two (a 12.6 MB LLaDA-MoE expert pinned alone takes 16 MiB), so experts are placed back to back,
ALIGN bytes apart, in arenas whose sizes already are powers of two; what the host holds beyond the counted
store is each arena's unused tail (`ExpertStore.host_bytes`). What a store holds (`ExpertStore.held_bytes`,
`held_for` before it is packed) is those arenas when pinned - pinned pages are all held - and its experts' bytes
when pageable (an arena's untouched tail pages take no RAM).
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
ALIGN = 256
"""Bytes between the starts of experts in an arena (a multiple of every element size)."""
ARENA_BYTES = 256 << 20
"""The largest arena holding several experts (a larger expert gets a power-of-two arena of its own)."""


def _pow2(n: int) -> int:
    return 1 << max(n - 1, 0).bit_length()


def _aligned(n: int) -> int:
    return -(-n // ALIGN) * ALIGN


class HostArenas:
    """Host memory for packed experts: power-of-two arenas (`ARENA_BYTES`, or the next power of two of what is
    left to place, or of one larger expert), handed out back to back at `ALIGN`-byte offsets.

    `left`: the bytes still to place (each size rounded up to `ALIGN`). With `allocate=False` nothing is
    allocated: `sizes` says what placing would take."""

    def __init__(self, left: int, *, pin: bool = False, allocate: bool = True):
        self.left, self.pin, self.allocate = left, pin, allocate
        self.sizes: list[int] = []
        self.held_bytes = 0  # what the host holds: a pinned arena whole, a pageable one's taken bytes
        self._arena: torch.Tensor | None = None
        self._arena_pinned = False
        self._used = 0

    def take(self, n: int) -> torch.Tensor | None:
        """A uint8 view of `n` bytes (None when not allocating). Raises RuntimeError when `pin` is set and
        pinned memory cannot be allocated (nothing changes then)."""
        if not self.sizes or self._used + n > self.sizes[-1]:
            size = max(min(ARENA_BYTES, _pow2(self.left)), _pow2(n))
            self._arena = torch.empty(size, dtype=torch.uint8, pin_memory=self.pin) if self.allocate else None
            self.sizes.append(size)
            self._arena_pinned, self._used = self.pin, 0
            self.held_bytes += size if self.pin else 0
        start = self._used
        self._used += _aligned(n)
        self.left -= _aligned(n)
        self.held_bytes += 0 if self._arena_pinned else n
        return None if self._arena is None else self._arena[start:start + n]

    @property
    def nbytes(self) -> int:
        return sum(self.sizes)

    @classmethod
    def layout(cls, sizes: Sequence[int], **kw: Any) -> HostArenas:
        """Arenas for experts of these sizes, in this order (`take` each in turn)."""
        return cls(sum(_aligned(n) for n in sizes), **kw)

    @classmethod
    def bytes_for(cls, sizes: Sequence[int]) -> int:
        """Host bytes the arenas for experts of these sizes take (nothing is allocated)."""
        arenas = cls.layout(sizes, allocate=False)
        for n in sizes:
            arenas.take(n)
        return arenas.nbytes


def pins_stores(device: Any) -> bool:
    """Whether host stores for a model on `device` are pinned: on CUDA (copies asynchronous, at the pinned rate)."""
    return getattr(device, "type", str(device)) == "cuda"


def held_for(sizes: Sequence[int], *, pin: bool) -> int:
    """Host bytes a store of experts of these sizes (in packing order) will hold: pinned, every page of its
    power-of-two arenas (`HostArenas.bytes_for`); pageable, the experts' bytes (`ExpertStore.held_bytes`)."""
    return HostArenas.bytes_for(sizes) if pin else sum(sizes)


def store_need(sizes: Sequence[int], plan: str, *, pin: bool, why: str = "") -> tuple[int, str]:
    """What a host-memory check (`check_host_memory`) counts for a store of experts of these sizes and how it names
    the store: the bytes it will hold (`held_for`), and `plan` with `why` and, when pinned, the counted bytes."""
    said = [why] if why else []
    if pin:  # pinned pages are all held: each arena's unused tail counts too
        said.append(f"counted {format_bytes(sum(sizes), 2)}, pinned in power-of-two arenas")
    return held_for(sizes, pin=pin), f"{plan} ({', '.join(said)})" if said else plan


def packed_sizes(plan: Any, num_experts: Sequence[int], hidden: Sequence[int],
                 intermediate: Sequence[int]) -> list[int]:
    """Counted bytes of every routed expert of `plan` (a `PrecisionPlan` or spec) on layers of these shapes, in the
    order `ExpertStore` packs them (layer by layer, expert by expert)."""
    from advisor.offload.simulate import plan_expert_bytes

    return [n for row in plan_expert_bytes(plan, num_experts, hidden, intermediate) for n in row]


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

    def __init__(self, qe: Any, take: Callable[[int], torch.Tensor] | None = None):
        """`take(n)`: the buffer of n bytes to pack into (default: one of its own); its errors propagate."""
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
        host = take(offset) if take else torch.empty(offset, dtype=torch.uint8)
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


HOST_LIMIT_OPTION = "--host-memory"
"""The option that sets a host store's limit (`advisor tune`), as `check_host_memory` names it."""


def check_host_memory(need: int, what: str, host_limit: int | None = None,
                      advice: Callable[[int], str] | None = None, limit_source: str = HOST_LIMIT_OPTION) -> None:
    """`UserError` (before anything is read) if a host store of `need` bytes exceeds `host_limit` (default:
    the host's available RAM); `advice(limit)` says what to do (a caller that knows which formats fit names
    them), asked only then. `limit_source`: where `host_limit` came from, `HOST_LIMIT_OPTION` (then raising it
    is the other remedy, not freeing memory) or how the RAM was measured."""
    from advisor.models.load import host_available_bytes

    limit = host_available_bytes() if host_limit is None else host_limit
    if need > limit:
        given = host_limit is not None and limit_source == HOST_LIMIT_OPTION
        todo = advice(limit) if advice else \
            f"choose a smaller format (int4, int3) or {'raise ' + HOST_LIMIT_OPTION if given else 'free memory'}"
        raise UserError(f"the expert store for plan {what} needs {format_bytes(need, 2)} of host memory but "
                        f"{format_bytes(limit, 2)} is {'available' if host_limit is None else f'allowed ({limit_source})'}"
                        f"; {todo}")


def resolve_plan(plan: Any) -> Any:
    """A `PrecisionPlan` from a plan, a spec string ("int8", "layers=0-1:int8,2-3:int4", a JSON path)."""
    from advisor.quant.plan import PrecisionPlan

    return PrecisionPlan.parse(plan)


class ExpertStore:
    """Every routed expert of the given MoE layers, quantized per `plan`, packed in host memory.

    Experts are quantized and packed one at a time (for an offloaded model, read one at a time from the
    checkpoint), so building the store holds the store plus one expert. The counted size of the store is
    checked against `host_limit` (default: the host's available RAM; `host_limit_source`: where it came from, as
    `check_host_memory` says it) before anything is read. When pinned
    memory cannot be allocated the store falls back to pageable memory and says so (`pin_note`)."""

    def __init__(self, moe: Sequence[Any], plan: Any, *, pin: bool = False, host_limit: int | None = None,
                 host_limit_source: str = HOST_LIMIT_OPTION):
        from advisor.quant.apply import iter_quantized

        self.plan = resolve_plan(plan)
        for i, layer in enumerate(moe):
            if layer.index != i:
                raise UserError(f"MoE layers must be numbered 0..n-1 in order; got index {layer.index} at {i}")
        sizes = packed_sizes(self.plan, [m.num_experts for m in moe], [m.hidden_size for m in moe],
                             [m.intermediate_size for m in moe])
        check_host_memory(*store_need(sizes, self.plan.spec, pin=pin), host_limit, limit_source=host_limit_source)
        self.host_limit = host_limit  # (--host-memory: what an evaluation's dequantized copy may add is within it)
        self.pinned = bool(pin)
        self.pin_note = ""
        self._arenas = HostArenas.layout(sizes, pin=self.pinned)
        self.layers: list[list[PackedExpert]] = [[] for _ in moe]
        for (layer, _), qe in iter_quantized(list(moe), self.plan):
            self.layers[layer].append(self._pack(qe))

    def _pack(self, qe: Any) -> PackedExpert:
        try:
            return PackedExpert(qe, self._arenas.take)
        except RuntimeError as e:
            if not self._arenas.pin:
                raise
            self.pinned = self._arenas.pin = False
            self.pin_note = (f"pinned host memory could not be allocated ({str(e).splitlines()[0][:120]}); the "
                             "expert store uses pageable memory: copies run at roughly half the pinned rate and "
                             "do not overlap compute")
            logging.getLogger("advisor").warning("warning: %s", self.pin_note)
            return PackedExpert(qe, self._arenas.take)

    def __getitem__(self, key: tuple[int, int]) -> PackedExpert:
        return self.layers[key[0]][key[1]]

    def expert_bytes(self, layer: int) -> list[int]:
        return [p.nbytes for p in self.layers[layer]]

    def max_bytes(self, layer: int) -> int:
        return max(self.expert_bytes(layer), default=0)

    @property
    def nbytes(self) -> int:
        """Counted bytes of every packed expert."""
        return sum(p.nbytes for row in self.layers for p in row)

    @property
    def host_bytes(self) -> int:
        """Host bytes the store's arenas take: `nbytes` plus each arena's unused tail and alignment gaps."""
        return self._arenas.nbytes

    @property
    def held_bytes(self) -> int:
        """Host memory the store holds: a pinned arena's every byte (`host_bytes` when all are pinned), a pageable
        arena's experts' bytes (`nbytes` when none is: untouched tail pages take no RAM) - what `held_for` counts
        before packing, and what stores kept side by side are budgeted by (`ModelBackend.store_for`)."""
        return self._arenas.held_bytes
