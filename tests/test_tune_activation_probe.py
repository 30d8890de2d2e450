"""The activation allowance `advisor tune` (and `inspect --budget`) adds to an offloaded model's counted peak is what a
decoding step of the study's workload holds, as the model decodes it: LLaDA-MoE and LLaDA2 compute logits for the
block being decoded only, and the probe runs that same step (`advisor.models.generate.widest_step`), measuring the
bytes its tensors hold (`advisor.models.memory`; the CUDA allocator on a GPU)."""

from __future__ import annotations

from pathlib import Path

import pytest
import torch

from advisor.eval.run import attached
from advisor.eval.tasks import get_task
from advisor.models.generate import generate
from advisor.models.load import load_model
from advisor.tune.model_backend import ModelBackend
from advisor.tune.space import parse_space
from tests.memory_helpers import HeldBytes
from tests.tune_helpers import FIDELITY_SPACE

# toy's block length 8: 13 new tokens are two LLaDA-MoE blocks (16 positions decoded past the prompt); LLaDA2's widest
# forward is its last block's, over the canvas of whole blocks
SPACE = FIDELITY_SPACE + "max_new_tokens = 13\n"


@pytest.fixture(scope="module")
def checkpoints(tmp_path_factory) -> dict[str, Path]:
    """Tiny LLaDA-MoE and LLaDA2 checkpoints with a 4096-token vocabulary (their logits are their largest tensors)."""
    from advisor.models.tiny import _model_class, randomize_, tiny_config

    root = tmp_path_factory.mktemp("probe")
    for family in ("llada_moe", "llada2"):
        config = tiny_config(family)
        config.vocab_size = 4096
        randomize_(_model_class(family)(config)).eval().save_pretrained(str(root / family))
    return {family: root / family for family in ("llada_moe", "llada2")}


@pytest.fixture(autouse=True)
def _cache_dir(tmp_path, monkeypatch):
    monkeypatch.setenv("ADVISOR_CACHE_DIR", str(tmp_path / "cache"))


class _Zeros:
    def experts_for(self, layer, expert_ids):
        return {e: torch.zeros_like for e in expert_ids}


def _decoding_peak(loaded, backend) -> int:
    """The most bytes the tensors of decoding the workload's longest traced prompt (the one the probe runs) hold at
    once, as the study decodes it, experts costing nothing (what the probe leaves out of an allowance: the weights)."""
    ids = max(backend.prompts(backend.settings.trace_prompts), key=lambda t: t.shape[-1])
    with attached(loaded, _Zeros()), torch.no_grad(), HeldBytes() as held:
        generate(loaded, ids, **backend.decoding["generate"])
    return held.peak


@pytest.mark.parametrize("family", ["llada_moe", "llada2"])
def test_activation_allowance_is_what_a_decoding_step_holds(checkpoints, family):
    """On the CPU the allowance counted the two largest module outputs of the probe step: 132 KiB on the tiny
    LLaDA-MoE at a 4096 vocabulary (LLaDA2 136 KiB), the block's logits and one more, where decoding the same workload
    holds 641 KiB (258 KiB) at its peak: LLaDA-MoE's sampler upcasts the block's logits to float64 and softmaxes them
    (two tensors twice the logits' size, alive together), which no module outputs, so a budget admitted
    configurations that do not fit. The probe now measures the bytes its step's tensors hold (as the CUDA allocator
    measures them on a GPU): the whole decoding's peak, within 1% (a prompt's few ids)."""
    loaded = load_model(str(checkpoints[family]), offload=True)
    assert loaded.offloaded
    backend = ModelBackend(loaded, get_task("toy", seed=0), parse_space(SPACE).evaluation)
    peak = _decoding_peak(loaded, backend)
    assert abs(backend.shape.activation_bytes - peak) < 0.01 * peak, (backend.shape.activation_bytes, peak)
    width = 16 + 16 if family == "llada_moe" else 32  # the longest traced prompt (16) + 2 blocks / the whole canvas
    step = "first step" if family == "llada_moe" else "last block's first step"
    assert backend.activation_source == f"measured:live-tensors(probe decoding step: {step} over {width} positions)"
