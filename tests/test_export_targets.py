"""HF recipes applied with transformers' own code; vLLM refusal/args; KTransformers flags; JSON round trip; CLI."""

from __future__ import annotations

import json
import os
import re
import shlex
import signal
import stat
import subprocess
import sys
import types
from pathlib import Path

import pytest
from cli_helpers import advisor_entry, advisor_in_process, flat, said_lines
from recommend_helpers import GiB, make_db, model_meta, point, standard_front
from torch import nn

from advisor.errors import UserError
from advisor.export.base import export_point
from advisor.export.json_format import load
from advisor.quant.plan import PrecisionPlan
from advisor.units import format_bytes


class _MLP(nn.Module):
    def __init__(self):
        super().__init__()
        self.gate_proj, self.up_proj, self.down_proj = nn.Linear(8, 4), nn.Linear(8, 4), nn.Linear(4, 8)


class _Layer(nn.Module):
    def __init__(self, n_experts):
        super().__init__()
        self.self_attn = nn.Module()
        self.self_attn.q_proj = nn.Linear(8, 8)
        self.mlp = nn.Module()
        self.mlp.gate = nn.Linear(8, n_experts)
        self.mlp.experts = nn.ModuleList(_MLP() for _ in range(n_experts))
        self.mlp.shared_experts = _MLP()


class TinyListMoE(nn.Module):
    """A list-layout MoE with LLaDA2's module paths (layer 0 dense)."""

    def __init__(self, n_layers=3, n_experts=4):
        super().__init__()
        self.model = nn.Module()
        dense = nn.Module()
        dense.mlp = _MLP()
        self.model.layers = nn.ModuleList([dense, *(_Layer(n_experts) for _ in range(n_layers))])
        self.lm_head = nn.Linear(8, 16)
        self.config = types.SimpleNamespace()  # transformers' HQQ preparation records its config here


PLAN = PrecisionPlan(default="int8", layers={1: "bf16"}, experts={2: {1: "bf16"}})


def _list_point(plan=PLAN):
    meta = model_meta("llada2", n_layers=3, n_experts=4, first_dense=1, hidden=8, inter=4)
    return point("s", 3, plan.spec, [4, 2, 1], acc=0.9, h2d=1e6, peak_gib=2, meta=meta)


def _expected_quantized(model):
    want = set()
    for layer in range(3):
        for e in range(4):
            if PLAN.format_for(layer, e) == "int8":
                want |= {f"model.layers.{layer + 1}.mlp.experts.{e}.{p}_proj" for p in ("gate", "up", "down")}
    return want


def test_bitsandbytes_recipe_quantizes_exactly_the_planned_experts():
    pytest.importorskip("bitsandbytes")
    from transformers import BitsAndBytesConfig
    from transformers.integrations.bitsandbytes import replace_with_bnb_linear

    res = export_point(_list_point(), "hf", ["method=bitsandbytes"])  # its cache: auto picks the advisor loader
    assert res.data["method"] == "bitsandbytes"
    kwargs = res.data["bitsandbytes"]["kwargs"]
    cfg = BitsAndBytesConfig(**kwargs)
    assert cfg.load_in_8bit
    model = replace_with_bnb_linear(TinyListMoE(), modules_to_not_convert=cfg.llm_int8_skip_modules, quantization_config=cfg)
    converted = {n for n, m in model.named_modules() if type(m).__name__ == "Linear8bitLt"}
    assert converted == _expected_quantized(model)
    assert "BitsAndBytesConfig(**" in res.text and "load_model(" in res.text


def test_torchao_keys_fullmatch_planned_fused_parameters():
    fused = point("s", 1, "default=int4;layers=0:int8", 2, acc=0.9, h2d=1, peak_gib=1, meta=model_meta("qwen3_moe", 2, 4))
    r = export_point(fused, "hf")
    assert r.data["method"] == "torchao" and r.data["bitsandbytes"]["kwargs"] is None
    k = {v: key[3:] for key, v in r.data["torchao"]["fqn_to_config"].items()}
    assert re.fullmatch(k["Int8WeightOnlyConfig()"], "model.layers.0.mlp.experts.gate_up_proj")
    assert not re.fullmatch(k["Int8WeightOnlyConfig()"], "model.layers.1.mlp.experts.down_proj")
    assert re.fullmatch(k["Int4WeightOnlyConfig(group_size=128)"], "model.layers.1.mlp.experts.down_proj")


def test_vllm_refuses_llada_serves_diffusiongemma_and_offloads_in_gib():
    with pytest.raises(UserError, match="vLLM serves no diffusion LLM but DiffusionGemma"):
        export_point(_list_point(), "vllm")
    meta = model_meta("qwen3_moe", n_layers=2, n_experts=8, hidden=2048, inter=768)
    res = export_point(point("s", 1, "bf16", [4, 2], acc=0.9, h2d=1, peak_gib=1, meta=meta), "vllm")
    args = res.data["args"]
    assert args[:3] == ["vllm", "serve", "tiny-llada"] and "--quantization" not in args
    # 10 bf16 experts in host memory: 3 x 2048 x 768 x 2 bytes each, read as GiB
    one = 3 * 2048 * 768 * 2
    gib = float(args[args.index("--cpu-offload-gb") + 1])
    assert gib == res.data["cpu_offload_gb"] == 10 * one / 2**30
    everything = export_point(point("s", 1, "default=int8;layers=1:bf16", [8, 8], acc=0.9, h2d=1, peak_gib=1, meta=meta),
                              "vllm")
    assert everything.data["args"][everything.data["args"].index("--quantization") + 1] == "experts_int8"
    assert any("bf16 are quantized" in n for n in everything.notes)
    assert "--cpu-offload-gb" not in everything.data["args"] and any("nothing offloaded" in n for n in everything.notes)
    dg = dict(meta, family="diffusion_gemma", is_diffusion=True, layers=[dict(x, name=f"model.decoder.layers.{i}.experts")
                                                                         for i, x in enumerate(meta["layers"])])
    assert export_point(point("s", 1, "int8", [4, 2], acc=0.9, h2d=1, peak_gib=1, meta=dg), "vllm").data["args"][1] == "serve"


def test_vllm_offloads_exactly_the_bytes_the_tuned_cache_leaves_off_the_gpu(tmp_path):
    """vLLM reads --cpu-offload-gb as a float number of GiB and moves whole parameters (w13, then w2, of all of a
    layer's experts, layer by layer) while it has moved fewer than `int(value * 1024**3)` bytes
    (`UVAOffloader._maybe_offload_to_cpu`). The export rounded the bytes up to 0.01 GiB: where the tuned cache leaves
    exactly the first layer's experts off the GPU, vLLM then moved the second layer's w13 too, and the GPU kept a
    third of the cache's bytes. The value is exact now."""
    meta = model_meta("qwen3_moe", n_layers=2, n_experts=8, hidden=2048, inter=768)
    url = make_db(tmp_path / "a.db", [point("s", 1, "bf16", [4, 4], acc=0.9, h2d=1, peak_gib=1, meta=meta)])
    r = _cli("export", "s", "1", "--to", "vllm", "--storage", url)
    assert r.returncode == 0, r.stderr
    args = shlex.split(r.stdout.strip().splitlines()[-1])
    limit = int(float(args[args.index("--cpu-offload-gb") + 1]) * 1024**3)  # as vLLM reads it
    one = 3 * 2048 * 768 * 2  # a bf16 expert
    assert limit == 8 * one, limit  # 16 experts, 8 in the tuned cache
    moved = 0
    for nbytes in [8 * 2 * 768 * 2048 * 2, 8 * 2048 * 768 * 2] * 2:  # w13 then w2 of each layer, as vLLM moves them
        if moved >= limit:
            break
        moved += nbytes
    assert 16 * one - moved == 8 * one  # the GPU keeps the tuned cache's bytes


def test_ktransformers_flags_per_layer_and_weight_path_placeholder(tmp_path):
    res = export_point(_list_point(), "ktransformers")
    args = res.data["args"]
    flag = {a: args[i + 1] for i, a in enumerate(args) if a.startswith("--")}
    # slots [4, 2, 1] of the plan's experts over 3 MoE layers; GPU experts load as bf16 from --model-path, so the
    # count is the bf16 experts those bytes hold per layer: 2 (never more GPU memory than tuned)
    assert flag["--kt-num-gpu-experts"] == "2" and flag["--kt-method"] == "BF16"  # one method: layer 1 is bf16
    int8 = export_point(_list_point(PrecisionPlan.uniform("int8")), "ktransformers", ["kt_method=amxint8"])
    assert int8.data["kt_method"] == "AMXINT8"  # the host's CPU decides without the option (next test)
    meta = model_meta("qwen3_moe", n_layers=3, n_experts=64, hidden=2048, inter=1024)
    int4 = export_point(point("s", 3, "int4", [40, 40, 40], acc=0.9, h2d=1, peak_gib=1, meta=meta), "ktransformers")
    from advisor.quant.spec import expert_nbytes_of

    n, tuned = int4.data["kt_num_gpu_experts"], 40 * expert_nbytes_of("int4", 2048, 1024)
    assert n * expert_nbytes_of("bf16", 2048, 1024) <= tuned < (n + 1) * expert_nbytes_of("bf16", 2048, 1024)
    assert 9 <= n < 40  # int4 experts are ~3.8x smaller than the bf16 ones SGLang puts on the GPU
    assert flag["--kt-weight-path"] == "$KT_WEIGHT_PATH" and "--kt-expert-placement-strategy" not in args
    assert any("placeholder you must fill" in n for n in res.notes) and "match:" not in res.text
    script = tmp_path / "kt.sh"
    script.write_text(res.text)
    r = subprocess.run(["bash", str(script)], capture_output=True, text=True, env={"PATH": "/usr/bin:/bin"})
    assert r.returncode != 0 and "set KT_WEIGHT_PATH" in r.stderr  # refuses to launch until it is filled


def test_ktransformers_picks_the_int8_method_this_hosts_cpu_runs(tmp_path, monkeypatch):
    """An int8/int4 plan always got --kt-method AMXINT8/AMXINT4 (only a note said AMX was needed), which kt-kernel's
    avx2 build (a CPU without AVX-512F/BW: most desktops, AMD before Zen 4) does not have. The method now follows the
    exporting host's CPU flags (AMX or AVX-512F/BW: the AMX method and kt-kernel's converted weights; else LLAMAFILE
    and a GGUF directory), a note says so and that the serving machine may differ, and --opt kt_method overrides it."""
    from cli_helpers import one_error_line

    from advisor.hardware import profiles

    meta = model_meta("qwen3_moe", n_layers=2, n_experts=8, hidden=2048, inter=768)
    url = make_db(tmp_path / "a.db", [point("s", 1, "int8", [4, 4], acc=0.9, h2d=1, peak_gib=1, meta=meta)])
    cpuinfo = tmp_path / "cpuinfo"
    monkeypatch.setattr(profiles, "CPUINFO", str(cpuinfo))

    def export(flags, *opts):
        cpuinfo.write_text(f"processor\t: 0\nflags\t\t: fpu sse2 {flags}\n\n")
        return _cli("export", "s", "1", "--to", "ktransformers", "--json", "--storage", url,
                    *(a for o in opts for a in ("--opt", o)))

    def method(flags, *opts):
        r = export(flags, *opts)
        assert r.returncode == 0, r.stderr
        data = json.loads(r.stdout)
        weights = next(n for n in data["notes"] if "placeholder you must fill" in n)
        return data["kt_method"], data.get("kt_method_why", ""), weights

    avx2, why, weights = method("avx avx2 fma")  # was AMXINT8, which kt-kernel's avx2 build has not
    assert avx2 == "LLAMAFILE" and "neither AMX nor AVX-512F/BW" in why and "GGUF directory" in weights, why
    amx, why, weights = method("avx2 avx512f avx512bw amx_tile amx_int8 amx_bf16")
    assert amx == "AMXINT8" and "has AMX" in why and "serving machine's may differ" in why, why
    assert "convert_cpu_weights.py --input-path <the checkpoint> --input-type bf16 --quant-method int8" in weights
    avx512, why, _ = method("avx2 avx512f avx512bw")  # Zen 4, Skylake-X: kt-kernel's avx512 build
    assert avx512 == "AMXINT8" and "no AMX but AVX-512F/BW" in why, why
    assert method("avx2", "kt_method=AMXINT8")[:2] == ("AMXINT8", "given with --opt kt_method")
    one_error_line(export("avx2", "kt_method=amxint9"), "kt_method", "auto, amxint8, amxint4, llamafile, bf16, fp8")
    one_error_line(export("avx2", "kt_method=amxint4"), "does not compute this plan's int8 CPU experts",
                   "amxint8 or llamafile")


def test_json_round_trip(tmp_path):
    res = export_point(_list_point(), "json")
    path = tmp_path / "x.json"
    path.write_text(res.text)
    doc = load(path)
    assert doc.precision_plan() == PLAN and doc.slots_per_layer == [4, 2, 1] and doc.policy == "lru"
    assert doc.doc["metrics"]["h2d_bytes_per_token"] == {"value": 1e6, "source": "counted"}
    assert doc.doc["model"]["moe_layers"][0]["decoder_layer"] == 1
    from advisor.quant.plan import PrecisionPlan

    assert PrecisionPlan.parse(str(path)) == PLAN  # the export file itself works as --precision FILE
    bad = tmp_path / "bad.json"
    bad.write_text(json.dumps({**doc.doc, "version": 99}))
    with pytest.raises(UserError, match="schema version 99"):
        load(bad)
    bad.write_text("[1, 2]")
    with pytest.raises(UserError, match="not a moe-advisor export"):
        load(bad)


