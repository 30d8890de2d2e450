"""llama.cpp export checked against the `gguf` package's own tensor names for each architecture."""

from __future__ import annotations

import json
import re
import subprocess
from pathlib import Path

import pytest
from cli_helpers import advisor_in_process, flat
from recommend_helpers import make_db, model_meta, point

from advisor.errors import UserError
from advisor.export.base import export_point
from advisor.export.llamacpp import GGUF_ARCH
from advisor.quant.plan import PrecisionPlan

gguf = pytest.importorskip("gguf")


def gguf_tensor_names(arch_name: str, blocks: int) -> list[str]:
    """Every per-block tensor name the gguf package knows for an architecture (with .weight)."""
    arch = next(a for a, n in gguf.MODEL_ARCH_NAMES.items() if n == arch_name)
    names = []
    for t in gguf.MODEL_TENSORS[arch]:
        tmpl = gguf.TENSOR_NAMES[t]
        if "{bid}" in tmpl:
            names += [tmpl.format(bid=b) + ".weight" for b in range(blocks)]
    return names


def _rules(lines: list[str]) -> list[tuple[re.Pattern, str]]:
    out = []
    for line in lines:
        pat, _, val = line.rpartition("=")
        out.append((re.compile(pat), val))
    return out


CASES = [
    ("llada_moe", 0, "llada-moe"),
    ("qwen3_moe", 0, "qwen3moe"),
    ("deepseek_v3", 1, "deepseek2"),  # layer 0 dense: MoE layer i is block i+1
    ("olmoe", 0, "olmoe"),
]


@pytest.mark.parametrize("family,first_dense,arch", CASES)
def test_every_expert_tensor_matched_by_exactly_one_rule(family, first_dense, arch):
    n_layers = 12  # block numbers up to 12: blk.1 must not catch blk.11
    meta = model_meta(family, n_layers=n_layers, n_experts=8, first_dense=first_dense, hidden=256, inter=256)
    plan = PrecisionPlan(default="int4", layers={0: "int8", 3: "bf16", 10: "int8"}, experts={5: {0: "bf16"}})
    slots = [8, 2, 8, 1, 4, 8, 2, 2, 1, 6, 8, 3]
    p = point("s", 1, plan.spec, slots, acc=0.9, h2d=1e6, peak_gib=3, meta=meta)
    res = export_point(p, "llama.cpp")
    assert GGUF_ARCH[family] == arch
    names = gguf_tensor_names(arch, n_layers + first_dense + 1)
    expert_names = [n for n in names if re.search(r"\.ffn_(gate|up|down|gate_up)_exps\.weight$", n)]
    moe_blocks = {i + first_dense for i in range(n_layers)}
    expert_names = [n for n in expert_names if int(n.split(".")[1]) in moe_blocks]
    assert len(expert_names) == 3 * n_layers
    *types, keep = _rules(res.data["tensor_types"])
    assert keep[1] == "bf16" and res.data["base_type"] == "Q4_K_S"  # most expert tensors are q4_K
    ots = _rules(res.data["override_tensor"])
    expected_type = {0: "q8_0", 3: "bf16", 10: "q8_0", 5: "bf16"}  # layer 5: hot bf16 expert -> highest rule
    for n in expert_names:
        hits = [v for pat, v in types if pat.search(n)]
        assert len(hits) == 1, (n, hits)
        layer = int(n.split(".")[1]) - first_dense
        assert hits[0] == expected_type.get(layer, "q4_K"), n
        assert len([v for pat, v in ots if pat.search(n)]) <= 1
        assert not keep[0].search(n)
    others = [n for n in names if n not in expert_names]
    assert not [n for n in others if any(pat.search(n) for pat, _ in types + ots)]  # routers, shexp, attention
    dense = [n for n in others if "_exps." not in n] + ["token_embd.weight", "output.weight"]
    assert all(keep[0].search(n) for n in dense)  # ... and everything else stays bf16
    for pat, _ in types + ots:  # layer numbers end with \. so blk.1 never catches blk.11
        assert re.match(r"blk\\\.(\d+|\(\d+(\|\d+)*\))\\\.ffn_", pat.pattern), pat.pattern
    assert all(v == "CPU" for _, v in ots)
    assert any(n.startswith("per-expert formats in MoE layer 5 collapsed") for n in res.notes), res.notes  # not "[5]"


