"""Do the exports do what they say in the runtimes themselves? Run them there, side by side, in one run.

llama.cpp (the tools built by benchmarks/build_llamacpp.sh, cached in ~/.cache/moe-advisor/llama.cpp): the
bundled LLaDA-MoE model and a tiny random Qwen3-MoE are converted to GGUF with llama.cpp's own converter, the
exported script runs (its llama-quantize command with the exported tensor-type file; for the diffusion model
also llama-diffusion-cli with the exported -ngl placement), and every tensor's type is read back with the
`gguf` package: each expert tensor must have the type the export states (the plan's, or the fallback it
names), every other tensor the type it had (bf16). HF: each recipe runs as written (bitsandbytes through the
advisor's loader on the bundled model; TorchAO int8 on the tiny Qwen3-MoE). vLLM: the flags through vLLM's
own parser when vllm is installed.

The converter knows neither toy tokenizer (a character vocabulary, a byte vocabulary), so the conversion
(`scripts/bundled_to_gguf.py`, as a user runs it) writes them as a byte-level BPE vocabulary; everything else is
the converter's own code.

    python benchmarks/exports_in_runtimes.py [--llama-cpp DIR] [--workdir DIR]
Last line: RESULT llama_cpp_types_ok=<0|1|skip> hf_recipes_ok=<0|1> vllm_flags_ok=<0|1|skip> (skip: no cached
llama.cpp build, or no vLLM, so that part did not run)
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import re
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))
DEFAULT_LLAMACPP = Path.home() / ".cache" / "moe-advisor" / "llama.cpp"
PROMPT = "Q: Kim's eggs: has 58, gave 18. How many?\nA: "  # the bundled model's task format (advisor.eval.toy)

def sh(cmd: list[str], **kw) -> str:
    """Run `cmd`; its stdout and stderr interleaved as written (llama.cpp logs to both)."""
    r = subprocess.run(cmd, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True, errors="replace", **kw)
    if r.returncode != 0:
        raise RuntimeError(f"{' '.join(cmd)} failed ({r.returncode}):\n{r.stdout[-3000:]}")
    return r.stdout


def generated_text(log: str) -> str:
    """What llama-diffusion-cli generated: the lines after its final 'total time' line, log prefixes removed."""
    if "total time:" not in log:
        return ""
    tail = log.replace("\r", "\n").rpartition("total time:")[2].split("\n")[1:]
    lines = [re.sub(r"^\d+\.\d+\.\d+\.\d+ [IWE] ?", "", line) for line in tail]
    return "\n".join(line for line in lines if line.strip()).strip()


def tiny_qwen(dest: Path) -> Path:
    """A tiny random Qwen3-MoE: gate/up rows 256 wide (k-quants fit), down rows 96 wide (they do not)."""
    import torch
    import transformers as tf

    torch.manual_seed(0)
    cfg = tf.Qwen3MoeConfig(vocab_size=256, hidden_size=256, num_hidden_layers=3, num_attention_heads=4,
                            num_key_value_heads=2, head_dim=64, intermediate_size=512, moe_intermediate_size=96,
                            num_experts=8, num_experts_per_tok=2, max_position_embeddings=256, tie_word_embeddings=False,
                            pad_token_id=0, bos_token_id=1, eos_token_id=2)
    tf.Qwen3MoeForCausalLM(cfg).to(torch.bfloat16).save_pretrained(dest)
    return dest


def front_point(spec: str, path: str, plan: str, slots: list[int]):
    """A stored-front point for `spec` carrying the model's real layout (what `advisor tune` records)."""
    from advisor.models.load import load_model, model_meta
    from advisor.quant.plan import PrecisionPlan
    from advisor.results.front import FrontPoint

    loaded = load_model(path)
    meta = model_meta(loaded)
    p = PrecisionPlan.parse(plan)
    config = {"precision": json.loads(p.to_json()), "slots_per_layer": slots, "policy": "lru", "prefetch": "none",
              "model_meta": meta}
    return FrontPoint(study_name="runtimes", trial_number=0, model=spec, model_fingerprint=loaded.fingerprint,
                      task="toy", config=config, values={"peak_gpu_bytes": 2**30}, sources={"peak_gpu_bytes": "counted"},
                      device="cpu", hardware={"name": "default"}, space="-")


