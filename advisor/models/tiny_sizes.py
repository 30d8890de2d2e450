"""The tiny models' sizes (`advisor.models.tiny`) as config.json settings, without torch.

`tiny` builds each family's config from these; the CLI reads a tiny:<family>'s MoE layers from them
(`advisor.models.spec_config`, `moe_layer_count`) before torch imports, as it reads a model directory's config.json.
"""

from __future__ import annotations

from typing import Any

TINY_VOCAB = 256
MASK_TOKEN_ID = TINY_VOCAB - 1
"""Tiny dLLMs reserve the last vocabulary id as their mask token."""

_COMMON: dict[str, Any] = dict(
    vocab_size=TINY_VOCAB,
    hidden_size=32,
    num_hidden_layers=2,
    num_attention_heads=4,
    num_key_value_heads=2,
    max_position_embeddings=512,
    pad_token_id=0,
    bos_token_id=1,
    eos_token_id=2,
    tie_word_embeddings=False,
)


def tiny_fields(family: str) -> dict[str, Any]:
    """The settings tiny:<family> (a family of `TINY_FAMILIES`, as spelled there) builds its config with; fields left
    out take the config class's defaults. A fresh dict: callers may change it (benchmarks resize a family)."""
    if family == "qwen3_moe":
        return {**_COMMON, "head_dim": 8, "intermediate_size": 64, "moe_intermediate_size": 16, "num_experts": 8,
                "num_experts_per_tok": 2, "norm_topk_prob": True}
    if family == "olmoe":
        return {**_COMMON, "intermediate_size": 16, "num_experts": 8, "num_experts_per_tok": 2}
    if family == "mixtral":
        return {**_COMMON, "head_dim": 8, "intermediate_size": 16, "num_local_experts": 8, "num_experts_per_tok": 2}
    if family == "deepseek_v3":
        return {**_COMMON, "num_hidden_layers": 3, "num_key_value_heads": 4, "intermediate_size": 64,
                "moe_intermediate_size": 16, "n_routed_experts": 8, "n_shared_experts": 1, "num_experts_per_tok": 2,
                "n_group": 2, "topk_group": 1, "first_k_dense_replace": 1, "q_lora_rank": 16, "kv_lora_rank": 16,
                "qk_rope_head_dim": 4, "qk_nope_head_dim": 8, "v_head_dim": 8, "rope_interleave": False}
    if family == "diffusion_gemma":
        text = dict(
            vocab_size=TINY_VOCAB, hidden_size=32, intermediate_size=32, num_hidden_layers=2, num_attention_heads=2,
            num_key_value_heads=1, head_dim=16, global_head_dim=16, num_experts=8, top_k_experts=2,
            moe_intermediate_size=16, sliding_window=16, max_position_embeddings=512,
            layer_types=["sliding_attention", "full_attention"],
            pad_token_id=0, eos_token_id=2, bos_token_id=1,
        )
        vision = dict(hidden_size=16, intermediate_size=32, num_hidden_layers=1, num_attention_heads=2,
                      num_key_value_heads=2, head_dim=8)
        return {"text_config": text, "vision_config": vision, "canvas_length": 8, "image_token_id": TINY_VOCAB - 3,
                "boi_token_id": TINY_VOCAB - 4, "eoi_token_id": TINY_VOCAB - 2}
    base = {**_COMMON, "mask_token_id": MASK_TOKEN_ID}  # the LLaDA families, in their published field names
    if family == "llada_moe":
        return {**base, "dense_intermediate_size": 64, "expert_intermediate_size": 16, "num_experts": 8,
                "num_experts_per_tok": 2}
    if family == "llada2":
        return {**base, "num_hidden_layers": 3, "intermediate_size": 64, "moe_intermediate_size": 16,
                "num_experts": 8, "num_shared_experts": 1, "num_experts_per_tok": 2, "n_group": 2, "topk_group": 1,
                "first_k_dense_replace": 1, "routed_scaling_factor": 2.5}
    raise AssertionError(f"tiny family {family!r} has no sizes here")  # `check_tiny_family` refused any not listed
