"""KTransformers / SGLang (kt-kernel) export: YAML placement rules and the SGLang kt flags.

KTransformers injects operators by YAML rules: `match: {name: <regex over module paths>}` ->
`replace: {class, kwargs: {generate_device, prefill_device, ...}}`. It places whole experts modules, so the
tuned cache (slots x expert bytes) becomes whole MoE layers on the GPU, layers with the largest cached
fraction first (the same rule as the llama.cpp export); the others decode on the CPU. Expert precision
comes from the GGUF weights KTransformers loads: quantize them with the llama.cpp export's tensor types.
SGLang's kt-kernel keeps a number of experts on the GPU chosen by routing frequency:
`--kt-num-gpu-experts` is the tuned total of GPU slots.
"""

from __future__ import annotations

import re
import shlex

import yaml

from advisor.export.base import ExportResult, header_lines
from advisor.export.llamacpp import ggml_type, placement, plan_layers
from advisor.results.config_view import ExportConfig
from advisor.results.front import FrontPoint

OPTIONS = {
    "collapse": ("highest", ("highest", "traffic"), "how per-expert formats become one type per layer (GGUF)"),
}
EXPERTS_CLASS = "ktransformers.operators.experts.KTransformersExperts"


def gpu_layers(cfg: ExportConfig, rule: str) -> list[int]:
    """MoE layers whose experts fit on the GPU whole, within the tuned cache's bytes."""
    fmts = plan_layers(cfg, rule)
    where, _ = placement(cfg, fmts, "llama", "cache")
    return [i for i in range(len(fmts)) if all(where[(i, p)] == "GPU" for p in ("gate", "up", "down"))]


def _rule(names: list[str], device: str) -> dict:
    pattern = "^(" + "|".join(re.escape(n) for n in names) + ")$"
    kwargs = {"prefill_device": "cuda", "prefill_op": "KExpertsTorch", "generate_device": device,
              "generate_op": "KExpertsMarlin" if device == "cuda" else "KExpertsCPU", "out_device": "cuda"}
    return {"match": {"name": pattern}, "replace": {"class": EXPERTS_CLASS, "kwargs": kwargs}, "recursive": False}


def export(point: FrontPoint, cfg: ExportConfig, opts: dict[str, str]) -> ExportResult:
    on_gpu = gpu_layers(cfg, opts["collapse"])
    names_gpu = [cfg.model.layers[i].name for i in on_gpu]
    names_cpu = [x.name for i, x in enumerate(cfg.model.layers) if i not in on_gpu]
    rules = ([_rule(names_gpu, "cuda")] if names_gpu else []) + ([_rule(names_cpu, "cpu")] if names_cpu else [])
    n_gpu_experts = int(sum(cfg.slots_per_layer))
    sglang = ["--kt-num-gpu-experts", str(n_gpu_experts), "--kt-expert-placement-strategy", "frequency"]
    notes = [f"{len(on_gpu)} of {len(cfg.model.layers)} MoE layers keep their experts on the GPU "
             f"(whole layers within the tuned cache's bytes, largest cached fraction first)",
             "expert precision comes from the GGUF you load: build it with `advisor export ... --to llama.cpp`",
             "SGLang: add --init-expert-location <routing statistics> to seed frequency placement"]
    if cfg.model.is_diffusion:
        notes.append(f"{cfg.model.family} is a diffusion LLM: check that your KTransformers/SGLang version serves it")
    data = {
        "target": "ktransformers",
        "rules": rules,
        "gpu_moe_layers": on_gpu,
        "gguf_layer_types": {str(cfg.model.layers[i].decoder_layer): ggml_type(f) for i, f in enumerate(plan_layers(cfg, opts["collapse"]))},
        "sglang_args": sglang,
        "notes": notes,
    }
    head = [f"# {h}" for h in header_lines(point, cfg, "KTransformers / SGLang kt-kernel")]
    head += [f"# note: {n}" for n in notes]
    head += [f"# SGLang kt-kernel flags: {' '.join(shlex.quote(a) for a in sglang)}"]
    text = "\n".join(head) + "\n" + yaml.safe_dump(rules, sort_keys=False, width=1000)
    return ExportResult("ktransformers", text, data, notes)
