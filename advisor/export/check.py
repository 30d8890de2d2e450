"""`advisor export --check`: validate an export with the target's own code, where that code is installed.

Each target says what it checked and what it could not (and why): llama.cpp rules against the `gguf`
package's tensor names and ggml block sizes; HF recipes parsed, then run as written on the bundled or tiny
model itself, or on a tiny model of the same family saved to disk (transformers, bitsandbytes / torchao); vLLM flags through vLLM's own argument
parser; the KTransformers script through bash and SGLang's parser; JSON through its own reader.
Imports torch only here (the export itself stays torch-free).
"""

from __future__ import annotations

import ast
import importlib.util
import logging
import re
import subprocess
import tempfile
from dataclasses import dataclass
from pathlib import Path

from advisor.export.base import ExportResult
from advisor.export.hf import is_quantized
from advisor.quant.spec import parse_format
from advisor.results.config_view import ExportConfig


@dataclass
class Check:
    """One line of the check report: `status` is "ok", "FAILED" or "not checked"."""

    target: str
    status: str
    what: str

    def line(self) -> str:
        return f"check {self.target}: {self.status}: {self.what}"


def _have(module: str) -> bool:
    return importlib.util.find_spec(module) is not None


def check(result: ExportResult, cfg: ExportConfig) -> list[Check]:
    """Every check that applies to `result`, in order."""
    return {"llama.cpp": _llamacpp, "hf": _hf, "vllm": _vllm, "ktransformers": _kt, "json": _json}[result.target](
        result, cfg)


def _llamacpp(res: ExportResult, cfg: ExportConfig) -> list[Check]:
    t, d = "llama.cpp", res.data
    runner = (d.get("run_command") or ["llama-diffusion-cli"])[0]  # the script's own: llama-server for an AR model
    out = [Check(t, "not checked", f"llama-quantize / {runner} runs (need a converted GGUF and the tools; "
                                   "benchmarks/exports_in_runtimes.py does it)")]
    if not _have("gguf"):
        return [Check(t, "not checked", "tensor names and types: the gguf package is not installed "
                                        "(`pip install 'moe-advisor[export]'`)"), *out]
    import gguf

    arch = next((a for a, n in gguf.MODEL_ARCH_NAMES.items() if n == d["gguf_arch"]), None)
    if arch is None:
        return [Check(t, "FAILED", f"gguf {_version('gguf')} knows no architecture {d['gguf_arch']!r}"), *out]
    blocks = max(x.decoder_layer for x in cfg.model.layers) + 1
    names = [gguf.TENSOR_NAMES[k].format(bid=b) + ".weight" for k in gguf.MODEL_TENSORS[arch]
             if "{bid}" in gguf.TENSOR_NAMES[k] for b in range(blocks)]
    names += [gguf.TENSOR_NAMES[k] + ".weight" for k in gguf.MODEL_TENSORS[arch] if "{bid}" not in gguf.TENSOR_NAMES[k]]
    rules = [(re.compile(p), v) for p, _, v in (r.rpartition("=") for r in d["tensor_types"])]
    problems = []
    for name, want in d["expert_tensor_types"].items():
        if name not in names:
            problems.append(f"{name} is not a {d['gguf_arch']} tensor")
        hits = [v for p, v in rules if p.search(name)]
        if hits != [want]:
            problems.append(f"{name} matched by {hits}, expected exactly [{want}]")
    known = {q.name.lower() for q in gguf.GGMLQuantizationType}
    for _, v in rules:
        if v.lower() not in known:
            problems.append(f"type {v} is not a ggml type")
    for name, typ in d["expert_tensor_types"].items():
        proj = name.split(".")[2].removeprefix("ffn_").removesuffix("_exps")
        width = cfg.model.intermediate_size if proj == "down" else cfg.model.hidden_size
        block = gguf.GGML_QUANT_SIZES[gguf.GGMLQuantizationType[typ.upper()]][0]
        if width and int(width) % block:
            problems.append(f"{name}: rows {width} wide do not fit {typ} (block {block})")
    ots = [(re.compile(p), v) for p, _, v in (r.rpartition("=") for r in d["override_tensor"])]
    for name in names:
        if len([1 for p, _ in ots if p.search(name)]) > 1:
            problems.append(f"{name} matched by more than one -ot rule")
    n = len(d["expert_tensor_types"])
    if problems:
        return [Check(t, "FAILED", "; ".join(problems[:5])), *out]
    return [Check(t, "ok", f"{n} expert tensors are {d['gguf_arch']} tensor names (gguf {_version('gguf')}), each "
                           "matched by exactly one tensor-type rule with a ggml type that fits its row width; "
                           + ("-ot rules do not overlap" if ots else
                              f"no -ot rules to check (placement by -ngl {_ngl(d)} alone)")), *out]


