"""LLaDA-MoE definition: official checkpoint layout, save/reload, routing math, bidirectional attention."""

from __future__ import annotations

import json

import pytest
import torch
from safetensors import safe_open

from advisor.models.llada_moe import LLaDAMoEConfig, LLaDAMoEModelLM

VOCAB = 64
MASK = VOCAB - 1


def tiny_config(**kw) -> LLaDAMoEConfig:
    base = dict(
        vocab_size=VOCAB,
        hidden_size=32,
        dense_intermediate_size=48,
        expert_intermediate_size=16,
        num_hidden_layers=2,
        num_attention_heads=4,
        num_experts=8,
        num_experts_per_tok=2,
        mask_token_id=MASK,
        eos_token_id=MASK - 1,
        pad_token_id=MASK - 1,
    )
    return LLaDAMoEConfig(**{**base, **kw})


def tiny_model(seed: int = 0, **kw) -> LLaDAMoEModelLM:
    torch.manual_seed(seed)
    return LLaDAMoEModelLM(tiny_config(**kw)).eval()


def expected_keys(cfg: LLaDAMoEConfig) -> set[str]:
    """The published LLaDA-MoE-7B-A1B safetensors names, instantiated for `cfg`."""
    keys = {"model.embed_tokens.weight", "model.norm.weight", "lm_head.weight"}
    for i in range(cfg.num_hidden_layers):
        p = f"model.layers.{i}."
        keys |= {p + "input_layernorm.weight", p + "post_attention_layernorm.weight"}
        keys |= {f"{p}self_attn.{n}_proj.weight" for n in "qkvo"}
        if cfg.qk_layernorm:
            keys |= {p + "self_attn.q_norm.weight", p + "self_attn.k_norm.weight"}
        if cfg.moe_layer_freq[i]:
            keys.add(p + "mlp.gate.weight")
            keys |= {
                f"{p}mlp.experts.{j}.{n}_proj.weight"
                for j in range(cfg.num_experts)
                for n in ("gate", "up", "down")
            }
            if cfg.shared_expert_intermediate_size:
                keys |= {f"{p}shared_expert.{n}_proj.weight" for n in ("gate", "up", "down")}
            if cfg.moe_router_enable_expert_bias:
                keys.add(p + "mlp.expert_bias")
        else:
            keys |= {f"{p}mlp.{n}_proj.weight" for n in ("gate", "up", "down")}
    return keys


def saved_keys(path) -> dict[str, tuple[int, ...]]:
    with safe_open(str(path / "model.safetensors"), "pt") as f:
        return {k: tuple(f.get_slice(k).get_shape()) for k in f.keys()}


@pytest.mark.parametrize(
    "variant",
    [
        {},  # the published 7B-A1B layout: every layer MoE, q/k norms, no shared expert, no bias
        {
            "moe_layer_freq": [0, 1],
            "shared_expert_intermediate_size": 24,
            "moe_router_enable_expert_bias": True,
        },
    ],
)
def test_saved_checkpoint_uses_official_key_names(tmp_path, variant):
    model = tiny_model(**variant)
    model.save_pretrained(tmp_path)
    keys = saved_keys(tmp_path)
    assert set(keys) == expected_keys(model.config)
    head_dim = 32 // 4
    assert keys["model.layers.1.self_attn.q_norm.weight"] == (head_dim,)
    assert keys["model.layers.1.mlp.gate.weight"] == (8, 32)
    assert keys["model.layers.1.mlp.experts.7.gate_proj.weight"] == (16, 32)
    assert keys["model.layers.1.mlp.experts.7.down_proj.weight"] == (32, 16)
    cfg = json.loads((tmp_path / "config.json").read_text())
    assert cfg["model_type"] == "llada"
    for field in (
        "expert_intermediate_size",
        "num_experts",
        "num_experts_per_tok",
        "moe_layer_freq",
        "qk_layernorm",
        "rope_theta",
        "mask_token_id",
    ):
        assert field in cfg


def test_published_defaults_match_the_7b_a1b_config():
    cfg = LLaDAMoEConfig()
    assert (cfg.hidden_size, cfg.num_hidden_layers, cfg.num_experts, cfg.num_experts_per_tok) == (
        2048,
        16,
        64,
        8,
    )
    assert cfg.expert_intermediate_size == 1024
    assert (cfg.mask_token_id, cfg.eos_token_id) == (156895, 156892)
    assert cfg.qk_layernorm and not cfg.tie_word_embeddings