def test_placement_spends_the_tuned_cache_bytes_on_whole_tensors():
    meta = model_meta("qwen3_moe", n_layers=4, n_experts=8, hidden=256, inter=256)
    p = point("s", 1, "bf16", [8, 8, 0, 0], acc=0.9, h2d=1e6, peak_gib=3, meta=meta)  # bf16: same bytes in the GGUF
    res = export_point(p, "llama.cpp")
    pl = res.data["placement"]
    assert [pl[f"blk.{b}.ffn_{x}_exps"] for b in (0, 1) for x in ("gate", "up", "down")] == ["GPU"] * 6
    assert [pl[f"blk.{b}.ffn_{x}_exps"] for b in (2, 3) for x in ("gate", "up", "down")] == ["CPU"] * 6
    assert res.data["override_tensor"] == [r"blk\.(2|3)\.ffn_(gate|up|down)_exps\.=CPU"]
    assert res.data["run_command"][-2:] == ["-ot", r"blk\.(2|3)\.ffn_(gate|up|down)_exps\.=CPU"]
    assert res.data["n_cpu_moe_equivalent"] is None  # the CPU layers are the last ones, not the first
    p = point("s", 1, "bf16", [0, 4, 8, 8], acc=0.9, h2d=1e6, peak_gib=3, meta=meta)
    res = export_point(p, "llama.cpp")
    # cache = 0 + 0.5 + 1 + 1 layers: blocks 2, 3 on GPU, then half of block 1 -> one projection (gate) of it
    assert res.data["placement"]["blk.1.ffn_gate_exps"] == "GPU" and res.data["placement"]["blk.1.ffn_up_exps"] == "CPU"
    # the GGUF's types decide the bytes: q8_0 (8.5 bits) is larger than the plan's int8 (8 bits + a scale per row),
    # so two whole int8 layers' cache holds 5 of their 6 q8_0 tensors - never more GPU memory than tuned
    q8 = export_point(point("s", 1, "int8", [8, 8, 0, 0], acc=0.9, h2d=1e6, peak_gib=3, meta=meta), "llama.cpp")
    info = q8.data["placement_info"]
    assert info["gpu_expert_bytes"] <= info["cache_bytes"]
    assert sum(q8.data["placement"][f"blk.{b}.ffn_{x}_exps"] == "GPU" for b in (0, 1) for x in ("gate", "up", "down")) == 5
    p = point("s", 1, "bf16", [0, 0, 8, 8], acc=0.9, h2d=1e6, peak_gib=3, meta=meta)
    assert export_point(p, "llama.cpp").data["n_cpu_moe_equivalent"] == 2
    assert any("miss policy copy" in n for n in export_point(p, "llama.cpp").notes)
    p.config["miss_policy"] = "cpu"  # the study computed misses on the CPU, as llama.cpp will
    res = export_point(p, "llama.cpp")
    assert res.data["miss_policy"] == "cpu" and any("as the study modelled" in n for n in res.notes)
    # llama-server computes them on the CPU while decoding only: ggml's op offload copies them for a prompt batch
    assert any("on the CPU while decoding (one token per forward; a prompt batch of 32 tokens or more copies them to "
               "the GPU, ggml's op offload, unless --no-op-offload is added)" in n for n in res.notes), res.notes
    p.config["miss_policy"] = "hybrid"  # the study copied some misses: llama.cpp's CPU experts never are
    notes = export_point(p, "llama.cpp").notes
    assert any("hybrid" in n and "speed differs" in n for n in notes) and not any("as the study" in n for n in notes)


def test_collapse_rules_and_types():
    meta = model_meta("qwen3_moe", n_layers=2, n_experts=4)
    meta["routing_counts"] = {"0": [100, 1, 1, 1], "1": [1, 1, 1, 100]}
    plan = PrecisionPlan(default="int4", experts={0: {0: "int8"}, 1: {0: "int8"}})
    p = point("s", 1, plan.spec, 2, acc=0.9, h2d=1e6, peak_gib=3, meta=meta)
    p.config["model_meta"] = meta
    hi = export_point(p, "llama.cpp").data["layer_types"]
    tr = export_point(p, "llama.cpp", ["collapse=traffic"]).data["layer_types"]
    assert hi == {"0": "q8_0", "1": "q8_0"}
    assert tr == {"0": "q8_0", "1": "q4_K"}  # layer 1's traffic is mostly on an int4 expert
    p = point("s", 1, "int4:g32:sym", 2, acc=0.9, h2d=1e6, peak_gib=3, meta=meta)
    assert set(export_point(p, "llama.cpp").data["layer_types"].values()) == {"q4_0"}


def test_emit_parts_and_script(tmp_path):
    meta = model_meta("llada_moe", n_layers=3, n_experts=4)
    p = point("s", 1, "int8", [4, 2, 0], acc=0.9, h2d=1e6, peak_gib=3, meta=meta)
    only = export_point(p, "llama.cpp", ["emit=tensor-types"]).text
    assert only == ("blk\\.(0|1|2)\\.ffn_(gate|up|down)_exps\\.weight=q8_0\n"
                    "^(?!blk\\.\\d+\\.ffn_(gate|up|down)_exps\\.)=bf16\n")
    res = export_point(p, "llama.cpp")
    script = res.text
    assert res.data["override_tensor"] == [] and res.data["run_command"][:4] == ["llama-diffusion-cli", "-m", "$OUT_GGUF", "-ngl"]
    # a quantized base type: llama-quantize applies tensor-type rules only then
    assert "llama-quantize --tensor-type-file tensor-types.txt \"$SRC_GGUF\" \"$OUT_GGUF\" Q8_0" in script
    # llama-diffusion-cli ignores -ot: whole blocks by -ngl - the cache (1 + 0.5 of a layer) holds the last block
    assert "llama-diffusion-cli -m \"$OUT_GGUF\" -ngl 2 " in script and " -ot " not in script
    with pytest.raises(UserError, match="llama-diffusion-cli ignores -ot.*-ngl 2: use --opt emit=script"):
        export_point(p, "llama.cpp", ["emit=override-tensor"])  # rules it would drop: refused, not printed
    p = point("s", 1, "int8", [0, 2, 4], acc=0.9, h2d=1e6, peak_gib=3, meta=model_meta("qwen3_moe", n_layers=3, n_experts=4))
    ot = "-ot 'blk\\.0\\.ffn_(gate|up|down)_exps\\.=CPU,blk\\.1\\.ffn_(up|down)_exps\\.=CPU'"
    script = export_point(p, "llama.cpp").text  # llama-server honours -ot: one argument, per projection
    assert "llama-server" in script and ot in script and script.count("\n  -ot ") == 1
    path = tmp_path / "run.sh"
    path.write_text(script)
    assert subprocess.run(["bash", "-n", str(path)]).returncode == 0


