"""Every HF recipe is executed as written against small models on CPU: bitsandbytes through the project's
loader (the bundled LLaDA-MoE), TorchAO int8 on fused experts (a tiny Qwen3-MoE saved to disk), the advisor's
own loader; HQQ and unloadable model specs are refused with the reason."""

from __future__ import annotations

import ast
import importlib.util
import re

import pytest
import torch
from cli_helpers import flat, said_lines
from example_study import EXAMPLE_DB, example_without_hot_set
from recommend_helpers import model_meta, point

from advisor.errors import UserError
from advisor.export.base import export_point
from advisor.quant.plan import PrecisionPlan

IDS = torch.tensor([[5, 6, 7, 8, 9, 10, 11, 12]])


def _run(text: str) -> dict:
    ast.parse(text)  # valid Python as printed
    ns: dict = {}
    exec(compile(text, "<recipe>", "exec"), ns)  # noqa: S102 - the recipe is what users run
    return ns


def _llada_point(plan: PrecisionPlan, model: str, n_experts: int, inter: int):
    meta = model_meta("llada_moe", n_layers=4, n_experts=n_experts, hidden=128, inter=inter)
    return point("s", 1, plan.spec, 8, acc=0.9, h2d=1e6, peak_gib=1, meta=meta, model=model)


@pytest.fixture(scope="module")
def wide_llada_dir(tmp_path_factory):
    """A random 4-layer, 16-expert LLaDA-MoE with 64-wide experts (the shape bundled before 2026-12-03):
    bitsandbytes' CPU nf4 kernel packs rows in blocks of 32 and quantizes in blocks of 64, which the bundled
    model's 16-wide experts do not fill."""
    import dataclasses

    from advisor.eval.chartok import build_tokenizer
    from scripts.train_bundled import TrainConfig, build_model, save

    cfg = dataclasses.replace(TrainConfig(), num_experts=16, num_experts_per_tok=2, expert_intermediate_size=64)
    tok = build_tokenizer()
    out = tmp_path_factory.mktemp("llada") / "wide"
    save(build_model(cfg, tok).eval(), tok, out, {"task": "toy", "test": True}, "float32")
    return out



def test_nf4_recipe_for_narrow_experts_says_the_cpu_kernel_cannot_load_it():
    """The bundled model's 16-wide experts do not fill bitsandbytes' 64-wide NF4 blocks: the export says so, and
    its automatic choice does not write that recipe."""
    plan = PrecisionPlan(default="nf4")
    narrow = export_point(_llada_point(plan, "bundled", 64, 16), "hf").data
    wide = export_point(_llada_point(plan, "wide", 16, 64), "hf").data
    assert any("blocks of 64" in n and "16 wide" in n for n in narrow["bitsandbytes"]["notes"])
    assert narrow["method"] != "bitsandbytes"
    assert not any("blocks of 64" in n for n in wide["bitsandbytes"]["notes"])

@pytest.mark.parametrize("fmt,cls", [("int8", "Linear8bitLt"), ("nf4", "Linear4bit")])
def test_bitsandbytes_recipe_runs_through_the_advisor_loader(fmt, cls, request):
    pytest.importorskip("bitsandbytes")
    from advisor.models.load import load_model

    spec, n_experts, inter = ("bundled", 64, 16) if fmt == "int8" else (str(request.getfixturevalue("wide_llada_dir")),
                                                                       16, 64)
    plan = PrecisionPlan(default=fmt, layers={2: "bf16"}, experts={1: {3: "bf16"}})
    # 8 slots per layer: asked for (the automatic choice runs that cache through the advisor loader)
    res = export_point(_llada_point(plan, spec, n_experts, inter), "hf", ["method=bitsandbytes"])
    assert res.data["method"] == "bitsandbytes" and "'bundled'" not in res.text
    model = _run(res.text)["model"]
    quantized = {n for n, m in model.named_modules() if type(m).__name__ == cls}
    want = {f"model.layers.{layer}.mlp.experts.{e}.{p}_proj" for layer in range(4) for e in range(n_experts)
            for p in ("gate", "up", "down") if plan.format_for(layer, e) == fmt}
    assert quantized == want
    with torch.no_grad():
        got = model(input_ids=IDS).logits.float()
        ref = load_model(spec).model(input_ids=IDS).logits.float()
    assert torch.isfinite(got).all()
    # the experts computed with the quantized weights: close to, but not the same as, full precision
    assert 0 < (got - ref).abs().max() < 0.25 * ref.abs().max()


