"""Weight precision formats: quantize an [out, in] weight, store it, dequantize it, multiply with it.

Which library does what (checked on torch 2.13 / bitsandbytes 0.50):

* nf4 - bitsandbytes `quantize_4bit` / `dequantize_4bit` (work on CPU and CUDA); on CUDA `bnb.matmul_4bit` is
  the fused dequantize+matmul.
* int8 - stored exactly in the layout `torch._weight_int8pack_mm` takes (int8 [out, in] + one scale per row),
  so bf16 activations on CPU multiply without dequantizing (it is slower than dequantize+matmul for fp32/fp16
  inputs on CPU, so those dequantize). bitsandbytes' int8 matmul is LLM.int8 (it quantizes the activations
  too, with outlier columns in fp16): a different numeric than weight-only int8, so it is not used.
* int4/int3/int2 - written here. torch's int4 kernels (`_weight_int4pack_mm[_for_cpu]`) need an opaque,
  ISA-specific tiled layout with bf16 scale/zero pairs and group sizes 32-256 only; tying the stored (and
  transferred, and counted) bytes to a kernel-private layout would make `nbytes` depend on the machine, and
  there is no 3- or 2-bit kernel at all. So one plain bit-packed layout serves every group-wise width; matmul
  dequantizes first (fast on CUDA, adequate on CPU for tiny models).
* fp8 - torch's float8_e4m3fn dtype with a per-row fp32 scale; matmul dequantizes (weight-only; `_scaled_mm`
  would also quantize the activations, which changes what is measured).

Byte counts come from `advisor.quant.spec` (torch-free); `QTensor.nbytes` sums the tensors actually stored,
and the tests check both agree for every format and for odd shapes.
"""

from __future__ import annotations

import functools
import importlib.util
import logging
from dataclasses import dataclass, field
from typing import ClassVar

import torch
from torch import nn

from advisor.errors import UserError
from advisor.quant.spec import DENSE_BYTES, GROUPED_BITS, KINDS, FormatSpec, parse_format
from advisor.registry import Registry

_DENSE_DTYPES = {"fp32": torch.float32, "fp16": torch.float16, "bf16": torch.bfloat16}
_FP8_MAX = 448.0  # largest finite float8_e4m3fn


@dataclass
class QTensor:
    """A quantized [out, in] weight: the stored tensors plus the format that reads them."""

    format: Format
    shape: tuple[int, int]
    tensors: dict[str, torch.Tensor] = field(repr=False)

    @property
    def nbytes(self) -> int:
        """Bytes of every stored tensor (payload, scales, zeros, padding): what a H2D copy moves."""
        return sum(t.numel() * t.element_size() for t in self.tensors.values())

    @property
    def device(self) -> torch.device:
        return next(iter(self.tensors.values())).device

    def dequantize(self, dtype: torch.dtype = torch.float32) -> torch.Tensor:
        return self.format.dequantize(self, dtype)

    def linear(self, x: torch.Tensor) -> torch.Tensor:
        """x @ W.T in x's dtype (fused kernel where the format has one, else dequantize + matmul)."""
        return self.format.linear(self, x)

    def to(self, device: str | torch.device, non_blocking: bool = False) -> QTensor:
        moved = {k: t.to(device, non_blocking=non_blocking) for k, t in self.tensors.items()}
        return QTensor(self.format, self.shape, moved)

    def pin_memory(self) -> QTensor:
        """Page-locked host copy, so that copies to the GPU can run asynchronously."""
        return QTensor(self.format, self.shape, {k: t.pin_memory() for k, t in self.tensors.items()})


def _row_scaled(qt: QTensor, dtype: torch.dtype) -> torch.Tensor:
    """q * scale[row] in `dtype` (int8, fp8). The product is taken in place on the fresh fp32 copy of q, bitwise
    the same as with a second fp32 temporary, which made dequantizing 1.5-17x slower on 2 CPU cores (new pages)."""
    return qt.tensors["qweight"].float().mul_(qt.tensors["scale"][:, None]).to(dtype)


class Format:
    """One precision format: `quantize`/`dequantize` per subclass; `linear` may use a fused kernel."""

    def __init__(self, spec: FormatSpec):
        self.spec = spec

    @property
    def name(self) -> str:
        return self.spec.name

    @property
    def bits(self) -> int:
        return self.spec.bits

    def __repr__(self) -> str:
        return f"Format({self.name!r})"

    def __str__(self) -> str:
        return self.name

    def nbytes(self, shape: tuple[int, ...] | list[int] | torch.Size) -> int:
        """Exact bytes of a quantized weight of this shape (payload + scales/zeros + stored padding)."""
        return self.spec.nbytes(tuple(shape))

    def quantize(self, w: torch.Tensor) -> QTensor:
        raise NotImplementedError

    def dequantize(self, qt: QTensor, dtype: torch.dtype) -> torch.Tensor:
        raise NotImplementedError

    def linear(self, qt: QTensor, x: torch.Tensor) -> torch.Tensor:
        return nn.functional.linear(x, self.dequantize(qt, x.dtype))

    def _check(self, w: torch.Tensor) -> tuple[int, int]:
        if w.dim() != 2:
            raise ValueError(f"{self.name}: expected a 2-D weight [out, in], got shape {tuple(w.shape)}")
        return int(w.shape[0]), int(w.shape[1])


