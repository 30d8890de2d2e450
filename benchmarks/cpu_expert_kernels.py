"""CPU expert kernels side by side: torch's packed int8/int4 kernels, dequantize-then-bf16, and what runs.

`python -m benchmarks.cpu_expert_kernels [--repeats 9]`

For each expert shape (LLaDA-MoE-7B 2048x1024, LLaDA2.0-mini 2048x512, 1024x512), format (int8, int4) and
tokens per expert (1 ... 256), on random weights, with torch's current threads, one SwiGLU expert forward
(wall clock, the fastest of `--repeats`, the variants taken in turns, in rotated order, so that a shared host's
load and a warm cache fall on all of them):

* ``packed`` - the packed kernel at every token count (what the runtime ran before 2026-12-04);
* ``dense`` - the three projections dequantized to bf16 for the call, then bf16 matrix multiplies;
* ``runs`` - `advisor.offload.cpu_experts.CpuExpert`, which switches from the first to the second at
  `DENSE_FROM_TOKENS` (what the runtime and `advisor profile` run).

And the dequantization itself (one 2048x1024 projection to bf16): the formats' `dequantize` against the same
arithmetic with a second fp32 temporary (how it was written before).
Ends with `RESULT int8_speedup_256=.. int4_speedup_256=.. worst_runs_over_best=.. dequant_speedup=..`: packed /
runs at 256 tokens (worst shape), the largest runs / min(packed, dense) at any point, old / new dequantize.
"""

from __future__ import annotations

import argparse
import time

import torch
from torch.nn import functional as F

from advisor.hardware.profiles import host_cpu
from advisor.models.experts import ExpertWeights
from advisor.offload.cpu_experts import DENSE_FROM_TOKENS, CpuExpert, kernel_for
from advisor.offload.timing import TOKENS
from advisor.quant.expert import quantize_expert
from advisor.quant.formats import get_format

SHAPES = ((2048, 1024), (2048, 512), (1024, 512))
FORMATS = ("int8", "int4")


def _fastest(fns: dict, x, repeats: int) -> dict[str, float]:
    """ms of each fn(x), the fastest of `repeats`, the fns taken in turns, the order rotated every round (each
    runs after each other one as often: the one before leaves its weights in the cache)."""
    for fn in fns.values():
        fn(x)
    best = dict.fromkeys(fns, float("inf"))
    order = list(fns.items())
    for r in range(repeats):
        for k, fn in order[r % len(order):] + order[:r % len(order)]:
            t0 = time.perf_counter()
            fn(x)
            best[k] = min(best[k], (time.perf_counter() - t0) * 1e3)
    return best


def _swiglu(gate, up, down):
    return lambda x: down(F.silu(gate(x)) * up(x))


def _variants(qe) -> dict:
    """packed (never switching), dense (dequantize + bf16 always) and what the runtime runs, for one expert."""
    projs = (qe.gate, qe.up, qe.down)
    packed = _swiglu(*(kernel_for(qt, dense_from={})[1] for qt in projs))
    dense = _swiglu(*(kernel_for(qt, dense_from=dict.fromkeys(DENSE_FROM_TOKENS, 1))[1] for qt in projs))
    return {"packed": packed, "dense": dense, "runs": CpuExpert(qe, F.silu)}


def _dequant_old(qt) -> torch.Tensor:
    """The int4 arithmetic of `GroupedIntFormat.dequantize` with a new fp32 tensor per step (as before)."""
    from advisor.quant.formats import unpack_bits

    rows, cols = qt.shape
    g = int(qt.format.spec.group)
    q = unpack_bits(qt.tensors["qweight"], 4, qt.format.spec.padded_in(cols))[:, :cols].float()
    q = q.reshape(rows, cols // g, g)
    w = q * qt.tensors["scale"].float()[..., None] + qt.tensors["min"].float()[..., None]
    return w.reshape(rows, cols).to(torch.bfloat16)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--repeats", type=int, default=9)
    args = ap.parse_args()
    threads = torch.get_num_threads()
    print(f"# cpu_expert_kernels: {host_cpu()}, {threads} torch threads, fastest of {args.repeats} (wall clock); "
          f"switch to bf16 at {DENSE_FROM_TOKENS}")
    g = torch.Generator().manual_seed(0)
    speedup_256: dict[str, float] = {}
    worst = 0.0
    for hidden, inter in SHAPES:
        w = ExpertWeights(*(torch.randn(s, generator=g) * 0.02 for s in ((inter, hidden), (inter, hidden),
                                                                          (hidden, inter))))
        for fmt in FORMATS:
            fns = _variants(quantize_expert(w, fmt))
            print(f"\n{hidden}x{inter} {fmt}: ms per expert forward (measured:wall-clock)")
            print(f"{'tokens':>6} {'packed':>8} {'dense':>8} {'runs':>8}  runs/best")
            for n in TOKENS:
                x = torch.randn(n, hidden, generator=g).to(torch.bfloat16)
                t = _fastest(fns, x, args.repeats)
                ratio = t["runs"] / min(t["packed"], t["dense"])
                worst = max(worst, ratio)
                print(f"{n:>6} {t['packed']:>8.3f} {t['dense']:>8.3f} {t['runs']:>8.3f}  {ratio:.2f}")
            speedup_256[fmt] = min(speedup_256.get(fmt, float("inf")), t["packed"] / t["runs"])
    w4 = get_format("int4").quantize(torch.randn(1024, 2048, generator=g) * 0.02)
    fns = {"old": _dequant_old, "new": lambda qt: qt.dequantize(torch.bfloat16)}
    assert torch.equal(fns["old"](w4), fns["new"](w4))
    t = _fastest(fns, w4, args.repeats)
    print(f"\nint4 dequantize of 1024x2048 to bf16: {t['old']:.3f} ms with a new fp32 tensor per step, "
          f"{t['new']:.3f} ms in place (bitwise equal; measured:wall-clock)")
    print(f"RESULT int8_speedup_256={speedup_256['int8']:.2f} int4_speedup_256={speedup_256['int4']:.2f} "
          f"worst_runs_over_best={worst:.2f} dequant_speedup={t['old'] / t['new']:.2f}")


if __name__ == "__main__":
    main()
