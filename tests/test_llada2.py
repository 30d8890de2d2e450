"""LLaDA2.0 definition: official key layout, save/reload, grouped sigmoid router, block-causal mask."""

from __future__ import annotations

import json

import pytest
import torch
from safetensors import safe_open

from advisor.models.llada2 import LLaDA2MoeConfig, LLaDA2MoeModelLM
from advisor.models.samplers import block_causal_mask

VOCAB = 64
MASK = VOCAB - 1


def tiny_config(**kw) -> LLaDA2MoeConfig:
    base = dict(
        vocab_size=VOCAB,
        hidden_size=32,
        intermediate_size=48,
        moe_intermediate_size=16,
        num_hidden_layers=3,
        num_attention_heads=4,
        num_key_value_heads=2,
        num_experts=16,
        num_experts_per_tok=4,
        n_group=4,
        topk_group=2,
        mask_token_id=MASK,
        eos_token_id=MASK - 1,
        pad_token_id=MASK - 1,
    )
    return LLaDA2MoeConfig(**{**base, **kw})


def tiny_model(seed: int = 0, **kw) -> LLaDA2MoeModelLM:
    torch.manual_seed(seed)
    return LLaDA2MoeModelLM(tiny_config(**kw)).eval()


def expected_keys(cfg: LLaDA2MoeConfig) -> set[str]:
    """The published LLaDA2.0-mini safetensors names, instantiated for `cfg`."""
    keys = {"model.word_embeddings.weight", "model.norm.weight", "lm_head.weight"}
    for i in range(cfg.num_hidden_layers):
        p = f"model.layers.{i}."
        keys |= {p + "input_layernorm.weight", p + "post_attention_layernorm.weight"}
        keys |= {p + "attention.query_key_value.weight", p + "attention.dense.weight"}
        keys |= {p + "attention.query_layernorm.weight", p + "attention.key_layernorm.weight"}
        if i < cfg.first_k_dense_replace:
            keys |= {f"{p}mlp.{n}_proj.weight" for n in ("gate", "up", "down")}
        else:
            keys |= {p + "mlp.gate.weight", p + "mlp.gate.expert_bias"}
            keys |= {
                f"{p}mlp.experts.{j}.{n}_proj.weight" for j in range(cfg.num_experts) for n in ("gate", "up", "down")
            }
            keys |= {f"{p}mlp.shared_experts.{n}_proj.weight" for n in ("gate", "up", "down")}
    return keys


def test_saved_checkpoint_uses_official_key_names(tmp_path):
    model = tiny_model()
    model.save_pretrained(tmp_path)
    with safe_open(str(tmp_path / "model.safetensors"), "pt") as f:
        shapes = {k: tuple(f.get_slice(k).get_shape()) for k in f.keys()}
    assert set(shapes) == expected_keys(model.config)
    head_dim = 32 // 4
    assert shapes["model.layers.1.attention.query_key_value.weight"] == ((4 + 2 * 2) * head_dim, 32)
    assert shapes["model.layers.1.attention.query_layernorm.weight"] == (head_dim,)
    assert shapes["model.layers.1.mlp.gate.weight"] == (16, 32)
    assert shapes["model.layers.1.mlp.gate.expert_bias"] == (16,)
    assert shapes["model.layers.0.mlp.gate_proj.weight"] == (48, 32)  # layer 0 dense
    cfg = json.loads((tmp_path / "config.json").read_text())
    assert cfg["model_type"] == "llada2_moe"
    for field in ("first_k_dense_replace", "n_group", "topk_group", "routed_scaling_factor", "num_shared_experts",
                  "moe_intermediate_size", "partial_rotary_factor", "use_qk_norm"):
        assert field in cfg


def test_published_defaults_match_llada2_mini():
    cfg = LLaDA2MoeConfig()
    assert (cfg.num_hidden_layers, cfg.num_experts, cfg.num_experts_per_tok, cfg.first_k_dense_replace) == (20, 256, 8, 1)
    assert (cfg.n_group, cfg.topk_group, cfg.routed_scaling_factor, cfg.num_shared_experts) == (8, 4, 2.5, 1)
    assert (cfg.head_dim, cfg.moe_intermediate_size, cfg.mask_token_id) == (128, 512, 156895)


def test_reload_gives_identical_logits(tmp_path):
    from transformers import AutoModel, AutoModelForCausalLM

    model = tiny_model()
    with torch.no_grad():  # a non-zero bias must survive the round trip too
        model.model.layers[1].mlp.gate.expert_bias.copy_(torch.linspace(-0.1, 0.1, 16))
    ids = torch.randint(0, VOCAB, (2, 9))
    ref = model(ids).logits
    assert ref.shape == (2, 9, VOCAB) and ref.dtype == torch.float32
    model.save_pretrained(tmp_path)
    for cls in (LLaDA2MoeModelLM, AutoModel, AutoModelForCausalLM):
        again = cls.from_pretrained(tmp_path).eval()
        assert isinstance(again, LLaDA2MoeModelLM)
        torch.testing.assert_close(again(ids).logits, ref, rtol=0, atol=0)