def test_row_widths_decide_the_type_and_the_fallback_is_said():
    # the bundled model's shape: gate/up rows 128 wide, down rows 64 wide - no k-quant fits
    meta = model_meta("llada_moe", n_layers=2, n_experts=4, hidden=128, inter=64)
    res = export_point(point("s", 1, "int4", 4, acc=0.9, h2d=1, peak_gib=1, meta=meta), "llama.cpp")
    assert set(res.data["expert_tensor_types"].values()) == {"q4_1"}
    assert any("ffn_gate_exps and ffn_up_exps rows are 128 wide, which q4_K (block 256) does not divide: q4_1 instead "
               "in blocks 0 and 1" in n for n in res.notes), res.notes  # prose, not the regex "(gate|up)", "(0|1)"
    assert res.data["base_type"] == "Q4_1"
    meta = model_meta("qwen3_moe", n_layers=2, n_experts=4, hidden=256, inter=48)
    res = export_point(point("s", 1, "default=int2;layers=1:int8", 4, acc=0.9, h2d=1, peak_gib=1, meta=meta), "llama.cpp")
    t = res.data["expert_tensor_types"]
    assert (t["blk.0.ffn_gate_exps.weight"], t["blk.0.ffn_down_exps.weight"]) == ("q2_K", "bf16")  # 48 % 32 != 0
    assert (t["blk.1.ffn_up_exps.weight"], t["blk.1.ffn_down_exps.weight"]) == ("q8_0", "bf16")


def test_llama_cpp_refuses_diffusion_models_it_cannot_run():
    for family in ("llada2",):
        p = point("s", 1, "int8", 4, acc=0.9, h2d=1, peak_gib=1, meta=model_meta(family, n_layers=2, first_dense=1))
        with pytest.raises(UserError, match="no diffusion path for LLaDA2.*--to hf"):
            export_point(p, "llama.cpp")


FAKE_DIFFUSION_CLI = r"""#!/usr/bin/env bash
# llama-diffusion-cli's own rules (examples/diffusion/diffusion-cli.cpp, diffusion.cpp of llama.cpp as built from
# llama-cpp-python 0.3.36): GGML_ASSERT((eps == 0) ^ (block_length == 0)) - neither has a default, so without
# one of the two flags it aborts - max_length % block_length == 0 (max_length is -ub: prompt + generation) and
# steps % (ubatch / block_length) == 0; and the sequence, -ub long, fits one batch of -b (default 2048: llama_context
# caps the ubatch at it; "get_sub_batch: failed to add token" at index 2048 otherwise). Later flags win, as in its parser.
eps=0; bl=0; steps=128; ub=512; b=2048
while [ $# -gt 0 ]; do
  case "$1" in
    --diffusion-eps) eps=$2; shift;; --diffusion-block-length) bl=$2; shift;;
    --diffusion-steps) steps=$2; shift;; -ub|--ubatch-size) ub=$2; shift;; -b|--batch-size) b=$2; shift;;
  esac; shift
done
if [ "$ub" -gt "$b" ]; then echo "get_sub_batch: failed to add token 1 at index $b (error -1, n = $ub)" >&2; exit 134; fi
if { [ "$eps" = 0 ] && [ "$bl" = 0 ]; } || { [ "$eps" != 0 ] && [ "$bl" != 0 ]; }; then
  echo "GGML_ASSERT((params.diffusion.eps == 0) ^ (params.diffusion.block_length == 0)) failed" >&2; exit 134
fi
if [ "$bl" != 0 ] && [ $((ub % bl)) != 0 ]; then echo "GGML_ASSERT(params.max_length % params.block_length == 0)" >&2; exit 134; fi
if [ "$bl" != 0 ] && [ $((steps % (ub / bl))) != 0 ]; then echo "GGML_ASSERT(params.steps % num_blocks == 0)" >&2; exit 134; fi
echo "generated with block length $bl, $steps steps, ubatch $ub, $((steps / (ub / bl))) steps per block"
"""

FAKE_DIFFUSION_PLACEMENT = r"""#!/usr/bin/env bash
# Where llama-diffusion-cli (llama.cpp as built from llama-cpp-python 0.3.36) puts a model's blocks: its main()
# copies only n_gpu_layers, devices, load_mode and check_tensors into llama_model_params - -ot, --n-cpu-moe and
# --cpu-moe are parsed (an unknown buffer type is an error) and dropped - and llama-model.cpp puts block il on the
# GPU when il >= n_layer + 1 - ngl. Every forward is the whole -ub sequence (>= 32 tokens), so ggml's op offload
# runs host-resident weights on the GPU unless GGML_OP_OFFLOAD_MIN_BATCH is above it (--no-op-offload: ignored).
ngl=-1; ub=512
while [ $# -gt 0 ]; do
  case "$1" in
    -ngl|--n-gpu-layers|--gpu-layers) ngl=$2; shift;; -ub|--ubatch-size) ub=$2; shift;;
    -ot|--override-tensor|-ncmoe|--n-cpu-moe) shift;; -cmoe|--cpu-moe) ;;
  esac; shift
done
[ "$ngl" -lt 0 ] && ngl=$((N_LAYER + 1))
gpu=""; cpu=""
for ((il = 0; il < N_LAYER; il++)); do
  if [ "$il" -ge $((N_LAYER + 1 - ngl)) ]; then gpu="$gpu $il"; else cpu="$cpu $il"; fi
done
echo "gpu blocks:$gpu"
echo "cpu blocks:$cpu"
if [ -n "$cpu" ] && [ "$ub" -ge "${GGML_OP_OFFLOAD_MIN_BATCH:-32}" ]; then echo "cpu blocks run on: gpu (op offload)"
elif [ -n "$cpu" ]; then echo "cpu blocks run on: cpu"; fi
"""