@pytest.fixture(scope="module")
def tiny_qwen_dir(tmp_path_factory):
    from advisor.models.tiny import build_tiny

    d = tmp_path_factory.mktemp("qwen3moe")
    build_tiny("qwen3_moe").save_pretrained(d)
    return d


def test_torchao_int8_recipe_quantizes_fused_experts_and_runs(tiny_qwen_dir):
    pytest.importorskip("torchao")
    meta = model_meta("qwen3_moe", n_layers=2, n_experts=8, hidden=32, inter=16)
    p = point("s", 1, "default=int8;layers=1:bf16", [4, 2], acc=0.9, h2d=1, peak_gib=1, meta=meta, model=str(tiny_qwen_dir))
    res = export_point(p, "hf")
    assert res.data["method"] == "torchao" and "experts_implementation='eager'" in res.text
    model = _run(res.text)["model"]
    kinds = {n: type(t).__name__ for n, t in model.named_parameters() if ".experts." in n}
    assert kinds == {"model.layers.0.mlp.experts.gate_up_proj": "Int8Tensor",
                     "model.layers.0.mlp.experts.down_proj": "Int8Tensor",
                     "model.layers.1.mlp.experts.gate_up_proj": "Parameter",
                     "model.layers.1.mlp.experts.down_proj": "Parameter"}
    assert type(model.model.layers[0].self_attn.q_proj.weight).__name__ == "Parameter"
    with torch.no_grad():
        assert torch.isfinite(model(input_ids=IDS).logits).all()


def test_advisor_recipe_runs_and_tiny_specs_get_only_it():
    plan = PrecisionPlan(default="int4", layers={0: "int8"})
    meta = model_meta("llada_moe", n_layers=2, n_experts=8, hidden=32, inter=16)
    p = point("s", 1, plan.spec, [4, 2], acc=0.9, h2d=1, peak_gib=1, meta=meta, model="tiny:llada_moe")
    res = export_point(p, "hf")
    assert res.data["method"] == "advisor"
    ns = _run(res.text)
    assert ns["plan"] == plan and ns["runtime"].capacity == [4, 2]
    with torch.no_grad():
        assert torch.isfinite(ns["model"](input_ids=IDS).logits).all()
    with pytest.raises(UserError, match="transformers cannot load this model spec"):
        export_point(p, "hf", ["method=bitsandbytes"])


def test_advisor_recipe_leaves_a_checkpoints_experts_in_it():
    """For a checkpoint the advisor recipe loads offloaded, as an offloaded study runs: the routed experts stay
    in the checkpoint (meta parameters), the runtime's host store and slots hold the plan's experts, and it
    generates. (It loaded the whole model on the CPU and put the runtime on the GPU, which cannot compute.)"""
    plan = PrecisionPlan.uniform("int8")
    res = export_point(_llada_point(plan, "bundled", 64, 16), "hf", ["method=advisor"])
    assert res.data["method"] == "advisor" and "offload=True" in res.text
    ns = _run(res.text)
    loaded, runtime = ns["loaded"], ns["runtime"]
    assert loaded.offloaded and runtime.capacity == [8] * 4
    assert all(p.is_meta for n, p in loaded.model.named_parameters() if ".experts." in n)
    out = ns["generate_ids"](IDS, max_new_tokens=8)
    assert out.shape == (1, 8) and runtime.stats().lookups > 0


def test_hqq_and_impossible_back_ends_are_refused_with_the_reason():
    p = _llada_point(PrecisionPlan.uniform("int8"), "bundled", 64, 16)
    with pytest.raises(UserError, match="HQQ is not available yet"):
        export_point(p, "hf", ["method=hqq"])
    with pytest.raises(UserError, match="list-layout models load through the advisor's loader"):
        export_point(p, "hf", ["method=torchao"])
    fused = point("s", 1, "int8", 2, acc=0.9, h2d=1, peak_gib=1, meta=model_meta("qwen3_moe", 2, 4), model="a/b")
    with pytest.raises(UserError, match="fused 3-D parameters"):
        export_point(fused, "hf", ["method=bitsandbytes"])