def _cli(*args):
    """`advisor ARGS` through the console entry point in this process (`advisor_entry`: a refusal is its one
    `error:` line and exit 2, as in a process): what is checked is what the export and recommend print, not the
    process (each subprocess paid ~1 s of CPU for Python and the CLI's imports; the import checks below start
    their own)."""
    return advisor_entry(*args, cwd=Path.cwd())


def _export_hint(stdout: str) -> tuple[list[str], list[str]]:
    """recommend's `Export it:` command as argv, and every target it offers (its `--to` and the `or --to` line's)."""
    lines = stdout.splitlines()
    at = next(i for i, ln in enumerate(lines) if ln.startswith("Export it: "))
    argv = shlex.split(lines[at].removeprefix("Export it: "))
    more = lines[at + 1] if at + 1 < len(lines) else ""
    others = more.removeprefix("  or --to ").split(", ") if more.startswith("  or --to ") else []
    return argv, [argv[-1], *others]


def test_vllm_notes_give_the_offload_as_a_size_people_read_and_only_the_flag_exact(tmp_path):
    """The note said "the rest (94371840 bytes = 0.087890625 GiB at bf16) offloaded" (0.022779464721679688 GiB for
    a smaller model): --cpu-offload-gb's exact value, which the flag must carry (vLLM offloads up to those bytes),
    is no size to read in prose, nor are 9-digit byte counts. The notes give sizes; the flag stays exact."""
    meta = model_meta("qwen3_moe", n_layers=2, n_experts=8, hidden=2048, inter=768)
    url = make_db(tmp_path / "a.db", [point("s", 1, "bf16", [4, 2], acc=0.9, h2d=1, peak_gib=1, meta=meta)])
    r = _cli("export", "s", "1", "--to", "vllm", "--storage", url)
    assert r.returncode == 0, r.stderr
    lines = r.stdout.splitlines()
    args = shlex.split(lines[-1])
    exact = args[args.index("--cpu-offload-gb") + 1]
    one = 3 * 2048 * 768 * 2  # a bf16 expert; 10 of the 16 off the GPU
    assert exact == "0.087890625" and float(exact) == 10 * one / 2**30
    notes = [ln for ln in lines if ln.startswith("# note:")] + said_lines(r.stderr)
    assert notes and not [n for n in notes if exact in n or re.search(r"\d\.\d{5,}|\d{7,}", n)], notes
    assert any("the GPU keeps the tuned cache's 54.0 MiB of experts, the rest (90.0 MiB at bf16, counted from the "
               "expert shapes) offloaded: --cpu-offload-gb is those bytes exactly" in n for n in notes), notes


def test_cli_export_errors_and_output_file(tmp_path):
    url = make_db(tmp_path / "a.db", standard_front(meta=model_meta("qwen3_moe")))
    r = _cli("export", "s1", "2", "--to", "gguf2", "--storage", url)
    assert r.returncode == 2 and "available: llama.cpp, hf, vllm, ktransformers, json" in r.stderr
    r = _cli("export", "s1", "2", "--to", "llama.cpp", "--opt", "colapse=x", "--storage", url)
    assert r.returncode == 2 and "options: collapse=<highest|traffic>" in r.stderr
    r = _cli("export", "s1", "99", "--to", "json", "--storage", url)
    assert r.returncode == 2 and "front trials: 0, 1, 2" in r.stderr
    out = tmp_path / "plan.json"
    r = _cli("export", "s1", "2", "--to", "json", "-o", str(out), "--storage", url)
    assert r.returncode == 0 and load(out).precision_plan() == PrecisionPlan.uniform("int8")
    r = _cli("export", "--from-recommend", "--budget", "12GiB", "--max-accuracy-drop", "0.02", "--to", "vllm", "--storage", url)
    # every int8 expert fits the 12 GiB recommend was given (the study stored no budget): quantized, not offloaded
    assert r.returncode == 0 and "vllm serve" in r.stdout and "--quantization experts_int8" in r.stdout
    assert "within the --budget of 12.0 GiB" in flat(r.stderr) and "--cpu-offload-gb" not in r.stdout
    assert not list(tmp_path.glob(".plan.json.*"))


def test_export_never_imports_torch(tmp_path):
    url = make_db(tmp_path / "a.db", standard_front(meta=model_meta("llada_moe")))
    hot = point("hot", 1, "int8", 4, acc=0.9, h2d=1, peak_gib=1, meta=model_meta("qwen3_moe"))
    hot.config.update(policy="static_hot", routing_counts={str(i): [8 - e for e in range(8)] for i in range(4)})
    hot_url = make_db(tmp_path / "hot.db", [hot])
    code = ("import sys\nfrom advisor.cli import app\nfrom advisor.errors import UserError\n"
            "for t in ('llama.cpp', 'hf', 'ktransformers', 'json'):\n"
            # a refusal (ktransformers: SGLang serves no LLaDA-MoE) is a UserError out of app()
            f"    try:\n        app(['export', 's1', '2', '--to', t, '--storage', {url!r}])\n"
            "    except (SystemExit, UserError):\n        pass\n"
            # a static_hot point: ktransformers writes its counts file (a torch .pt) from the script, not here
            f"try:\n    app(['export', 'hot', '1', '--to', 'ktransformers', '--storage', {hot_url!r}])\n"
            "except SystemExit:\n    pass\n"
            "print('HEAVY', sorted(m for m in ('torch', 'optuna', 'transformers') if m in sys.modules))\n"
            "print('SQLALCHEMY', 'sqlalchemy' in sys.modules)")
    r = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True)
    assert "--init-expert-location kt-expert-counts.pt" in r.stdout, r.stderr[-2000:]
    assert "HEAVY []" in r.stdout, r.stdout[-500:] + r.stderr[-2000:]
    assert "SQLALCHEMY False" in r.stdout, r.stdout[-500:]  # SQLite: the stdlib fast path (advisor.results.read)


def test_vllm_flags_parse_in_vllms_own_parser():
    pytest.importorskip("vllm", reason="vLLM is not installed here: its own argument parser cannot be run")
    from vllm.model_executor.layers.quantization import QUANTIZATION_METHODS

    from advisor.export.check import parse_vllm_args

    meta = model_meta("qwen3_moe", n_layers=2, n_experts=8, hidden=2048, inter=768)
    res = export_point(point("s", 1, "int8", [4, 2], acc=0.9, h2d=1, peak_gib=1, meta=meta), "vllm")
    ns = parse_vllm_args(res.data["args"])
    assert ns.quantization == "experts_int8" and ns.cpu_offload_gb == res.data["cpu_offload_gb"]
    assert ns.quantization in QUANTIZATION_METHODS and ns.cpu_offload_params == ["w13_weight", "w2_weight"]


def test_exported_files_are_0644_and_scripts_0755(tmp_path):
    url = make_db(tmp_path / "a.db", standard_front(meta=model_meta("qwen3_moe")))
    old = os.umask(0o022)
    try:
        for to, name, mode in (("json", "plan.json", 0o644), ("llama.cpp", "run.sh", 0o755)):
            r = _cli("export", "s1", "2", "--to", to, "-o", str(tmp_path / name), "--storage", url)
            assert r.returncode == 0, r.stderr
            assert stat.S_IMODE((tmp_path / name).stat().st_mode) == mode, (name, oct((tmp_path / name).stat().st_mode))
    finally:
        os.umask(old)
    assert (tmp_path / "run.sh").read_text().startswith("#!")


@pytest.mark.parametrize("family", ["llada_moe", "llada2", "qwen3_moe"])
def test_recommend_export_hint_names_only_targets_that_export(tmp_path, family):
    """`advisor recommend`'s "Export it:" line offers the targets `advisor export` accepts for this family:
    vLLM refuses LLaDA-MoE and LLaDA2, llama.cpp LLaDA2, so a user following the hint never hits a refusal."""
    url = make_db(tmp_path / "a.db", standard_front("s1", model_meta(family)))
    r = _cli("recommend", "--storage", url, "--budget", "8GiB")
    assert r.returncode == 0, r.stderr
    argv, offered = _export_hint(r.stdout)
    assert argv[-2] == "--to" and argv[argv.index("--storage") + 1] == url, argv
    assert "json" in offered and "hf" in offered
    trial = json.loads(_cli(*argv[1:-2], "--to", "json").stdout)["source"]["trial"]
    for target in ["llama.cpp", "hf", "vllm", "ktransformers", "json"]:
        e = _cli("export", "s1", str(trial), "--storage", url, "--to", target)
        assert e.returncode == (0 if target in offered else 2), (target, offered, e.stderr)


def test_a_tiny_model_study_is_offered_only_the_targets_that_need_no_files(tmp_path):
    """A `tiny:*` model is built in code: llama.cpp, vLLM and SGLang cannot load it, so the hint offers hf and
    json only, and each of the three refuses in one line rather than printing a script that cannot run."""
    import dataclasses

    front = [dataclasses.replace(p, model="tiny:qwen3_moe") for p in standard_front("s1", model_meta("qwen3_moe"))]
    url = make_db(tmp_path / "a.db", front)
    r = _cli("recommend", "--storage", url, "--budget", "8GiB")
    assert r.returncode == 0, r.stderr
    hint = r.stdout.strip().splitlines()
    trial = re.fullmatch(r"Export it: advisor export s1 (\d+) --storage \S+ --to hf", hint[-2]).group(1)
    assert hint[-1] == "  or --to json", hint
    # the command runs as printed, pasted into a shell (`--to hf|json` piped hf's script into a command `json`)
    pasted = subprocess.run(["bash", "-c", hint[-2].removeprefix("Export it: ")], capture_output=True, text=True,
                            env={**os.environ, "PATH": f"{Path(sys.executable).parent}:{os.environ['PATH']}"})
    assert pasted.returncode == 0 and pasted.stdout.startswith("# moe-advisor export for HF"), pasted.stderr
    for target in ["llama.cpp", "vllm", "ktransformers"]:
        e = _cli("export", "s1", trial, "--storage", url, "--to", target)
        assert e.returncode == 2 and "tiny models are built in code" in e.stderr, (target, e.stderr)
    assert _cli("export", "s1", trial, "--storage", url, "--to", "llama.cpp", "--opt", "emit=tensor-types"
                ).returncode == 0  # the tensor types alone need no model files


@pytest.mark.parametrize("plan", ["int8", "fp8"])
def test_vllm_never_offloads_experts_it_quantizes_online(tmp_path, plan):
    """vLLM 0.33 quantizes a BF16 checkpoint online (`experts_int8`, and `fp8`, which it maps to fp8_per_tensor):
    `OnlineMoEMethodBase.create_weights` (model_executor/layers/quantization/online/moe_base.py) creates the expert
    parameters on the meta device, and `--cpu-offload-gb`'s `UVAOffloader._maybe_offload_to_cpu`
    (model_executor/offloader/uva.py) copies each parameter it offloads with `p.data.to(device="cpu")` while
    `make_layers` builds the model, which a meta tensor refuses ("Cannot copy out of meta tensor"). The export
    wrote both flags for every quantized point that kept experts in host memory, so `vllm serve` failed while
    building the model. Now such a point is served at the checkpoint's bf16 with the offload only, down to the
    tuned cache's bytes on the GPU, and a note says why; a point with every expert on the GPU keeps its scheme."""
    meta = model_meta("qwen3_moe", n_layers=2, n_experts=8, hidden=2048, inter=768)
    url = make_db(tmp_path / "a.db", [point("s", 1, plan, [4, 2], acc=0.9, h2d=1, peak_gib=1, meta=meta),
                                      point("s", 2, plan, [8, 8], acc=0.9, h2d=0, peak_gib=2, meta=meta)])
    r = _cli("export", "s", "1", "--to", "vllm", "--storage", url)
    assert r.returncode == 0, r.stderr
    args = shlex.split(r.stdout.strip().splitlines()[-1])
    assert args[:2] == ["vllm", "serve"] and "--quantization" not in args, args
    from advisor.quant.spec import expert_nbytes_of

    # the GPU keeps the tuned cache: 6 experts in the plan's format; the rest of the 16 bf16 experts is offloaded
    host = 16 * expert_nbytes_of("bf16", 2048, 768) - 6 * expert_nbytes_of(plan, 2048, 768)
    gib = float(args[args.index("--cpu-offload-gb") + 1])
    assert gib == host / 2**30
    assert "served without --quantization" in r.stdout and "meta device" in r.stdout
    r = _cli("export", "s", "2", "--to", "vllm", "--storage", url)
    args = shlex.split(r.stdout.strip().splitlines()[-1])
    assert "--cpu-offload-gb" not in args and args[args.index("--quantization") + 1] == {"int8": "experts_int8"}.get(plan, plan)


def test_a_refusal_names_only_targets_that_take_the_model(tmp_path):
    """llama.cpp's refusal of a tiny DiffusionGemma said `export with --to vllm`, which then refused it too (a
    tiny model is built in code): each target a refusal names must export the point (exit 0)."""
    meta = {**model_meta("qwen3_moe", n_layers=2, n_experts=8, hidden=256, inter=128),
            "family": "diffusion_gemma", "is_diffusion": True}
    url = make_db(tmp_path / "a.db", [point("dg", 1, "int8", 4, acc=0.9, h2d=1, peak_gib=1, meta=meta,
                                            model="tiny:diffusion_gemma")])

    def cli(*args):
        return subprocess.run([sys.executable, "-c", "from advisor.cli import run; run()", "export", "dg", "1",
                               "--storage", url, *args], capture_output=True, text=True, cwd=tmp_path)

    r = cli("--to", "llama.cpp")
    assert r.returncode == 2 and len(r.stderr.strip().splitlines()) == 1, r.stderr
    named = re.findall(r"--to ([\w.]+)", r.stderr.split("export with")[1])
    assert named and "vllm" not in named, r.stderr
    for target in named:
        r2 = cli("--to", target, "-o", str(tmp_path / f"out.{target}"))
        assert r2.returncode == 0, (target, r2.stderr)


