"""Plans applied to tiny MoE models (fused and list experts), quality report, and the quant-report CLI."""

import json
import sys

import pytest
import torch
from quant_helpers import tiny_moe

from advisor.errors import UserError
from advisor.models.view import attach_runtime, detach_runtime, moe_layers
from advisor.quant.apply import quantize_experts
from advisor.quant.expert import expert_nbytes
from advisor.quant.plan import PrecisionPlan
from advisor.quant.quality import capture_activations, quality_report

FAMILIES = ["qwen3_moe", "llada_moe"]  # fused 3-D experts / list of SwiGLU MLPs


def _inputs(seed: int = 0) -> torch.Tensor:
    return torch.randint(3, 250, (4, 12), generator=torch.Generator().manual_seed(seed))


def _routing_counts(model, ids) -> dict[int, list[int]]:
    """A routing profile: how often each expert of each MoE layer was chosen (observer on the seam)."""
    layers = moe_layers(model)
    counts = {lay.index: [0] * lay.num_experts for lay in layers}

    def observe(layer, top_k_index, _weights):
        for e in top_k_index.flatten().tolist():
            counts[layer][e] += 1

    attach_runtime(model, None, observers=[observe])
    with torch.no_grad():
        model(ids)
    detach_runtime(model)
    return counts


def _logit_errors(model, ids, ref) -> tuple[float, float]:
    with torch.no_grad():
        out = model(ids).logits.float()
    kl = torch.nn.functional.kl_div(
        out.log_softmax(-1), ref.log_softmax(-1), log_target=True, reduction="batchmean"
    )
    return float((out - ref).abs().mean()), float(kl)


@pytest.mark.parametrize("family", FAMILIES)
def test_mixed_plan_error_shrinks_int4_mixed_int8_bf16(family):
    model = tiny_moe(family, layers=4)
    ids = _inputs()
    before = {k: v.clone() for k, v in model.state_dict().items()}
    with torch.no_grad():
        ref = model(ids).logits.float()
    freqs = _routing_counts(model, ids)
    mixed = PrecisionPlan.hot_cold(
        "int8",
        "int4",
        0.25,
        {2: freqs[2]},
        base=PrecisionPlan.per_layer({0: "int8", 1: "int8"}, default="int4"),
    )
    assert mixed.formats_used() == {"int8", "int4"} and mixed.format_for(3, 0) == "int4"
    hot = [e for e in range(8) if mixed.format_for(2, e) == "int8"]
    assert len(hot) == 2 and all(
        freqs[2][h] >= max(c for e, c in enumerate(freqs[2]) if e not in hot) for h in hot
    )

    errors = {}
    for name, plan in [("int4", "int4"), ("mixed", mixed), ("int8", "int8"), ("bf16", "bf16")]:
        runtime = quantize_experts(model, plan)
        errors[name] = _logit_errors(model, ids, ref)
        if name == "mixed":
            assert runtime.formats()[(2, hot[0])] == "int8" and runtime.formats()[(3, 5)] == "int4"
            lay = moe_layers(model)[0]
            want = sum(
                expert_nbytes(mixed.format_for(i, e), lay.hidden_size, lay.intermediate_size)
                for i in range(4)
                for e in range(8)
            )
            assert runtime.nbytes == want
        detach_runtime(model)
    mean_abs = [errors[n][0] for n in ("int4", "mixed", "int8", "bf16")]
    kl = [errors[n][1] for n in ("int4", "mixed", "int8", "bf16")]
    assert mean_abs == sorted(mean_abs, reverse=True) and mean_abs[-1] > 0, errors
    assert kl == sorted(kl, reverse=True), errors
    assert mean_abs[0] > 3 * mean_abs[2]  # int4 clearly worse than int8, not noise
    # the model itself was never modified: experts, router, norms, embeddings, LM head are as before
    after = model.state_dict()
    assert all(torch.equal(before[k], after[k]) for k in before)
    with torch.no_grad():
        torch.testing.assert_close(model(ids).logits.float(), ref)


def test_plan_that_does_not_fit_the_model_is_refused():
    model = tiny_moe("qwen3_moe", layers=2)
    with pytest.raises(UserError, match="MoE layer 5"):
        quantize_experts(model, "int4;layers=5:int8")
    with pytest.raises(UserError, match="expert 9"):
        quantize_experts(model, "int4;experts=1.9:int8")