def _ngl(d: dict) -> str:
    """The -ngl value of an export's run command ('?' where it has none)."""
    cmd = list(d.get("run_command") or [])
    return str(cmd[cmd.index("-ngl") + 1]) if "-ngl" in cmd[:-1] else "?"


def _version(dist: str) -> str:
    from importlib.metadata import PackageNotFoundError, version

    try:
        return version(dist)
    except PackageNotFoundError:
        return "?"


def _hf(res: ExportResult, cfg: ExportConfig) -> list[Check]:
    t, d, method = "hf", res.data, res.data["method"]
    try:
        ast.parse(res.text)
    except SyntaxError as e:
        return [Check(t, "FAILED", f"the recipe is not valid Python: {e}")]
    out = [Check(t, "ok", "the recipe parses as Python")]
    needs = {"bitsandbytes": ["transformers", "bitsandbytes"], "torchao": ["transformers", "torchao"],
             "advisor": ["torch"]}[method]
    missing = [m for m in needs if not _have(m)]
    if missing:
        return [*out, Check(t, "not checked", f"running the {method} recipe: {', '.join(missing)} not installed "
                                                "(`pip install 'moe-advisor[hf]'`)")]
    if method == "torchao" and any(parse_format(f).kind in ("int4", "nf4") for row in cfg.formats for f in row):
        import torch

        if not torch.cuda.is_available():  # torchao's int4 kernels need CUDA: on a CPU it quantizes nothing
            return [*out, Check(t, "not checked", "running the torchao recipe: its int4 experts need CUDA (torchao's "
                                                  "int4 kernels) and this machine has no GPU; run --check on one")]
    # the bundled checkpoint ships with the package and a tiny:* model is built in code: the recipe runs on the
    # model itself; any other checkpoint may be large (or on the hub): a tiny model of its family stands in
    spec = d["model"]
    real = spec == "bundled" or spec.startswith("tiny:")
    on = f"the {spec} model itself" if real else f"a tiny {cfg.model.family} model saved to disk"
    try:
        counted = _run_recipe(res.text, d, None if real else cfg.model.family)
    except Exception as e:  # the point of the check: report what the runtime said, in one line
        return [*out, Check(t, "FAILED", f"the {method} recipe on {on}: "
                                         f"{type(e).__name__}: {str(e).splitlines()[0] if str(e) else ''}")]
    if counted.startswith("0 ") and any(is_quantized(f) for row in cfg.formats for f in row):
        return [*out, Check(t, "FAILED", f"the {method} recipe ran on {on} but quantized no expert, although the plan "
                                         "quantizes some: the experts would load at full precision")]
    out.append(Check(t, "ok", f"the {method} recipe ran as written on {on} (transformers "
                              f"{_version('transformers')}): {counted}, forward finite"))
    if real:
        return out
    where = "on disk, not loaded by the check" if Path(spec).exists() else "not downloaded by the check"
    return [*out, Check(t, "not checked", f"the recipe on {spec} itself ({where}; run the recipe to load it)")]


def _run_recipe(text: str, d: dict, family: str | None) -> str:
    """Execute the recipe, its model replaced by a tiny model of `family` unless None; what it quantized."""
    from advisor.tune.interrupt import import_runtime

    import_runtime()
    import torch
    from transformers.utils import logging as hf_logging

    from advisor.models.tiny import build_tiny

    # what the check prints is its verdict: not save_pretrained's progress bar, bitsandbytes' hub-kernel lookup
    # (its CPU backend's optional gemm kernel) nor a cast warning per 8-bit expert forward (64 on a 4-layer model)
    hf_logging.disable_progress_bar()
    for noisy in ("bitsandbytes.backends.cpu.ops", "kernels", "bitsandbytes.autograd._functions"):
        logging.getLogger(noisy).setLevel(logging.ERROR)
    with tempfile.TemporaryDirectory() as tmp:
        if family is not None:  # the recipe loads the tiny model from disk as written (the advisor's loader offloaded)
            build_tiny(family).save_pretrained(tmp)
        if family is not None and d["method"] == "advisor":  # the tiny model has its own layer count: the cache becomes a share
            text = text.replace(f"load_model({d['advisor_loader']['model']!r}", f"load_model({tmp!r}")
            text = text.replace(f"slots_per_layer={d['advisor_loader']['offload']['slots_per_layer']!r}",
                                "slots_per_layer='50%'")
        elif family is not None:
            text = text.replace(repr(d["model_path"]), repr(tmp))
        ns: dict = {}
        exec(compile(text, "<recipe>", "exec"), ns)  # noqa: S102 - running the recipe is the check
        model = ns["model"]
        with torch.no_grad():
            logits = model(input_ids=torch.tensor([[3, 4, 5, 6]])).logits
        if not torch.isfinite(logits).all():
            raise ValueError("non-finite logits")
    quant = quantized_tensors(model)
    return f"{len(quant)} quantized expert tensors/modules" if d["method"] != "advisor" else "plan and cache attached"