FAKE_HOST = {  # a 2-socket host: 2 NUMA nodes x 4 cores x 2 hyperthreads = 16 logical CPUs
    "lscpu": "#!/bin/sh\ncase \"$1\" in\n"
             "  -p=Core,Socket) echo '# Core,Socket'; for s in 0 1; do for c in 0 1 2 3; do echo \"$((s*4+c)),$s\"; "
             "echo \"$((s*4+c)),$s\"; done; done;;\n"
             "  -p=Node) echo '# Node'; for s in 0 1; do for i in 1 2 3 4 5 6 7 8; do echo $s; done; done;;\n"
             "  *) exit 1;;\nesac\n",
    "nproc": "#!/bin/sh\necho 16\n",
    "python": "#!/bin/sh\necho \"$@\"\n",  # the launch command as SGLang would receive it
}


def test_the_ktransformers_script_gives_kt_kernel_physical_cores_and_numa_nodes(tmp_path):
    """kt-kernel's README: --kt-cpuinfer is the number of physical cores ("Do NOT set to hyperthread count - this
    will degrade performance"), --kt-threadpool-count the number of NUMA nodes. The script passed $(nproc) - the
    logical CPUs, hyperthreads included - and 1 pool; on a 2-socket host with hyperthreading it now passes 8 and 2,
    and a value the user sets still wins."""
    import sys
    from pathlib import Path

    root = Path(__file__).resolve().parents[1]
    meta = model_meta("qwen3_moe", n_layers=4, n_experts=64, hidden=2048, inter=768)
    url = make_db(tmp_path / "a.db", [point("kt", 1, "int4", 52, acc=0.9, h2d=1, peak_gib=1, meta=meta)])
    r = subprocess.run([sys.executable, "-m", "advisor", "export", "kt", "1", "--storage", url, "--to", "ktransformers",
                        "-o", str(tmp_path / "kt.sh")], capture_output=True, text=True, cwd=root)
    assert r.returncode == 0, r.stderr
    # which experts kt-kernel keeps on the GPU, said: its default placement's (sglang-kt 0.7.2, kt_ep_wrapper.py,
    # generate_uniform_masks), not a cut at expert id N, which that note named and no current release makes
    assert "experts 0..12 of every MoE layer (its default placement, uniform)" in flat(r.stderr)
    bin_dir = tmp_path / "bin"
    bin_dir.mkdir()
    for name, text in FAKE_HOST.items():
        (bin_dir / name).write_text(text)
        (bin_dir / name).chmod(0o755)
    env = {"PATH": f"{bin_dir}:/usr/bin:/bin", "KT_WEIGHT_PATH": "/w"}

    def launched(**extra):
        run = subprocess.run(["bash", str(tmp_path / "kt.sh")], capture_output=True, text=True, env={**env, **extra})
        assert run.returncode == 0, run.stderr
        args = run.stdout.split()
        return args[args.index("--kt-cpuinfer") + 1], args[args.index("--kt-threadpool-count") + 1]

    assert launched() == ("8", "2")
    assert launched(KT_CPUINFER="6", KT_THREADPOOL_COUNT="1") == ("6", "1")


def _kt_launched(tmp_path: Path, url: str, study: str, trial: int) -> tuple[dict[str, str], str]:
    """`advisor export --to ktransformers` to a script, run with a fake host whose `python -` (the counts file)
    runs and whose `python -m sglang...` echoes the launch: the launch's --flags and the export's notes."""
    bin_dir = tmp_path / "bin"
    bin_dir.mkdir(exist_ok=True)
    for name, text in {**FAKE_HOST, "python": f'#!/bin/sh\n[ "$1" = - ] && exec {sys.executable} -\necho "$@"\n'}.items():
        (bin_dir / name).write_text(text)
        (bin_dir / name).chmod(0o755)
    r = _cli("export", study, str(trial), "--to", "ktransformers", "--storage", url, "-o", str(tmp_path / "kt.sh"))
    assert r.returncode == 0, r.stderr
    run = subprocess.run(["bash", str(tmp_path / "kt.sh")], capture_output=True, text=True, cwd=tmp_path,
                         env={"PATH": f"{bin_dir}:/usr/bin:/bin", "KT_WEIGHT_PATH": "/w"})
    assert run.returncode == 0, run.stderr
    args = run.stdout.split()
    return {a: args[i + 1] for i, a in enumerate(args) if a.startswith("--")}, flat(r.stderr)


def test_the_ktransformers_script_puts_the_studys_hottest_experts_of_each_layer_on_the_gpu(tmp_path):
    """kt-kernel's default placement (`uniform`) keeps experts 0..N-1 of every MoE layer on the GPU. With
    --kt-expert-placement-strategy frequency it reads --init-expert-location, a `.pt` dict whose "logical_count" is
    an int tensor [records, decoder layers, experts], and marks the N x (MoE layers) largest sums over all layers
    at once (sglang-kt 0.7.2, python/sglang/srt/layers/moe/kt_ep_wrapper.py, _init_kt_gpu_experts_masks; kt-kernel's
    generate_gpu_experts_masks). A point that stored the study's calibration routing (static_hot) now writes that
    file from it and passes both flags, so each layer's N most-routed experts - static_hot's pinned ones - are the
    GPU's; a point that stored none keeps `uniform`, and its note says so."""
    import torch

    counts = {"0": [3, 50, 7, 7, 0, 12, 90, 1], "1": [100, 1, 1, 1, 1, 1, 1, 99], "2": [4, 4, 4, 4, 4, 4, 4, 4]}
    meta = model_meta("deepseek_v3", n_layers=3, n_experts=8, first_dense=1, hidden=256, inter=128)  # layer 0 dense
    hot = point("h", 1, "bf16", [3, 3, 3], acc=0.9, h2d=1, peak_gib=1, meta=meta)
    hot.config.update(policy="static_hot", routing_counts=counts)
    url = make_db(tmp_path / "a.db", [hot, point("h", 2, "bf16", [3, 3, 3], acc=0.9, h2d=1, peak_gib=1, meta=meta)])

    def launched(trial):
        return _kt_launched(tmp_path, url, "h", trial)

    flags, notes = launched(1)
    assert flags["--kt-num-gpu-experts"] == "3" and flags["--kt-expert-placement-strategy"] == "frequency"
    data = torch.load(tmp_path / flags["--init-expert-location"], weights_only=True)
    assert list(data) == ["logical_count"] and data["logical_count"].dtype == torch.int64
    table = data["logical_count"].sum(dim=0)
    assert table.shape == (4, 8) and table[0].eq(0).all()  # decoder layers 0..3, the dense one empty
    top = torch.zeros(table.numel(), dtype=torch.bool)  # kt-kernel's rule: the 3 x 3 largest over all layers
    top[torch.topk(table.flatten().float(), k=9).indices] = True
    gpu = {d: sorted(torch.nonzero(row).flatten().tolist()) for d, row in enumerate(top.view(4, 8)) if d}
    assert gpu == {1: [1, 5, 6], 2: [0, 1, 7], 3: [0, 1, 2]}  # most routed; ties to the lower index (static_hot's order)
    raised = table - torch.tensor([[0] * 8, *counts.values()])
    assert set(raised[top.view(4, 8)].tolist()) == {101} and raised[~top.view(4, 8)].eq(0).all()  # study's counts kept
    assert "the 3 most-routed experts of each MoE layer" in notes and "static_hot cache pinned" in notes

    flags, notes = launched(2)  # an lru point: the tuner stored no routing
    assert "--kt-expert-placement-strategy" not in flags and "--init-expert-location" not in flags
    assert "experts 0..2 of every MoE layer (its default placement, uniform)" in notes and "stored no per-expert" in notes


def test_the_ktransformers_counts_file_has_a_row_for_every_decoder_layer(tmp_path):
    """kt-kernel reads --init-expert-location as [records, decoder layers, experts] and raises unless its layers are
    the HF config's num_hidden_layers, dense ones included (kt_ep_wrapper.py, _init_kt_gpu_experts_masks: "Activation
    counts num_layers (..) doesn't match model num_layers (..)"); row i is decoder layer i. The file ended at the last
    MoE layer, which a model ending in dense layers does not (DeepSeek's moe_layer_freq, which kt-kernel reads; a
    Qwen3-MoE one, whose mlp_only_layers / decoder_sparse_step it does not, is refused: see
    test_ktransformers_refuses_a_qwen_moe_checkpoint_with_dense_layers): the study now records the decoder layers,
    and the file has that many rows; a point tuned before says so."""
    import torch

    from advisor.models.load import model_meta as loaded_meta

    def loaded(config):  # what model_meta reads of a LoadedModel; tune records its meta with every trial
        model = types.SimpleNamespace(config=config, named_modules=lambda: iter(()))  # (no MoE layer to name)
        return types.SimpleNamespace(model=model, moe=[], family="qwen3_moe", name="m", path="", fingerprint="f",
                                     is_diffusion=False, quant_method=None)

    assert loaded_meta(loaded(types.SimpleNamespace(num_hidden_layers=5)))["num_hidden_layers"] == 5
    wrapped = types.SimpleNamespace(text_config=types.SimpleNamespace(num_hidden_layers=7))  # a multimodal config
    assert loaded_meta(loaded(wrapped))["num_hidden_layers"] == 7
    assert "num_hidden_layers" not in loaded_meta(loaded(types.SimpleNamespace()))
    counts = {"0": [3, 50, 7, 7, 0, 12, 90, 1], "1": [100, 1, 1, 1, 1, 1, 1, 99], "2": [4, 4, 4, 4, 4, 4, 4, 4]}
    meta = model_meta("deepseek_v3", n_layers=3, n_experts=8, first_dense=1, hidden=256, inter=128)  # MoE: 1..3
    hot = point("h", 1, "bf16", [3, 3, 3], acc=0.9, h2d=1, peak_gib=1, meta={**meta, "num_hidden_layers": 5})
    old = point("h", 2, "bf16", [3, 3, 3], acc=0.9, h2d=1, peak_gib=1, meta=meta)  # tuned before it was recorded
    for p in (hot, old):
        p.config.update(policy="static_hot", routing_counts=counts)
    url = make_db(tmp_path / "a.db", [hot])
    flags, notes = _kt_launched(tmp_path, url, "h", 1)
    table = torch.load(tmp_path / flags["--init-expert-location"], weights_only=True)["logical_count"].sum(dim=0)
    assert table.shape == (5, 8) and table[0].eq(0).all() and table[4].eq(0).all(), table  # layers 0 and 4 dense
    assert table[1].tolist() == [3, 151, 7, 7, 0, 113, 191, 1]  # decoder layer 1 is MoE layer 0: indexed by block
    assert "rows end at the last MoE layer" not in notes
    res = export_point(old, "ktransformers")
    assert res.text.count("],\n") == 4  # the counts file's rows, as the script writes them
    assert any("its 4 rows end at the last MoE layer" in n and "num_hidden_layers" in n for n in res.notes), res.notes
    (tmp_path / "ds").mkdir()  # the checkpoint where the study loaded it: its config.json gives the decoder layers
    (tmp_path / "ds" / "config.json").write_text(json.dumps({"model_type": "deepseek_v3", "num_hidden_layers": 5}))
    old.config["model_meta"] = {**meta, "path": str(tmp_path / "ds")}
    res = export_point(old, "ktransformers")
    assert res.text.count("],\n") == 5 and not any("rows end" in n for n in res.notes), res.notes


