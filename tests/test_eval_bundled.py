"""The shipped model: loads offline, is big enough for caching to matter, and solves its held-out task."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import torch

from advisor.models.load import BUNDLED_DIR

SUBSET = 48  # the test-time subset (the full 500-problem number is in metrics.json)


@pytest.fixture(scope="module")
def loaded():
    from advisor.models.load import load_model

    torch.set_num_threads(1)
    return load_model("bundled")


def test_bundled_files_and_size():
    weights = BUNDLED_DIR / "model.safetensors"
    assert weights.is_file() and weights.stat().st_size <= 10 * 1024 * 1024
    for name in ("config.json", "tokenizer.json", "tokenizer_config.json", "metrics.json", "TRAINING.md"):
        assert (BUNDLED_DIR / name).is_file(), name


def test_bundled_architecture_is_a_real_moe_dllm(loaded):
    assert loaded.family == "llada_moe" and loaded.is_diffusion
    assert loaded.mask_token_id == loaded.tokenizer.mask_token_id
    assert len(loaded.moe) >= 4
    assert all(layer.num_experts >= 16 and layer.top_k >= 2 for layer in loaded.moe)


def test_tokenizer_loads_with_autotokenizer_offline():
    from transformers import AutoTokenizer

    tok = AutoTokenizer.from_pretrained(str(BUNDLED_DIR), local_files_only=True)
    text = "Q: Ann has 12 pens, buys 3, then loses 1. How many now?\nA: "
    assert tok.decode(tok(text)["input_ids"]) == text


def test_metrics_file_matches_the_checkpoint(loaded):
    metrics = json.loads((BUNDLED_DIR / "metrics.json").read_text())
    assert metrics["params"] == sum(p.numel() for p in loaded.model.parameters())
    full = metrics["test_accuracy"]
    assert full["n"] == 500 and 0.80 <= full["accuracy"] <= 0.97
    assert full["source"].startswith("measured:")
    assert (metrics["num_experts"], metrics["top_k"]) == (loaded.moe[0].num_experts, loaded.moe[0].top_k)
    sweep = {r["format"]: r for r in metrics["precision_sweep"]}
    assert all(sweep[f]["n"] >= 500 for f in ("bf16", "int8", "int4", "int3", "int2"))
    # the trade-off the tool is about: the harshest formats measurably below int8 (outside its 95% interval)
    assert min(sweep["int2"]["accuracy"], sweep["int3"]["accuracy"]) < sweep["int8"]["ci_low"]


def test_experts_per_denoising_step_are_recorded():
    """metrics.json counts the working set of one denoising step at block lengths 8/16/32 (benchmarks/block_reuse)."""
    metrics = json.loads((BUNDLED_DIR / "metrics.json").read_text())
    rows = sorted(metrics["block_reuse"]["rows"], key=lambda r: r["block_length"])
    assert [r["block_length"] for r in rows] == [8, 16, 32]
    for r in rows:
        bt = r["block_tokens"]
        assert 0 < bt["distinct_mean"] <= r["distinct_mean"] <= metrics["num_experts"]
        assert 0.0 <= bt["jaccard_within_block"] <= 1.0 and r["distinct_fraction"] <= 1.0


@pytest.mark.timeout(300)
def test_full_precision_accuracy_on_held_out_subset(loaded):
    from advisor.eval.run import evaluate
    from advisor.eval.tasks import get_task

    res = evaluate(loaded, get_task("toy"), limit=SUBSET, seed=0)
    assert res.n == SUBSET
    assert res.accuracy >= 0.80, [p for p in res.per_example if not p["correct"]][:3]


def test_train_script_recipe_is_recorded():
    meta = json.loads((BUNDLED_DIR / "advisor_bundled.json").read_text())
    cfg = meta["train_config"]
    assert cfg["num_experts"] >= 16 and cfg["num_hidden_layers"] >= 4 and cfg["num_experts_per_tok"] >= 2
    assert meta["trained_by"] == "python -m scripts.train_bundled"
    assert Path(BUNDLED_DIR / "TRAINING.md").read_text().count("python -m scripts.train_bundled") >= 1