def test_quantized_llada_moe_generates():
    from advisor.models.generate import generate
    from advisor.models.load import load_model

    loaded = load_model("tiny:llada_moe")
    plan = PrecisionPlan.hot_cold(
        "int8", "int4", 0.5, {1: list(range(8))}, base=PrecisionPlan.uniform("int8")
    )
    runtime = quantize_experts(loaded, plan)
    calls = []
    original = runtime.experts_for
    runtime.experts_for = lambda layer, ids: calls.append(layer) or original(layer, ids)
    out = generate(loaded, torch.tensor([[5, 6, 7, 8]]), max_new_tokens=4, steps=2, block_length=4)
    assert out.shape == (1, 4) and int(out.min()) >= 0 and int(out.max()) < 256
    assert set(calls) == {0, 1}  # every MoE layer computed through the quantized experts
    detach_runtime(loaded.model)


def test_quality_report_rows_and_ordering():
    model = tiny_moe("qwen3_moe", layers=2)
    rows = quality_report(model, ["bf16", "int8", "int4", "int2"], n_samples=32)
    assert len(rows) == 2 * 8 * 4
    lay = moe_layers(model)[0]
    by = {}
    for r in rows:
        assert r["nbytes"] == expert_nbytes(r["format"], lay.hidden_size, lay.intermediate_size)
        assert r["nbytes_source"] == "counted" and r["error_source"] == "measured:random-activations"
        by.setdefault(r["format"], []).append(r)

    def mean(fmt, key):
        return sum(r[key] for r in by[fmt]) / len(by[fmt])

    for key in ("weight_rel_err", "output_rel_err"):
        assert mean("bf16", key) < mean("int8", key) < mean("int4", key) < mean("int2", key)
    assert mean("int8", "weight_rel_err") < 0.01 < mean("int4", "weight_rel_err")


def test_quality_report_on_captured_activations():
    model = tiny_moe("llada_moe", layers=2)
    acts = capture_activations(model, _inputs(), max_tokens=20)
    assert set(acts) == {0, 1} and acts[0].shape == (20, 32)
    rows = quality_report(model, ["int4"], n_samples=16, activations=acts, layers=[1], max_experts=3)
    assert [(r["layer"], r["expert"]) for r in rows] == [(1, 0), (1, 1), (1, 2)]
    assert all(r["error_source"] == "measured:captured-activations" and r["n_samples"] == 16 for r in rows)
    assert all(0 < r["output_rel_err"] < 1 for r in rows)


def test_quant_report_cli(tmp_path, monkeypatch, capsys):
    from typer.testing import CliRunner

    from advisor.cli import app, run

    out = tmp_path / "q.json"
    result = CliRunner().invoke(
        app, ["quant-report", "tiny:qwen3_moe", "--formats", "int8,int4", "--json", str(out)]
    )
    assert result.exit_code == 0, result.output
    assert "int8" in result.output and "int4" in result.output and "counted" in result.output
    doc = json.loads(out.read_text())
    assert len(doc["rows"]) == 2 * 8 * 2 and {r["format"] for r in doc["rows"]} == {"int8", "int4"}
    monkeypatch.setattr(sys, "argv", ["advisor", "quant-report", "tiny:qwen3_moe", "--formats", "int4,int5"])
    with pytest.raises(SystemExit) as exit_info:
        run()
    err = capsys.readouterr().err
    assert exit_info.value.code == 2 and "int5" in err and len(err.strip().splitlines()) == 1


def test_quant_report_measures_a_format_once_however_often_it_is_spelled(tmp_path):
    """'int4' and 'int4:g128:asym' are one format: measured once, so the table's expert count stays right."""
    from typer.testing import CliRunner

    from advisor.cli import app

    out = tmp_path / "q.json"
    result = CliRunner().invoke(app, ["quant-report", "tiny:qwen3_moe", "--formats", "int4,int4:g128:asym,int8",
                                      "--layers", "0", "--max-experts", "3", "--wide", "--json", str(out)])
    assert result.exit_code == 0, result.output
    rows = json.loads(out.read_text())["rows"]
    assert [(r["format"], r["expert"]) for r in rows] == [(f, e) for e in range(3) for f in ("int4", "int8")]
    table = [line for line in result.output.splitlines() if line.startswith("│ int4")]
    assert len(table) == 1 and table[0].split("│")[4].strip() == "3"  # 3 experts, not 6 (after MoE and layer)