def gguf_types(path: Path) -> dict[str, str]:
    import gguf

    return {t.name: t.tensor_type.name.lower() for t in gguf.GGUFReader(str(path)).tensors}


def check_types(src: dict[str, str], out: dict[str, str], want: dict[str, str]) -> list[str]:
    """Problems: expert tensors not of the exported type, other tensors changed."""
    bad = [f"{n}: {out.get(n)} (export says {t})" for n, t in want.items() if out.get(n) != t.lower()]
    bad += [f"{n}: {src[n]} -> {out.get(n)}" for n in src if n not in want and out.get(n) != src[n]]
    return bad


def run_llamacpp(llama: Path, work: Path, name: str, model_dir: Path, point, generate: bool) -> bool:
    from advisor.export.base import export_point

    env = {**os.environ, "PATH": f"{llama / 'bin'}:{os.environ['PATH']}"}
    src = work / f"{name}-bf16.gguf"
    t0 = time.perf_counter()
    sh([sys.executable, str(ROOT / "scripts" / "bundled_to_gguf.py"), str(llama), str(model_dir), "--outtype", "bf16",
        "--outfile", str(src)])
    print(f"[{name}] converted with llama.cpp's convert_hf_to_gguf.py in {time.perf_counter() - t0:.1f} s "
          "(measured:wall-clock)")
    res = export_point(point, "llama.cpp")
    for note in res.notes:
        print(f"[{name}] export note: {note}")
    out = work / f"{name}-advisor.gguf"
    script = work / f"{name}.sh"
    script.write_text(res.text)
    t0 = time.perf_counter()
    if generate:  # the whole exported script: llama-quantize, then llama-diffusion-cli with its -ngl
        # canvas = n_ubatch (64); block length and steps are the script's own (the study's decoding), as a user
        # runs it: passing them again here would be llama.cpp's "specified multiple times" warning
        args = ["-p", PROMPT, "-c", "64", "-b", "64", "-ub", "64", "-t", "2", "--temp", "0"]
        # llama.cpp's asynchronous logger can drop the generated text at exit (llama.cpp issue 22142): retry
        attempt, text = 0, ""
        while not text and attempt < 3:
            attempt += 1
            log = sh(["bash", str(script), *args], cwd=work, env={**env, "SRC_GGUF": str(src), "OUT_GGUF": str(out)})
            text = generated_text(log)
        if attempt > 1:
            got = f"run {attempt} printed them" if text else "in every run"
            print(f"[{name}] llama-diffusion-cli's log lost its final lines at exit ({got})")
        ngl = res.data["run_command"][res.data["run_command"].index("-ngl") + 1]
        print(f"[{name}] ran the exported script: llama-quantize, then llama-diffusion-cli -ngl {ngl} "
              f"in {time.perf_counter() - t0:.1f} s; generated: {text!r}")
        deprecated = [line for line in log.splitlines() if "deprecat" in line.lower()]
        ok_gen = bool(text) and not deprecated
        if not text:
            print(f"[{name}] llama-diffusion-cli printed no generation; its last lines: {log[-600:]!r}")
        if deprecated:
            print(f"[{name}] llama.cpp warned: {deprecated[0]}")
    else:  # an autoregressive model's runner is llama-server: run the script's quantize command only
        (work / "tensor-types.txt").write_text("\n".join(res.data["tensor_types"]) + "\n")
        cmd = [a.replace("$SRC_GGUF", str(src)).replace("$OUT_GGUF", str(out)) for a in res.data["quantize_command"]]
        sh(cmd, cwd=work, env=env)
        print(f"[{name}] ran the exported llama-quantize command in {time.perf_counter() - t0:.1f} s "
              "(the runner, llama-server, is not started here)")
        ok_gen = True
    want = res.data["expert_tensor_types"]
    src_types, out_types = gguf_types(src), gguf_types(out)
    bad = check_types(src_types, out_types, want)
    kinds = sorted({f"{t}" for t in want.values()})
    print(f"[{name}] read back with gguf: {len(want)} expert tensors ({', '.join(kinds)}) "
          f"{'all as exported' if not [b for b in bad if b.split(':')[0] in want] else 'NOT as exported'}; "
          f"{len(src_types) - len(want)} other tensors {'unchanged' if not [b for b in bad if b.split(':')[0] not in want] else 'CHANGED'} "
          f"({', '.join(sorted(set(t for n, t in out_types.items() if n not in want)))})")
    for b in bad[:10]:
        print(f"[{name}]   mismatch {b}")
    return not bad and ok_gen


