"""The experts' weighted sum (`advisor.models.experts.combine`) before and after 2026-12-05, side by side.

`python -m benchmarks.combine [--repeats 15] [--prompts 4] [--decode-runs 4]`

Before, `combine` ran an `index_add_` per routed expert (with its own index arithmetic, weight gather, multiply
and cast): on a CPU host decoding, those many small ops were the hot spot. Now (`combine`) each expert gathers
its inputs, weights its outputs and copies them into one tensor shared by all experts, and the sum is k gathers
and adds (slot j: each token's j-th expert), each token's outputs in ascending expert id - the eager loop's
order, so the result is bitwise the same (checked here for every case).

One MoE layer with 64 experts, top-8 (random routing, random weights), tokens 8 ... 256, at two expert shapes:
the bundled model's (hidden 128, expert width 16, fp32) and LLaDA-MoE-7B's (2048 x 1024, bf16). For each, with
torch's current threads, wall clock, the fastest of `--repeats`, old and new taken in turns (rotated order):

* ``sum`` - the combine step alone (each expert returns its input: gather, weight, place, add);
* ``layer`` - with SwiGLU experts (what a decoding forward pays per MoE layer).

Then the bundled model end to end: greedy decoding of `--prompts` toy-task prompts, one prompt per batch (tokens
per forward = prompt + 16 new), with the old and the new `combine` (`--decode-runs` each, alternating; every
run's time is printed, the fastest counts), the completions compared.

Ends with `RESULT bundled_layer_speedup_8=.. bundled_layer_speedup_256=.. llada7b_layer_speedup_8=..
llada7b_layer_speedup_256=.. decode_speedup=.. bitwise_equal=<0|1> same_completions=<0|1>` (old / new).
"""

from __future__ import annotations

import argparse
import os
import time

import torch
from torch.nn import functional as F

import advisor.models.experts as experts_mod
from advisor.hardware.profiles import host_cpu
from advisor.models.experts import ExpertWeights, combine, swiglu

SHAPES = {"bundled": (128, 16, torch.float32), "llada7b": (2048, 1024, torch.bfloat16)}
TOKENS = (8, 16, 32, 64, 128, 256)
EXPERTS, TOP_K = 64, 8


def combine_old(hidden_states, top_k_index, top_k_weights, experts):
    """`combine` as it was before 2026-12-05 (commit 0a264d5): an `index_add_` per routed expert."""
    out = torch.zeros_like(hidden_states)
    if not experts:
        return out
    k = top_k_index.shape[-1]
    routed, order = torch.sort(top_k_index.reshape(-1), stable=True)
    ids = torch.tensor([int(e) for e in experts], dtype=routed.dtype, device=routed.device)
    lows, highs = torch.stack([torch.searchsorted(routed, ids), torch.searchsorted(routed, ids, right=True)]).tolist()
    for fn, lo, hi in zip(experts.values(), lows, highs, strict=True):
        if lo == hi:
            continue
        pos = order[lo:hi]
        token_idx, k_pos = pos // k, pos % k
        y = fn(hidden_states[token_idx]) * top_k_weights[token_idx, k_pos, None]
        out.index_add_(0, token_idx, y.to(out.dtype))
    return out


def _fastest(fns: dict, args: tuple, repeats: int) -> dict[str, float]:
    """ms of each fn(*args), the fastest of `repeats`, the fns taken in turns, the order rotated every round."""
    for fn in fns.values():
        fn(*args)
    best = dict.fromkeys(fns, float("inf"))
    order = list(fns.items())
    for r in range(repeats):
        for k, fn in order[r % len(order):] + order[:r % len(order)]:
            t0 = time.perf_counter()
            fn(*args)
            best[k] = min(best[k], (time.perf_counter() - t0) * 1e3)
    return best


