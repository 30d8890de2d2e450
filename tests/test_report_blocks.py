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
