"""The bundled model's training objective and recipe plumbing (tiny sizes, a few steps)."""

from __future__ import annotations

import dataclasses
import json

import torch

from advisor.eval.chartok import build_tokenizer
from scripts.train_bundled import Batcher, TrainConfig, build_model, diffusion_loss, lr_at, train

TINY = dict(hidden_size=32, num_hidden_layers=2, num_attention_heads=2, num_experts=4, num_experts_per_tok=2,
            expert_intermediate_size=16, batch_size=8)


def test_prompt_is_never_masked_and_suffix_masking_hides_the_future():
    cfg = dataclasses.replace(TrainConfig(), **TINY, suffix_mask_prob=1.0)
    tok = build_tokenizer()
    model = build_model(cfg, tok)
    ids, start = Batcher(cfg, tok).next()
    seen = []
    handle = model.register_forward_pre_hook(lambda _m, args: seen.append(args[0].clone()))
    loss, aux = diffusion_loss(model, ids, start, cfg, torch.Generator().manual_seed(0))
    handle.remove()
    noisy = seen[0]
    mask = tok.mask_token_id
    assert torch.equal(noisy[:, :start], ids[:, :start])  # prompt untouched
    canvas = noisy[:, start:] == mask
    for row in canvas:  # everything after the first masked position of the clean prefix's end is masked
        first_full = row.nonzero().min().item() if row.any() else len(row)
        tail = row[first_full + cfg.block_length:]
        assert bool(tail.all())
    assert torch.isfinite(loss) and loss > 0 and aux >= 1.0 - 1e-4


def test_learning_rate_schedule():
    cfg = TrainConfig()
    assert lr_at(0, cfg) < lr_at(cfg.warmup, cfg) == cfg.lr
    assert abs(lr_at(cfg.steps, cfg) - cfg.lr * cfg.min_lr_ratio) < 1e-9


def test_a_tiny_training_run_learns_and_saves_the_bundled_layout(tmp_path):
    cfg = dataclasses.replace(TrainConfig(), **TINY, steps=30, warmup=2, eval_every=30, eval_examples=4,
                              checkpoint_every=100, decode_steps=8, lr=5e-3)
    out = tmp_path / "bundle"
    meta = train(cfg, out, tmp_path / "log.jsonl")
    log = [json.loads(line) for line in (tmp_path / "log.jsonl").read_text().splitlines()]
    losses = [r["loss"] for r in log if "loss" in r]
    assert losses[-1] < losses[0]
    for name in ("config.json", "model.safetensors", "tokenizer.json", "advisor_bundled.json"):
        assert (out / name).is_file()
    assert meta["train_config"]["steps"] == 30 and meta["generation"]["block_length"] == cfg.block_length
    assert 0 < meta["train_cpu_seconds"] and meta["train_cpu_seconds_source"].startswith("measured:")


def test_training_is_deterministic(tmp_path):
    """Same recipe, same losses and bitwise-same weights: the shipped model can be reproduced."""
    from safetensors.torch import load_file

    cfg = dataclasses.replace(TrainConfig(), **TINY, steps=12, warmup=2, eval_every=12, eval_examples=2,
                              checkpoint_every=100, decode_steps=8)
    runs = []
    for name in ("a", "b"):
        train(cfg, tmp_path / name, tmp_path / f"{name}.jsonl")
        log = [json.loads(line) for line in (tmp_path / f"{name}.jsonl").read_text().splitlines()]
        runs.append(([r["loss"] for r in log if "loss" in r], load_file(tmp_path / name / "model.safetensors")))
    (loss_a, w_a), (loss_b, w_b) = runs
    assert loss_a == loss_b and w_a.keys() == w_b.keys()
    assert all(torch.equal(w_a[k], w_b[k]) for k in w_a)


def test_training_forward_matches_the_models_own_forward():
    """The grouped expert computation used in training is the model's MoE math (logits and gradients)."""
    from scripts.train_bundled import grouped_experts

    cfg = dataclasses.replace(TrainConfig(), **{**TINY, "num_experts": 16, "num_experts_per_tok": 4})
    tok = build_tokenizer()
    model = build_model(cfg, tok)
    ids, _ = Batcher(cfg, tok).next()
    own = model(ids).logits
    own.square().mean().backward()
    grads = {n: p.grad.clone() for n, p in model.named_parameters() if p.grad is not None}
    model.zero_grad()
    with grouped_experts(model):
        grouped = model(ids).logits
    grouped.square().mean().backward()
    assert torch.allclose(own, grouped, atol=1e-5)
    assert all(torch.allclose(p.grad, grads[n], atol=1e-6) for n, p in model.named_parameters() if n in grads)
    assert "forward" not in vars(model.model.layers[0].mlp)  # the model's own forward is back afterwards
