"""Tiny models and weight generators for the quantization tests."""

from __future__ import annotations

import functools

import torch


def gaussian(rows: int, cols: int, seed: int = 0, std: float = 0.05) -> torch.Tensor:
    return torch.randn(rows, cols, generator=torch.Generator().manual_seed(seed)) * std


def outlier_heavy(rows: int, cols: int, seed: int = 0, std: float = 0.05) -> torch.Tensor:
    """Gaussian weights with ~1% entries 20x larger and one whole hot input column (as in real LLM layers)."""
    gen = torch.Generator().manual_seed(seed)
    w = torch.randn(rows, cols, generator=gen) * std
    mask = torch.rand(rows, cols, generator=gen) < 0.01
    w[mask] *= 20
    w[:, cols // 3] *= 8
    return w


def _build(family: str, config) -> torch.nn.Module:
    if family == "llada_moe":
        from advisor.models.llada_moe import LLaDAMoEModelLM

        return LLaDAMoEModelLM(config)
    from transformers import AutoModelForCausalLM

    return AutoModelForCausalLM.from_config(config)


@functools.cache
def _tiny_state(family: str, layers: int) -> tuple[object, dict]:
    from advisor.models.tiny import randomize_, tiny_config

    config = tiny_config(family)
    config.num_hidden_layers = layers
    if isinstance(getattr(config, "moe_layer_freq", None), list):
        config.moe_layer_freq = [1] * layers
    torch.manual_seed(0)
    model = _build(family, config)
    randomize_(model, seed=0)
    return config, {k: v.clone() for k, v in model.state_dict().items()}


def tiny_moe(family: str, layers: int = 4) -> torch.nn.Module:
    """A fresh tiny random MoE model (qwen3_moe: fused experts, llada_moe: list) with `layers` MoE layers."""
    config, state = _tiny_state(family, layers)
    model = _build(family, config)
    model.load_state_dict(state)
    return model.eval()