def layer_cases(repeats: int) -> tuple[dict[str, float], bool]:
    """Print the per-layer table; return old/new layer time at 8 and 256 tokens per shape, and bitwise equality."""
    g = torch.Generator().manual_seed(0)
    speedups: dict[str, float] = {}
    equal = True
    fns = {"old": combine_old, "new": combine}
    for name, (hidden, inter, dtype) in SHAPES.items():
        weights = [ExpertWeights(*(torch.randn(s, generator=g).to(dtype) * 0.02
                                   for s in ((inter, hidden), (inter, hidden), (hidden, inter))))
                   for _ in range(EXPERTS)]
        swiglus = {e: swiglu(F.silu, w) for e, w in enumerate(weights)}
        print(f"\n{name}: {EXPERTS} experts top-{TOP_K}, hidden {hidden}, expert width {inter}, "
              f"{str(dtype).removeprefix('torch.')}: ms per MoE layer (measured:wall-clock)")
        print(f"{'tokens':>6} {'experts':>7} {'sum old':>8} {'sum new':>8} {'x':>5} {'layer old':>9} "
              f"{'layer new':>9} {'x':>5}  bitwise")
        for tokens in TOKENS:
            idx = torch.stack([torch.randperm(EXPERTS, generator=g)[:TOP_K] for _ in range(tokens)])
            w = torch.rand(tokens, TOP_K, generator=g).softmax(-1)
            h = torch.randn(tokens, hidden, generator=g).to(dtype)
            routed = sorted(set(idx.flatten().tolist()))
            layer = {e: swiglus[e] for e in routed}
            same = torch.equal(combine_old(h, idx, w, layer), combine(h, idx, w, layer))
            equal &= same
            s = _fastest(fns, (h, idx, w, {e: (lambda x: x) for e in routed}), repeats)
            t = _fastest(fns, (h, idx, w, layer), repeats)
            print(f"{tokens:>6} {len(routed):>7} {s['old']:>8.3f} {s['new']:>8.3f} {s['old'] / s['new']:>5.2f} "
                  f"{t['old']:>9.3f} {t['new']:>9.3f} {t['old'] / t['new']:>5.2f}  {'yes' if same else 'NO'}")
            if tokens in (TOKENS[0], TOKENS[-1]):
                speedups[f"{name}_layer_speedup_{tokens}"] = t["old"] / t["new"]
    return speedups, equal


def decode_case(n_prompts: int, runs: int) -> tuple[float, bool]:
    """The bundled model decoding its task's first prompts with the old and the new combine."""
    from advisor.eval.run import evaluate
    from advisor.eval.tasks import get_task
    from advisor.models.load import load_model

    loaded = load_model("bundled")
    task = get_task("toy")
    seconds: dict[str, list[float]] = {"old": [], "new": []}
    completions: dict[str, list[str]] = {}
    for name in ("old", "new") * runs:
        experts_mod.combine = combine_old if name == "old" else combine
        try:
            r = evaluate(loaded, task, limit=n_prompts, batch_size=1)
        finally:
            experts_mod.combine = combine
        seconds[name].append(r.seconds)
        got = [ex["completion"] for ex in r.per_example]
        assert completions.setdefault(name, got) == got, "a variant decoded differently in another run"
    same = completions["old"] == completions["new"]
    old, new = min(seconds["old"]), min(seconds["new"])
    print(f"\nbundled model, greedy decoding of {n_prompts} toy prompts one at a time (16 new tokens each), "
          f"s per run (measured:wall-clock): old {' '.join(f'{t:.2f}' for t in seconds['old'])}, "
          f"new {' '.join(f'{t:.2f}' for t in seconds['new'])}; fastest {old:.2f} s old, {new:.2f} s new "
          f"({old / new:.2f}x), completions {'identical' if same else 'DIFFER'}")
    return old / new, same


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--repeats", type=int, default=15)
    ap.add_argument("--prompts", type=int, default=4)
    ap.add_argument("--decode-runs", type=int, default=4)
    args = ap.parse_args()
    print(f"# combine: {host_cpu()}, {torch.get_num_threads()} torch threads "
          f"(OMP_WAIT_POLICY={os.environ.get('OMP_WAIT_POLICY', 'unset')}), fastest of {args.repeats} (wall clock); "
          f"old = an index_add_ per expert, new = advisor.models.experts.combine")
    speedups, equal = layer_cases(args.repeats)
    decode, same = decode_case(args.prompts, args.decode_runs)
    print("RESULT " + " ".join(f"{k}={v:.2f}" for k, v in speedups.items())
          + f" decode_speedup={decode:.2f} bitwise_equal={int(equal)} same_completions={int(same)}")


if __name__ == "__main__":
    main()
