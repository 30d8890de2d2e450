"""The report's block-diffusion section decodes every family at one token's worth of steps per block token."""

from __future__ import annotations

import pytest
import torch

from advisor.models.load import load_model
from advisor.report.blocks import block_length_study


@pytest.mark.parametrize(("family", "extra"), [("diffusion_gemma", 1), ("llada_moe", 0)])
def test_each_block_gets_as_many_denoising_steps_as_tokens(family, extra):
    """DiffusionGemma's steps are per canvas: the section once asked it for every block's tokens per canvas
    (2 blocks of 4: 18 forwards, not 10), so its reuse rows were denoised at twice the others' rate. `extra` is
    the encoder pass that opens each DiffusionGemma canvas."""
    loaded = load_model(f"tiny:{family}")
    prompts = [torch.randint(3, 100, (1, 8), generator=torch.Generator().manual_seed(0))]
    rows = block_length_study(loaded, prompts, [4, 8], label=family, fractions=[0.25])["rows"]
    assert [r["forwards"] for r in rows] == [2 * (4 + extra), 2 * (8 + extra)]


def _traced(tmp_path, family: str, *options: str):
    """`advisor trace tiny:FAMILY -o t.npz OPTIONS` as a user runs it, and the trace it wrote."""
    from typer.testing import CliRunner

    from advisor.cli import app
    from advisor.offload.trace import RoutingTrace

    out = tmp_path / "t.npz"
    res = CliRunner().invoke(app, ["trace", f"tiny:{family}", "-o", str(out), *options])
    assert res.exit_code == 0, res.output
    return RoutingTrace.load(out)


def test_reuse_overlaps_compare_denoising_steps_not_diffusion_gemmas_encoder_forward(tmp_path):
    """DiffusionGemma opens each block with an encoder forward (the prompt, then the canvas just committed), which
    is no denoising step. The section's step-to-step overlap paired it with the block's first step ("within") and
    with the previous block's last step ("across"), so neither number compared denoising steps. The pairs are
    now consecutive denoising steps of a prompt: within a block, and the last step of a block with the first
    of the next; the encoder forwards still count among the forwards."""
    from advisor.report.blocks import forwards_from_trace, jaccard, reuse_stats

    tr = _traced(tmp_path, "diffusion_gemma", "--limit", "2", "--max-new-tokens", "12", "--steps", "3",
                 "--block-length", "4")
    fwds = forwards_from_trace(tr)
    st = reuse_stats(fwds)
    steps = [f for f in fwds if f.step >= 0]
    assert len(fwds) == 2 * 3 * (3 + 1) and len(steps) == 2 * 3 * 3
    within, across = [], []
    for a, b in zip(steps, steps[1:], strict=False):
        if b.block == a.block:
            within += [jaccard(x, y) for x, y in zip(a.layers, b.layers, strict=True)]
        elif b.block == a.block + 1:
            across += [jaccard(x, y) for x, y in zip(a.layers, b.layers, strict=True)]
    assert (st.forwards, st.pairs_within, st.pairs_across) == (24, len(within), len(across)) == (24, 12 * 2, 4 * 2)  # 2 prompts x 3 blocks x 2 layers
    assert st.jaccard_within_block == pytest.approx(sum(within) / len(within))
    assert st.jaccard_across_blocks == pytest.approx(sum(across) / len(across))
    assert st.forwards_off_step == 6  # what the section's wording says of the encoder forwards


