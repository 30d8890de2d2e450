"""Expert reuse across the denoising steps of block diffusion - the quantity an expert cache lives on.

A diffusion LLM denoises a block of tokens over several steps, each a full forward over the block. Each forward
touches many more distinct experts per layer than one autoregressive token (the "expert explosion"), but
consecutive steps of one block see almost the same tokens and so route almost the same way. These functions
measure both effects from routing traces, independently of any cache policy:

* distinct experts per MoE layer per forward (how big a working set one forward needs);
* Jaccard overlap of those sets between consecutive denoising steps *within* a block vs *across* a block
  boundary (how much of one step's working set the next step reuses). A forward that is no denoising step
  (DiffusionGemma's encoder forward that opens each block, over the prompt or the canvas just committed: step
  -1 in its block, as the decoding says it) counts among the forwards and their distinct experts, but is no
  side of a pair: the block's first step is compared with the last step of the block before.

All numbers here are counted from traces (source "counted").
"""

from __future__ import annotations

import statistics
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass
from typing import Any

from advisor.offload.policies import off_step


@dataclass(frozen=True)
class ForwardRouting:
    """The experts each MoE layer used in one model forward, with its denoising step and block."""

    step: int
    block: int
    layers: tuple[frozenset[int], ...]


def jaccard(a: frozenset[int], b: frozenset[int]) -> float:
    """|a & b| / |a | b|; two empty sets count as identical."""
    union = len(a | b)
    return 1.0 if union == 0 else len(a & b) / union


def forwards_from_trace(trace: Any, token_scope: str = "all") -> list[ForwardRouting]:
    """Per-forward expert sets of an `advisor.offload.trace.RoutingTrace` (what the cache is asked for).

    In token scope "block", a forward with no token of the block being denoised (DiffusionGemma's encoder
    forwards, over the prompt or the canvas just committed) is left out: it computes nothing in that scope, and
    kept it would count as a forward of no experts with no overlap with the steps beside it."""
    seqs = trace.access_sequences(token_scope)
    by_forward: dict[int, tuple[int, int, list[frozenset[int]]]] = {}
    n_layers = len(seqs)
    for layer, seq in enumerate(seqs):
        for ids, ctx, _ in seq:
            f = by_forward.setdefault(ctx.forward, (ctx.step, ctx.block, [frozenset()] * n_layers))
            f[2][layer] = frozenset(ids)
    return [ForwardRouting(step=s, block=b, layers=tuple(ls)) for _, (s, b, ls) in sorted(by_forward.items())
            if token_scope == "all" or any(ls)]


@dataclass(frozen=True)
class ReuseStats:
    """Reuse statistics of one trace (one model, one block length)."""

    forwards: int
    blocks: int
    layers: int
    distinct_mean: float
    distinct_max: int
    jaccard_within_block: float | None
    jaccard_across_blocks: float | None
    pairs_within: int
    pairs_across: int
    forwards_off_step: int = 0
    """Forwards that are no denoising step (DiffusionGemma's encoder forwards): in no overlap pair."""
    saturated_within: int = 0
    saturated_across: int = 0
    """Pairs whose two sets both hold every expert of their layer (given `num_experts`): their overlap is 1
    whatever the routing, so a Jaccard near 1 made of them measures the model's few experts, not reuse - a tiny
    model's 8 experts read "Jaccard across blocks 1" from its one block boundary, above the 0.955 within blocks."""

    def as_dict(self) -> dict[str, Any]:
        return dict(self.__dict__)


def reuse_stats(forwards: Sequence[ForwardRouting], num_experts: Sequence[int] | None = None) -> ReuseStats:
    """Distinct experts per layer per forward and consecutive-forward overlap, split by block boundary.

    Consecutive denoising steps are compared layer by layer; a pair is "within" when both belong to the same
    block, "across" when the second starts a new block. A new prompt (`_starts_prompt`) starts no pair.
    A forward that is no denoising step of its block (step -1 in a known block: DiffusionGemma's encoder forward
    that opens it) is no side of a pair - it routes the prompt or the canvas just committed, not the block being
    denoised - so the pair across a boundary is the last step of one block and the first of the next.
    `num_experts` (per layer) counts the pairs where both sides used every expert (`ReuseStats.saturated_within`).
    """
    if not forwards:
        raise ValueError("empty trace: no forwards to analyse")
    distinct = [len(s) for f in forwards for s in f.layers]
    steps = [f for f in forwards if not off_step(f.step, f.block)]
    within: list[float] = []
    across: list[float] = []
    saturated = {True: 0, False: 0}  # by "within": pairs of two full expert sets
    for prev, cur in zip(steps, steps[1:], strict=False):
        if _starts_prompt(prev, cur):
            continue
        same = cur.block == prev.block
        for layer, (a, b) in enumerate(zip(prev.layers, cur.layers, strict=False)):
            (within if same else across).append(jaccard(a, b))
            full = num_experts[layer] if num_experts is not None and layer < len(num_experts) else None
            saturated[same] += full is not None and len(a) == len(b) == full
    return ReuseStats(
        forwards=len(forwards),
        blocks=len({(i, f.block) for i, f in _prompt_blocks(forwards)}),
        layers=max(len(f.layers) for f in forwards),
        distinct_mean=statistics.fmean(distinct) if distinct else 0.0,
        distinct_max=max(distinct, default=0),
        jaccard_within_block=statistics.fmean(within) if within else None,
        jaccard_across_blocks=statistics.fmean(across) if across else None,
        pairs_within=len(within),
        pairs_across=len(across),
        forwards_off_step=len(forwards) - len(steps),
        saturated_within=saturated[True],
        saturated_across=saturated[False],
    )