def _fake_llama_cpp_env(tmp_path, cli: str = FAKE_DIFFUSION_CLI):
    """An environment whose PATH finds a no-op llama-quantize and `cli` (as llama-diffusion-cli), as run.sh needs them."""
    import os

    bin_dir = tmp_path / "bin"
    bin_dir.mkdir()
    (bin_dir / "llama-quantize").write_text("#!/bin/sh\nexit 0\n")
    (bin_dir / "llama-diffusion-cli").write_text(cli)
    for f in bin_dir.iterdir():
        f.chmod(0o755)
    return {**os.environ, "PATH": f"{bin_dir}:{os.environ['PATH']}", "SRC_GGUF": "in.gguf", "OUT_GGUF": "out.gguf"}


def test_the_exported_llama_cpp_script_runs_as_printed_with_the_studys_decoding(tmp_path):
    """`./run.sh -p PROMPT`, as a user runs it, aborted in llama-diffusion-cli: neither --diffusion-block-length nor
    --diffusion-eps has a default there. The script now passes the study's block length (8 in the example study)
    and its 8 steps per block over llama.cpp's default -ub 512 (64 blocks: 512 steps); flags after it still win."""
    from pathlib import Path

    root = Path(__file__).resolve().parents[1]
    r = advisor_in_process("export", "bundled-example", "129", "--storage", str(root / "studies/example/advisor.db"),
                           "--to", "llama.cpp", "-o", str(tmp_path / "run.sh"), cwd=root)
    assert r.returncode == 0, r.stderr
    script = (tmp_path / "run.sh").read_text()
    assert "--diffusion-block-length 8" in script and "--diffusion-steps 512" in script
    assert "8 steps per block" in script and "with -ub N pass --diffusion-steps N (512 at" in script
    env = _fake_llama_cpp_env(tmp_path)
    for args, want in ((["-p", "2+2="], "block length 8, 512 steps, ubatch 512"),
                       (["-p", "2+2=", "-ub", "64", "--diffusion-steps", "64"], "block length 8, 64 steps, ubatch 64")):
        run = subprocess.run(["bash", str(tmp_path / "run.sh"), *args], capture_output=True, text=True, cwd=tmp_path,
                             env=env)
        assert run.returncode == 0 and want in run.stdout, run.stderr


def test_the_llama_cpp_script_says_which_ub_decodes_the_studys_canvas():
    """llama-diffusion-cli's canvas is -ub tokens, prompt included (diffusion-cli.cpp: `max_length =
    params.n_ubatch`; -n is not read): as the script runs, the default -ub 512 generates 512 less the prompt's
    tokens, where the example study generated 16 after each prompt. Its comment said how many steps go with -ub N,
    never which N decodes the study's canvas; it now names the study's 16 new tokens and that N."""
    from pathlib import Path

    root = Path(__file__).resolve().parents[1]
    r = advisor_in_process("export", "bundled-example", "137", "--storage", str(root / "studies/example/advisor.db"),
                           "--to", "llama.cpp", cwd=root)
    assert r.returncode == 0, r.stderr
    decoding = next(line for line in r.stdout.splitlines() if line.startswith("# decoding:"))
    assert "block length 8, 8 steps per block, 16 new tokens after each prompt;" in decoding, decoding
    assert ("so it generates N less the prompt's tokens (512 less them as the script runs): N = the prompt's tokens "
            "+ 16, rounded up to a multiple of 8, decodes about the study's canvas") in decoding, decoding


@pytest.fixture(scope="module")
def short_generation_study(tmp_path_factory):
    """The bundled model tuned on the toy task with 6 new tokens: its 8-token blocks are cut to one 6-token
    block decoded in 16 steps (`advisor.models.generate`), the decoding llama.cpp must reproduce."""

    work = tmp_path_factory.mktemp("short-gen")
    (work / "s.toml").write_text('name = "s"\n[precision]\nformats = ["int8"]\n[cache]\n'
                                 'slots_per_layer = { low = 1, high = "all" }\n'
                                 '[evaluation]\ntask = "toy"\nlimit = 1\ntrace_prompts = 1\nfidelity_prompts = 1\n'
                                 'max_new_tokens = 6\n')  # (one prompt each: the decoding is the check)
    r = advisor_in_process("tune", "bundled", "--space", "s.toml", "--trials", "1", "--storage", "s.db", cwd=work)
    assert r.returncode == 0, r.stdout + r.stderr
    return work