@pytest.mark.parametrize("family", ["llada_moe", "diffusion_gemma"])
def test_prompts_of_one_block_are_told_apart(tmp_path, family):
    """A prompt of one block (new tokens = block length) keeps block number 0, so the next prompt's first step
    was paired with this one's last as "within a block", and both prompts' blocks counted as one."""
    from advisor.report.blocks import forwards_from_trace, reuse_stats

    fwds = forwards_from_trace(_traced(tmp_path, family, "--limit", "3", "--max-new-tokens", "4", "--steps", "2",
                                       "--block-length", "4"))
    st = reuse_stats(fwds)
    layers = st.layers
    steps = [f for f in fwds if f.step >= 0]
    assert len(steps) == 3 * 2 and {f.block for f in fwds} == {0}
    # per prompt: its 2 steps make 1 pair per layer within its block; nothing pairs across prompts
    assert (st.blocks, st.pairs_within, st.pairs_across) == (3, 3 * layers, 0)


def test_pairs_of_full_expert_sets_are_counted_as_saturated(tmp_path):
    """`reuse_stats(..., num_experts)` counts the consecutive-step pairs whose two sets both hold every expert of the
    layer (their Jaccard is 1 whatever the routing), within and across blocks, as a direct count over the trace
    that `advisor trace` records says; without num_experts it counts none."""
    from advisor.report.blocks import forwards_from_trace, reuse_stats

    trace = _traced(tmp_path, "llada_moe", "--limit", "2", "--max-new-tokens", "16", "--steps", "16",
                    "--block-length", "8")
    fwds = forwards_from_trace(trace)
    st = reuse_stats(fwds, trace.num_experts)
    full = {True: 0, False: 0}
    for prev, cur in zip(fwds, fwds[1:], strict=False):
        if cur.block < prev.block or (cur.block == prev.block and cur.step <= prev.step):
            continue  # the next prompt
        for layer, (a, b) in enumerate(zip(prev.layers, cur.layers, strict=True)):
            full[cur.block == prev.block] += len(a) == len(b) == trace.num_experts[layer]
    assert (st.saturated_within, st.saturated_across) == (full[True], full[False])
    assert st.pairs_across == 2 * st.layers and st.saturated_within > 0  # 8 experts, top-2, 24 positions
    assert (reuse_stats(fwds).saturated_within, reuse_stats(fwds).saturated_across) == (0, 0)


def test_llada2_block_lengths_are_checked_against_the_canvas_it_decodes():
    """LLaDA2 decodes a canvas of whole blocks aligned to multiples of the block length: 2 blocks of 200 beside a
    16-token prompt take 600 positions, not 416, and passed the check of a tiny model's 512; the report recorded
    its traces past them. Refused now, naming the largest block length whose canvas fits (3 x 170), which passes."""
    from advisor.errors import UserError
    from advisor.report.blocks import check_block_lengths

    loaded = load_model("tiny:llada2")  # 512 positions
    prompts = [torch.zeros(1, 16, dtype=torch.long)]
    with pytest.raises(UserError, match=r"block length 200 x 2 blocks beside the longest traced prompt \(16 tokens\) "
                                        r"exceeds tiny:llada2's 512 positions; at most 170 fits"):
        check_block_lengths(loaded, prompts, [8, 200], "--block-lengths 8,200")
    check_block_lengths(loaded, prompts, [170], "--block-lengths 170")


def test_a_llada2_block_length_refused_below_the_one_the_hint_names_is_told_which_fit():
    """LLaDA2's canvas aligns its blocks to multiples of the block length, so beside a 135-token prompt on 512
    positions 170 fits (3 x 170) while 129 to 134 do not (4 blocks): `--block-lengths 130` was refused with "at
    most 170 fits", which it is under. The hint names the largest and the lengths up to which every one fits."""
    from advisor.errors import UserError
    from advisor.report.blocks import check_block_lengths

    loaded = load_model("tiny:llada2")  # 512 positions
    prompts = [torch.zeros(1, 135, dtype=torch.long)]
    with pytest.raises(UserError, match=r"block length 130 x 2 blocks .* 512 positions; 170 fits, as does every "
                                        r"length up to 128 \(not every one between"):
        check_block_lengths(loaded, prompts, [130], "--block-lengths 130")
    check_block_lengths(loaded, prompts, [128, 170], "--block-lengths 128,170")
