"""The activation allowance `advisor tune` (and `inspect --budget`) adds to an offloaded model's counted peak is what a
decoding step of the study's workload holds, as the model decodes it: LLaDA-MoE and LLaDA2 compute logits for the
block being decoded only, and the probe runs that same step (`advisor.models.generate.widest_step`)."""

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


def _decoding_counts(loaded, backend) -> tuple[int, int]:
    """Over every forward of decoding the workload's traced prompts as the study does: the most bytes of the two
    largest module outputs of one forward (the probe's count on a CPU), and the most positions one forward ran over."""
    counts, sizes, widths = [], [], []

    def output(module, args, out):
        if isinstance(out, torch.Tensor):
            sizes.append(out.numel() * out.element_size())

    def forward(model, args, kwargs):
        widths.append(int((args[0] if args else kwargs["input_ids"]).shape[1]))
        if sizes:
            counts.append(sum(sorted(sizes, reverse=True)[:2]))
            sizes.clear()

    handles = [m.register_forward_hook(output) for m in loaded.model.modules()]
    handles.append(loaded.model.register_forward_pre_hook(forward, with_kwargs=True))
    try:
        with attached(loaded, _Zeros()):
            for ids in backend.prompts(backend.settings.trace_prompts):
                generate(loaded, ids, **backend.decoding["generate"])
    finally:
        for h in handles:
            h.remove()
    counts.append(sum(sorted(sizes, reverse=True)[:2]))
    return max(counts), max(widths)


@pytest.mark.parametrize("family", ["llada_moe", "llada2"])
def test_activation_allowance_is_what_a_decoding_step_holds(checkpoints, family):
    """The probe ran one forward over prompt + max_new_tokens with every position's logits: 468 KiB on the tiny
    LLaDA-MoE (LLaDA2 471 KiB) where a decoding step of the same workload holds 132 KiB (136 KiB), its block's logits
    only, so a tight budget refused configurations that fit; and over 13 new positions where LLaDA-MoE decodes 2
    whole blocks of 8 (LLaDA2 up to the end of its last block)."""
    loaded = load_model(str(checkpoints[family]), offload=True)
    assert loaded.offloaded
    backend = ModelBackend(loaded, get_task("toy", seed=0), parse_space(SPACE).evaluation)
    step, width = _decoding_counts(loaded, backend)
    assert backend.shape.activation_bytes == step, (backend.shape.activation_bytes, step)
    assert backend.activation_source == f"counted:probe-forward(two largest activations,{width} tokens)"