def test_the_exported_block_length_is_the_one_the_study_decoded(short_generation_study, tmp_path):
    """The script said "decoding: the study's, block length 8" for a study whose blocks were cut to its 6-token
    generation: the block length the tuner really decoded is stored and exported."""

    r = advisor_in_process("export", "bundled-toy-s", "0", "--storage", "s.db", "--to", "llama.cpp", "-o",
                           str(tmp_path / "run.sh"), cwd=short_generation_study)
    assert r.returncode == 0, r.stderr
    script = (tmp_path / "run.sh").read_text()
    assert "--diffusion-block-length 6" in script and "block length 6, 16 steps per block" in script


def test_a_block_length_that_does_not_divide_512_still_runs_with_the_studys_steps_per_block(short_generation_study,
                                                                                               tmp_path):
    """llama-diffusion-cli asserts -ub % block length == 0 (diffusion.cpp), and -ub is 512 unless given: the
    6-token blocks of this study aborted it. The script now passes -ub 516 (86 blocks of 6) and 16 steps per
    block, the study's, as 1376 --diffusion-steps."""

    r = advisor_in_process("export", "bundled-toy-s", "0", "--storage", "s.db", "--to", "llama.cpp", "-o",
                           str(tmp_path / "run.sh"), cwd=short_generation_study)
    assert r.returncode == 0, r.stderr
    env = _fake_llama_cpp_env(tmp_path)
    run = subprocess.run(["bash", str(tmp_path / "run.sh"), "-p", "2+2="], capture_output=True, text=True,
                         cwd=tmp_path, env=env)
    assert run.returncode == 0, run.stderr
    assert "block length 6, 1376 steps, ubatch 516, 16 steps per block" in run.stdout


def test_a_block_longer_than_1536_tokens_passes_a_batch_that_holds_the_whole_sequence(tmp_path):
    """-ub, llama-diffusion-cli's whole sequence, is the next multiple of the block length above 512: for a block
    longer than 1536 tokens that passes llama.cpp's default -b 2048, at which llama_context caps the ubatch, and
    llama-diffusion-cli failed ("get_sub_batch: failed to add token 1 at index 2048", run with llama.cpp as built
    from llama-cpp-python 0.3.36: -ub 2560 -b 2560 generates). The script passes -b as large as -ub."""

    p = point("s", 1, "int8", 4, acc=0.9, h2d=1e6, peak_gib=1, meta=model_meta("llada_moe"))
    p.config["decoding"] = {"block_length": 2560, "steps_per_block": 4}
    url = make_db(tmp_path / "a.db", [p])
    r = advisor_in_process("export", "s", "1", "--storage", url, "--to", "llama.cpp", "-o", str(tmp_path / "run.sh"),
                           cwd=tmp_path)
    assert r.returncode == 0, r.stderr
    run = subprocess.run(["bash", str(tmp_path / "run.sh"), "-p", "2+2="], capture_output=True, text=True,
                         cwd=tmp_path, env=_fake_llama_cpp_env(tmp_path))
    assert run.returncode == 0, run.stderr
    assert "block length 2560, 4 steps, ubatch 2560, 4 steps per block" in run.stdout, run.stdout


def test_the_exported_diffusion_script_places_experts_by_what_llama_diffusion_cli_honours(tmp_path):
    """The example study's trial 129 (LLaDA-MoE, 52 of 64 experts cached per layer) was exported as `-ngl 999 -ot
    ...=CPU`: llama-diffusion-cli drops -ot, so every block and expert loaded on the GPU, past the tuned cache. The
    script now places whole blocks by -ngl: the blocks llama-diffusion-cli puts on the GPU are the ones the export
    states, and their experts fit the tuned cache's bytes."""
    import json
    from pathlib import Path

    root = Path(__file__).resolve().parents[1]
    base = ["export", "bundled-example", "129", "--storage", str(root / "studies/example/advisor.db"), "--to",
            "llama.cpp"]
    r = advisor_in_process(*base, "-o", str(tmp_path / "run.sh"), cwd=root)
    assert r.returncode == 0, r.stderr
    data = json.loads(advisor_in_process(*base, "--json", cwd=root).stdout)
    env = {**_fake_llama_cpp_env(tmp_path, FAKE_DIFFUSION_PLACEMENT), "N_LAYER": "4"}
    run = subprocess.run(["bash", str(tmp_path / "run.sh"), "-p", "2+2="], capture_output=True, text=True,
                         cwd=tmp_path, env=env)
    assert run.returncode == 0, run.stderr
    gpu = {int(b) for b in run.stdout.split("gpu blocks:")[1].split("\n")[0].split()}
    stated = {int(k.split(".")[1]) for k, v in data["placement"].items() if v == "GPU"}
    assert gpu == stated == {3}  # every expert of a GPU block is on the GPU, none of a CPU block
    assert all(v == "GPU" for k, v in data["placement"].items() if int(k.split(".")[1]) in gpu)
    info = data["placement_info"]
    assert 0 < info["gpu_expert_bytes"] <= info["cache_bytes"] and "-ot" not in data["run_command"]
    assert "llama-diffusion-cli ignores -ot" in flat(r.stderr)
    # hybrid misses: llama.cpp's default (op offload copies the CPU blocks' experts), said in the note
    assert "cpu blocks run on: gpu (op offload)" in run.stdout and "keeps none between forwards" in flat(r.stderr)