class DenseFormat(Format):
    """fp32 / fp16 / bf16: the weight itself, cast (no copy if dtype and layout already match)."""

    def quantize(self, w: torch.Tensor) -> QTensor:
        shape = self._check(w)
        return QTensor(self, shape, {"weight": w.detach().to(_DENSE_DTYPES[self.spec.kind]).contiguous()})

    def dequantize(self, qt: QTensor, dtype: torch.dtype) -> torch.Tensor:
        return qt.tensors["weight"].to(dtype)


INT8_KERNEL_IN_MULTIPLE = 16
"""`torch._weight_int8pack_mm` on the CPU only for input widths divisible by this: torch 2.13's kernel crashes the
process (SIGSEGV, no exception to catch) on other widths once more than one token comes in."""


class Int8Format(Format):
    """Weight-only int8, symmetric per output row: w ~ q * scale[row], q in [-127, 127], fp32 scales.

    Round-trip bound: |w - w'| <= scale/2 = absmax(row)/254 per element.
    """

    _kernel_ok = True  # cleared if torch._weight_int8pack_mm refuses at run time

    def quantize(self, w: torch.Tensor) -> QTensor:
        shape = self._check(w)
        w32 = w.detach().float()
        scale = w32.abs().amax(dim=1) / 127.0
        safe = torch.where(scale > 0, scale, torch.ones_like(scale))
        q = torch.round(w32 / safe[:, None]).clamp_(-127, 127).to(torch.int8)
        return QTensor(self, shape, {"qweight": q.contiguous(), "scale": scale.contiguous()})

    def dequantize(self, qt: QTensor, dtype: torch.dtype) -> torch.Tensor:
        return _row_scaled(qt, dtype)

    def linear(self, qt: QTensor, x: torch.Tensor) -> torch.Tensor:
        if (Int8Format._kernel_ok and x.device.type == "cpu" and x.dtype == torch.bfloat16 and x.shape[-1] > 0
                and x.shape[-1] % INT8_KERNEL_IN_MULTIPLE == 0):
            try:
                flat = x.reshape(-1, x.shape[-1]).contiguous()
                scale = qt.tensors["scale"].to(torch.bfloat16)
                y = torch._weight_int8pack_mm(flat, qt.tensors["qweight"], scale)
                return y.reshape(*x.shape[:-1], qt.shape[0])
            except (RuntimeError, NotImplementedError):
                Int8Format._kernel_ok = False
        return super().linear(qt, x)


class Fp8Format(Format):
    """float8 e4m3 payload with an fp32 scale per output row (absmax maps to 448).

    Round-trip bound: relative error per element <= 2^-4 (3 mantissa bits) for values above the subnormal
    range.
    """

    def quantize(self, w: torch.Tensor) -> QTensor:
        shape = self._check(w)
        w32 = w.detach().float()
        scale = w32.abs().amax(dim=1) / _FP8_MAX
        safe = torch.where(scale > 0, scale, torch.ones_like(scale))
        q = (w32 / safe[:, None]).clamp_(-_FP8_MAX, _FP8_MAX).to(torch.float8_e4m3fn)
        return QTensor(self, shape, {"qweight": q.contiguous(), "scale": scale.contiguous()})

    def dequantize(self, qt: QTensor, dtype: torch.dtype) -> torch.Tensor:
        return _row_scaled(qt, dtype)