def test_the_ktransformers_export_says_what_of_the_studys_cache_it_maps_and_what_not(tmp_path):
    """kt-kernel's GPU experts are a set fixed at load: --kt-enable-dynamic-expert-update, its one way to change
    them, re-picks them only after a forward of at least --kt-gpu-prefill-token-threshold tokens computed with the
    whole layer on the GPU (sglang-kt kt_ep_wrapper.py, _update_gpu_experts_from_batch), never between decode steps.
    A static_hot point maps onto that (its pinned set); an lru, flru or TIDE point's eviction or refresh, and a
    prefetch, do not - the export placed them all and said only which experts it put on the GPU. Now the structured
    export and a note say, per point, what the launch reproduces and what it cannot."""
    counts = {"0": [3, 50, 7, 7, 0, 12, 90, 1], "1": [100, 1, 1, 1, 1, 1, 1, 99]}
    meta = model_meta("qwen3_moe", n_layers=2, n_experts=8, hidden=256, inter=128)
    points = []
    for trial, (policy, routed, extra) in enumerate([("static_hot", True, {}), ("flru", True, {}),
                                                     ("lru", False, {"prefetch": "lookahead"}),
                                                     ("tide", False, {"tau": 2})], start=1):
        p = point("m", trial, "bf16", [3, 3], acc=0.9, h2d=1, peak_gib=1, meta=meta)
        p.config.update(policy=policy, **extra, **({"routing_counts": counts} if routed else {}))
        points.append(p)
    dllm = point("d", 1, "bf16", [3, 3], acc=0.9, h2d=1, peak_gib=1, meta=model_meta("llada2", n_layers=2, n_experts=8,
                                                                                     hidden=256, inter=128))
    dllm.config.update(policy="tide", tau=2)
    url = make_db(tmp_path / "a.db", [*points, dllm])

    def mapping(trial, study="m"):
        r = _cli("export", study, str(trial), "--to", "ktransformers", "--storage", url, "--json")
        assert r.returncode == 0, r.stderr
        data = json.loads(r.stdout)
        note = next(n for n in data["notes"] if n.startswith("of the study's cache the launch reproduces"))
        return data["cache_mapping"], note

    hot, note = mapping(1)
    assert hot["maps"] == ["its GPU bytes (at most), as 3 checkpoint experts per MoE layer", "its pinned hot set"]
    assert hot["not_mapped"] == [] and hot["runtime_placement"] == "fixed at load" and "dynamic" not in note
    flru, note = mapping(2)
    assert flru["maps"][1] == "the calibration's most-routed experts, as a fixed set"
    assert flru["not_mapped"] == ["its flru policy, which admitted and evicted experts as the model ran"]
    assert "--kt-enable-dynamic-expert-update" in note and "stay fixed once loaded" in note, note
    lru, _ = mapping(3)
    assert len(lru["maps"]) == 1 and lru["not_mapped"] == [
        "its lru policy, which admitted and evicted experts as the model ran",
        "which experts it held (no routing stored: kt-kernel's experts 0..N-1)",
        "its prefetch (lookahead): kt-kernel loads no expert ahead"]
    # an autoregressive model has no denoising steps: its TIDE refreshed every tau forwards (the note said steps)
    tide, _ = mapping(4)
    assert tide["not_mapped"][0] == ("its tide policy, which re-chose its GPU experts from the current forward's "
                                     "tokens every 2 forwards (autoregressive decoding, one token per forward, has "
                                     "no denoising steps)")
    tide, _ = mapping(1, "d")
    assert tide["not_mapped"][0] == ("its tide policy, which re-chose its GPU experts from each refresh step's "
                                     "tokens every 2 denoising steps")


def test_vllm_says_its_offload_is_not_the_studys_expert_cache():
    """vLLM's --cpu-offload-gb (UVAOffloader) moves whole w13/w2 parameters of the first layers to host memory and
    reads them over PCIe every forward: no cache, no per-expert placement, no CPU compute. The export said only how
    many bytes it offloaded, as if it ran the study's cache; now a note says what differs."""
    meta = model_meta("qwen3_moe", n_layers=2, n_experts=8, hidden=256, inter=128)
    res = export_point(point("s", 1, "int8", [4, 2], acc=0.9, h2d=1, peak_gib=1, meta=meta), "vllm")
    assert "--cpu-offload-gb" in res.data["args"]
    note = next(n for n in res.notes if n.startswith("vLLM keeps no expert cache"))
    assert "from the first layer on" in note and "2..4 experts per layer" in note and "miss policy copy" in note
    assert "# note: vLLM keeps no expert cache" in res.text
    everything = export_point(point("s", 1, "int8", [8, 8], acc=0.9, h2d=1, peak_gib=1, meta=meta), "vllm")
    assert not any("expert cache" in n for n in everything.notes)  # nothing offloaded: nothing to say


def test_ktransformers_refuses_the_families_sglang_does_not_serve(tmp_path):
    """sglang-kt (kvcache-ai/sglang, the SGLang KTransformers' docs install) has no model for LLaDA-MoE
    (LLaDAMoEModelLM) or DiffusionGemma: no entry in python/sglang/srt/models, and its diffusion-LLM path
    (srt/dllm/config.py, DLLM_PARAMS) knows LLaDA2MoeModelLM and SDAR only; an unknown architecture goes to the
    Transformers backend (srt/model_loader/utils.py, resolve_transformers_arch), which refuses a remote-code model
    that is not backend-compatible and otherwise decodes autoregressively with no fused-MoE layer for the kt flags
    to take over. The export printed a launch command for both, and recommend's hint offered it for the bundled
    model. Upstream SGLang's DiffusionGemma model (PR #34061, --dllm-algorithm Gemma4Renoise) does not change
    that: its experts are GELU ones and kt-kernel's wrapper asserts a SiLU activation - the refusal said SGLang
    had no model for it at all, and named no upstream, no fork and no activation."""
    root = Path(__file__).resolve().parents[1]
    r = subprocess.run([sys.executable, "-m", "advisor", "export", "bundled-example", "129", "--storage",
                        str(root / "studies/example/advisor.db"), "--to", "ktransformers"], capture_output=True, text=True)
    assert r.returncode == 2 and len(r.stderr.strip().splitlines()) == 1, r.stderr
    assert "SGLang serves no LLaDA-MoE" in r.stderr and "--to llama.cpp" in r.stderr
    assert "neither sglang-kt (the kvcache-ai fork KTransformers installs) nor upstream" in r.stderr, r.stderr
    dg = {**model_meta("qwen3_moe", n_layers=2, n_experts=8, hidden=256, inter=128), "family": "diffusion_gemma",
          "is_diffusion": True}
    url = make_db(tmp_path / "a.db", [point("dg", 1, "int8", 4, acc=0.9, h2d=1, peak_gib=1, meta=dg)])
    r = _cli("export", "dg", "1", "--to", "ktransformers", "--storage", url)
    assert r.returncode == 2 and len(r.stderr.strip().splitlines()) == 1, r.stderr
    assert "kt-kernel cannot take over DiffusionGemma's experts" in r.stderr, r.stderr
    assert "--dllm-algorithm Gemma4Renoise" in r.stderr and "GELU experts" in r.stderr, r.stderr
    assert "silu activation" in r.stderr and "--to vllm" in r.stderr, r.stderr
    for family in ("qwen3_moe", "llada2"):  # served: Qwen3MoeForCausalLM, LLaDA2MoeModelLM
        url = make_db(tmp_path / f"{family}.db", [point("f", 1, "int8", 4, acc=0.9, h2d=1, peak_gib=1,
                                                         meta=model_meta(family))])
        assert _cli("export", "f", "1", "--to", "ktransformers", "--storage", url).returncode == 0, family


def test_llama_cpp_refusals_name_the_llama_cpp_they_were_checked_in(tmp_path):
    """llama.cpp's refusals of LLaDA2 and DiffusionGemma said "no diffusion path" with no version, and LLaDA2's that
    it has a GGUF architecture (bailingmoe2) - while convert_hf_to_gguf.py has no LLaDA2MoeModelLM at all, and pull
    requests add both models (#17454, #24423). Now each line names the llama.cpp checked (0c1e570, which
    llama-cpp-python 0.3.36 vendors and benchmarks/build_llamacpp.sh builds), what it lacks there, the runner's
    architectures, and the pull request, not in that commit and unverified."""
    dg = {**model_meta("qwen3_moe", n_layers=2, n_experts=8, hidden=256, inter=128), "family": "diffusion_gemma",
          "is_diffusion": True}
    for family, meta, said in (
            ("llada2", model_meta("llada2"), ("no LLaDA2MoeModelLM", "converts only as BailingMoeV2ForCausalLM",
                                              "pull request #17454", "--to hf")),
            ("diffusion_gemma", dg, ("no diffusion-gemma GGUF architecture", "DiffusionGemmaForBlockDiffusion",
                                     "pull request #24423", "--to vllm"))):
        url = make_db(tmp_path / f"{family}.db", [point("f", 1, "int8", 4, acc=0.9, h2d=1, peak_gib=1, meta=meta)])
        r = _cli("export", "f", "1", "--to", "llama.cpp", "--storage", url)
        assert r.returncode == 2 and len(r.stderr.strip().splitlines()) == 1, r.stderr
        for text in ("llama.cpp 0c1e570 of 2026-10-01, as llama-cpp-python 0.3.36 vendors it",
                     "llama-diffusion-cli runs the dream, llada, llada-moe and rnd1 architectures only",
                     "not in that commit and unverified here", *said):
            assert text in r.stderr, (text, r.stderr)


def test_ktransformers_serves_llada2_through_sglangs_diffusion_path(tmp_path):
    """SGLang decodes LLaDA2 as a diffusion LLM only when --dllm-algorithm names an algorithm
    (python/sglang/srt/dllm/config.py: `DllmConfig.from_server_args` returns None without one, and the model is
    scheduled token by token); its block size is 32 unless --dllm-algorithm-config's YAML sets `block_size`, which
    `LowConfidence` (srt/dllm/algorithm/low_confidence.py) reads with its `threshold`. The export passed neither,
    only a note to check the SGLang version. Now the launch names LowConfidence - LLaDA2's threshold decoding - and,
    for a study that decoded in other blocks than 32, writes the YAML it passes."""
    p = point("d", 1, "int8", 4, acc=0.9, h2d=1, peak_gib=1, meta=model_meta("llada2"))
    p.config["decoding"] = {"block_length": 16, "steps_per_block": 8, "generate": {"block_length": 16, "steps": 8}}
    plain = point("d", 2, "int8", 4, acc=0.9, h2d=1, peak_gib=1, meta=model_meta("llada2"))
    url = make_db(tmp_path / "a.db", [p, plain])
    bin_dir = tmp_path / "bin"
    bin_dir.mkdir()
    for name, text in FAKE_HOST.items():
        (bin_dir / name).write_text(text)
        (bin_dir / name).chmod(0o755)

    def launched(trial):
        script = tmp_path / f"kt{trial}.sh"
        r = _cli("export", "d", str(trial), "--to", "ktransformers", "--storage", url, "-o", str(script))
        assert r.returncode == 0, r.stderr
        run = subprocess.run(["bash", str(script)], capture_output=True, text=True, cwd=tmp_path,
                             env={"PATH": f"{bin_dir}:/usr/bin:/bin", "KT_WEIGHT_PATH": "/w"})
        assert run.returncode == 0, run.stderr
        return run.stdout.split(), flat(r.stderr)

    args, notes = launched(1)
    assert args[args.index("--dllm-algorithm") + 1] == "LowConfidence"
    yaml = tmp_path / args[args.index("--dllm-algorithm-config") + 1]
    assert yaml.read_text().split("\n")[:2] == ["block_size: 16", "threshold: 0.95"]
    assert "at least 2 tokens per step" in notes  # the study's 8 steps per 16-token block
    args, _ = launched(2)  # no decoding stored: LLaDA2's published 32-token blocks, SGLang's own
    assert args[args.index("--dllm-algorithm") + 1] == "LowConfidence" and "--dllm-algorithm-config" not in args


def test_vllm_serves_an_fp8_checkpoint_with_its_own_quantization(tmp_path):
    """A study of an FP8 checkpoint records its experts' dtype as torch names it (`float8_e4m3fn`). The vLLM
    export counted the offload in that dtype, which no advisor format parses, so every export of such a study -
    one with every expert on the GPU too - failed with "unknown precision format 'float8_e4m3fn'". vLLM serves an
    FP8 checkpoint with the fp8 its config.json names and refuses another `--quantization` (config/model.py: "does
    not match the quantization method"); it creates those parameters in fp8 on the device, so they offload, in
    fp8 bytes."""
    from advisor.quant.spec import expert_nbytes_of

    meta = {**model_meta("qwen3_moe", n_layers=2, n_experts=8, hidden=2048, inter=768), "dtype": "float8_e4m3fn"}
    url = make_db(tmp_path / "a.db", [point("f", 1, "int8", [8, 8], acc=0.9, h2d=0, peak_gib=2, meta=meta),
                                      point("f", 2, "int8", [4, 2], acc=0.9, h2d=1, peak_gib=1, meta=meta)])
    r = _cli("export", "f", "1", "--to", "vllm", "--storage", url)
    assert r.returncode == 0, r.stderr
    args = shlex.split(r.stdout.strip().splitlines()[-1])
    assert args[:2] == ["vllm", "serve"] and "--quantization" not in args and "--cpu-offload-gb" not in args, args
    assert "an FP8 checkpoint" in r.stdout and "nothing offloaded" in r.stdout
    r = _cli("export", "f", "2", "--to", "vllm", "--storage", url)
    assert r.returncode == 0, r.stderr
    args = shlex.split(r.stdout.strip().splitlines()[-1])
    assert "--quantization" not in args, args
    host = 16 * expert_nbytes_of("fp8", 2048, 768) - 6 * expert_nbytes_of("int8", 2048, 768)
    gib = float(args[args.index("--cpu-offload-gb") + 1])
    assert gib == host / 2**30


def test_ktransformers_passes_llada2s_threshold_zero_as_decoded(tmp_path):
    """A study that decoded LLaDA2 at threshold 0 (every masked token above confidence 0: a block in one step)
    was exported with SGLang's 0.95 - `threshold or 0.95` read the 0 as unset - and no YAML, so SGLang decoded
    token by token what the study committed at once."""
    p = point("d", 1, "int8", 4, acc=0.9, h2d=1, peak_gib=1, meta=model_meta("llada2"))
    p.config["decoding"] = {"block_length": 32, "steps_per_block": 32, "generate": {"threshold": 0.0}}
    url = make_db(tmp_path / "a.db", [p])
    script = tmp_path / "kt.sh"
    r = _cli("export", "d", "1", "--to", "ktransformers", "--storage", url, "-o", str(script))
    assert r.returncode == 0, r.stderr
    assert "above confidence 0 " in flat(r.stderr), r.stderr
    text = script.read_text()
    assert "--dllm-algorithm-config" in text and "block_size: 32\nthreshold: 0\n" in text, text