def test_the_diffusion_scripts_ngl_counts_blocks_after_the_last_moe_block(tmp_path):
    """-ngl N puts blocks n_layer+1-N.. on the GPU, n_layer being every block of the GGUF (llama-model.cpp:
    i_gpu_start = n_layer_all + 1 - n_gpu_layers); the export counted n_layer as the last MoE block + 1, so for a
    model with a dense block after it, its -ngl put one MoE block fewer on the GPU than it stated. The study's
    decoder layer count (recorded since 2026-12-05) is n_layer now."""
    meta = {**model_meta("llada_moe", n_layers=4, n_experts=8, hidden=256, inter=256), "num_hidden_layers": 5}
    res = export_point(point("s", 1, "int8", [8, 8, 4, 4], acc=0.9, h2d=1e6, peak_gib=3, meta=meta), "llama.cpp")
    assert res.data["placement_info"]["gpu_blocks"] == [2, 3] and res.data["run_command"][3:5] == ["-ngl", "4"]
    (tmp_path / "run.sh").write_text(res.text)
    env = {**_fake_llama_cpp_env(tmp_path, FAKE_DIFFUSION_PLACEMENT), "N_LAYER": "5"}
    run = subprocess.run(["bash", str(tmp_path / "run.sh"), "-p", "2+2="], capture_output=True, text=True,
                         cwd=tmp_path, env=env)
    assert run.returncode == 0, run.stderr
    assert "gpu blocks: 2 3 4" in run.stdout  # the stated MoE blocks, and the dense block after them


def test_a_cpu_miss_study_has_its_host_blocks_computed_on_the_cpu(tmp_path):
    meta = model_meta("llada_moe", n_layers=4, n_experts=8, hidden=256, inter=256)
    p = point("s", 1, "int8", [8, 8, 4, 4], acc=0.9, h2d=1e6, peak_gib=3, meta=meta)
    p.config["miss_policy"] = "cpu"
    res = export_point(p, "llama.cpp")
    assert res.data["run_env"] == {"GGML_OP_OFFLOAD_MIN_BATCH": "2147483647"}
    assert res.data["placement_info"]["gpu_blocks"] == [2, 3] and res.data["run_command"][3:5] == ["-ngl", "3"]
    # blocks 2 and 3 were held in part (4 of 8 slots): llama.cpp cannot split them as the study modelled
    assert not any(n.startswith("miss policy cpu: llama.cpp") for n in res.notes)
    assert any("computes them (their attention too) on the CPU" in n and "cannot split" in n for n in res.notes)
    (tmp_path / "run.sh").write_text(res.text)
    env = {**_fake_llama_cpp_env(tmp_path, FAKE_DIFFUSION_PLACEMENT), "N_LAYER": "4"}
    run = subprocess.run(["bash", str(tmp_path / "run.sh"), "-p", "2+2="], capture_output=True, text=True,
                         cwd=tmp_path, env=env)
    assert run.returncode == 0, run.stderr
    assert "gpu blocks: 2 3" in run.stdout and "cpu blocks run on: cpu" in run.stdout
    p.config["miss_policy"] = "copy"  # the study copied misses: llama.cpp's default op offload copies too
    res = export_point(p, "llama.cpp")
    assert res.data["run_env"] == {} and any("more than the study counted" in n for n in res.notes)


def test_the_diffusion_script_says_llama_diffusion_cli_samples_where_the_study_decoded_greedily(tmp_path):
    """LLaDA-MoE studies decode greedily with low-confidence remasking (temperature 0); llama-diffusion-cli draws
    each token from a top-k/top-p/temp/dist chain (diffusion.cpp) with --temp 0.8 by default, so the script's
    "decoding: the study's" was not the study's token choice: a note says what differs and what --top-k 1 does."""
    from pathlib import Path

    root = Path(__file__).resolve().parents[1]
    r = advisor_in_process("export", "bundled-example", "129", "--storage", str(root / "studies/example/advisor.db"),
                           "--to", "llama.cpp", cwd=root)
    assert r.returncode == 0, r.stderr
    assert "note: the study decoded greedily" in flat(r.stderr) and "defaults --temp 0.8 --top-k 40 --top-p 0.95" in flat(r.stderr)
    assert "# note: the study decoded greedily" in r.stdout
    meta = model_meta("qwen3_moe", n_layers=2, n_experts=4)  # llama-server: sampling is per request, no note
    res = export_point(point("s", 1, "int8", 4, acc=0.9, h2d=1, peak_gib=1, meta=meta), "llama.cpp")
    assert not any("decoded greedily" in n for n in res.notes)


def test_the_diffusion_scripts_ngl_says_it_counts_the_output_layer():
    """`-ngl 2` beside "the last 1 of 4 MoE blocks on the GPU" (and `-ngl 1` beside "none of them") read as a
    contradiction: llama.cpp counts the output layer among the -ngl layers, which nothing printed said. The note
    and the script's placement line say what the number holds."""
    from pathlib import Path

    root = Path(__file__).resolve().parents[1]
    r = advisor_in_process("export", "bundled-example", "129", "--storage", str(root / "studies/example/advisor.db"),
                           "--to", "llama.cpp", cwd=root)
    assert r.returncode == 0, r.stderr
    said = "-ngl 2 (llama.cpp counts the output layer among them: the output layer and the last block; the last 1"
    assert said in flat(r.stderr)
    assert "whole blocks by -ngl 2 (llama-diffusion-cli ignores -ot; llama.cpp counts the output layer among them: " \
           "the output layer and the last block)" in r.stdout
    from advisor.export.llamacpp import ngl_meaning

    assert [ngl_meaning(n).rsplit(": ", 1)[1] for n in (1, 2, 3)] == [
        "the output layer and no block", "the output layer and the last block", "the output layer and the last 2 blocks"]