def _reference_route(gate, hidden):
    """Independent per-token restatement of the published grouped sigmoid routing."""
    scores = torch.sigmoid(hidden.float() @ gate.weight.detach().float().T)
    per_group = gate.num_experts // gate.n_group
    out_idx, out_w = [], []
    for s in scores:
        biased = s + gate.expert_bias
        groups = [sorted(biased[g * per_group:(g + 1) * per_group].tolist(), reverse=True) for g in range(gate.n_group)]
        group_score = torch.tensor([sum(g[:2]) for g in groups])
        kept = set(group_score.topk(gate.topk_group).indices.tolist())
        cand = [e for e in range(gate.num_experts) if e // per_group in kept]
        chosen = sorted(cand, key=lambda e: -float(biased[e].detach()))[: gate.top_k]
        w = s[chosen]
        out_idx.append(chosen)
        out_w.append(w / w.sum() * gate.routed_scaling_factor)
    return torch.tensor(out_idx), torch.stack(out_w)


def test_grouped_sigmoid_router_matches_reference_and_respects_groups():
    model = tiny_model(seed=1)
    gate = model.model.layers[2].mlp.gate
    with torch.no_grad():
        gate.expert_bias.copy_(torch.randn(16) * 0.05)
    hidden = torch.randn(12, 32)
    index, weights, logits = gate(hidden)
    assert index.shape == weights.shape == (12, 4) and logits.shape == (12, 16)
    groups_used = (index // 4).tolist()
    assert all(len(set(g)) <= 2 for g in groups_used)  # at most topk_group of n_group groups
    ref_idx, ref_w = _reference_route(gate, hidden)
    assert torch.equal(index.sort(dim=1).values, ref_idx.sort(dim=1).values)
    order_ours, order_ref = index.argsort(dim=1), ref_idx.argsort(dim=1)
    torch.testing.assert_close(weights.gather(1, order_ours), ref_w.gather(1, order_ref))
    torch.testing.assert_close(weights.sum(dim=1), torch.full((12,), 2.5))  # routed_scaling_factor


def test_expert_bias_changes_selection_but_not_weights():
    model = tiny_model(seed=2)
    gate = model.model.layers[1].mlp.gate
    hidden = torch.randn(8, 32)
    with torch.no_grad():
        gate.expert_bias.zero_()
        gate.expert_bias[13] = 5.0  # forces expert 13 (and its group) into every token's top-k
    index, weights, logits = gate(hidden)
    assert (index == 13).any(dim=1).all()
    scores = torch.sigmoid(logits)
    chosen = scores.gather(1, index)
    torch.testing.assert_close(weights, chosen / chosen.sum(1, keepdim=True) * 2.5)  # unbiased scores
    assert (weights < 2.5).all()


@pytest.mark.parametrize("scale", [1.0, 2.5])
def test_routed_scaling_factor_scales_weights(scale):
    model = tiny_model(seed=4, routed_scaling_factor=scale)
    _, weights, _ = model.model.layers[1].mlp.gate(torch.randn(5, 32))
    torch.testing.assert_close(weights.sum(1), torch.full((5,), scale))


def test_shared_expert_always_contributes():
    model = tiny_model()
    block = model.model.layers[1].mlp
    x = torch.randn(1, 5, 32)
    with_shared = block(x)
    torch.testing.assert_close(with_shared - block.shared_experts(x), block.experts(
        x.reshape(-1, 32), *block.gate(x.reshape(-1, 32))[:2]).reshape(1, 5, 32))


def test_block_causal_mask_hides_later_blocks_only():
    model = tiny_model()
    ids = torch.randint(0, VOCAB - 2, (1, 12))
    changed = ids.clone()
    changed[0, 10] = (ids[0, 10] + 1) % (VOCAB - 2)  # a token in block 2 (block length 4)
    mask = block_causal_mask(12, 4)
    assert mask.shape == (1, 1, 12, 12)
    a = model(ids, attention_mask=mask).logits
    b = model(changed, attention_mask=mask).logits
    torch.testing.assert_close(a[0, :8], b[0, :8], rtol=0, atol=1e-5)  # blocks 0-1 cannot see block 2
    assert not torch.allclose(a[0, 8], b[0, 8])  # block 2 is bidirectional within itself
    assert not torch.allclose(model(ids).logits[0, 0], model(changed).logits[0, 0])  # no mask: bidirectional


def test_an_unsupported_norm_head_checkpoint_is_one_line_not_a_traceback(tmp_path):
    """norm_head=true (not supported) raised NotImplementedError out of `advisor inspect` as a traceback."""
    from typer.testing import CliRunner

    from advisor.cli import app
    from advisor.errors import UserError
    from advisor.models import tiny

    tiny.build_tiny("llada2").save_pretrained(str(tmp_path))
    cfg = json.loads((tmp_path / "config.json").read_text())
    (tmp_path / "config.json").write_text(json.dumps({**cfg, "norm_head": True}))
    for args in (["inspect", str(tmp_path)], ["inspect", str(tmp_path), "--offload"]):
        result = CliRunner().invoke(app, args)
        assert isinstance(result.exception, UserError) and result.exception.exit_code == 2, result.output
        assert "norm_head=true" in str(result.exception) and "\n" not in str(result.exception)