def test_vllm_keeps_its_scheme_when_the_tuned_cache_holds_every_expert_at_the_checkpoints_dtype(tmp_path):
    """A plan that mixes formats can cache more bytes than the whole checkpoint's experts: here layer 0's fp32
    experts (7 of 8 cached) and layer 1's int8 ones (all cached) outweigh the 16 bf16 experts. Nothing is left for
    host memory, yet the export dropped `--quantization experts_int8` because a slot count was below the expert
    count, and served the point in bf16 with no offload, its notes saying both "served without --quantization"
    and "the rest (0 bytes = 0.00 GiB at bfloat16) offloaded"."""
    meta = model_meta("qwen3_moe", n_layers=2, n_experts=8, hidden=2048, inter=768)
    url = make_db(tmp_path / "a.db", [point("m", 1, "default=int8;layers=0:fp32", [7, 8], acc=0.9, h2d=1, peak_gib=1,
                                            meta=meta)])
    r = _cli("export", "m", "1", "--to", "vllm", "--storage", url)
    assert r.returncode == 0, r.stderr
    args = shlex.split(r.stdout.strip().splitlines()[-1])
    assert args[args.index("--quantization") + 1] == "experts_int8" and "--cpu-offload-gb" not in args, args
    assert "served without --quantization" not in r.stdout and "nothing offloaded" in r.stdout, r.stdout


def test_vllm_quantizes_instead_of_offloading_when_every_quantized_expert_fits_the_studys_budget(tmp_path):
    """vLLM cannot offload experts it quantizes online, so an int4 point with all but a few experts cached was served
    at bf16 with most of its experts streamed over PCIe every forward, even when every expert at int8 fit the
    study's budget. `--opt prefer=auto` now quantizes when the point's peak minus its cache plus every int8 expert
    fits that budget, offloads when it does not, and `prefer=offload|quantize` decides; notes give both sizes."""
    import dataclasses

    from advisor.quant.spec import expert_nbytes_of

    meta = model_meta("qwen3_moe", n_layers=2, n_experts=8, hidden=2048, inter=768)
    cache = 14 * expert_nbytes_of("int4", 2048, 768)
    every_int8 = 16 * expert_nbytes_of("int8", 2048, 768)
    need = 1 * GiB - cache + every_int8  # the point's peak is 1 GiB
    roomy = dataclasses.replace(point("roomy", 1, "int4", [8, 6], acc=0.9, h2d=1, peak_gib=1, meta=meta),
                                budget_bytes=need + 1)
    tight = dataclasses.replace(point("tight", 1, "int4", [8, 6], acc=0.9, h2d=1, peak_gib=1, meta=meta),
                                budget_bytes=need - 1)
    url = make_db(tmp_path / "a.db", [roomy, tight])

    def served(study, *opts):
        r = _cli("export", study, "1", "--to", "vllm", "--storage", url, *opts)
        assert r.returncode == 0, r.stderr
        args = shlex.split(r.stdout.strip().splitlines()[-1])
        return ("--quantization" in args and args[args.index("--quantization") + 1],
                "--cpu-offload-gb" in args), r.stdout

    (quant, offloaded), out = served("roomy")
    assert (quant, offloaded) == ("experts_int8", False) and "within the study's budget" in out
    assert "--opt prefer=offload" in out
    assert served("roomy", "--opt", "prefer=offload")[0] == (False, True)
    (quant, offloaded), out = served("tight")
    assert (quant, offloaded) == (False, True) and "over the study's budget" in out and "prefer=quantize" in out
    assert served("tight", "--opt", "prefer=quantize")[0] == ("experts_int8", False)
    r = _cli("export", "tight", "1", "--to", "vllm", "--storage", url, "--opt", "prefer=both")
    assert r.returncode == 2 and "prefer" in r.stderr and r.stderr.count("\n") == 1, r.stderr


def test_vllm_from_recommend_fits_the_budget_recommend_was_given_not_the_studys(tmp_path):
    """`export --from-recommend --budget B --to vllm` chose between quantizing (every expert on the GPU) and
    offloading by the study's budget, not B: a point tuned under a roomy budget, picked for a tighter B, was served
    quantized with every expert on the GPU - past B - "within the study's budget"; one tuned tight was offloaded
    where B held every quantized expert. The choice and its note now go by the budget recommend was given."""
    import dataclasses

    from advisor.quant.spec import expert_nbytes_of

    meta = model_meta("qwen3_moe", n_layers=2, n_experts=8, hidden=2048, inter=768)
    need = 1 * GiB - 14 * expert_nbytes_of("int4", 2048, 768) + 16 * expert_nbytes_of("int8", 2048, 768)
    url = make_db(tmp_path / "a.db", [dataclasses.replace(
        point(study, 1, "int4", [8, 6], acc=0.9, h2d=1, peak_gib=1, meta=meta), budget_bytes=budget)
        for study, budget in (("roomy", need + 1), ("tight", need - 1))])

    def served(study, budget):
        r = _cli("export", "--from-recommend", "--study", study, "--budget", f"{budget}B", "--to", "vllm",
                 "--storage", url)
        assert r.returncode == 0, r.stderr
        args = shlex.split(r.stdout.strip().splitlines()[-1])
        return ("--quantization" in args, "--cpu-offload-gb" in args), " ".join(r.stderr.split())

    (quant, offloaded), notes = served("roomy", need - 1)
    assert (quant, offloaded) == (False, True) and "over the --budget of" in notes, notes
    (quant, offloaded), notes = served("tight", need + 1)
    assert (quant, offloaded) == (True, False) and "within the --budget of" in notes, notes


def test_recommends_export_line_for_another_budget_exports_for_that_budget(tmp_path):
    """recommend's `Export it:` line was `advisor export STUDY TRIAL --to ...|vllm|...` whatever budget recommend was
    asked about, and that form fits vLLM to the study's budget: a point tuned under a roomy budget, recommended for
    a tighter one, exported as printed was served quantized with every expert on the GPU, past the budget asked
    about. For another budget (or --gpu) the line is now the `--from-recommend` form with the options given."""
    import dataclasses

    from advisor.quant.spec import expert_nbytes_of

    meta = model_meta("qwen3_moe", n_layers=2, n_experts=8, hidden=2048, inter=768)
    need = 1 * GiB - 14 * expert_nbytes_of("int4", 2048, 768) + 16 * expert_nbytes_of("int8", 2048, 768)
    url = make_db(tmp_path / "a.db", [dataclasses.replace(
        point("roomy", 1, "int4", [8, 6], acc=0.9, h2d=1, peak_gib=1, meta=meta), budget_bytes=need + 1)])

    def exported(*recommend_args):
        r = _cli("recommend", "--storage", url, *recommend_args)
        assert r.returncode == 0, r.stderr
        argv, offered = _export_hint(r.stdout)
        assert argv[:2] == ["advisor", "export"] and "vllm" in offered, argv
        e = _cli(*argv[1:-1], "vllm")
        assert e.returncode == 0, e.stderr
        return argv, "--cpu-offload-gb" in e.stdout, " ".join(e.stderr.split())

    argv, offloaded, notes = exported("--budget", f"{need - 1}B", "--study", "roomy", "--max-accuracy-drop", "0.05")
    assert argv[2:-2] == ["--from-recommend", "--budget", f"{need - 1}B", "--max-accuracy-drop", "0.05",
                          "--study", "roomy", "--storage", url], argv
    assert offloaded and "over the --budget of" in notes, notes
    # the study's own budget: the STUDY TRIAL form, judged by that same budget
    argv, offloaded, notes = exported("--budget", f"{need + 1}B")
    assert argv[2:4] == ["roomy", "1"] and not offloaded and "within the study's budget" in notes, (argv, notes)


def test_vllm_notes_name_the_checkpoints_own_dtype(tmp_path):
    """vLLM's notes on an int4 plan said it has no on-the-fly int4 scheme "for MoE experts of a BF16 checkpoint",
    and that it quantizes "a BF16 checkpoint online", for a study that loaded an fp32 checkpoint; the experts a mixed
    plan kept in fp32 were "kept in bf16". They name the checkpoint's dtype and the plan's formats now."""
    meta = {**model_meta("qwen3_moe", n_layers=2, n_experts=8, hidden=2048, inter=768), "dtype": "float32"}
    url = make_db(tmp_path / "a.db", [point("m", 1, "default=int4;layers=0:fp32", [4, 6], acc=0.9, h2d=1,
                                            peak_gib=1, meta=meta)])
    quantized = _cli("export", "m", "1", "--to", "vllm", "--storage", url, "--opt", "prefer=quantize")
    offloaded = _cli("export", "m", "1", "--to", "vllm", "--storage", url, "--opt", "prefer=offload")
    assert quantized.returncode == offloaded.returncode == 0, quantized.stderr + offloaded.stderr
    q, o = (" ".join(r.stdout.split()) for r in (quantized, offloaded))
    assert "no on-the-fly int4 scheme for MoE experts of an FP32 checkpoint" in q, q
    assert "experts the plan keeps in fp32 are quantized by experts_int8 too" in q, q
    assert "served without --quantization experts_int8: vLLM quantizes an FP32 checkpoint online" in o, o
    # (the offload is counted at the bf16 vLLM's --dtype auto serves an fp32 checkpoint in, and says so)
    assert not [n for n in (q, o) if "BF16 checkpoint" in n or "in bf16 are" in n or "kept in bf16" in n], (q, o)


def fp8_checkpoint(d: Path) -> Path:
    """A tiny Qwen3-MoE saved as an FP8 checkpoint, as published FP8 models are (Qwen3-30B-A3B-FP8): every
    projection's weight in float8_e4m3fn with its `weight_scale_inv`, and config.json's quantization_config
    naming fp8. On a host without an FP8 GPU transformers dequantizes it to bf16 as it loads."""
    import torch
    from safetensors.torch import load_file, save_file

    from advisor.models.tiny import build_tiny

    build_tiny("qwen3_moe", dtype=torch.bfloat16).save_pretrained(d)
    shard = next(d.glob("*.safetensors"))
    tensors = {}
    for key, t in load_file(shard).items():
        if t.ndim == 2 and key.endswith("proj.weight"):
            scale = t.float().abs().amax().clamp(min=1e-12) / 448.0  # one 128x128 block: these are smaller
            tensors[key] = (t.float() / scale).to(torch.float8_e4m3fn)
            tensors[key.removesuffix("weight") + "weight_scale_inv"] = scale.reshape(1, 1)
        else:
            tensors[key] = t
    save_file(tensors, shard, metadata={"format": "pt"})
    config = json.loads((d / "config.json").read_text())
    config["quantization_config"] = {"quant_method": "fp8", "activation_scheme": "dynamic", "weight_block_size": [128, 128]}
    (d / "config.json").write_text(json.dumps(config))
    return d


def test_vllm_serves_a_cpu_tuned_fp8_checkpoint_with_its_own_quantization(tmp_path):
    """An FP8 checkpoint tuned on a CPU host: transformers dequantizes it to bf16 as it loads (and drops the
    quantization_config from the loaded model's config), so the study recorded its experts as bfloat16 and the
    vLLM export wrote `--quantization experts_int8`, which vLLM refuses for a checkpoint with its own quantization
    ("does not match the quantization method", config/model.py), and counted the offload at bf16 where vLLM holds
    fp8. The study now records the checkpoint's own method (from config.json), and the export serves it."""
    from advisor.models.load import load_model, model_meta
    from advisor.models.tiny import build_tiny
    from advisor.quant.spec import expert_nbytes_of
    from advisor.tune.space import load_space

    plain = tmp_path / "plain"
    build_tiny("qwen3_moe").save_pretrained(plain)
    assert "quant_method" not in model_meta(load_model(str(plain)))  # other models' records are unchanged
    model = fp8_checkpoint(tmp_path / "fp8")
    space = tmp_path / "int8.toml"
    space.write_text(load_space("quick").text.replace('accuracy = "maximize"', 'fidelity_top1 = "maximize"')
                     .replace('formats = ["bf16", "int8", "int4", "int2"]', 'formats = ["int8"]')
                     .replace("hot_fraction = [0.0, 0.25]", "hot_fraction = [0.0]")
                     .replace('slots_per_layer = { low = 1, high = "all" }', "slots_per_layer = { low = 2, high = 2 }"))
    url = f"sqlite:///{tmp_path / 'a.db'}"
    # the tune must succeed: through the CLI in this process, no second torch import
    r = advisor_in_process("tune", str(model), "--space", str(space), "--trials", "1", "--resident", "--storage", url,
                           "--study", "f", cwd=tmp_path)
    assert r.returncode == 0, r.stdout[-2000:] + r.stderr[-2000:]
    r = _cli("export", "f", "0", "--to", "json", "--storage", url)
    assert r.returncode == 0, r.stderr
    doc = json.loads(r.stdout)
    meta = doc["config"]["model_meta"]
    assert (meta["dtype"], meta["quant_method"]) == ("bfloat16", "fp8")  # loaded as bf16, the checkpoint fp8
    assert (doc["model"]["dtype"], doc["model"]["quant_method"]) == ("bfloat16", "fp8")
    r = _cli("export", "f", "0", "--to", "vllm", "--storage", url)
    assert r.returncode == 0, r.stderr
    args = shlex.split(r.stdout.strip().splitlines()[-1])
    assert args[:3] == ["vllm", "serve", str(model.resolve())] and "--quantization" not in args, args
    assert "served without --quantization experts_int8: an FP8 checkpoint" in r.stdout
    # 2 layers x 8 experts (hidden 32, expert width 16) in fp8, less the tuned cache: 2 int8 experts per layer
    host = 16 * expert_nbytes_of("fp8", 32, 16) - 4 * expert_nbytes_of("int8", 32, 16)
    assert f"the rest ({format_bytes(host)} at fp8, counted from the expert shapes) offloaded" in r.stdout, r.stdout