def _starts_prompt(prev: ForwardRouting, cur: ForwardRouting) -> bool:
    """Whether `cur`, the forward after `prev`, begins the next prompt's decoding: its block number goes down, or
    it repeats `prev`'s block where one prompt cannot - the forward that opens a block again, or a denoising step
    not after `prev`'s. Prompts of a single block (as many new tokens as the block length) keep the block
    number: looking at it alone, their steps read as one block and the first step of each as "within" it."""
    if cur.block != prev.block:
        return cur.block < prev.block
    if off_step(cur.step, cur.block):  # (DiffusionGemma's encoder pass opens its block)
        return True
    return 0 <= prev.step and 0 <= cur.step <= prev.step


def _prompt_blocks(forwards: Iterable[ForwardRouting]) -> Iterable[tuple[int, ForwardRouting]]:
    """Tag each forward with a prompt counter (`_starts_prompt` marks a new prompt)."""
    prompt, last = 0, None
    for f in forwards:
        if last is not None and _starts_prompt(last, f):
            prompt += 1
        last = f
        yield prompt, f


BLOCK_POLICIES = ("lru", "block_aware")
BLOCKS = 2
"""Blocks each prompt generates at every block length of `block_length_study`."""


def check_block_lengths(loaded: Any, prompts: Sequence[Any], block_lengths: Sequence[int], option: str) -> None:
    """Refuse block lengths whose `BLOCKS` blocks beside the longest prompt exceed the model's positions
    (`advisor.eval.run.model_positions`): `report --block-lengths 99999` decoded ~200,000 tokens on the bundled
    model's 256 positions for many minutes. Names the largest block length that fits. `option`: the lengths as
    given (`--block-lengths '8,99999'`). Called before the report's traces, so nothing is written. The positions
    are those the family's sampler puts through the model (`advisor.eval.run.positions_taken`): LLaDA2's canvas
    of whole blocks aligned to multiples of the block length takes more than the prompt and its blocks."""
    from advisor.eval.run import model_positions, positions_taken

    if prompts:
        longest = max(int(p.shape[-1]) for p in prompts)
        refuse_block_lengths(block_lengths, option, model_positions(loaded), loaded.name, longest,
                             lambda n: positions_taken(loaded, longest, BLOCKS * n, {"block_length": n}))


