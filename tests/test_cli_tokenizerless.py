"""What a demanding new user met tuning a checkpoint without a tokenizer (a LLaDA-MoE-shaped one written in the official
key layout, as `benchmarks/big_model.py` writes them, or a `tiny:` model)."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path


def advisor(*args: str, cwd: Path) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-m", "advisor", *args], capture_output=True, text=True, cwd=cwd,
                          timeout=300)


def test_tune_of_a_model_without_a_tokenizer_says_its_prompts_are_random_ids(tmp_path):
    """The header said `task toy` and nothing else, while every trace and fidelity prompt was random token ids
    (`advisor trace` of the same model said so in a note)."""
    from advisor.tune.space import load_space

    space = tmp_path / "tiny.toml"
    space.write_text(load_space("quick").text.replace('accuracy = "maximize"', 'fidelity_top1 = "maximize"'))
    r = advisor("tune", "tiny:qwen3_moe", "--space", str(space), "--trials", "1", cwd=tmp_path)
    assert r.returncode == 0, r.stdout[-2000:] + r.stderr[-2000:]
    out = " ".join(r.stdout.split())
    assert "| task toy |" in out, out
    assert ("note: tiny:qwen3_moe has no tokenizer: its traces, fidelity and live trials decode seeded random token "
            "ids (seed 0), not the toy task's prompts") in out, out