def test_export_check_validates_with_each_targets_own_code(tmp_path):
    from recommend_helpers import make_db
    from typer.testing import CliRunner

    from advisor.cli import app

    llada = model_meta("llada_moe", n_layers=4, n_experts=64, hidden=128, inter=16)
    qwen = model_meta("qwen3_moe", n_layers=2, n_experts=8, hidden=32, inter=16)
    url = make_db(tmp_path / "a.db", [
        point("l", 1, "default=int4;layers=0:int8", 8, acc=0.9, h2d=1e6, peak_gib=1, meta=llada, model="bundled"),
        point("q", 1, "default=int8;layers=1:bf16", [4, 2], acc=0.9, h2d=1, peak_gib=1, meta=qwen, model="Qwen/x")])
    runner = CliRunner()

    def check(study, target, *opts):
        r = runner.invoke(app, ["export", study, "1", "--to", target, "--check", "--storage", url, *opts])
        assert r.exit_code == 0, (target, r.output[-2000:])
        return [line for line in said_lines(r.stderr) if line.startswith("check ")]

    assert check("l", "llama.cpp") == [
        "check llama.cpp: ok: 12 expert tensors are llada-moe tensor names (gguf 0.19.0), each matched by exactly one "
        "tensor-type rule with a ggml type that fits its row width; no -ot rules to check (placement by -ngl 1 "
        "alone)",  # a diffusion script has none (it said "-ot rules do not overlap")
        "check llama.cpp: not checked: llama-quantize / llama-diffusion-cli runs (need a converted GGUF and the tools; "
        "benchmarks/exports_in_runtimes.py does it)"]
    ar = check("q", "llama.cpp")  # an AR model's script runs llama-server with -ot rules, not llama-diffusion-cli
    assert ar[0].endswith("-ot rules do not overlap") and ar[1].startswith(
        "check llama.cpp: not checked: llama-quantize / llama-server runs"), ar
    on_tiny = "a tiny qwen3_moe model saved to disk"
    for study, opts, method, on in [("l", ["--opt", "method=bitsandbytes"], "bitsandbytes", "the bundled model itself"),
                                    ("l", [], "advisor", "the bundled model itself"), ("q", [], "torchao", on_tiny)]:
        lines = check(study, "hf", *opts)
        assert lines[0] == "check hf: ok: the recipe parses as Python"
        assert lines[1].startswith(f"check hf: ok: the {method} recipe ran as written on {on} "), lines
        assert lines[2:] == ([] if study == "l" else ["check hf: not checked: the recipe on Qwen/x itself (not "
                                                      "downloaded by the check; run the recipe to load it)"]), lines
    vllm = check("q", "vllm")
    assert ("not checked" in vllm[0]) == (importlib.util.find_spec("vllm") is None)
    assert check("q", "ktransformers")[0] == "check ktransformers: ok: the launch script parses in bash"
    assert check("l", "json")[0].startswith("check json: ok")


@pytest.mark.parametrize("family", ["llada_moe", "llada2"])
def test_export_check_runs_a_checkpoint_studys_advisor_recipe_offloaded_as_written(tmp_path, family):
    """A study of a local checkpoint (not bundled, not tiny:) exports the advisor's recipe, which loads it
    offloaded (`load_model(DIR, ..., offload=True)`). `--check` runs that recipe on a tiny model of the family
    saved to disk; it named `tiny:FAMILY` in the recipe instead, which offloaded loading refuses, so the check of
    every such export (README: `advisor export llada-moe-12g 17 --to hf -o recipe.py --check`) FAILED."""
    from recommend_helpers import make_db
    from typer.testing import CliRunner

    from advisor.cli import app

    meta = model_meta(family, n_layers=4, n_experts=64, hidden=128, inter=16)
    ckpt = str(tmp_path / "LLaDA-checkpoint")
    url = make_db(tmp_path / "a.db", [point("c", 3, "int8", 8, acc=0.9, h2d=1e6, peak_gib=1, meta=meta, model=ckpt)])
    r = CliRunner().invoke(app, ["export", "c", "3", "--to", "hf", "-o", str(tmp_path / "recipe.py"), "--check",
                                 "--storage", url])
    assert r.exit_code == 0, r.output[-2000:]
    assert f"load_model({ckpt!r}, device='cuda' if gpu else 'cpu', offload=True)" in (tmp_path / "recipe.py").read_text()
    lines = [line for line in said_lines(r.stderr) if line.startswith("check ")]
    assert lines[0] == "check hf: ok: the recipe parses as Python"
    assert lines[1].startswith(f"check hf: ok: the advisor recipe ran as written on a tiny {family} model saved to "
                               "disk (transformers "), lines
    assert lines[1].endswith("plan and cache attached, forward finite"), lines
    # the path, longer than an 80-column line, is folded at its edge: compared without the break
    assert [ln.replace(" ", "") for ln in lines[2:]] == [
        f"check hf: not checked: the recipe on {ckpt} itself (not downloaded by the check; run the recipe to load "
        "it)".replace(" ", "")], lines