def refuse_block_lengths(block_lengths: Sequence[int], option: str, positions: int | None, name: str,
                         longest: int | None = None, taken: Callable[[int], int] | None = None) -> None:
    """`UserError` for block lengths whose `BLOCKS` blocks beside `longest` prompt tokens exceed the model's
    `positions`. `longest` None: before the model loads (positions from config.json, `config_positions`), the
    prompts not yet tokenized - only block lengths whose blocks alone exceed the positions, which a report's
    load (minutes for a real checkpoint) preceded. `taken(n)`: the positions block length n decodes beside the
    longest prompt, where the sampler takes more than `longest` + its blocks (default)."""
    from advisor.errors import UserError

    if positions is None:
        return
    taken = taken or (lambda n: (longest or 0) + BLOCKS * n)
    over = [int(n) for n in block_lengths if taken(int(n)) > positions]
    if not over:
        return
    fits = next((n for n in range((positions - (longest or 0)) // BLOCKS, 0, -1) if taken(n) <= positions), 0)
    # every length up to `fits` fits, but for LLaDA2's aligned canvas: a longer block can hold the prompt's end
    every = next((n - 1 for n in range(1, fits + 1) if taken(n) > positions), fits)
    what = (f"block length {over[0]}" if len(over) == 1 else f"block lengths {', '.join(map(str, over))}")
    s = "s" if len(over) == 1 else ""
    if longest is None:
        hint = (f"at most {fits} fits beside no prompt, fewer beside the traced prompts (or '' to skip the section)"
                if fits >= 1 else "no block length fits (give '' to skip the section)")
        raise UserError(f"{option}: {what} x {BLOCKS} blocks alone exceed{s} {name}'s {positions} positions; {hint}")
    hint = ("no block length fits (give '' to skip the section)" if fits < 1 else
            f"at most {fits} fits (or '' to skip the section)" if every == fits else
            f"{fits} fits, as does every length up to {every} (not every one between: the canvas aligns its blocks "
            "to multiples of the length; or '' to skip the section)")
    raise UserError(f"{option}: {what} x {BLOCKS} blocks beside the longest traced prompt ({longest} tokens) "
                    f"exceed{s} {name}'s {positions} positions; {hint}")


SLOT_FRACTIONS = (0.125, 0.25, 0.375, 0.5, 0.625, 0.75, 0.875)


def block_length_study(
    loaded: Any,
    prompts: Sequence[Any],
    block_lengths: Sequence[int],
    *,
    label: str,
    blocks: int = BLOCKS,
    seed: int = 0,
    profile: Any = None,
    policies: Sequence[str] = BLOCK_POLICIES,
    fractions: Sequence[float] = SLOT_FRACTIONS,
) -> dict[str, list[dict[str, Any]]]:
    """Record full-precision traces at each block length and measure reuse, no-cache bytes and hit rates.

    Each prompt generates `blocks` blocks of length L in L steps each (LLaDA-MoE: one token unmasked per step;
    LLaDA2: at least one, more where its confidence passes the threshold; DiffusionGemma: L denoising steps of
    its canvas), so every block length is denoised at the same per-token rate and only the block length differs.
    Rows: reuse statistics per block length; curves: hit rate vs slots for each policy and Belady's MIN.
    """
    from advisor.offload.simulate import belady, simulate
    from advisor.offload.trace import merge, record_trace
    from advisor.quant.spec import expert_nbytes_of

    rows: list[dict[str, Any]] = []
    curves: list[dict[str, Any]] = []
    for length in block_lengths:
        n_new = int(length) * blocks
        steps = n_new if loaded.family == "llada_moe" else int(length)  # LLaDA-MoE counts steps over all blocks
        traces = [record_trace(loaded, ids, max_new_tokens=n_new, steps=steps, block_length=int(length), seed=seed)
                  for ids in prompts]
        trace = merge(traces)
        seqs = trace.access_sequences()
        tokens = max(1, trace.generated_tokens)
        m = trace.meta
        eb = [expert_nbytes_of("fp16", int(h), int(i)) for h, i in zip(m["hidden"], m["intermediate"], strict=True)]
        per_expert = [[b] * n for b, n in zip(eb, trace.num_experts, strict=True)]
        base = simulate(trace, slots_per_layer=0, policy="lru", expert_bytes=per_expert, profile=profile,
                        sequences=seqs)
        st = reuse_stats(forwards_from_trace(trace), trace.num_experts)
        blk = reuse_stats(forwards_from_trace(trace, "block"), trace.num_experts)
        n_exp = min(trace.num_experts)
        rows.append({"model": label, "block_length": int(length), "prompts": len(prompts),
                     "generated_tokens": tokens, "num_experts": n_exp, **st.as_dict(),
                     # the block's own tokens: what a sampler that caches the other positions computes
                     "block_tokens": {k: v for k, v in blk.as_dict().items()
                                      if k in ("distinct_mean", "distinct_max", "jaccard_within_block",
                                               "jaccard_across_blocks")},
                     "no_cache_bytes_per_token": base.bytes_h2d / tokens, "source": "counted:trace"})
        caps = sorted({max(1, round(f * n_exp)) for f in fractions})
        for pol in [*policies, "belady"]:
            hits, bpt = [], []
            for cap in caps:
                if pol == "belady":
                    s = belady(trace, cap, expert_bytes=per_expert, profile=profile, sequences=seqs)
                else:
                    s = simulate(trace, slots_per_layer=cap, policy=pol, expert_bytes=per_expert, profile=profile,
                                 sequences=seqs)
                hits.append(s.hit_rate)
                bpt.append(s.bytes_h2d / tokens)
            curves.append({"model": label, "block_length": int(length), "policy": pol,
                           "slots": caps, "slots_fraction": [c / n_exp for c in caps], "hit_rate": hits,
                           "bytes_per_token": bpt})
    return {"rows": rows, "curves": curves}
