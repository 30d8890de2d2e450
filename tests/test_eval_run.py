"""evaluate() and the fidelity proxy end to end on a tiny random LLaDA-MoE (bundled layout)."""

from __future__ import annotations

import pytest
import torch

from advisor.eval import fidelity as fid
from advisor.eval.run import evaluate
from advisor.eval.tasks import get_task
from tests.eval_helpers import tiny_toy_model_dir


@pytest.fixture(scope="module")
def loaded(tmp_path_factory):
    from advisor.models.load import load_model

    torch.set_num_threads(1)
    return load_model(str(tiny_toy_model_dir(tmp_path_factory.mktemp("m"))))


def test_evaluate_generates_scores_and_reports_sources(loaded):
    task = get_task("toy")
    res = evaluate(loaded, task, limit=4, seed=0, steps=8, block_length=8)
    assert res.n == 4 and res.correct == sum(p["correct"] for p in res.per_example)
    assert res.accuracy == res.correct / 4 and 0.0 <= res.ci_low <= res.accuracy <= res.ci_high <= 1.0
    assert res.source == "measured:exact-match" and res.seconds > 0
    assert [p["index"] for p in res.per_example] == sorted(p["index"] for p in res.per_example)
    again = evaluate(loaded, task, limit=4, seed=0, steps=8, block_length=8)
    assert [p["completion"] for p in again.per_example] == [p["completion"] for p in res.per_example]


def test_batches_keep_examples_and_verdicts_aligned(loaded):
    task = get_task("toy", limit=5, seed=5)
    for batch_size in (1, 2, 5):
        res = evaluate(loaded, task, batch_size=batch_size, steps=8, block_length=8)
        assert [p["index"] for p in res.per_example] == list(range(5))
        for p, ex in zip(res.per_example, task.examples, strict=True):
            assert p["prompt"] == task.prompt(ex)[-200:]
            assert p["correct"] == task.score(ex, p["completion"])


def test_runtime_is_attached_for_the_run_and_the_previous_state_restored(loaded):
    from advisor.quant.apply import quantize_experts

    task = get_task("toy", limit=2, seed=1)
    runtime = quantize_experts(loaded, "int2", attach=False)
    calls = []

    class Spy:
        store, acts = runtime.store, runtime.acts  # looks like a QuantizedRuntime to the fast path

        def experts_for(self, layer, ids):
            calls.append(layer)
            return runtime.experts_for(layer, ids)

    evaluate(loaded, task, runtime=Spy(), steps=8, block_length=8)
    assert getattr(loaded.moe[0].experts_module, "_advisor", None) is None  # detached again
    ref = fid.task_reference(loaded, task, n=2)
    assert fid.fidelity(loaded, ref)["fidelity_kl"] == pytest.approx(0.0, abs=1e-9)


def test_fidelity_orders_precisions(loaded):
    from advisor.quant.apply import quantize_experts

    task = get_task("toy")
    ref = fid.task_reference(loaded, task, n=6, seed=0)
    assert ref.n_positions > 0 and ref.token_ids is None
    same = fid.fidelity(loaded, ref, None)
    assert same["fidelity_kl"] == pytest.approx(0.0, abs=1e-9) and same["fidelity_top1"] == 1.0
    int8 = fid.fidelity(loaded, ref, quantize_experts(loaded, "int8", attach=False))
    int2 = fid.fidelity(loaded, ref, quantize_experts(loaded, "int2", attach=False))
    assert 0.0 < int8["fidelity_kl"] < int2["fidelity_kl"]
    assert int2["fidelity_top1"] <= int8["fidelity_top1"] <= 1.0
    assert getattr(loaded.moe[0].experts_module, "_advisor", None) is None


def test_coarse_reference_matches_exact_kl_direction(loaded):
    """The top-k + rest coarsening (used for big vocabularies) is a lower bound of the exact KL."""
    task = get_task("toy")
    inputs = fid.build_inputs(loaded, [task.prompt(e) for e in task.examples[:4]],
                              [e["answer"] for e in task.examples[:4]])
    exact = fid.reference_logits(loaded, inputs)
    coarse = fid.reference_logits(loaded, inputs, keep=8)
    coarse.token_ids = exact.log_probs.topk(8, dim=-1).indices
    coarse.log_probs = exact.log_probs.gather(-1, coarse.token_ids)
    noisy = torch.log_softmax(exact.log_probs + 0.5 * torch.randn_like(exact.log_probs), dim=-1)
    kl_exact = fid.compare(exact, noisy)["fidelity_kl"]
    kl_coarse = fid.compare(coarse, noisy)["fidelity_kl"]
    assert 0.0 < kl_coarse <= kl_exact + 1e-6


def test_unknown_task_and_bad_limit_are_user_errors():
    from advisor.errors import UserError

    with pytest.raises(UserError, match="unknown task"):
        get_task("mmlu")
    with pytest.raises(UserError, match="limit"):
        get_task("toy", limit=0)


def test_accuracy_vs_precision_benchmark_rows(loaded):
    import importlib.util
    from pathlib import Path

    path = Path(__file__).resolve().parents[1] / "benchmarks" / "accuracy_vs_precision.py"
    spec = importlib.util.spec_from_file_location("accuracy_vs_precision", path)
    bench = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(bench)
    rows = bench.run_benchmark(loaded.name, ("fp32", "int2"), limit=2, fidelity_prompts=2)
    assert [r["format"] for r in rows] == ["fp32", "int2"]
    fp32, int2 = rows
    assert fp32["fidelity_kl"] == pytest.approx(0.0, abs=1e-9) and fp32["fidelity_top1"] == 1.0
    assert int2["fidelity_kl"] > 0 and int2["expert_bytes"] < fp32["expert_bytes"]
    assert all(r["n"] == 2 and r["sources"]["expert_bytes"] == "counted" for r in rows)
    gpu = bench.gpu_checks(loaded.name, limit=2)
    if torch.cuda.is_available():  # same model, same examples: the devices must agree on what is correct
        assert gpu["cuda"]["correct"] == gpu["cpu"]["correct"] and gpu["speedup_cuda_vs_cpu"] > 0
    else:
        assert gpu == {"skipped": "no CUDA device"}


def test_eval_and_tune_name_a_gpu_alike(loaded, monkeypatch):
    """`advisor eval` named a GPU `cuda:0` where `advisor tune` stored `cuda:0 (NVIDIA H200)`: one name now, which
    says which card measured. (No CUDA here: its name is what CUDA would answer.)"""
    from advisor.hardware.measure import device_text

    monkeypatch.setattr(torch.cuda, "get_device_name", lambda idx: f"NVIDIA H200 #{idx}")
    monkeypatch.setattr(torch.cuda, "current_device", lambda: 1)
    assert device_text(torch.device("cuda:0")) == "cuda:0 (NVIDIA H200 #0)"
    assert device_text("cuda") == "cuda:1 (NVIDIA H200 #1)"
    assert device_text("cpu") == "cpu"
    res = evaluate(loaded, get_task("toy"), limit=1, seed=0, steps=8, block_length=8)
    assert res.device == device_text(loaded.device) == "cpu"