def run_hf(bundled_point, qwen_point) -> bool:
    """Each HF recipe as printed: bitsandbytes through the advisor's loader; TorchAO on the fused model (int8:
    torchao's int4 kernels need CUDA)."""
    import torch

    from advisor.export.base import export_point
    from advisor.export.check import quantized_tensors

    ok = True
    for name, point, opts in (("bundled", bundled_point, ["method=bitsandbytes"]), ("tiny-qwen3moe", qwen_point, [])):
        res = export_point(point, "hf", opts)
        t0 = time.perf_counter()
        try:
            ns: dict = {}
            exec(compile(res.text, "<recipe>", "exec"), ns)  # noqa: S102 - the recipe as users run it
            model = ns["model"]
            with torch.no_grad():
                logits = model(input_ids=torch.tensor([[5, 6, 7, 8]])).logits
            q = quantized_tensors(model)
            good = bool(torch.isfinite(logits).all()) and bool(q)
            print(f"[hf] {name}: {res.data['method']} recipe ran as written in {time.perf_counter() - t0:.1f} s: "
                  f"{len(q)} quantized expert modules/tensors, logits finite={good}")
        except Exception as e:  # report what the runtime said
            good = False
            print(f"[hf] {name}: {res.data['method']} recipe FAILED: {type(e).__name__}: {e}")
        ok &= good
    return ok