def quantized_tensors(model) -> list[str]:
    """Names of the weights a quantization back-end replaced: bitsandbytes Linear modules, or parameters that
    became tensor subclasses (torchao)."""
    bnb = [n for n, m in model.named_modules() if type(m).__name__ in ("Linear8bitLt", "Linear4bit")]
    return bnb or [n for n, p in model.named_parameters() if type(p).__name__ not in ("Parameter", "Tensor")]


def _vllm(res: ExportResult, cfg: ExportConfig) -> list[Check]:
    t = "vllm"
    if not _have("vllm"):
        return [Check(t, "not checked", "flags through vLLM's argument parser: vllm is not installed")]
    try:
        ns = parse_vllm_args(res.data["args"])
    except (Exception, SystemExit) as e:  # argparse exits on bad flags; a Ctrl-C (its import: seconds) goes on up
        return [Check(t, "FAILED", f"vLLM's parser rejected the flags: {type(e).__name__}: {e}")]
    got = {"quantization": getattr(ns, "quantization", None), "cpu_offload_gb": getattr(ns, "cpu_offload_gb", None)}
    from vllm.model_executor.layers.quantization import QUANTIZATION_METHODS

    if got["quantization"] is not None and got["quantization"] not in QUANTIZATION_METHODS:
        return [Check(t, "FAILED", f"--quantization {got['quantization']} is not a vLLM {_version('vllm')} method")]
    return [Check(t, "ok", f"vLLM {_version('vllm')}'s serve parser accepts the flags and knows the method: {got}"),
            Check(t, "not checked", "serving (needs a GPU and the checkpoint)")]


def parse_vllm_args(args: list[str]):
    """`vllm serve ...` parsed and validated as the `vllm` command does: its serve subcommand's own parser."""
    from vllm.entrypoints.cli.serve import ServeSubcommand
    from vllm.utils.argparse_utils import FlexibleArgumentParser

    if args[:2] != ["vllm", "serve"]:
        raise ValueError(f"not a `vllm serve` command: {args[:2]}")
    parser = FlexibleArgumentParser(prog="vllm")
    serve = ServeSubcommand()
    serve.subparser_init(parser.add_subparsers(dest="subparser"))
    ns = parser.parse_args(args[1:])
    serve.validate(ns)
    return ns


def _kt(res: ExportResult, cfg: ExportConfig) -> list[Check]:
    t = "ktransformers"
    with tempfile.NamedTemporaryFile("w", suffix=".sh") as f:
        f.write(res.text)
        f.flush()
        r = subprocess.run(["bash", "-n", f.name], capture_output=True, text=True)
    out = [Check(t, "ok" if r.returncode == 0 else "FAILED", "the launch script parses in bash"
                 if r.returncode == 0 else f"bash -n: {r.stderr.strip()}")]
    if not _have("sglang"):
        return [*out, Check(t, "not checked", "flags through SGLang's parser: sglang (sglang-kt) is not installed")]
    try:
        import argparse

        from sglang.srt.server_args import ServerArgs

        from advisor.export.ktransformers import HOST_VARS, WEIGHT_PATH_VAR

        parser = argparse.ArgumentParser()
        ServerArgs.add_cli_args(parser)
        # the script's variables, as it would set them: a path the user gives, counts lscpu gives
        given = {f"${WEIGHT_PATH_VAR}": "/placeholder", **{f"${v}": "1" for v in HOST_VARS}}
        parser.parse_args([given.get(a, a) for a in res.data["args"][3:]])
    except (Exception, SystemExit) as e:  # as in `_vllm`
        return [*out, Check(t, "FAILED", f"SGLang's parser rejected the flags: {type(e).__name__}: {e}")]
    return [*out, Check(t, "ok", f"SGLang {_version('sglang')}'s parser accepts the kt flags")]


def _json(res: ExportResult, cfg: ExportConfig) -> list[Check]:
    from advisor.export.json_format import load

    with tempfile.TemporaryDirectory() as tmp:
        path = Path(tmp) / "export.json"
        path.write_text(res.text)
        load(path)
    return [Check("json", "ok", "reads back with advisor.export.json_format.load (schema, version, plan)")]