def test_a_tide_recipe_runs_tides_step_schedule(tmp_path):
    """A TIDE point (tau 3; the study decoded 16 tokens in blocks of 4 with 4 steps each, as a trial now stores):
    the exported recipe says its refresh steps, and its generate_ids runs them - the GPU expert set changes only
    on a refresh step (every step of the first block, else every 3rd; never a block's last step). Without the
    steps per block it would change on steps 3; without step context, on every 3rd forward (e.g. block 1 step 2)."""
    import subprocess
    import sys

    from recommend_helpers import make_db

    meta = model_meta("llada_moe", n_layers=2, n_experts=8, hidden=32, inter=16)
    p = point("tide", 7, "int8", [2, 2], acc=0.9, h2d=1, peak_gib=1, meta=meta, model="tiny:llada_moe")
    p.config.update(policy="tide", tau=3, decoding={"generate": {"max_new_tokens": 16, "seed": 0, "steps": 16,
                                                                 "block_length": 4}, "steps_per_block": 4})
    url = make_db(tmp_path / "a.db", [p])
    recipe = tmp_path / "recipe.py"
    r = subprocess.run([sys.executable, "-m", "advisor", "export", "tide", "7", "--to", "hf", "-o", str(recipe),
                        "--storage", url], capture_output=True, text=True, timeout=120)
    assert r.returncode == 0, r.stderr
    text = recipe.read_text()
    assert "policy_kw={'tau': 3, 'steps_per_block': 4}" in text
    assert "it refreshes at steps 0, 1, 2 of the first block and 0 of every later one" in text
    ns = _run(text)
    runtime = ns["runtime"]
    seen: list[tuple[int, int, tuple]] = []  # (block, step, resident experts of every layer before that forward)

    def resident() -> tuple:
        return tuple(frozenset(c.policy.resident) for c in runtime.caches)

    inner = runtime.on_forward
    runtime.on_forward = lambda info: (seen.append((info.block, info.step, resident())), inner(info))
    out = ns["generate_ids"](IDS)
    assert out.shape == (1, 16)
    seen.append((-1, -1, resident()))
    assert [(b, s) for b, s, _ in seen[:-1]] == [(b, s) for b in range(4) for s in range(4)]
    changed = {(b, s) for (b, s, before), (_, _, after) in zip(seen, seen[1:], strict=False) if before != after}
    allowed = {(b, s) for b in range(4) for s in range(4) if s != 3 and (b == 0 or s % 3 == 0)}
    assert changed <= allowed, changed - allowed
    assert changed & {(0, 1), (0, 2)} and changed & {(1, 0), (2, 0), (3, 0)}, changed  # both rules were exercised