def run_vllm(points, vllm_python: str | None) -> str:
    """Each point's vLLM export through vLLM's own parser: here, or in `vllm_python` (a venv with vllm). The points
    are one that keeps experts in host memory (--cpu-offload-gb, no --quantization: vLLM cannot offload the
    parameters it quantizes online) and one with every expert on the GPU (--quantization)."""
    from advisor.export.base import export_point
    from advisor.export.check import check
    from advisor.results.config_view import export_config

    ok = []
    for point in points:
        res = export_point(point, "vllm")
        print(f"[vllm] exported: {' '.join(res.data['args'])}")
        if vllm_python:
            code = ("import json, sys; from advisor.export.check import parse_vllm_args; "
                    "from vllm.model_executor.layers.quantization import QUANTIZATION_METHODS as Q; "
                    "ns = parse_vllm_args(json.loads(sys.argv[1])); "
                    "print(json.dumps({'quantization': ns.quantization, 'cpu_offload_gb': ns.cpu_offload_gb, "
                    "'method_known': ns.quantization is None or ns.quantization in Q}))")
            r = subprocess.run([vllm_python, "-c", code, json.dumps(res.data["args"])], capture_output=True, text=True,
                               env={**os.environ, "PYTHONPATH": str(ROOT)})
            ver = subprocess.run([vllm_python, "-c", "import vllm; print(vllm.__version__)"], capture_output=True,
                                 text=True)
            if r.returncode != 0:
                print(f"[vllm] vLLM {ver.stdout.strip()}'s parser rejected the flags: {r.stderr.strip()[-500:]}")
                ok.append("0")
                continue
            got = json.loads(r.stdout.strip().splitlines()[-1])
            want = {"quantization": res.data["quantization"], "cpu_offload_gb": res.data["cpu_offload_gb"] or 0,
                    "method_known": True}
            print(f"[vllm] vLLM {ver.stdout.strip()}'s own parser ({vllm_python}) read {got}; exported {want}")
            ok.append(str(int(got == want)))
            continue
        lines = check(res, export_config(point.config, point.model))
        for c in lines:
            print(f"[vllm] {c.line()}")
        ok.append("skip" if lines[0].status == "not checked" else "1" if lines[0].status == "ok" else "0")
    return "0" if "0" in ok else "skip" if "skip" in ok else "1"


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--llama-cpp", type=Path, default=Path(os.environ.get("ADVISOR_LLAMACPP", DEFAULT_LLAMACPP)))
    ap.add_argument("--workdir", type=Path, default=None)
    ap.add_argument("--vllm-python", default=os.environ.get("ADVISOR_VLLM_PYTHON"),
                    help="an interpreter with vllm installed (e.g. a separate venv), when this one has none")
    a = ap.parse_args()
    from advisor.models import BUNDLED_DIR

    work = a.workdir or Path(tempfile.mkdtemp(prefix="advisor-runtimes-"))
    work.mkdir(parents=True, exist_ok=True)
    version = (a.llama_cpp / "VERSION").read_text().split("\n")[0] if (a.llama_cpp / "VERSION").is_file() else "?"
    print(f"device: cpu ({platform.machine()}, {os.cpu_count()} cores); llama.cpp tools: {a.llama_cpp} "
          f"({version}); python {platform.python_version()}")
    qwen_dir = tiny_qwen(work / "tiny-qwen3moe")
    bundled = front_point("bundled", "bundled", "default=int4;layers=0:int8;layers=3:bf16", [16, 8, 4, 0])
    qwen = front_point(str(qwen_dir), str(qwen_dir), "default=int4;layers=1:int8", [8, 4, 2])
    n_bundled = json.loads((BUNDLED_DIR / "config.json").read_text())["num_experts"]
    print(f"plans: bundled default=int4;layers=0:int8;layers=3:bf16, slots [16, 8, 4, 0] of {n_bundled}; "
          "tiny Qwen3-MoE default=int4;layers=1:int8, slots [8, 4, 2] of 8")
    if (a.llama_cpp / "BUILD_OK").is_file():
        ok_b = run_llamacpp(a.llama_cpp, work, "bundled", BUNDLED_DIR, bundled, generate=True)
        ok_q = run_llamacpp(a.llama_cpp, work, "tiny-qwen3moe", qwen_dir, qwen, generate=False)
        llama_ok = str(int(ok_b and ok_q))
    else:
        print(f"[llama.cpp] no cached build in {a.llama_cpp}: run benchmarks/build_llamacpp.sh")
        llama_ok = "skip"  # not run, as vllm_flags_ok without vLLM: not a failed check
    qwen_int8 = front_point(str(qwen_dir), str(qwen_dir), "default=int8;layers=2:bf16", [8, 4, 2])
    print("[hf] tiny Qwen3-MoE plan for TorchAO: default=int8;layers=2:bf16 (torchao int4 needs CUDA kernels)")
    hf_ok = str(int(run_hf(bundled, qwen_int8)))
    qwen_resident = front_point(str(qwen_dir), str(qwen_dir), "default=int4;layers=1:int8", [8, 8, 8])
    vllm_ok = run_vllm([qwen, qwen_resident], a.vllm_python)
    print(f"RESULT llama_cpp_types_ok={llama_ok} hf_recipes_ok={hf_ok} vllm_flags_ok={vllm_ok}")


if __name__ == "__main__":
    main()