def test_vllm_offloads_the_expert_weights_by_the_names_vllm_gives_the_checkpoints_quantization(tmp_path):
    """--cpu-offload-params matches whole name segments (vLLM 0.33 model_executor/offloader/uva.py:
    f".{param}." in f".{prefix}{name}.") and offloads nothing that no name matches. The export always named
    w13_weight/w2_weight, which vLLM's GPTQ and AWQ MoE methods (AutoGPTQMoEMethod, AutoAWQMoEMethod,
    MoeWNA16Method) call w13_qweight/w2_qweight and compressed-tensors' WNA16/W4A4 ones w13_weight_packed: for those
    checkpoints --cpu-offload-gb moved no expert at all, and every expert stayed on the GPU."""
    # the expert weights vLLM 0.33 creates, by the checkpoint's quantization (create_weights of each MoE method)
    created = {None: ["w13_weight", "w2_weight"], "fp8": ["w13_weight", "w2_weight"],
               "gptq": ["w13_qweight", "w2_qweight"], "awq": ["w13_qweight", "w2_qweight"],
               "compressed-tensors": ["w13_weight_packed", "w2_weight_packed"]}  # its W4A16 scheme
    base = model_meta("qwen3_moe", n_layers=2, n_experts=8, hidden=2048, inter=768)
    points = [point(str(method), 1, "bf16", [4, 2], acc=0.9, h2d=1, peak_gib=1,
                    meta={**base, **({"quant_method": method} if method else {})}) for method in created]
    url = make_db(tmp_path / "a.db", points)
    for method, weights in created.items():
        r = _cli("export", str(method), "1", "--to", "vllm", "--storage", url)
        assert r.returncode == 0, r.stderr
        args = shlex.split(r.stdout.strip().splitlines()[-1])
        assert "--cpu-offload-gb" in args, (method, args)
        named = args[args.index("--cpu-offload-params") + 1:]
        for w in weights:  # vLLM's own match, on the parameter's full name
            assert any(f".{p}." in f".model.layers.0.mlp.experts.{w}." for p in named), (method, w, named)
        assert not any(f".{p}." in ".model.layers.0.mlp.experts.w13_weight_scale." for p in named), named