def test_fused_recipes_torchao_cannot_load_go_through_the_advisor_loader_and_a_check_that_quantizes_nothing_fails(
        tmp_path):
    """Exports of a real study's points (`advisor tune` on a DiffusionGemma checkpoint, and an int2 plan on fused
    experts) wrote torchao recipes that could not work: DiffusionGemma's experts are shared by its encoder and
    decoder and transformers' torchao loading quantized none of them (`--check` said ok: "0 quantized expert
    tensors/modules"), and IntxWeightOnlyConfig (int2/int3) refuses 3-D weights, so the load failed. Both now use
    the advisor's loader (the plan as tuned), `--opt method=torchao` says why not, and a recipe that quantizes no
    expert of a quantized plan fails the check."""
    from recommend_helpers import make_db
    from typer.testing import CliRunner

    from advisor.cli import app
    from advisor.export.check import check
    from advisor.results.config_view import export_config

    qwen = model_meta("qwen3_moe", n_layers=2, n_experts=8, hidden=32, inter=16)
    dg = dict(qwen, family="diffusion_gemma", is_diffusion=True,
              layers=[dict(x, name=f"model.decoder.layers.{i}.experts") for i, x in enumerate(qwen["layers"])])
    url = make_db(tmp_path / "a.db", [point("d", 1, "int8", [4, 2], acc=0.9, h2d=1, peak_gib=1, meta=dg, model="x/dg"),
                                      point("q", 1, "int2", [4, 2], acc=0.9, h2d=1, peak_gib=1, meta=qwen, model="x/q")])
    runner = CliRunner()
    for study, why in (("d", "share their experts"), ("q", "quantizes 2-D and 4-D weights only")):
        r = runner.invoke(app, ["export", study, "1", "--to", "hf", "--storage", url])
        assert r.exit_code == 0 and "# recipe: advisor" in r.stdout and "load_model('x/" in r.stdout, r.output[-800:]
        r = runner.invoke(app, ["export", study, "1", "--to", "hf", "--opt", "method=torchao", "--storage", url])
        assert isinstance(r.exception, UserError) and why in str(r.exception), r.output[-800:]
    misnamed = dict(qwen, layers=[dict(x, name=f"model.blocks.{i}.mlp.experts") for i, x in enumerate(qwen["layers"])])
    p = point("m", 1, "int8", [4, 2], acc=0.9, h2d=1, peak_gib=1, meta=misnamed, model="x/m")
    res = export_point(p, "hf")
    assert res.data["method"] == "torchao"
    lines = [c.line() for c in check(res, export_config(p.config, p.model))]
    assert any("FAILED" in line and "quantized no expert" in line for line in lines), lines


def test_the_bundled_recipe_run_as_a_script_answers_quietly_and_reports_its_cache(tmp_path):
    """`python recipe.py` (what the README says to run): the bundled model's answer to the default prompt, the
    expert cache's counters, and nothing on stderr (torchao's kernel-loading warnings were printed there)."""
    import subprocess
    import sys
    from pathlib import Path

    db = Path(__file__).resolve().parents[1] / "studies" / "example" / "advisor.db"
    recipe = tmp_path / "recipe.py"
    r = subprocess.run([sys.executable, "-m", "advisor", "export", "bundled-example", "129", "--to", "hf", "-o",
                        str(recipe), "--storage", str(db)], capture_output=True, text=True, timeout=120)
    assert r.returncode == 0, r.stderr
    run = subprocess.run([sys.executable, str(recipe)], capture_output=True, text=True, timeout=300, cwd=tmp_path)
    assert run.returncode == 0, run.stderr
    assert "#### 40" in run.stdout and "expert cache: hit rate" in run.stdout, run.stdout
    assert run.stderr == "", run.stderr
    # trial 129's misses are hybrid: the recipe's runtime splits them by the study's time model (its stored CPU
    # expert times), copying some and computing the rest on the CPU - it copied every one before
    assert "miss='hybrid'" in recipe.read_text() and "miss policy hybrid: the recipe's OffloadRuntime balances" in flat(r.stderr)
    # each number beside its source: the counters counted, the transfer time printed beside the model's label (the
    # label stood beside the counted copies, with no time printed)
    m = re.search(r"in (\d+) copies, (\d+) misses computed on the CPU \((\d+) tokens\) \(counted\); host->device "
                  r"time \d+\.\d\d ms \(modelled:pcie\(", " ".join(run.stdout.split()))
    assert m and min(map(int, m.groups())) > 0, run.stdout


def test_a_hybrid_point_without_the_studys_cpu_times_copies_its_misses_and_says_so():
    """A study stored before it kept its CPU expert times gives the recipe no time model to balance with."""
    plan = PrecisionPlan(default="int4")
    meta = model_meta("llada_moe", n_layers=2, n_experts=8, hidden=32, inter=16)
    p = point("s", 1, plan.spec, [4, 2], acc=0.9, h2d=1, peak_gib=1, meta=meta, model="tiny:llada_moe")
    p.config["miss_policy"] = "hybrid"
    res = export_point(p, "hf")
    assert res.data["advisor_loader"]["offload"]["miss"] == "copy" and "costs" not in res.data["advisor_loader"]
    assert any("modelled miss policy hybrid" in n and "speed differs" in n for n in res.notes), res.notes
    assert _run(res.text)["runtime"].capacity == [4, 2]


