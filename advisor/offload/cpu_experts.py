"""Experts computed on the host, from the host store, in their stored format: the CPU side of the miss policy.

Kernels are torch's own CPU kernels, multi-threaded by torch's intra-op pool (`torch.set_num_threads`):

* bf16/fp16/fp32 - `F.linear` on the stored weight, bf16 activations for the half formats;
* int8 - `torch._weight_int8pack_mm` (bf16 activations, int8 weight + one scale per row: the stored layout)
  where the input width is a multiple of 16 (torch 2.13's CPU kernel crashes the process on other widths once
  more than one token comes in);
* int4 (asymmetric, group 32-256 dividing the row) - `torch._weight_int4pack_mm_for_cpu` on a copy converted
  once per expert by `torch._convert_weight_to_int4pack_for_cpu` (the kernel computes (q - 8) * scale + zero,
  so zero = min + 8 * scale); the converted copy is host memory only, the stored/copied bytes do not change;
* every other format (int3, int2, fp8, nf4, int4:sym or odd groups) - dequantize, then `F.linear`.

The two packed kernels are matrix-vector kernels: their time grows with the tokens about three times as fast as a
bf16 matrix multiply's, so from `DENSE_FROM_TOKENS` tokens on, an int8/int4 expert is dequantized to bf16 for the
call and multiplied densely (the bf16 copy lives for the call only). `kernel_name` says which kernels an expert's
projections use (a projection whose width a packed kernel does not take dequantizes), so measurements can be
labelled.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from typing import Any

import torch
from torch import nn

from advisor.models.experts import ExpertFn
from advisor.offload.timing import INT4_KERNEL_GROUPS
from advisor.quant.formats import INT8_KERNEL_IN_MULTIPLE

Linear = Callable[[torch.Tensor], torch.Tensor]

DENSE_FROM_TOKENS = {"int8pack_mm": 32, "int4pack_mm": 64}
"""Tokens from which a packed kernel's expert is dequantized to bf16 and multiplied densely instead. On 2 shared
AMD EPYC cores (no AMX) the two took the same time at 16-32 tokens for int8 and 64-128 for int4, on experts of
2048x1024, 2048x512 and 1024x512 (`benchmarks/results/2026-12-04_cpu-2-cores-shared_cpu_expert_kernels.txt`);
on the H200's host (AMX) the bf16 multiply alone was 3-4x faster than either packed kernel at 64 tokens (its
dequantizing not measured), hence 64 for int4. A constant, not per host; `advisor profile` measures what runs,
so the time model prices the switch."""


def _int4_linear(qt: Any) -> Linear | None:
    from advisor.quant.formats import unpack_bits

    spec = qt.format.spec
    rows, cols = qt.shape
    g = int(spec.group or 0)
    if spec.kind != "int4" or spec.symmetric or g not in INT4_KERNEL_GROUPS or cols % g or rows % 16 or cols % 64:
        return None
    try:
        q = unpack_bits(qt.tensors["qweight"], 4, spec.padded_in(cols))[:, :cols].to(torch.int32).contiguous()
        packed = torch._convert_weight_to_int4pack_for_cpu(q, 2)
        scale = qt.tensors["scale"].float()  # [rows, groups]
        zero = qt.tensors["min"].float() + 8.0 * scale
        sz = torch.stack([scale.t(), zero.t()], dim=-1).to(torch.bfloat16).contiguous()  # [groups, rows, 2]
        x0 = torch.zeros(1, cols, dtype=torch.bfloat16)
        torch._weight_int4pack_mm_for_cpu(x0, packed, g, sz)
    except (RuntimeError, NotImplementedError, AttributeError):
        return None

    def linear(x: torch.Tensor) -> torch.Tensor:
        return torch._weight_int4pack_mm_for_cpu(x.to(torch.bfloat16).contiguous(), packed, g, sz)

    return linear


def _int8_linear(qt: Any) -> Linear | None:
    if qt.format.spec.kind != "int8" or qt.shape[1] % INT8_KERNEL_IN_MULTIPLE:
        return None
    q, scale = qt.tensors["qweight"], qt.tensors["scale"].to(torch.bfloat16)
    try:
        torch._weight_int8pack_mm(torch.zeros(1, q.shape[1], dtype=torch.bfloat16), q, scale)
    except (RuntimeError, NotImplementedError, AttributeError):
        return None

    def linear(x: torch.Tensor) -> torch.Tensor:
        return torch._weight_int8pack_mm(x.to(torch.bfloat16).contiguous(), q, scale)

    return linear


def _dense_linear(qt: Any) -> Linear | None:
    if qt.format.spec.kind not in ("bf16", "fp16", "fp32"):
        return None
    w = qt.tensors["weight"]
    dtype = torch.float32 if w.dtype == torch.float32 else torch.bfloat16
    w = w.to(dtype)
    return lambda x: nn.functional.linear(x.to(dtype), w)


def _fallback_linear(qt: Any) -> Linear:
    return lambda x: nn.functional.linear(x.to(torch.bfloat16), qt.dequantize(torch.bfloat16))


def kernel_label(name: str) -> str:
    """Kernel names ("a+b" when an expert's projections differ) as measurements are labelled: a packed kernel says
    from how many tokens it goes bf16 (dense)."""
    return "+".join(f"{k}(bf16>={DENSE_FROM_TOKENS[k]})" if k in DENSE_FROM_TOKENS else k for k in name.split("+"))


def kernel_for(qt: Any, dense_from: Mapping[str, int] = DENSE_FROM_TOKENS) -> tuple[str, Linear]:
    """(kernel name, x -> x @ W^T on the host, x [tokens, in]) for one stored projection; a packed kernel gives
    way to dequantize + bf16 `F.linear` from `dense_from[name]` tokens on (`{}`: never, for benchmarks)."""
    fn = _dense_linear(qt)
    if fn is not None:
        return "dense", fn
    for name, make in (("int8pack_mm", _int8_linear), ("int4pack_mm", _int4_linear)):
        packed = make(qt)
        if packed is not None:
            n = dense_from.get(name)
            if n is None:
                return name, packed
            dense = _fallback_linear(qt)
            return name, lambda x, packed=packed, dense=dense, n=n: packed(x) if x.shape[0] < n else dense(x)
    return "dequantize", _fallback_linear(qt)


class CpuExpert:
    """One expert on the host: SwiGLU through the format's CPU kernel; output in the caller's dtype and
    device (activations move to the host and back when the model runs elsewhere)."""

    def __init__(self, qe: Any, act: Callable[[torch.Tensor], torch.Tensor]):
        kernels = [kernel_for(qt) for qt in (qe.gate, qe.up, qe.down)]
        self.kernel_name = "+".join(dict.fromkeys(k[0] for k in kernels))  # e.g. "int4pack_mm+dequantize"
        self._gate, self._up, self._down = (k[1] for k in kernels)
        self._act = act

    def __call__(self, x: torch.Tensor) -> torch.Tensor:
        h = x.to("cpu")
        y = self._down(self._act(self._gate(h)) * self._up(h))
        return y.to(device=x.device, dtype=x.dtype)


class CpuExperts:
    """The CPU expert functions of an `ExpertStore`, built on first use (int4 conversion happens once)."""

    def __init__(self, store: Any, acts: list[Callable[[torch.Tensor], torch.Tensor]]):
        self.store = store
        self.acts = acts
        self._fns: dict[tuple[int, int], CpuExpert] = {}

    def fn(self, layer: int, e: int) -> ExpertFn:
        key = (layer, e)
        f = self._fns.get(key)
        if f is None:
            packed = self.store.layers[layer][e]
            f = self._fns[key] = CpuExpert(packed.view(packed.host), self.acts[layer])
        return f