def test_reload_gives_identical_logits_through_auto_classes(tmp_path):
    from transformers import AutoModel, AutoModelForCausalLM

    model = tiny_model()
    ids = torch.randint(0, VOCAB, (2, 11))
    ref = model(ids).logits
    assert ref.shape == (2, 11, VOCAB)
    model.save_pretrained(tmp_path)
    for cls in (LLaDAMoEModelLM, AutoModel, AutoModelForCausalLM):
        again = cls.from_pretrained(tmp_path).eval()
        assert isinstance(again, LLaDAMoEModelLM)
        torch.testing.assert_close(again(ids).logits, ref, rtol=0, atol=0)


def test_official_style_directory_loads_without_remote_code(tmp_path):
    """The published config.json carries auto_map to remote code; we must load it natively instead."""
    from transformers import AutoModel

    model = tiny_model()
    model.save_pretrained(tmp_path)
    cfg = json.loads((tmp_path / "config.json").read_text())
    cfg["architectures"] = ["LLaDAMoEModelLM"]
    cfg["auto_map"] = {
        "AutoConfig": "configuration_lladamoe.LLaDAConfig",
        "AutoModel": "modeling_lladamoe.LLaDAMoEModelLM",
        "AutoModelForCausalLM": "modeling_lladamoe.LLaDAMoEModelLM",
    }
    (tmp_path / "config.json").write_text(json.dumps(cfg))
    loaded = AutoModel.from_pretrained(tmp_path)
    assert type(loaded) is LLaDAMoEModelLM
    want, got = model.state_dict(), loaded.state_dict()
    assert got.keys() == want.keys()
    for name, tensor in want.items():  # every weight read back bit for bit
        assert torch.equal(got[name], tensor), name
    ids = torch.randint(0, VOCAB, (1, 7))
    # the same weights, another module instance: float32 kernels may sum in another order (thread count, layout),
    # so the logits agree to float32 rounding, not bit for bit (1.5e-8 apart in one full-suite run)
    torch.testing.assert_close(loaded(ids).logits, model(ids).logits)


def _capture_routing(model):
    calls = []

    def hook(module, args):
        calls.append((args[1].clone(), args[2].clone()))

    handles = [layer.mlp.experts.register_forward_pre_hook(hook) for layer in model.model.layers]
    return calls, handles


def test_router_is_softmax_top_k_without_renormalisation():
    model = tiny_model()
    calls, handles = _capture_routing(model)
    hidden = torch.randn(5, 32)
    block = model.model.layers[0].mlp
    block(hidden[None])
    for h in handles:
        h.remove()
    index, weights = calls[0]
    assert index.shape == weights.shape == (5, 2)
    assert all(len(set(row.tolist())) == 2 for row in index)  # k distinct experts per token
    probs = torch.softmax(block.gate(hidden).float(), dim=-1)
    expected_w, expected_i = probs.topk(2, dim=-1)
    assert torch.equal(index, expected_i)
    torch.testing.assert_close(weights, expected_w)
    assert (weights.sum(-1) < 1).all()  # the reference does NOT renormalise the top-k probabilities


def test_moe_block_equals_dense_reference_computation():
    """The seam path (ExpertList) computes sum_k w_k * expert_k(x), checked against a plain loop."""
    model = tiny_model(seed=3)
    block = model.model.layers[1].mlp
    x = torch.randn(2, 6, 32)
    out = block(x)
    flat = x.reshape(-1, 32)
    probs = torch.softmax(block.gate(flat).float(), dim=-1)
    w, idx = probs.topk(2, dim=-1)
    ref = torch.zeros_like(flat)
    for t in range(flat.shape[0]):
        for k in range(2):
            ref[t] += w[t, k] * block.experts[int(idx[t, k])](flat[t])
    torch.testing.assert_close(out.reshape(-1, 32), ref, rtol=1e-5, atol=1e-6)


def test_expert_bias_shifts_selection_as_in_reference():
    model = tiny_model(moe_router_enable_expert_bias=True)
    block = model.model.layers[0].mlp
    with torch.no_grad():
        block.expert_bias[5] = 10.0
    _, index, weights = block.route(torch.randn(4, 32))
    assert (index == 5).any(dim=1).all()
    assert (weights.max(dim=1).values > 10).all()  # reference keeps the biased value as the weight


def test_attention_is_bidirectional_and_respects_padding_mask():
    model = tiny_model()
    ids = torch.randint(0, VOCAB - 2, (1, 8))
    changed = ids.clone()
    changed[0, -1] = (ids[0, -1] + 1) % (VOCAB - 2)
    base = model(ids).logits
    assert not torch.allclose(model(changed).logits[0, 0], base[0, 0])  # a later token changes position 0
    keep = torch.ones(1, 8, dtype=torch.long)
    keep[0, -1] = 0
    torch.testing.assert_close(
        model(changed, attention_mask=keep).logits[0, :-1], model(ids, attention_mask=keep).logits[0, :-1]
    )