def test_a_static_hot_point_exports_its_profiled_hot_set_and_its_recipe_runs(tmp_path):
    """static_hot pins each layer's most-routed experts of the study's calibration routing: the hf recipe and the
    JSON carry that set (the recipe crashed without it), and a point stored without the routing is refused in
    one line instead of printing a recipe that cannot run."""
    import json
    import subprocess
    import sys

    meta = model_meta("llada_moe", n_layers=2, n_experts=8, hidden=32, inter=16)
    p = point("hot", 4, "int8", [3, 2], acc=0.9, h2d=1, peak_gib=1, meta=meta, model="tiny:llada_moe")
    p.config.update(policy="static_hot", routing_counts={"0": [1, 9, 4, 9, 0, 2, 7, 3], "1": [5, 0, 0, 8, 1, 1, 1, 1]})
    text = export_point(p, "hf").text
    assert "hot={0: [1, 3, 6], 1: [3, 0]}" in text  # most routed first, ties by index, as many as the slots
    runtime = _run(text)["runtime"]
    assert [set(c.policy.hot) for c in runtime.caches] == [{1, 3, 6}, {0, 3}]
    doc = json.loads(export_point(p, "json").text)
    assert doc["cache"]["hot"] == {"0": [1, 3, 6], "1": [3, 0]}

    db, trial = example_without_hot_set(tmp_path)  # an example trial as stored before the routing was
    r = subprocess.run([sys.executable, "-m", "advisor", "export", "bundled-example", str(trial), "--to", "hf",
                        "--storage", str(db)], capture_output=True, text=True, timeout=120)
    assert r.returncode == 2 and r.stderr.strip().splitlines()[-1].startswith("error: this static_hot point stored "
                                                                               "no calibration routing"), r.stderr
    r = subprocess.run([sys.executable, "-m", "advisor", "export", "bundled-example", str(trial), "--to", "hf",
                        "--storage", str(EXAMPLE_DB)], capture_output=True, text=True, timeout=120)
    assert r.returncode == 0 and "hot={0: [" in r.stdout, r.stderr  # the example stores it: that is all that differs


def test_the_recipes_gpu_max_memory_is_the_tuned_peak_to_the_mib():
    """accelerate's max_memory for the GPU was rounded up to whole GiB: an 11.5 GiB point let 12 GiB be placed."""
    meta = model_meta("qwen3_moe", n_layers=2, n_experts=8, hidden=32, inter=16)
    p = point("s", 1, "int8", [4, 4], acc=0.9, h2d=1, peak_gib=11.5, meta=meta)
    assert export_point(p, "hf").data["max_memory"][0] == "11776MiB"


def test_a_recipe_for_a_point_that_keeps_experts_off_the_gpu_runs_its_cache(tmp_path):
    """A study of a model bigger than the GPU (LLaDA-MoE, int8, 26 of 64 experts per layer on the GPU): `advisor
    export --to hf` wrote the bitsandbytes recipe, which loads every expert onto the GPU - more than the point's
    peak, more than the GPU - with no cache, and its notes said it used device_map='auto' + max_memory, which it
    does not. Now the automatic choice is the advisor loader (offloaded, the tuned cache); asked for, bitsandbytes
    says what it holds; a point with every expert on the GPU still gets bitsandbytes."""
    from recommend_helpers import make_db
    from typer.testing import CliRunner

    from advisor.cli import app

    meta = model_meta("llada_moe", n_layers=4, n_experts=64, hidden=256, inter=128)
    url = make_db(tmp_path / "a.db", [point("big", 3, "int8", [27, 26, 26, 26], acc=0.9, h2d=2e6, peak_gib=0.016,
                                            meta=meta, model=str(tmp_path / "LLaDA-MoE")),
                                      point("all", 1, "int8", 64, acc=0.9, h2d=0, peak_gib=1, meta=meta,
                                            model=str(tmp_path / "LLaDA-MoE"))])
    runner = CliRunner()
    r = runner.invoke(app, ["export", "big", "3", "--to", "hf", "--storage", url])
    assert r.exit_code == 0, r.output[-2000:]
    assert "# recipe: advisor" in r.stdout and "offload=True" in r.stdout, r.stdout
    assert "slots_per_layer=[27, 26, 26, 26]" in r.stdout and "BitsAndBytesConfig" not in r.stdout
    assert "device_map" not in r.stderr, r.stderr
    r = runner.invoke(app, ["export", "big", "3", "--to", "hf", "--opt", "method=bitsandbytes", "--storage", url])
    assert r.exit_code == 0 and "# recipe: bitsandbytes" in r.stdout, r.output[-2000:]
    assert "device_map" not in r.stderr and "device_map" not in r.stdout, r.output  # the recipe never uses it
    assert "bitsandbytes loads every expert onto the GPU (64 per MoE layer)" in flat(r.stderr), r.stderr
    assert "holds 26..27 per layer" in flat(r.stderr) and "--opt method=advisor" in flat(r.stderr), r.stderr
    r = runner.invoke(app, ["export", "all", "1", "--to", "hf", "--storage", url])
    assert r.exit_code == 0 and "# recipe: bitsandbytes" in r.stdout, r.output[-2000:]
    assert "loads every expert" not in r.output
    # the same count in every layer reads as one number (it read "holds 32-32 per layer")
    even = export_point(point("even", 2, "int8", 32, acc=0.9, h2d=1e6, peak_gib=0.01, meta=meta,
                              model=str(tmp_path / "LLaDA-MoE")), "hf", ["method=bitsandbytes"])
    assert any("the study's point holds 32 per layer there" in n for n in even.notes), even.notes