EXAMPLE_DB = Path(__file__).resolve().parents[1] / "studies" / "example" / "advisor.db"


ALL_OF_0_AND_1 = "the experts of blocks 0 and 1 stayed on the GPU once loaded"
DOWN_OF_1 = "the down projection (ffn_down_exps) of the experts of block 1 stayed on the GPU once loaded"


@pytest.mark.parametrize(("study", "trial", "family", "held", "policy"), [
    # the bundled example's trial 7: int4 experts, 64 slots in each of 4 layers, misses on the CPU; the GGUF's q4_1 and
    # bf16 (rows too narrow for q4_K) take more bytes than int4, so blocks 0 and 1 stay in host memory
    ("bundled-example", 7, "llada_moe", ALL_OF_0_AND_1, "cpu"),
    # trial 6: the same with misses copied
    ("bundled-example", 6, "llada_moe", ALL_OF_0_AND_1, "copy"),
    # llama-server: int8 in every slot; q8_0 (8.5 bits) is larger than int8 (8 bits + a scale per row): 5 of the 6
    # expert tensors fit, block 1's ffn_down_exps goes to host memory (the note said "the experts of blocks 1")
    ("s", 1, "qwen3_moe", DOWN_OF_1, "cpu"),
])
def test_a_study_that_held_every_expert_is_not_said_to_have_missed_them(tmp_path, study, trial, family, held, policy):
    """A study whose cache held every expert can still export expert tensors to the CPU (the GGUF's types are larger
    than the plan's, and the export never puts more expert bytes on the GPU than the tuned cache's); its notes then
    spoke of the study's miss policy as if the study had missed those experts ('miss policy cpu: llama.cpp computes
    the CPU blocks ... as the study modelled'; 'where the study's copies stayed in its expert cache'), where it kept
    them on the GPU. Now a note says so, and that llama.cpp's speed differs from the study's."""
    if study == "s":
        meta = model_meta(family, n_layers=2, n_experts=8, hidden=256, inter=256)
        p = point("s", 1, "int8", [8, 8], acc=0.9, h2d=1e6, peak_gib=3, meta=meta)
        p.config["miss_policy"] = policy
        url = make_db(tmp_path / "a.db", [p])
    else:
        url = f"sqlite:///{EXAMPLE_DB}"
    r = advisor_in_process("export", study, str(trial), "--storage", url, "--to", "llama.cpp", "--json",
                           cwd=tmp_path)
    assert r.returncode == 0, r.stdout + r.stderr
    doc = json.loads(r.stdout)
    notes = " ".join(doc["notes"])
    stay = "it stays" if held == DOWN_OF_1 else "they stay"
    assert (f"the study's cache held every expert (slots = experts in every MoE layer): {held}, its miss policy "
            f"{policy} handling at most each one's first use; here {stay} in host memory only because the GGUF's "
            "types") in notes, notes
    assert "so its speed differs from the study's time per token, which counted them on the GPU" in notes
    assert "as the study modelled" not in notes and "copies more than the study counted" not in notes, notes


@pytest.mark.parametrize(("family", "policy", "miss", "held"), [
    ("qwen3_moe", "cpu", None, DOWN_OF_1),  # llama-server: block 1's ffn_down_exps in host memory (5 of 6 tensors fit)
    ("llada_moe", "cpu", None, ALL_OF_0_AND_1),  # llama-diffusion-cli: -ngl keeps blocks 0, 1 in host memory
    # copy misses: blocks 2, 3 (no slot) missed every expert in the study, copied, where llama.cpp computes them
    ("qwen3_moe", "copy", "the study modelled miss policy copy (each missed expert copied to the GPU); llama.cpp",
     DOWN_OF_1),
])
def test_wholly_held_layers_beside_empty_ones_in_host_memory_are_not_said_to_run_as_modelled(tmp_path, family, policy,
                                                                                              miss, held):
    """int8 with slots 8,8,0,0 (no layer partly held): the GGUF's q8_0 takes more bytes than int8, so expert tensors
    of the wholly held blocks 0, 1 go to host memory; the notes said only 'miss policy cpu: llama.cpp computes the
    -ot =CPU experts on the CPU, as the study modelled', where the study kept those experts on the GPU. Now a note
    says so, and that llama.cpp's speed differs; a copy-miss study's note on its missed blocks is kept."""
    meta = model_meta(family, n_layers=4, n_experts=8, hidden=256, inter=256)
    p = point("s", 1, "int8", [8, 8, 0, 0], acc=0.9, h2d=1e6, peak_gib=3, meta=meta)
    p.config["miss_policy"] = policy
    url = make_db(tmp_path / "a.db", [p])
    r = advisor_in_process("export", "s", "1", "--storage", url, "--to", "llama.cpp", "--json", cwd=tmp_path)
    assert r.returncode == 0, r.stdout + r.stderr
    notes = " ".join(json.loads(r.stdout)["notes"])
    assert "as the study modelled" not in notes, notes
    assert ("the study's cache held every expert of blocks 0 and 1 (slots = experts) and none of the other blocks': "
            f"{held}") in notes, notes
    assert "in host memory as placed within the tuned cache's bytes at the GGUF's types (q8_0)" in notes
    assert "so its speed differs from the study's time per token, which counted them on the GPU" in notes, notes
    assert miss is None or miss in notes, notes


