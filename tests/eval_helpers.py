"""A tiny random LLaDA-MoE with the bundled character tokenizer, saved like the bundled model."""

from __future__ import annotations

import dataclasses
from pathlib import Path


def tiny_toy_model_dir(root: Path) -> Path:
    """Save a 2-layer, 4-expert random model + tokenizer (the bundled layout) under `root` and return it."""
    from advisor.eval.chartok import build_tokenizer
    from scripts.train_bundled import TrainConfig, build_model, save

    cfg = dataclasses.replace(
        TrainConfig(), hidden_size=32, num_hidden_layers=2, num_attention_heads=2, num_experts=4,
        num_experts_per_tok=2, expert_intermediate_size=16, initializer_range=0.2,
    )
    tok = build_tokenizer()
    out = root / "tiny-toy"
    save(build_model(cfg, tok).eval(), tok, out, {"task": "toy", "test": True}, "float32")
    return out
