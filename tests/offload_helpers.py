"""Tiny models and traces for the offload tests (shared by tests/test_offload_*.py)."""

from __future__ import annotations

import random

import torch

from advisor.offload.policies import Ctx


def tiny_llada(num_experts: int = 16, top_k: int = 1, seed: int = 0):
    """A tiny LLaDA-MoE (2 MoE layers, hidden 32) with more experts than the stock tiny one, so that a
    forward uses only part of them and the policies really differ."""
    from advisor.models.llada_moe import LLaDAMoEModelLM
    from advisor.models.load import LoadedModel, fingerprint, gen_defaults
    from advisor.models.tiny import randomize_, tiny_config
    from advisor.models.view import moe_layers

    cfg = tiny_config("llada_moe")
    cfg.num_experts = num_experts
    cfg.num_experts_per_tok = top_k
    torch.manual_seed(seed)
    model = randomize_(LLaDAMoEModelLM(cfg), seed=seed).eval()
    return LoadedModel(
        model=model, tokenizer=None, family="llada_moe", is_diffusion=True, name=f"tiny-llada-e{num_experts}",
        fingerprint=fingerprint(model), moe=moe_layers(model), mask_token_id=cfg.vocab_size - 1,
        gen_defaults=gen_defaults(model, "llada_moe"),
    )


def prompt_ids(n: int = 3, seed: int = 0) -> torch.LongTensor:
    return torch.randint(3, 200, (1, n), generator=torch.Generator().manual_seed(seed))


GEN_KW = dict(max_new_tokens=8, steps=4, block_length=4)


def random_sets(n_layers: int, n_forwards: int, n_experts: int, max_set: int, seed: int) -> list[list[list[int]]]:
    rng = random.Random(seed)
    return [[rng.sample(range(n_experts), rng.randint(1, max_set)) for _ in range(n_forwards)]
            for _ in range(n_layers)]


def block_ctxs(n_forwards: int, steps_per_block: int) -> list[Ctx]:
    return [Ctx(f, f % steps_per_block, f // steps_per_block) for f in range(n_forwards)]


def run_offloaded(loaded, ids, plan="fp32", **rt_kw):
    """Generate through an OffloadRuntime with a trace recorder beside it: (runtime, trace, output)."""
    from advisor.models.generate import generate
    from advisor.offload.runtime import OffloadRuntime
    from advisor.offload.trace import TraceRecorder, chain, trace_meta

    rt = OffloadRuntime(loaded, plan, **rt_kw)
    rec = TraceRecorder(trace_meta(loaded))
    rt.session.observers.append(rec)
    try:
        out = generate(loaded, ids, on_forward=chain(rec.on_forward, rt.on_forward), **GEN_KW)
    finally:
        rt.close()
    return rt, rec.trace(), out


def cli_trace(runner, out) -> None:
    """`advisor trace` of the stock tiny LLaDA-MoE to `out` through `runner` (a typer CliRunner): one prompt,
    8 new tokens in 4 steps of a 4-token block (4 forwards)."""
    from advisor.cli import app

    res = runner.invoke(app, ["trace", "tiny:llada_moe", "-o", str(out), "--limit", "1", "--max-new-tokens", "8",
                              "--steps", "4", "--block-length", "4"])
    assert res.exit_code == 0, res.output
