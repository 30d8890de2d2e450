"""llama.cpp export: a `--tensor-type-file` for llama-quantize and `-ot` placement rules, as one shell script.

GGUF stores a layer's routed experts as one tensor per projection (`blk.N.ffn_{gate,up,down}_exps.weight`;
shared experts `_shexp`, router `ffn_gate_inp`), so llama.cpp decides type and placement per layer x
projection, never per expert. Per-expert decisions are collapsed by a stated rule (option `collapse`):
`highest` (default) gives a layer the highest-precision format any of its experts uses; `traffic` the format
covering most of its routed traffic.

Placement: llama.cpp has no expert cache; an expert tensor lives on the GPU or is computed on the CPU. The
tuned cache's bytes (sum over layers of slots x expert bytes) become whole (layer, projection) tensors on the
GPU, layers with the largest cached fraction first; every other expert tensor gets an `-ot "<regex>=CPU"`
rule. Patterns are searched (std::regex_search), so layer numbers end with `\\.` and every expert tensor is
matched by exactly one rule. Routers, norms, embeddings and shared experts keep the base type (bf16 by
default) and stay on the GPU.
"""

from __future__ import annotations

import shlex
from typing import Any

from advisor.export.base import ExportResult, header_lines
from advisor.quant.spec import parse_format
from advisor.results.config_view import COLLAPSE_RULES, ExportConfig, collapse_layer
from advisor.results.front import FrontPoint

OPTIONS = {
    "collapse": ("highest", tuple(COLLAPSE_RULES), "how per-expert formats become one type per layer"),
    "emit": ("script", ("script", "tensor-types", "override-tensor"), "the whole script, or only one part"),
    "placement": ("cache", ("cache", "all-gpu", "all-cpu"), "expert tensors on GPU as the tuned cache allows, or all"),
    "base_type": ("bf16", ("bf16", "f16", "f32"), "llama-quantize type for everything that is not a routed expert"),
}

# advisor family -> GGUF architecture (gguf.MODEL_ARCH_NAMES spelling)
GGUF_ARCH = {
    "llada_moe": "llada-moe",
    "llada2": "bailingmoe2",  # LLaDA2.0 reuses the BailingMoE-v2 tensor layout
    "qwen3_moe": "qwen3moe",
    "olmoe": "olmoe",
    "mixtral": "llama",
    "deepseek_v3": "deepseek2",
    "diffusion_gemma": "gemma4",  # assumption: Gemma-4 MoE tensor names; no DiffusionGemma arch in GGUF
}
# architectures whose GGUF fuses gate and up experts into one tensor
FUSED_GATE_UP = {"gemma4"}

# advisor format kind -> nearest ggml type, and why
TYPE_MAP: dict[str, tuple[str, str]] = {
    "fp32": ("f32", "exact"),
    "fp16": ("f16", "exact"),
    "bf16": ("bf16", "exact"),
    "int8": ("q8_0", "8-bit symmetric, block 32 (advisor: per-row scale)"),
    "fp8": ("q8_0", "no fp8 weight type in ggml; q8_0 is the nearest 8-bit type"),
    "int4": ("q4_K", "4-bit asymmetric k-quant (scale+min per 32, super-block 256)"),
    "nf4": ("iq4_nl", "non-linear 4-bit codebook, block 32 (closest to NF4)"),
    "int3": ("q3_K", "3-bit k-quant"),
    "int2": ("q2_K", "2-bit k-quant"),
}
DIFFUSION_RUNNER = "llama-diffusion-cli"


def ggml_type(fmt: str) -> str:
    """The ggml type written for an advisor format (int4 with 32-wide groups maps to q4_0 / q4_1 exactly)."""
    spec = parse_format(fmt)
    if spec.kind == "int4" and spec.group == 32:
        return "q4_0" if spec.symmetric else "q4_1"
    return TYPE_MAP[spec.kind][0]


def projections(arch: str) -> list[str]:
    return ["gate_up", "down"] if arch in FUSED_GATE_UP else ["gate", "up", "down"]


def _alt(items: list[Any]) -> str:
    items = [str(i) for i in items]
    return items[0] if len(items) == 1 else "(" + "|".join(items) + ")"


def _rule(blocks: list[int], projs: list[str], suffix: str) -> str:
    return rf"blk\.{_alt(sorted(blocks))}\.ffn_{_alt(projs)}_exps\.{suffix}"


def _proj_weight(proj: str) -> int:
    return 2 if proj == "gate_up" else 1


