"""What a demanding new user met running an autoregressive MoE (Qwen3-30B-A3B, Mixtral, OLMoE, DeepSeek-V3)
through the README's walk: tune, recommend, export, report."""

from __future__ import annotations


def _cli(*args: str):
    from typer.testing import CliRunner

    from advisor.cli import app

    return CliRunner().invoke(app, list(args), env={"COLUMNS": "200"})


def test_the_dllm_space_on_an_autoregressive_model_says_what_its_block_knobs_become(shm_tmp_path, monkeypatch):
    """`advisor tune QWEN3_CHECKPOINT --space dllm` (the space README's tune example names) tuned an autoregressive
    model without a word, though the space is made for diffusion LLMs and its block-aware knobs degenerate there
    (each forward is a block of its own). A note now says so and names the space tune takes for such a model; a
    diffusion model (or another space) gets no such note."""
    from advisor.tune.space import load_space

    monkeypatch.chdir(shm_tmp_path)
    r = _cli("tune", "tiny:qwen3_moe", "--space", "dllm", "--trials", "1", "--storage", "t.db")
    assert r.exit_code == 0, r.output[-4000:]
    out = " ".join(r.output.split())
    assert out.count("made for diffusion LLMs") == 1, r.output
    assert ("note: the dllm space is made for diffusion LLMs; tiny:qwen3_moe (qwen3_moe) decodes autoregressively, "
            "one token per forward, each forward a block of its own: its block_aware policy then protects the "
            "previous token's experts (near lru) and tide refreshes every tau forwards; the default space (what "
            "tune takes for an autoregressive model without --space) has neither") in out, r.output
    assert load_space("dllm").autoregressive_note("tiny:llada_moe", "llada_moe", True) == ""
    assert load_space("default").autoregressive_note("tiny:qwen3_moe", "qwen3_moe", False) == ""
