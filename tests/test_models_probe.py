"""A model whose forward bypasses the experts implementation is refused at load, in one line, by every
command; a view whose shapes disagree with the config too. Supported models pass the probe."""

from __future__ import annotations

import pytest
import torch
from cli_helpers import advisor_entry
from torch import nn

from advisor.errors import UserError
from advisor.models import tiny
from advisor.models.load import load_model, loaded_from


# An experts class as remote code often writes it: fused 3-D tensors the view accepts, but a forward of
# its own that never goes through transformers' ExpertsInterface (so never through the advisor seam).
def _bypassing_forward(self, hidden_states, top_k_index, top_k_weights):
    out = torch.zeros_like(hidden_states)
    for e in torch.unique(top_k_index).tolist():
        tok, pos = torch.where(top_k_index == e)
        gate, up = nn.functional.linear(hidden_states[tok], self.gate_up_proj[e]).chunk(2, dim=-1)
        y = nn.functional.linear(self.act_fn(gate) * up, self.down_proj[e]) * top_k_weights[tok, pos, None]
        out.index_add_(0, tok, y.to(out.dtype))
    return out


@pytest.mark.parametrize(
    "args",
    [
        ["inspect", "tiny:qwen3_moe"],
        ["eval", "{tmp}/qwen3", "--precision", "int2", "--limit", "1"],  # with tokenizer files: eval reads text
        ["tune", "tiny:qwen3_moe", "--trials", "1", "--storage", "sqlite:///{tmp}/a.db"],
    ],
)
def test_a_forward_that_bypasses_the_experts_implementation_is_refused_in_one_line(args, tmp_path, monkeypatch):
    """Through the console entry point in this process, the class patched for the test: as a subprocess each
    command paid ~5 s of CPU importing torch and transformers again."""
    import transformers.models.qwen3_moe.modeling_qwen3_moe as m

    args = [a.replace("{tmp}", str(tmp_path)) for a in args]
    if args[0] == "eval":  # eval refuses a model without a tokenizer before it loads: give it the bundled one's
        import shutil

        from advisor.models.load import BUNDLED_DIR

        tiny.build_tiny("qwen3_moe").save_pretrained(str(tmp_path / "qwen3"))
        for name in ("tokenizer.json", "tokenizer_config.json"):
            shutil.copy(BUNDLED_DIR / name, tmp_path / "qwen3" / name)
    monkeypatch.setattr(m.Qwen3MoeExperts, "forward", _bypassing_forward)
    proc = advisor_entry(*args, cwd=tmp_path)
    assert proc.returncode == 2, proc.stdout[-2000:] + proc.stderr[-2000:]
    lines = [ln for ln in proc.stderr.splitlines() if ln.startswith("error:")]
    assert len(lines) == 1 and "Traceback" not in proc.stderr
    line = lines[0]
    assert "model type 'qwen3_moe'" in line and "no expert look-ups" in line and "2 of 2 MoE layers" in line
    assert "Supported: " in line
    assert not (tmp_path / "a.db").exists() or "tune" not in args  # nothing stored


def test_expert_shapes_that_disagree_with_the_config_are_refused():
    model = tiny.build_tiny("qwen3_moe")
    model.config.moe_intermediate_size = 32  # the tensors hold 16-wide experts
    with pytest.raises(UserError, match="expert width 16 read from the tensors, 32 in the config"):
        loaded_from(model, None, "qwen3_moe", "tiny:qwen3_moe")


@pytest.mark.parametrize("family", tiny.TINY_FAMILIES)
def test_every_supported_family_passes_the_probe(family):
    loaded = load_model(f"tiny:{family}")
    assert loaded.moe and not hasattr(loaded.moe[0].experts_module, "_advisor")  # probe detached again