def pack_bits(q: torch.Tensor, bits: int) -> torch.Tensor:
    """Pack unsigned `bits`-bit values [rows, n] (n a multiple of 8) densely into uint8 [rows, n*bits/8].

    Value i of each run of 8 occupies bits [i*bits, (i+1)*bits) of a little-endian `bits`-byte word, so 4-bit
    values land low nibble first and 3-bit values share bytes (8 values in 3 bytes).
    """
    rows, n = q.shape
    if bits in (2, 4):  # byte-aligned widths: shift and OR within uint8
        per = 8 // bits
        q8 = q.to(torch.uint8).reshape(rows, n // per, per)
        out = torch.zeros(rows, n // per, dtype=torch.uint8, device=q.device)
        for i in range(per):
            out |= q8[..., i] << (bits * i)
        return out
    words = q.to(torch.int64).reshape(rows, n // 8, 8)
    shifts = torch.arange(8, device=q.device, dtype=torch.int64) * bits
    word = (words << shifts).sum(-1)
    byte_shifts = torch.arange(bits, device=q.device, dtype=torch.int64) * 8
    return ((word[..., None] >> byte_shifts) & 0xFF).to(torch.uint8).reshape(rows, n * bits // 8)


def unpack_bits(packed: torch.Tensor, bits: int, n: int) -> torch.Tensor:
    """Inverse of `pack_bits`: uint8 [rows, n*bits/8] -> uint8 values [rows, n]."""
    rows = packed.shape[0]
    mask = (1 << bits) - 1
    if bits in (2, 4):
        per = 8 // bits
        parts = [(packed >> (bits * i)) & mask for i in range(per)]
        return torch.stack(parts, dim=-1).reshape(rows, n)
    raw = packed.to(torch.int64).reshape(rows, n // 8, bits)
    byte_shifts = torch.arange(bits, device=packed.device, dtype=torch.int64) * 8
    word = (raw << byte_shifts).sum(-1)
    shifts = torch.arange(8, device=packed.device, dtype=torch.int64) * bits
    return ((word[..., None] >> shifts) & mask).to(torch.uint8).reshape(rows, n)


class GroupedIntFormat(Format):
    """Group-wise int4/int3/int2 along the input dimension, bit-packed; fp16 scale (+ fp16 minimum) per group.

    Asymmetric (default): w ~ q * scale + min, q in [0, 2^b - 1]. Symmetric (":sym"): w ~ (q - 2^(b-1)) *
    scale with |q - 2^(b-1)| <= 2^(b-1) - 1. A row not a multiple of the group ends in a shorter group; rows
    are stored padded to a multiple of 8 values (whole bytes for every width), padding counted and cut off on
    dequantize. Round-trip bound per element: scale/2 plus the fp16 rounding of scale and minimum (~2^-10 of
    the group's magnitude). Hand-written: see the module docstring for why torch's int4 kernels do not fit.
    """

    def quantize(self, w: torch.Tensor) -> QTensor:
        rows, cols = self._check(w)
        bits, group = self.spec.bits, int(self.spec.group)
        n_groups = self.spec.n_groups(cols)
        full = n_groups * group
        w32 = w.detach().float()
        if full > cols:  # repeat the last value: the short last group keeps its own min/max
            w32 = torch.cat([w32, w32[:, -1:].expand(rows, full - cols)], dim=1)
        g = w32.reshape(rows, n_groups, group)
        if self.spec.symmetric:
            qmax = (1 << (bits - 1)) - 1
            scale16 = (g.abs().amax(-1) / qmax).to(torch.float16)
            s = scale16.float()
            s = torch.where(s > 0, s, torch.ones_like(s))
            q = torch.round(g / s[..., None]).clamp_(-qmax, qmax) + (1 << (bits - 1))
            stored = {"scale": scale16}
        else:
            lo, hi = g.amin(-1), g.amax(-1)
            scale16 = ((hi - lo) / ((1 << bits) - 1)).to(torch.float16)
            min16 = lo.to(torch.float16)
            s = scale16.float()
            s = torch.where(s > 0, s, torch.ones_like(s))
            q = torch.round((g - min16.float()[..., None]) / s[..., None]).clamp_(0, (1 << bits) - 1)
            stored = {"scale": scale16, "min": min16}
        q = q.reshape(rows, full)
        padded = self.spec.padded_in(cols)
        q = q[:, :padded] if full >= padded else torch.cat([q, q.new_zeros(rows, padded - full)], dim=1)
        packed = pack_bits(q.to(torch.uint8), bits)
        return QTensor(
            self, (rows, cols), {"qweight": packed, **{k: v.contiguous() for k, v in stored.items()}}
        )

    def dequantize(self, qt: QTensor, dtype: torch.dtype) -> torch.Tensor:
        rows, cols = qt.shape
        bits, group = self.spec.bits, int(self.spec.group)
        n_groups = self.spec.n_groups(cols)
        full = n_groups * group
        q = unpack_bits(qt.tensors["qweight"], bits, self.spec.padded_in(cols))[:, :cols].float()
        if full > cols:
            q = torch.cat([q, q.new_zeros(rows, full - cols)], dim=1)
        q = q.reshape(rows, n_groups, group)  # a fresh fp32 tensor: the arithmetic below runs in place
        scale = qt.tensors["scale"].float()[..., None]
        if self.spec.symmetric:
            w = q.sub_(1 << (bits - 1)).mul_(scale)
        else:
            w = q.mul_(scale).add_(qt.tensors["min"].float()[..., None])
        return w.reshape(rows, full)[:, :cols].to(dtype)


@functools.cache
def _bnb():
    if importlib.util.find_spec("bitsandbytes") is None:
        raise UserError("format nf4 needs bitsandbytes; install it with `pip install bitsandbytes`")
    # its CPU backend looks at import for an optional gemm kernel from the hub: without `kernels` (a dependency
    # of transformers >= 5.25) it warns that the package is missing, with it and offline `kernels` warns that the
    # kernel's publisher cannot be checked. nf4 here only quantizes and dequantizes, which that kernel does not do
    logging.getLogger("bitsandbytes.backends.cpu.ops").setLevel(logging.ERROR)
    logging.getLogger("kernels").setLevel(logging.ERROR)
    import bitsandbytes
    import bitsandbytes.functional

    return bitsandbytes


class NF4Format(Format):
    """bitsandbytes NF4 (4-bit NormalFloat), absmax blocks over the flattened tensor, fp32 absmax, no double
    quant.

    Stored: the packed codes (uint8 [ceil(n/2), 1], bitsandbytes' layout) and the absmax per block; the quant
    state is rebuilt from the shape and the format (its code table is a format constant). Round-trip: ~9%
    relative Frobenius error on Gaussian weights (measured in the tests); the per-element bound is half the
    widest NF4 gap (~0.16 * absmax of the block).
    """

    def quantize(self, w: torch.Tensor) -> QTensor:
        shape = self._check(w)
        F = _bnb().functional
        q, state = F.quantize_4bit(
            w.detach().float().contiguous(), blocksize=self.spec.group, quant_type="nf4"
        )
        return QTensor(self, shape, {"qweight": q, "absmax": state.absmax.float().contiguous()})

    def _state(self, qt: QTensor, dtype: torch.dtype, shape: tuple[int, ...]):
        F = _bnb().functional
        return F.QuantState(
            absmax=qt.tensors["absmax"],
            shape=torch.Size(shape),
            code=_nf4_code(str(qt.device)),
            blocksize=self.spec.group,
            quant_type="nf4",
            dtype=dtype,
        )

    def dequantize(self, qt: QTensor, dtype: torch.dtype) -> torch.Tensor:
        # Dequantized as one flat vector: bitsandbytes 0.50's CPU dequantize_4bit returns wrong values for
        # 2-D shapes whose last dim is below the block size (e.g. [16, 32] with blocks of 64: ~40% error
        # instead of ~9%). Blocks run over the flattened tensor anyway, so flat-then-reshape is exact. An odd
        # count is dequantized as the next even one and cut: the packed codes already hold that padding value, the
        # blocks are the same, and an odd count sends bitsandbytes' CPU kernel to its torch.compile'd fallback
        # (seconds of compiling, the same values).
        F = _bnb().functional
        n = qt.shape[0] * qt.shape[1]
        flat = F.dequantize_4bit(qt.tensors["qweight"], self._state(qt, dtype, (n + n % 2,)))
        return flat.reshape(-1)[:n].reshape(qt.shape)

    def linear(self, qt: QTensor, x: torch.Tensor) -> torch.Tensor:
        if x.device.type == "cuda":
            return _bnb().matmul_4bit(x, qt.tensors["qweight"].t(), self._state(qt, x.dtype, qt.shape))
        return super().linear(qt, x)


@functools.cache
def _nf4_code(device: str) -> torch.Tensor:
    return _bnb().functional.get_4bit_type("nf4", device=device)


class FormatInterface(Registry):
    """Format kinds by name -> their implementation (`FormatInterface.register(kind, cls)` adds one)."""

    _global_mapping: ClassVar[dict[str, type[Format]]] = {
        **{k: DenseFormat for k in DENSE_BYTES},
        "int8": Int8Format,
        "fp8": Fp8Format,
        "nf4": NF4Format,
        **{k: GroupedIntFormat for k in GROUPED_BITS},
    }
    unknown = "unknown format kind '{name}'; known: {names}"


FORMATS = FormatInterface()


def available_formats() -> list[str]:
    """Format kinds usable here (fp8 needs torch's float8 dtype, nf4 needs bitsandbytes installed)."""
    out = []
    for kind in KINDS:
        if kind == "fp8" and not hasattr(torch, "float8_e4m3fn"):
            continue
        if kind == "nf4" and importlib.util.find_spec("bitsandbytes") is None:
            continue
        out.append(kind)
    return out


@functools.cache
def _format(canonical: str) -> Format:
    spec = parse_format(canonical)
    if spec.kind not in available_formats():
        raise UserError(
            f"format '{spec.kind}' is not usable here; available: {', '.join(available_formats())}"
        )
    return FORMATS.get_or_raise(spec.kind)(spec)


def get_format(name: str | Format) -> Format:
    """The format for a name such as "int8", "int4:g64", "int3:sym", "nf4:g128"; `UserError` if unknown."""
    if isinstance(name, Format):
        return name
    return _format(parse_format(name).name)