@pytest.mark.parametrize(("family", "plan", "slots", "said"), [
    # llama-server: the tuned cache (2.5 layers at bf16) holds blocks 2, 3 and one of block 1's three tensors
    ("qwen3_moe", "bf16", [0, 4, 8, 8], "those of block 1 are split by projection, ffn_gate_exps on the GPU and "
                                        "ffn_up_exps and ffn_down_exps in host memory"),
    # llama-server: 3 layers at bf16: blocks 0-2 on the GPU, block 3 in host memory
    ("qwen3_moe", "bf16", [8, 8, 4, 4], "the experts of block 2 go whole to the GPU, where none misses; those of "
                                        "block 3 whole to host memory"),
    # llama-diffusion-cli: whole blocks from the end, so the partly held blocks 2, 3 go to the GPU, and the wholly
    # held blocks 0, 1 to host memory
    ("llada_moe", "int8", [8, 8, 4, 4], "the experts of blocks 2 and 3 go whole to the GPU, where none misses; and "
                                        "blocks 0 and 1, whose experts the study held all of, have expert tensors in "
                                        "host memory too"),
])
def test_a_partly_held_layer_is_not_said_to_run_as_the_study_modelled(tmp_path, family, plan, slots, said):
    """GGUF fuses a layer's experts into one tensor per projection (ffn_{gate,up,down}_exps: llama-model.cpp creates
    each {n_embd, n_ff, n_expert}) and llama.cpp places whole tensors (-ot patterns match tensor names), so a layer
    whose study held some of its experts (0 < slots < experts) cannot be split as the study modelled; the notes said
    'miss policy cpu: llama.cpp computes ... as the study modelled'. Now a note names where those layers go and that
    llama.cpp's speed differs."""
    meta = model_meta(family, n_layers=4, n_experts=8, hidden=256, inter=256)
    p = point("s", 1, plan, slots, acc=0.9, h2d=1e6, peak_gib=3, meta=meta)
    p.config["miss_policy"] = "cpu"
    url = make_db(tmp_path / "a.db", [p])
    r = advisor_in_process("export", "s", "1", "--storage", url, "--to", "llama.cpp", "--json", cwd=tmp_path)
    assert r.returncode == 0, r.stdout + r.stderr
    notes = " ".join(json.loads(r.stdout)["notes"])
    assert "miss policy cpu: llama.cpp" not in notes, notes  # the note that ended 'as the study modelled'
    assert ("llama.cpp keeps a layer's experts in one tensor per projection (ffn_{gate,up,down}_exps), each all on "
            "the GPU or all in host memory, so it cannot split "
            + ("that block" if sum(0 < s < 8 for s in slots) == 1 else "those blocks") + " as the study modelled") in notes, notes
    assert said in notes, notes
    assert "the most used included, llama.cpp computes them" in notes and "so its speed differs" in notes, notes


def test_an_unquantized_plan_is_said_to_run_at_the_converted_ggufs_type(tmp_path):
    """An fp16 plan (the bundled example's no-cache baseline, trial 210) has no quantized expert, so the script runs
    no llama-quantize (it applies per-tensor types only over a quantized base type) and llama-diffusion-cli runs the
    bf16 GGUF as converted - read back with gguf-py, its experts are BF16. The export said 'format fp16: f16: exact'
    and layer_types f16 (an fp32 plan: f32, and placed at f32's bytes). It now says bf16, and why, and how to get the
    plan's type."""
    r = advisor_in_process("export", "bundled-example", "210", "--storage", f"sqlite:///{EXAMPLE_DB}",
                           "--to", "llama.cpp", "--json", cwd=tmp_path)
    assert r.returncode == 0, r.stdout + r.stderr
    doc = json.loads(r.stdout)
    assert doc["base_type"] is None and doc["quantize_command"] is None
    assert set(doc["layer_types"].values()) == set(doc["expert_tensor_types"].values()) == {"bf16"}
    assert doc["type_map"] == {"fp16": "bf16: as converted (no llama-quantize step)"}
    assert ("so every tensor runs as the converter wrote it, bf16: the plan's fp16 experts run as bf16, not f16; for "
            "f16 experts convert with --outtype f16 (every tensor is then f16) and give that GGUF as SRC_GGUF"
            ) in " ".join(doc["notes"])
    # a bf16 plan is the converted GGUF as it is: nothing to say beyond it
    meta = model_meta("qwen3_moe", n_layers=4, n_experts=8, hidden=256, inter=256)
    same = export_point(point("s", 1, "bf16", [8, 8, 0, 0], acc=0.9, h2d=1e6, peak_gib=3, meta=meta), "llama.cpp")
    assert "the plan keeps every expert unquantized: the converted GGUF is the model, no llama-quantize step" in same.notes
    # fp32 experts: placed at the bf16 bytes the GGUF holds (the tuned cache of 2 fp32 layers holds all 4 at bf16)
    f32 = export_point(point("s", 1, "fp32", [8, 8, 0, 0], acc=0.9, h2d=1e6, peak_gib=3, meta=meta), "llama.cpp")
    assert f32.data["override_tensor"] == [] and set(f32.data["layer_types"].values()) == {"bf16"}
    assert any("2x the bytes this placement counted" in n for n in f32.notes)