def _proj_bytes(cfg: ExportConfig, layer: int, fmt: str, arch: str, proj: str) -> float:
    """Bytes of one (layer, projection) expert tensor; relative units (bits x weight) when shapes are unknown."""
    m = cfg.model
    n = m.layers[layer].num_experts
    if m.hidden_size and m.intermediate_size:
        spec = parse_format(fmt)
        h, i = int(m.hidden_size), int(m.intermediate_size)
        shape = (h, i) if proj == "down" else (i * _proj_weight(proj), h)
        return float(n * spec.nbytes(shape))
    return float(n * parse_format(fmt).bits * _proj_weight(proj))


def plan_layers(cfg: ExportConfig, rule: str) -> list[str]:
    """The ggml-ready format of each MoE layer after collapsing per-expert decisions."""
    return [collapse_layer(cfg, layer, rule) for layer in range(len(cfg.model.layers))]


def placement(cfg: ExportConfig, layer_fmts: list[str], arch: str, mode: str) -> tuple[dict[tuple[int, str], str], dict[str, Any]]:
    """(layer, projection) -> "GPU" | "CPU", and the numbers behind it."""
    projs = projections(arch)
    units = [(layer, p) for layer in range(len(layer_fmts)) for p in projs]
    if mode in ("all-gpu", "all-cpu"):
        dev = "GPU" if mode == "all-gpu" else "CPU"
        return {u: dev for u in units}, {"mode": mode}
    size = {(layer, p): _proj_bytes(cfg, layer, layer_fmts[layer], arch, p) for layer, p in units}
    budget = 0.0
    for layer in range(len(layer_fmts)):
        frac = cfg.slots_per_layer[layer] / cfg.model.layers[layer].num_experts
        budget += frac * sum(size[(layer, p)] for p in projs)
    order = sorted(range(len(layer_fmts)),
                   key=lambda layer: (-cfg.slots_per_layer[layer] / cfg.model.layers[layer].num_experts, layer))
    left, where = budget, {}
    for layer in order:
        for p in projs:
            if size[(layer, p)] <= left + 1e-9:
                where[(layer, p)] = "GPU"
                left -= size[(layer, p)]
            else:
                where[(layer, p)] = "CPU"
    exact = bool(cfg.model.hidden_size and cfg.model.intermediate_size)
    info = {
        "mode": "cache",
        "cache_bytes": budget if exact else None,
        "gpu_expert_bytes": (budget - left) if exact else None,
        "units": "bytes (counted from expert shapes)" if exact else "relative (expert shapes not recorded)",
        "rule": "GPU holds whole (layer, projection) expert tensors up to the tuned cache's bytes "
                "(sum of slots x expert bytes), layers with the largest cached fraction first",
    }
    return where, info


def tensor_type_rules(cfg: ExportConfig, layer_fmts: list[str], arch: str) -> list[str]:
    """`pattern=type` lines, one per ggml type, covering every routed-expert tensor exactly once."""
    by_type: dict[str, list[int]] = {}
    for layer, fmt in enumerate(layer_fmts):
        by_type.setdefault(ggml_type(fmt), []).append(cfg.model.layers[layer].decoder_layer)
    return [f"{_rule(blocks, projections(arch), 'weight')}={t}" for t, blocks in by_type.items()]


def override_rules(cfg: ExportConfig, where: dict[tuple[int, str], str], arch: str) -> list[str]:
    """`-ot` values ("<regex>=CPU") for the expert tensors that stay in host memory; layers grouped by the set
    of projections they keep on the CPU."""
    groups: dict[tuple[str, ...], list[int]] = {}
    for layer in range(len(cfg.model.layers)):
        cpu = tuple(p for p in projections(arch) if where[(layer, p)] == "CPU")
        if cpu:
            groups.setdefault(cpu, []).append(cfg.model.layers[layer].decoder_layer)
    return [f"{_rule(blocks, list(projs), '')}=CPU" for projs, blocks in groups.items()]


def n_cpu_moe_equivalent(cfg: ExportConfig, where: dict[tuple[int, str], str], arch: str) -> int | None:
    """N when the CPU set is exactly the experts of the first N blocks (then `--n-cpu-moe N` says the same)."""
    cpu_layers = [layer for layer in range(len(cfg.model.layers))
                  if all(where[(layer, p)] == "CPU" for p in projections(arch))]
    partial = [layer for layer in range(len(cfg.model.layers))
               if any(where[(layer, p)] == "CPU" for p in projections(arch)) and layer not in cpu_layers]
    if partial or cpu_layers != list(range(len(cpu_layers))):
        return None
    return cfg.model.layers[cpu_layers[-1]].decoder_layer + 1 if cpu_layers else 0