def test_export_check_prints_its_verdict_not_the_runtimes_noise(tmp_path):
    """`advisor export ... --to hf --check` of a bitsandbytes recipe printed save_pretrained's progress bar,
    bitsandbytes' failed hub-kernel lookup and one 'MatMul8bitLt: inputs will be cast' line per 8-bit expert
    forward (64 on a 4-layer model) around its three check lines. Now only the check's own lines."""
    pytest.importorskip("bitsandbytes")
    import subprocess
    import sys

    from recommend_helpers import make_db

    meta = model_meta("llada_moe", n_layers=4, n_experts=64, hidden=256, inter=128)
    url = make_db(tmp_path / "a.db", [point("all", 1, "int8", 64, acc=0.9, h2d=0, peak_gib=1, meta=meta,
                                            model=str(tmp_path / "LLaDA-MoE"))])
    r = subprocess.run([sys.executable, "-m", "advisor", "export", "all", "1", "--to", "hf", "--check", "--storage",
                        url], capture_output=True, text=True, timeout=300, cwd=tmp_path)
    assert r.returncode == 0, r.stderr[-2000:]
    assert "# recipe: bitsandbytes" in r.stdout
    lines = [ln for ln in said_lines(r.stderr) if ln.strip()]
    assert lines and all(ln.startswith(("check hf: ", "note: ")) for ln in lines), lines
    assert "check hf: ok: the bitsandbytes recipe ran as written on a tiny llada_moe model" in flat(r.stderr)


def test_export_check_of_a_torchao_int4_recipe_without_cuda_says_not_checked_not_failed(tmp_path):
    """A Qwen3-MoE study's int4 point exported with `--to hf --check` on a CPU machine said `check hf: FAILED: the
    torchao recipe ran ... but quantized no expert` and exited 1: torchao's int4 kernels need CUDA (the export's own
    note says so), so on a CPU the check cannot judge the recipe - it says so and the export exits 0."""
    import torch
    from recommend_helpers import make_db
    from typer.testing import CliRunner

    from advisor.cli import app

    if torch.cuda.is_available():
        pytest.skip("a GPU runs the int4 recipe")
    qwen = model_meta("qwen3_moe", n_layers=2, n_experts=8, hidden=256, inter=256)
    url = make_db(tmp_path / "a.db", [point("q", 1, "int4", 2, acc=0.9, h2d=1, peak_gib=1, meta=qwen, model="Qwen/x")])
    r = CliRunner().invoke(app, ["export", "q", "1", "--to", "hf", "--check", "--storage", url])
    assert r.exit_code == 0, r.output[-2000:]
    lines = [line for line in said_lines(r.stderr) if line.startswith("check ")]
    assert lines == ["check hf: ok: the recipe parses as Python",
                     "check hf: not checked: running the torchao recipe: its int4 experts need CUDA (torchao's int4 "
                     "kernels) and this machine has no GPU; run --check on one"], lines