def test_vllm_counts_another_prequantized_checkpoints_offload_at_the_loaded_dtype(tmp_path):
    """A GPTQ (or AWQ, compressed-tensors) checkpoint: vLLM serves its own quantization, so no --quantization;
    its bytes per expert depend on settings no study records, so the offload is counted at the loaded dtype and
    a note says so - and, since vLLM counts --cpu-offload-gb in the packed bytes it creates, that this offloads
    more than the study kept off the GPU and what a 4- or 8-bit checkpoint would take; --json labels the count."""
    from advisor.quant.spec import expert_nbytes_of

    meta = {**model_meta("qwen3_moe", n_layers=2, n_experts=8, hidden=2048, inter=768), "quant_method": "gptq"}
    url = make_db(tmp_path / "a.db", [point("g", 1, "int8", [4, 2], acc=0.9, h2d=1, peak_gib=1, meta=meta),
                                      point("g", 2, "int8", [8, 8], acc=0.9, h2d=0, peak_gib=2, meta=meta)])
    r = _cli("export", "g", "2", "--to", "vllm", "--storage", url)
    assert r.returncode == 0, r.stderr
    assert shlex.split(r.stdout.strip().splitlines()[-1]) == ["vllm", "serve", "tiny-llada"], r.stdout
    r = _cli("export", "g", "1", "--to", "vllm", "--storage", url)
    assert r.returncode == 0, r.stderr
    args = shlex.split(r.stdout.strip().splitlines()[-1])
    assert "--quantization" not in args, args
    assert "a pre-quantized gptq checkpoint" in r.stdout and "counted at the loaded dtype" in r.stdout
    host = 16 * expert_nbytes_of("bf16", 2048, 768) - 6 * expert_nbytes_of("int8", 2048, 768)
    gib = float(args[args.index("--cpu-offload-gb") + 1])
    assert gib == host / 2**30
    # labelled: vLLM counts --cpu-offload-gb in the bytes of the parameters it creates (UVAOffloader: numel x element
    # size), the packed w13_qweight/w2_qweight, so the value is not the study's; what 4 and 8 bits would take
    data = json.loads(_cli("export", "g", "1", "--to", "vllm", "--storage", url, "--json").stdout)
    assert data["cpu_offload_counted_at"] == {"format": "bfloat16", "checkpoint_format": False}
    resident = json.loads(_cli("export", "g", "2", "--to", "vllm", "--storage", url, "--json").stdout)  # no offload
    assert resident["cpu_offload_counted_at"]["format"] == "bfloat16" and resident["cpu_offload_gb"] == 0
    cache = 6 * expert_nbytes_of("int8", 2048, 768)
    packed = 16 * 3 * 2048 * 768  # every expert's weights, at 1 byte per weight (8 bits; scales stay on the GPU)
    at4, at8 = (max(packed * bits // 8 - cache, 0) / 2**30 for bits in (4, 8))
    assert "not in the checkpoint's own gptq bytes, which vLLM creates its experts in (packed w13_qweight/w2_qweight)" \
        in r.stdout and f"a 4-bit checkpoint takes about --cpu-offload-gb {at4!r}, an 8-bit one {at8!r}" in r.stdout, r.stdout


def test_other_exports_of_a_prequantized_checkpoint_serve_its_format_or_refuse(tmp_path):
    """The llama.cpp, hf and ktransformers exports assumed a BF16 checkpoint too. For an FP8 one (tuned on a CPU:
    experts recorded as bfloat16): kt-kernel's GPU experts load from --model-path in fp8, so the tuned cache holds
    twice as many as at bf16, and a plan that keeps bf16 experts runs kt-kernel's FP8 method on the checkpoint,
    not BF16; llama.cpp's converter dequantizes it (a note says so); no hf recipe loads it (transformers refuses a
    BitsAndBytes/TorchAo config for a checkpoint quantized otherwise, the advisor's loader streams unquantized
    experts only). An AWQ checkpoint, which llama.cpp's converter cannot read and whose bytes kt-kernel's count
    cannot know, is refused by those two in one line."""
    from advisor.quant.spec import expert_nbytes_of

    base = model_meta("qwen3_moe", n_layers=2, n_experts=8, hidden=2048, inter=768)
    fp8, awq = {**base, "quant_method": "fp8"}, {**base, "quant_method": "awq"}
    url = make_db(tmp_path / "a.db", [point("f", 1, "bf16", [4, 4], acc=0.9, h2d=1, peak_gib=1, meta=fp8),
                                      point("f", 2, "int4", [4, 4], acc=0.9, h2d=1, peak_gib=1, meta=fp8),
                                      point("w", 1, "int4", [4, 4], acc=0.9, h2d=1, peak_gib=1, meta=awq)])
    script = tmp_path / "kt.sh"
    r = _cli("export", "f", "1", "--to", "ktransformers", "--storage", url, "-o", str(script))
    assert r.returncode == 0, r.stderr
    args = shlex.split(script.read_text().strip().splitlines()[-1])
    n_gpu = 8 * expert_nbytes_of("bf16", 2048, 768) // (2 * expert_nbytes_of("fp8", 2048, 768))
    assert n_gpu == 7 and args[args.index("--kt-num-gpu-experts") + 1] == str(n_gpu), args
    assert args[args.index("--kt-method") + 1] == "FP8" and "the FP8 checkpoint itself" in flat(r.stderr), r.stderr
    r = _cli("export", "f", "2", "--to", "llama.cpp", "--storage", url)
    assert r.returncode == 0, r.stderr
    assert "convert_hf_to_gguf.py dequantizes it (with its scales) to the bf16 GGUF" in r.stdout
    r = _cli("export", "f", "2", "--to", "hf", "--storage", url)
    assert r.returncode == 2 and "cannot load a pre-quantized (fp8) checkpoint" in r.stderr, r.stderr
    assert len(r.stderr.strip().splitlines()) == 1 and "--to hf" not in r.stderr, r.stderr
    for target, why in (("llama.cpp", "convert_hf_to_gguf.py cannot make the script's bf16 GGUF from a pre-quantized "
                                      "awq checkpoint"),
                        ("ktransformers", "this pre-quantized checkpoint's own awq format"),
                        ("hf", "cannot load a pre-quantized (awq) checkpoint")):
        r = _cli("export", "w", "1", "--to", target, "--storage", url)
        assert r.returncode == 2 and why in r.stderr and len(r.stderr.strip().splitlines()) == 1, (target, r.stderr)
        assert "--to vllm or --to json instead" in r.stderr, r.stderr  # the targets that take it


def test_vllm_counts_an_fp32_checkpoints_offload_at_the_bf16_its_auto_dtype_serves(tmp_path):
    """`ModelInfo.checkpoint_format` returned the recorded torch dtype name, so an fp32 checkpoint's offload note
    read "GiB at float32", a name no format option takes. Then --cpu-offload-gb was counted at fp32 (4 bytes a
    weight), but the command keeps vLLM's --dtype auto, which serves an fp32 checkpoint in bf16 (fp16 before
    Ampere: config/model.py `_resolve_auto_dtype`), so it offloaded twice the bytes the study's cache left over.
    It is counted at bf16 now, and the note says why (the ktransformers note says SGLang's fp16 of the same case)."""
    from advisor.export.vllm import gib_arg
    from advisor.quant.spec import expert_nbytes_of

    meta = {**model_meta("qwen3_moe", n_layers=2, n_experts=8, hidden=2048, inter=768), "dtype": "float32"}
    url = make_db(tmp_path / "a.db", [point("m", 1, "bf16", [4, 4], acc=0.9, h2d=1, peak_gib=1, meta=meta),
                                      point("m", 2, "int8", [4, 4], acc=0.9, h2d=1, peak_gib=1, meta=meta)])
    r = _cli("export", "m", "1", "--to", "vllm", "--storage", url)
    assert r.returncode == 0, r.stderr
    host = 8 * expert_nbytes_of("bf16", 2048, 768)  # 16 experts at bf16, less the cache's 8 at bf16
    text = " ".join(r.stdout.split())
    assert f"the rest ({format_bytes(host)} at bf16, counted" in text, text
    assert "at bf16, not the checkpoint's fp32: vLLM's --dtype auto serves an fp32 checkpoint in 16 bits" in text
    args = shlex.split(r.stdout.strip().splitlines()[-1])
    assert args[args.index("--cpu-offload-gb") + 1] == gib_arg(host / 2**30), args
    assert "float32" not in r.stdout, r.stdout
    r = _cli("export", "m", "2", "--to", "vllm", "--storage", url, "--opt", "prefer=quantize")  # int8, not offloaded
    assert r.returncode == 0, r.stderr
    assert "--opt prefer=offload serves them at bf16 offloaded" in " ".join(r.stdout.split()), r.stdout
    assert "float32" not in r.stdout, r.stdout


def test_ktransformers_names_an_fp32_checkpoint_and_what_sglang_loads_it_as(tmp_path):
    """The GPU expert count of a study that loaded an fp32 checkpoint was said to be at "the checkpoint's precision
    (bf16)": the bytes were right (2 a weight) but the checkpoint is fp32 and SGLang's --dtype auto loads an fp32
    checkpoint in fp16. The note names both now; a bf16 checkpoint's wording is unchanged."""
    meta = {**model_meta("qwen3_moe", n_layers=2, n_experts=8, hidden=2048, inter=768), "dtype": "float32"}
    url = make_db(tmp_path / "a.db", [point("m", 1, "bf16", [4, 4], acc=0.9, h2d=1, peak_gib=1, meta=meta),
                                      point("b", 1, "bf16", [4, 4], acc=0.9, h2d=1, peak_gib=1,
                                            meta={**meta, "dtype": "bfloat16"})])
    r = _cli("export", "m", "1", "--to", "ktransformers", "--storage", url)
    assert r.returncode == 0, r.stderr
    text = " ".join(r.stdout.split()).replace("# ", "")
    assert "the bytes of 4 experts at fp16 (the checkpoint is fp32; SGLang's --dtype auto loads it as fp16)" in text
    assert "(bf16)" not in text, text
    r = _cli("export", "b", "1", "--to", "ktransformers", "--storage", url)
    assert r.returncode == 0, r.stderr
    assert "at the checkpoint's precision (bf16)" in " ".join(r.stdout.split()).replace("# ", ""), r.stdout


def test_ktransformers_bf16_method_asks_an_fp16_or_fp32_checkpoint_saved_in_bf16(tmp_path):
    """kt-kernel's BF16 method passes the expert tensors of --kt-weight-path's safetensors to its kernels as stored
    (ktransformers kt-kernel/python/utils/loader.py BF16SafeTensorLoader.load_tensor converts no dtype; utils/amx.py
    NativeMoEWrapper.load_weights hands their data_ptr() on). The export of a bf16 plan of an fp32 checkpoint said
    "set KT_WEIGHT_PATH to the original BF16 checkpoint", of an fp16 plan of an fp16 one "the original checkpoint
    (BF16 kernels)": either would have the BF16 kernels read fp32/fp16 bits as bf16. Both now ask for the checkpoint
    saved in bf16; a bf16 checkpoint's wording is unchanged."""
    meta = {**model_meta("qwen3_moe", n_layers=2, n_experts=8, hidden=2048, inter=768), "dtype": "float32"}
    url = make_db(tmp_path / "a.db", [point("f32", 1, "bf16", [4, 4], acc=0.9, h2d=1, peak_gib=1, meta=meta),
                                      point("f16", 1, "fp16", [4, 4], acc=0.9, h2d=1, peak_gib=1,
                                            meta={**meta, "dtype": "float16"}),
                                      point("b", 1, "bf16", [4, 4], acc=0.9, h2d=1, peak_gib=1,
                                            meta={**meta, "dtype": "bfloat16"})])
    for study, own in (("f32", "fp32"), ("f16", "fp16")):
        r = _cli("export", study, "1", "--to", "ktransformers", "--storage", url, "-o", str(tmp_path / "kt.sh"))
        assert r.returncode == 0, r.stderr
        note = flat(r.stderr)
        assert f"set KT_WEIGHT_PATH to this {own} checkpoint saved in bf16 (its experts as bf16 tensors)" in note, note
        assert "--kt-method BF16" in (tmp_path / "kt.sh").read_text()
        run = subprocess.run(["bash", str(tmp_path / "kt.sh")], capture_output=True, text=True,
                             env={"PATH": "/usr/bin:/bin"})
        assert run.returncode == 2 and f"this {own} checkpoint saved in bf16" in run.stderr, run.stderr
    r = _cli("export", "b", "1", "--to", "ktransformers", "--storage", url)
    assert r.returncode == 0 and "set KT_WEIGHT_PATH to the original BF16 checkpoint" in flat(r.stdout), r.stdout


def test_export_and_recommend_say_when_a_diffusion_gemma_study_may_count_its_encoder_pass_as_a_step(tmp_path):
    """DiffusionGemma studies stored before 2026-12-05 counted the encoder pass that opens each canvas as a
    denoising step: their steps per block are S + 1, which the hf export prints as TIDE's schedule and vLLM's note
    as the steps to serve with, and the stored data alone cannot tell them from a study of S + 1 steps. Trials now
    store a mark that the steps count denoising steps only; a DiffusionGemma point without it gets one note in
    export and recommend - sure where the decoding's own steps settle it, hedged where they were the model's
    default (not stored) - and none where the mark is there or the stored steps show today's count."""
    dg = {**model_meta("qwen3_moe", n_layers=2, n_experts=8, hidden=256, inter=128), "family": "diffusion_gemma",
          "is_diffusion": True}
    cases = {  # study: (stored decoding, the note's first words or None)
        "old": ({"steps_per_block": 17, "generate": {"steps": 16}}, "this DiffusionGemma study was stored before"),
        "unsure": ({"steps_per_block": 49, "generate": {}}, "this DiffusionGemma study may have been stored before"),
        "marked": ({"steps_per_block": 48, "generate": {}, "steps_per_block_counts": "denoising steps"}, None),
        "counted": ({"steps_per_block": 16, "generate": {"steps": 16}}, None),
    }
    points = []
    for study, (decoding, _) in cases.items():
        p = point(study, 1, "int8", 8, acc=0.9, h2d=1, peak_gib=1, meta=dg, model="/models/dg")
        p.config.update(policy="tide", tau=2, decoding={"block_length": 32, **decoding})
        points.append(p)
    url = make_db(tmp_path / "a.db", points)
    for study, (decoding, words) in cases.items():
        for args in (("export", study, "1", "--to", "vllm"), ("export", study, "1", "--to", "json"),
                     ("recommend", "--study", study)):
            r = _cli(*args, "--storage", url)
            assert r.returncode == 0, r.stderr
            said = " ".join((r.stdout + r.stderr).split())
            if words is None:
                assert "stored before 2026-12-05" not in said, (study, args, said)
                continue
            spb = decoding["steps_per_block"]
            if args[-1] == "vllm":  # the script on stdout carries the note as a comment too, once
                assert said.count("# note: " + words) == 1, (study, args, said)
                said = said.replace("# note: " + words, "", 1)
            assert said.count("note: " + words) == 1, (study, args, said)
            assert f"its {spb} steps per block" in said and f"one more than it decoded ({spb - 1})" in said, said


def test_vllm_export_of_diffusion_gemma_says_the_decoding_the_study_measured(tmp_path):
    """vLLM serves DiffusionGemma with its diffusion config's canvas_length and max_denoising_steps (the steps, when
    not set, from the checkpoint's generation_config.json), not the canvas length and steps the study decoded
    with; the export printed `vllm serve` and said nothing of them, so the served decoding could differ from the
    one whose time and accuracy were measured. A note now gives both."""
    dg = {**model_meta("qwen3_moe", n_layers=2, n_experts=8, hidden=256, inter=128), "family": "diffusion_gemma",
          "is_diffusion": True}
    p = point("dg", 1, "int8", 8, acc=0.9, h2d=1, peak_gib=1, meta=dg, model="/models/dg")
    p.config["decoding"] = {"block_length": 32, "steps_per_block": 16, "generate": {"max_new_tokens": 64, "steps": 16}}
    old = point("dg", 2, "int8", 8, acc=0.9, h2d=1, peak_gib=1, meta=dg, model="/models/dg")
    url = make_db(tmp_path / "a.db", [p, old])
    r = _cli("export", "dg", "1", "--to", "vllm", "--storage", url)
    assert r.returncode == 0, r.stderr
    note = " ".join(r.stdout.split())
    assert ("decoding: the study measured this point decoding canvases of 32 tokens with at most 16 denoising "
            "steps each") in note and "canvas_length and max_denoising_steps" in note, r.stdout
    assert json.loads(r.stdout.splitlines()[-1].split("--diffusion-config ")[1].strip("'")) == {
        "canvas_length": 32, "max_denoising_steps": 16}, r.stdout
    r = _cli("export", "dg", "2", "--to", "vllm", "--storage", url)
    assert r.returncode == 0 and "decoding: the study recorded none" in " ".join(r.stdout.split()), r.stdout
    assert "--diffusion-config" not in r.stdout.splitlines()[-1], r.stdout  # vLLM's own defaults: said in the note
    qwen = make_db(tmp_path / "q.db", [point("q", 1, "int8", 8, acc=0.9, h2d=1, peak_gib=1, meta=model_meta("qwen3_moe"))])
    assert "decoding:" not in _cli("export", "q", "1", "--to", "vllm", "--storage", qwen).stdout  # autoregressive


def test_ktransformers_refuses_a_qwen_moe_checkpoint_with_dense_layers(tmp_path):
    """kt-kernel decides which decoder layers are MoE by first_k_dense_replace and moe_layer_freq only
    (sglang-kt python/sglang/srt/layers/moe/kt_ep_wrapper.py, _init_kt_gpu_experts_masks), which a Qwen3-MoE config
    has not: every layer is MoE to it. SGLang's own Qwen3-MoE model agrees (models/qwen3_moe.py: "Qwen3MoE all layers
    are sparse", is_layer_sparse = True) and its load_weights skips the dense MLP weights of the layers that
    mlp_only_layers / decoder_sparse_step make dense, which no parameter of it takes. The export wrote a launch (and a
    counts file) for such a checkpoint all the same; it now refuses in one line naming the dense layers, and the
    recommend hint leaves ktransformers out. A point tuned before the decoder layers were recorded reads them from
    the checkpoint's config.json, or names the ones it can see; one with no visible dense layer says in a note (and
    in --json) what a dense layer would do."""
    import transformers

    from advisor.models.load import load_model
    from advisor.models.load import model_meta as loaded_meta
    from advisor.models.tiny import tiny_config

    config = tiny_config("qwen3_moe")
    config.num_hidden_layers, config.decoder_sparse_step, config.mlp_only_layers = 4, 2, [3]  # MoE: layer 1 only
    transformers.AutoModelForCausalLM.from_config(config).save_pretrained(tmp_path / "m")
    meta = {**loaded_meta(load_model(str(tmp_path / "m"))), "num_moe_layers": 1}  # (the helper's config reads it)
    assert [x["decoder_layer"] for x in meta["layers"]] == [1] and meta["num_hidden_layers"] == 4
    old = {k: v for k, v in meta.items() if k != "num_hidden_layers"}  # tuned before 2026-12-05
    plain = {**model_meta("qwen3_moe", n_layers=2, n_experts=8, hidden=32, inter=16), "path": "/models/q"}
    url = make_db(tmp_path / "a.db", [point("q", 1, "bf16", [4], acc=0.9, h2d=1, peak_gib=1, meta=meta),
                                      # its config.json read where the study loaded it: 4 decoder layers
                                      point("q", 2, "bf16", [4], acc=0.9, h2d=1, peak_gib=1, meta=old),
                                      point("q", 3, "bf16", [4], acc=0.9, h2d=1, peak_gib=1,
                                            meta={**old, "path": str(tmp_path / "gone")}),
                                      point("p", 1, "bf16", 4, acc=0.9, h2d=1, peak_gib=1, meta=plain),
                                      point("p", 2, "bf16", 4, acc=0.9, h2d=1, peak_gib=1,
                                            meta={**plain, "num_hidden_layers": 2})])
    for trial, dense in ((1, "dense decoder layers 0, 2, 3 would run"), (2, "dense decoder layers 0, 2, 3 would run"),
                         (3, "dense decoder layer 0 would run")):
        r = _cli("export", "q", str(trial), "--to", "ktransformers", "--storage", url)
        assert r.returncode == 2 and len(r.stderr.strip().splitlines()) == 1, r.stderr
        assert "builds every decoder layer of a qwen3_moe model as an MoE block" in r.stderr and dense in r.stderr
        assert "--to vllm" in r.stderr, r.stderr
    assert _cli("export", "q", "1", "--to", "vllm", "--storage", url).returncode == 0  # vLLM reads mlp_only_layers
    r = _cli("recommend", "--study", "q", "--storage", url)
    assert r.returncode == 0 and _export_hint(r.stdout)[1] == ["llama.cpp", "hf", "vllm", "json"], r.stdout
    r = _cli("export", "p", "1", "--to", "ktransformers", "--json", "--storage", url)
    assert r.returncode == 0, r.stderr
    note = [n for n in json.loads(r.stdout)["notes"] if "did not record the model's decoder layers" in n]
    assert len(note) == 1 and "mlp_only_layers" in note[0] and "--to vllm" in note[0], note
    r = _cli("export", "p", "2", "--to", "ktransformers", "--storage", url)  # recorded: every layer is MoE
    assert r.returncode == 0 and "mlp_only_layers" not in r.stdout + r.stderr, r.stderr


def test_exports_of_a_point_that_predates_the_quant_record_read_the_checkpoints_config(tmp_path):
    """A study of an FP8 checkpoint tuned on a CPU host before the advisor recorded a checkpoint's own quantization
    (model_meta.quant_method, ef40146) stored its experts as bfloat16, like an unquantized one: every export served
    it as unquantized, without a word (kt-kernel's GPU experts counted at bf16 and --kt-method BF16, vLLM's offload
    in bf16 bytes, an hf recipe transformers refuses for an FP8 checkpoint). Its precision plan cannot tell (the
    advisor quantizes a bf16 checkpoint to fp8 too). The checkpoint's config.json can, where the study loaded it:
    the exports now read it for a point recorded before num_hidden_layers (7f5235b, after quant_method), and say
    so; when it cannot be read, one note (export and recommend) says what the export assumed."""
    from advisor.quant.spec import expert_nbytes_of

    fp8, plain = tmp_path / "fp8", tmp_path / "plain"
    for d, extra in ((fp8, {"quantization_config": {"quant_method": "fp8", "weight_block_size": [128, 128]}}), (plain, {})):
        d.mkdir()
        (d / "config.json").write_text(json.dumps({"model_type": "qwen3_moe", "num_hidden_layers": 2, **extra}))
    base = model_meta("qwen3_moe", n_layers=2, n_experts=8, hidden=2048, inter=768)  # dtype bfloat16, no quant_method
    url = make_db(tmp_path / "a.db", [
        point("f", 1, "bf16", [4, 4], acc=0.9, h2d=1, peak_gib=1, meta={**base, "path": str(fp8)}),
        point("p", 1, "bf16", [4, 4], acc=0.9, h2d=1, peak_gib=1, meta={**base, "path": str(plain)}),
        point("gone", 1, "bf16", [4, 4], acc=0.9, h2d=1, peak_gib=1, meta={**base, "path": str(tmp_path / "gone")}),
        point("new", 1, "bf16", [4, 4], acc=0.9, h2d=1, peak_gib=1,
              meta={**base, "path": str(tmp_path / "gone"), "num_hidden_layers": 2})])
    r = _cli("export", "f", "1", "--to", "ktransformers", "--json", "--storage", url)
    assert r.returncode == 0, r.stderr
    data = json.loads(r.stdout)
    n_gpu = 8 * expert_nbytes_of("bf16", 2048, 768) // (2 * expert_nbytes_of("fp8", 2048, 768))
    assert (data["kt_method"], data["kt_num_gpu_experts"]) == ("FP8", n_gpu), data  # fp8 experts, not bf16 ones
    said = [n for n in data["notes"] if "predates the record of a checkpoint's own quantization" in n]
    assert len(said) == 1 and f"{fp8 / 'config.json'} names fp8" in said[0], data["notes"]
    assert json.loads(_cli("export", "f", "1", "--to", "json", "--storage", url).stdout)["model"]["quant_method"] == "fp8"
    r = _cli("export", "f", "1", "--to", "hf", "--storage", url)
    assert r.returncode == 2 and "cannot load a pre-quantized (fp8) checkpoint" in r.stderr, r.stderr
    r = _cli("export", "p", "1", "--to", "ktransformers", "--json", "--storage", url)  # config.json: unquantized
    assert r.returncode == 0 and json.loads(r.stdout)["kt_method"] == "BF16" and "own quantization" not in r.stderr
    for args in (("export", "gone", "1", "--to", "vllm"), ("recommend", "--study", "gone")):
        r = _cli(*args, "--storage", url)
        assert r.returncode == 0, r.stderr
        said = " ".join((r.stdout + r.stderr).split())
        if args[0] == "export":  # the script on stdout carries the note as a comment too, once
            assert said.count("# note: this point may predate 2026-12-05") == 1, said
            said = said.replace("# note: this point may predate 2026-12-05", "", 1)
        assert said.count("note: this point may predate 2026-12-05") == 1, said
        assert "takes the checkpoint for unquantized (bfloat16)" in said, said
    for args in (("export", "new", "1", "--to", "vllm"), ("recommend", "--study", "new")):  # recorded: unquantized
        r = _cli(*args, "--storage", url)
        assert r.returncode == 0 and "own quantization" not in r.stdout + r.stderr, r.stdout + r.stderr


def test_a_point_that_predates_the_quant_record_reads_the_config_of_its_relative_directory_here(tmp_path):
    """`unrecorded_config` read the checkpoint's config.json where the study recorded it (`meta.path or name`, a
    rule of its own), not where the report loads it (`recorded_model`): for a study tuned on `./fp8` whose recorded
    directory is gone but `fp8` is a directory here, the export took the FP8 checkpoint for unquantized (kt-kernel's
    BF16 method) and noted that its config.json "is not here to read"."""
    from cli_helpers import advisor

    (tmp_path / "fp8").mkdir()
    (tmp_path / "fp8" / "config.json").write_text(json.dumps({
        "model_type": "qwen3_moe", "num_hidden_layers": 2,
        "quantization_config": {"quant_method": "fp8", "weight_block_size": [128, 128]}}))
    base = model_meta("qwen3_moe", n_layers=2, n_experts=8, hidden=2048, inter=768)  # dtype bfloat16, no quant_method
    url = make_db(tmp_path / "a.db", [point("f", 1, "bf16", [4, 4], acc=0.9, h2d=1, peak_gib=1, model="fp8",
                                            meta={**base, "path": str(tmp_path / "moved" / "fp8")})])
    r = advisor("export", "f", "1", "--to", "ktransformers", "--json", "--storage", url, cwd=tmp_path)
    assert r.returncode == 0, r.stderr
    data = json.loads(r.stdout)
    assert data["kt_method"] == "FP8", data
    assert any(f"{tmp_path / 'fp8' / 'config.json'} names fp8" in n for n in data["notes"]), data["notes"]


def test_a_malformed_hub_variable_is_refused_where_the_export_reads_a_cached_config(tmp_path):
    """For a point recorded before 2026-12-05 whose model is a hub id, export and recommend read its config.json
    from the local hub cache through huggingface_hub; with HF_HUB_ETAG_TIMEOUT=abc its import failed inside a
    catch-all, so the export skipped the cached config.json without a word (an FP8 checkpoint exported as BF16,
    under huggingface_hub's own 'Error importing' line). Both now give the one line every command that imports
    huggingface_hub gives for that variable, and print nothing else."""
    snap = tmp_path / "hub" / "models--acme--fp8moe" / "snapshots" / ("0" * 40)
    snap.mkdir(parents=True)
    (snap / "config.json").write_text(json.dumps({
        "model_type": "qwen3_moe", "num_hidden_layers": 2,
        "quantization_config": {"quant_method": "fp8", "weight_block_size": [128, 128]}}))
    (snap.parents[1] / "refs").mkdir()
    (snap.parents[1] / "refs" / "main").write_text("0" * 40)
    base = {**model_meta("qwen3_moe", n_layers=2, n_experts=8, hidden=2048, inter=768), "name": "acme/fp8moe"}
    url = make_db(tmp_path / "a.db", [point("f", 1, "bf16", [4, 4], acc=0.9, h2d=1, peak_gib=1, model="acme/fp8moe",
                                            meta=base)])
    env = {**os.environ, "HF_HUB_CACHE": str(tmp_path / "hub"), "HF_HUB_OFFLINE": "1"}
    ok = subprocess.run([sys.executable, "-m", "advisor", "export", "f", "1", "--to", "ktransformers", "--json",
                         "--storage", url], capture_output=True, text=True, cwd=tmp_path, env=env, timeout=120)
    assert ok.returncode == 0 and json.loads(ok.stdout)["kt_method"] == "FP8", ok.stderr  # read from the cache
    for args in (("export", "f", "1", "--to", "ktransformers"), ("recommend", "--study", "f")):
        r = subprocess.run([sys.executable, "-m", "advisor", *args, "--storage", url], capture_output=True, text=True,
                           cwd=tmp_path, env={**env, "HF_HUB_ETAG_TIMEOUT": "abc"}, timeout=120)
        assert (r.returncode, r.stdout) == (2, ""), (args, r.stdout, r.stderr)
        assert r.stderr.splitlines() == ["error: HF_HUB_ETAG_TIMEOUT is 'abc', which huggingface_hub refuses as it is "
                                         "imported; give a whole number of seconds (10), or unset it"], r.stderr


def test_export_notes_count_one_slot_in_the_singular():
    """'the tuned 1 slots per layer', 'kept 1 experts per layer': a one-slot cache is counted in the singular."""
    meta = model_meta("qwen3_moe", n_layers=2, n_experts=8, hidden=256, inter=128)
    one = export_point(point("s", 1, "int8", [1, 1], acc=0.9, h2d=1, peak_gib=1, meta=meta), "vllm")
    assert "kept 1 expert per layer" in next(n for n in one.notes if n.startswith("vLLM keeps no expert cache"))
    kt = export_point(point("s", 1, "int8", [1, 1], acc=0.9, h2d=1, peak_gib=1, meta=meta), "ktransformers")
    assert "the tuned 1 slot per layer" in kt.text and "1 slots" not in kt.text
    assert "the tuned 2 slots per layer" in export_point(
        point("s", 1, "int8", [2, 2], acc=0.9, h2d=1, peak_gib=1, meta=meta), "ktransformers").text


def test_ktransformers_note_counts_one_gpu_expert_in_the_singular():
    """'the tuned 2 slots per layer of the plan's experts hold the bytes of 1 experts': the checkpoint experts the
    cache's bytes hold are counted in the singular too, and one slot 'holds' them."""
    meta = model_meta("qwen3_moe", n_layers=2, n_experts=8, hidden=256, inter=128)
    two = export_point(point("s", 1, "int8", [2, 2], acc=0.9, h2d=1, peak_gib=1, meta=meta), "ktransformers")
    assert "the tuned 2 slots per layer of the plan's experts hold the bytes of 1 expert at" in two.text
    assert "1 experts" not in two.text
    one = export_point(point("s", 1, "int8", [1, 1], acc=0.9, h2d=1, peak_gib=1, meta=meta), "ktransformers")
    assert "the tuned 1 slot per layer of the plan's experts holds the bytes of 0 experts at" in one.text


def test_ktransformers_notes_of_one_gpu_expert_name_it_in_the_singular():
    """A 2-slot int8 cache of bf16 experts keeps 1 checkpoint expert per layer: the notes said 'experts 0..0' and
    'as 1 checkpoint experts per MoE layer'."""
    meta = model_meta("qwen3_moe", n_layers=2, n_experts=8, hidden=256, inter=128)
    kt = export_point(point("s", 1, "int8", [2, 2], acc=0.9, h2d=1, peak_gib=1, meta=meta), "ktransformers")
    assert "--kt-num-gpu-experts 1" in kt.text
    assert "kt-kernel's GPU experts are expert 0 of every MoE layer" in kt.text
    assert "as 1 checkpoint expert per MoE layer" in kt.text
    assert "0..0" not in kt.text and "1 checkpoint experts" not in kt.text
    three = export_point(point("s", 1, "int8", [6, 6], acc=0.9, h2d=1, peak_gib=1, meta=meta), "ktransformers")
    assert "experts 0..2 of every MoE layer" in three.text and "as 3 checkpoint experts per MoE layer" in three.text


def test_the_ktransformers_frequency_note_of_one_gpu_expert_is_singular(tmp_path):
    """'keeps on the GPU the 1 most-routed experts ... to each layer's 1 to keep them' (found by review)."""
    counts = {"0": [3, 50, 7, 7, 0, 12, 90, 1], "1": [100, 1, 1, 1, 1, 1, 1, 99], "2": [4, 4, 4, 4, 4, 4, 4, 4]}
    meta = model_meta("deepseek_v3", n_layers=3, n_experts=8, first_dense=1, hidden=256, inter=128)
    hot = point("h", 1, "bf16", [1, 1, 1], acc=0.9, h2d=1, peak_gib=1, meta=meta)
    hot.config.update(policy="static_hot", routing_counts=counts)
    flags, notes = _kt_launched(tmp_path, make_db(tmp_path / "a.db", [hot]), "h", 1)
    assert flags["--kt-num-gpu-experts"] == "1"
    assert "keeps on the GPU the most-routed expert of each MoE layer" in notes and "to keep it per layer" in notes
    assert "1 most-routed experts" not in notes


def test_an_autoregressive_points_decoding_reads_without_the_denoising_keys_it_never_used(tmp_path):
    """The tuner stores the same decoding for every model (and compares it on resume, so it stays stored): an
    autoregressive study's carries the toy task's denoising steps and block length, `steps_per_block` 1,
    `block_length` 0 and the mark of how denoising steps are counted. `export --to json`, `recommend --json` and
    the hf recipe showed them as how the point decoded; they now show the keywords its greedy decoding reads and
    that it decodes one token per forward. A diffusion point's decoding reads as stored."""
    import dataclasses

    stored = {"generate": {"max_new_tokens": 16, "seed": 0, "steps": 16, "block_length": 8}, "steps_per_block": 1,
              "block_length": 0, "steps_per_block_counts": "denoising steps"}
    ar = point("s", 1, "int8", [4, 2], acc=0.9, h2d=1, peak_gib=1, meta=model_meta("qwen3_moe", 2, 8, hidden=32,
                                                                                    inter=16), model="tiny:qwen3_moe")
    dllm = point("d", 1, "int8", [4, 2], acc=0.9, h2d=1, peak_gib=1, meta=model_meta("llada_moe", 2, 8, hidden=32,
                                                                                      inter=16), model="tiny:llada_moe")
    ar, dllm = (dataclasses.replace(p, config={**p.config, "decoding": stored}) for p in (ar, dllm))
    url = make_db(tmp_path / "a.db", [ar, dllm])
    want = {"generate": {"max_new_tokens": 16, "seed": 0},
            "mode": "autoregressive: one token per forward, no denoising steps or blocks"}
    for study, decoding in (("s", want), ("d", stored)):
        r = _cli("export", study, "1", "--to", "json", "--storage", url)
        assert r.returncode == 0, r.stderr
        assert json.loads(r.stdout)["config"]["decoding"] == decoding
        r = _cli("recommend", "--study", study, "--storage", url, "--budget", "8GiB", "--json")
        assert r.returncode == 0, r.stderr
        assert json.loads(r.stdout)["chosen"]["config"]["decoding"] == decoding
    recipe = _cli("export", "s", "1", "--to", "hf", "--storage", url).stdout
    assert ("decoding = {'max_new_tokens': 16, 'seed': 0}  # autoregressive: one token per forward, no denoising "
            "steps or blocks") in recipe, recipe
    recipe = _cli("export", "d", "1", "--to", "hf", "--storage", url).stdout
    assert "decoding = {'max_new_tokens': 16, 'seed': 0, 'steps': 16, 'block_length': 8}\n" in recipe, recipe


def test_ctrl_c_while_export_check_imports_vllm_is_an_interrupt(tmp_path):
    """`export --check --to vllm` imports vLLM (seconds) inside a block that took any BaseException for the parser's
    verdict (argparse exits on bad flags): a Ctrl-C there printed 'FAILED vLLM's parser rejected the flags:
    KeyboardInterrupt' and the export went on. It is now the interrupt's one line, exit 130, as anywhere else."""
    meta = model_meta("qwen3_moe", n_layers=2, n_experts=8, hidden=2048, inter=768)
    url = make_db(tmp_path / "a.db", [point("s", 1, "bf16", [4, 4], acc=0.9, h2d=1, peak_gib=1, meta=meta)])
    serve = tmp_path / "fake" / "vllm" / "entrypoints" / "cli" / "serve.py"  # a vLLM whose import is Ctrl-C'd
    serve.parent.mkdir(parents=True)
    for d in (serve.parent, *serve.parents[1:4]):
        (d / "__init__.py").write_text("")
    serve.write_text("import os, signal, time\nos.kill(os.getpid(), signal.SIGINT)\ntime.sleep(5)\n")
    root = str(Path(__file__).resolve().parents[1])
    r = subprocess.run([sys.executable, "-m", "advisor", "export", "s", "1", "--to", "vllm", "--check", "--storage", url],
                       cwd=tmp_path, capture_output=True, text=True, timeout=120,
                       env={**os.environ, "PYTHONPATH": os.pathsep.join([str(tmp_path / "fake"), root])},
                       preexec_fn=lambda: signal.signal(signal.SIGINT, signal.SIG_DFL))
    assert r.returncode == 130, (r.returncode, r.stdout, r.stderr)
    assert "Traceback" not in r.stderr and "FAILED" not in r.stdout + r.stderr, r.stderr
    assert r.stderr.splitlines()[-1] == "error: interrupted; nothing is half-written - run the same command again"