def export(point: FrontPoint, cfg: ExportConfig, opts: dict[str, str]) -> ExportResult:
    family = cfg.model.family
    arch = GGUF_ARCH.get(family)
    notes: list[str] = []
    if arch is None:
        from advisor.errors import UserError

        raise UserError(f"no GGUF architecture known for family {family!r}; llama.cpp export supports: {', '.join(GGUF_ARCH)}")
    if family == "diffusion_gemma":
        notes.append("DiffusionGemma has no GGUF architecture of its own; tensor names follow gemma4 (unverified)")
    rule = opts["collapse"]
    layer_fmts = plan_layers(cfg, rule)
    mixed = [i for i in range(len(layer_fmts)) if len(cfg.layer_formats(i)) > 1]
    if mixed:
        notes.append(f"per-expert formats in MoE layers {mixed} collapsed: {COLLAPSE_RULES[rule]}")
    used_kinds = sorted({parse_format(f).kind for f in layer_fmts})
    type_notes = {k: f"{TYPE_MAP[k][0]}: {TYPE_MAP[k][1]}" for k in used_kinds}
    where, pinfo = placement(cfg, layer_fmts, arch, opts["placement"])
    types = tensor_type_rules(cfg, layer_fmts, arch)
    ots = override_rules(cfg, where, arch)
    ncpu = n_cpu_moe_equivalent(cfg, where, arch)
    runner = DIFFUSION_RUNNER if cfg.model.is_diffusion else "llama-server"
    if cfg.model.is_diffusion:
        notes.append(f"diffusion LLM: run with {runner} (check that your llama.cpp build supports the {arch} architecture)")
    if ots and cfg.miss_policy == "copy":
        notes.append("the study modelled copying missed experts to the GPU (miss policy copy); llama.cpp computes "
                     "the -ot =CPU experts on the CPU instead, so its speed differs from the study's time per token")
    elif ots:
        notes.append(f"miss policy {cfg.miss_policy}: the -ot =CPU experts compute on the CPU, as the study modelled")
    run_args = [runner, "-m", "$OUT_GGUF", "-ngl", "999"]
    for r in ots:
        run_args += ["-ot", r]
    data = {
        "target": "llama.cpp",
        "miss_policy": cfg.miss_policy,
        "gguf_arch": arch,
        "collapse_rule": rule,
        "collapse_rule_text": COLLAPSE_RULES[rule],
        "layer_types": {str(cfg.model.layers[i].decoder_layer): ggml_type(f) for i, f in enumerate(layer_fmts)},
        "type_map": type_notes,
        "tensor_types": types,
        "override_tensor": ots,
        "placement": {f"blk.{cfg.model.layers[layer].decoder_layer}.ffn_{p}_exps": d for (layer, p), d in sorted(where.items())},
        "placement_info": pinfo,
        "n_cpu_moe_equivalent": ncpu,
        "base_type": opts["base_type"],
        "quantize_command": ["llama-quantize", "--tensor-type-file", "tensor-types.txt", "$SRC_GGUF", "$OUT_GGUF",
                             opts["base_type"].upper()],
        "run_command": run_args,
    }
    if opts["emit"] == "tensor-types":
        text = "\n".join(types) + "\n"
    elif opts["emit"] == "override-tensor":
        text = "\n".join(ots) + ("\n" if ots else "")
    else:
        text = _script(point, cfg, data, notes)
    return ExportResult("llama.cpp", text, data, notes)


def _sh(args: list[str]) -> str:
    return " ".join(f'"{a}"' if a.startswith("$") else shlex.quote(a) for a in args)


def _script(point: FrontPoint, cfg: ExportConfig, data: dict[str, Any], notes: list[str]) -> str:
    lines = ["#!/usr/bin/env bash"]
    lines += [f"# {h}" for h in header_lines(point, cfg, "llama.cpp")]
    lines += [
        f"# GGUF architecture: {data['gguf_arch']}. Experts are one tensor per layer x projection, so:",
        f"#   type rule: {data['collapse_rule_text']}",
        f"#   placement: {data['placement_info'].get('rule', data['placement_info']['mode'])}",
    ]
    lines += [f"#   format {k}: {v}" for k, v in data["type_map"].items()]
    lines += [f"# note: {n}" for n in notes]
    if data["n_cpu_moe_equivalent"]:
        lines.append(f"# the -ot rules below equal --n-cpu-moe {data['n_cpu_moe_equivalent']}")
    lines += [
        "set -euo pipefail",
        'SRC_GGUF="${SRC_GGUF:-model-bf16.gguf}"   # from convert_hf_to_gguf.py --outtype bf16',
        'OUT_GGUF="${OUT_GGUF:-model-advisor.gguf}"',
        "cat > tensor-types.txt <<'EOF'",
        *data["tensor_types"],
        "EOF",
        _sh(data["quantize_command"]),
    ]
    run = data["run_command"]
    head, rest = run[:5], run[5:]
    parts = [_sh(head)] + [_sh(rest[i:i + 2]) for i in range(0, len(rest), 2)]
    lines.append(" \\\n  ".join(parts) + ' "$@"')
    return "\n".join(lines) + "\n"
