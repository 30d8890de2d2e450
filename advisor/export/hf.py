"""HF transformers export: a loading recipe (Python snippet + the same as JSON).

Three quantization back-ends, each with what it can express of the plan:
* bitsandbytes (`BitsAndBytesConfig`): one bit-width (8-bit LLM.int8 or 4-bit NF4) for every quantized expert;
  `llm_int8_skip_modules` keeps everything else (routers, attention, norms, shared experts, lm_head and the
  experts the plan keeps in bf16) unquantized. It replaces `nn.Linear` only: fused 3-D experts
  (`gate_up_proj`/`down_proj` parameters) are not touched, so it is offered for list-layout families only.
* HQQ (`HqqConfig(dynamic_config=...)`): keys are layer-number-free tags (`mlp.experts.gate_proj`), so one
  format for every quantized expert; also nn.Linear only.
* TorchAO (`TorchAoConfig(FqnToConfig({...}))`): per layer (regex keys, `re:` prefix, full match), and it can
  target fused expert *parameters*; per-expert formats of fused layers are collapsed by the `collapse` rule.
Plus `device_map`/`max_memory`, and the project's own loader call, which reproduces the plan and the expert
cache exactly (`advisor.quant.plan.PrecisionPlan` + `advisor.offload.runtime.OffloadRuntime`).
"""

from __future__ import annotations

import json
import math
import re
from typing import Any

from advisor.export.base import ExportResult, header_lines
from advisor.quant.spec import parse_format
from advisor.results.config_view import COLLAPSE_RULES, ExportConfig, collapse_layer, plan_of, precision_rank
from advisor.results.front import FrontPoint

OPTIONS = {
    "method": ("auto", ("auto", "bitsandbytes", "hqq", "torchao", "advisor"), "which recipe the snippet uses"),
    "collapse": ("highest", tuple(COLLAPSE_RULES), "how per-expert formats collapse where a back-end cannot express them"),
}
DENSE = ("bf16", "fp16", "fp32")
LIST_PROJ = "(gate|up|down)_proj"
FUSED_PARAMS = "(gate_up_proj|down_proj)"


def _quantized(fmt: str) -> bool:
    return parse_format(fmt).kind not in DENSE


def expert_linear_regex(cfg: ExportConfig, layer: int, experts: list[int] | None = None) -> str:
    """Full-match regex of the nn.Linear modules (list layout) of `experts` (all when None) of one layer."""
    base = re.escape(cfg.model.layers[layer].name)
    ids = r"\d+" if experts is None else ("(" + "|".join(map(str, experts)) + ")" if len(experts) > 1 else str(experts[0]))
    return rf"{base}\.{ids}\.{LIST_PROJ}"


def _quantized_experts(cfg: ExportConfig, layer: int) -> list[int]:
    return [e for e, f in enumerate(cfg.formats[layer]) if _quantized(f)]


def bitsandbytes_recipe(cfg: ExportConfig) -> tuple[dict[str, Any] | None, list[str]]:
    """BitsAndBytesConfig kwargs, or None with the reason."""
    if cfg.model.layout != "list":
        return None, ["bitsandbytes replaces nn.Linear only; this family's experts are fused 3-D parameters "
                      "(gate_up_proj/down_proj) and would stay bf16 - use torchao or the advisor loader"]
    q = sorted({f for row in cfg.formats for f in row if _quantized(f)}, key=precision_rank, reverse=True)
    if not q:
        return None, ["the plan keeps every expert unquantized: no quantization config needed"]
    notes = []
    top = parse_format(q[0])
    if top.bits >= 8:
        kwargs: dict[str, Any] = {"load_in_8bit": True}
        if len(q) > 1:
            notes.append(f"bitsandbytes has one bit-width: experts planned as {', '.join(q[1:])} load as 8-bit (more bytes, not less accuracy)")
    else:
        kwargs = {"load_in_4bit": True, "bnb_4bit_quant_type": "nf4", "bnb_4bit_compute_dtype": "bfloat16"}
        if any(parse_format(f).kind != "nf4" for f in q):
            notes.append(f"bitsandbytes 4-bit is NF4 (or FP4); planned {', '.join(q)} load as NF4")
    alts = []
    for layer in range(len(cfg.model.layers)):
        ids = _quantized_experts(cfg, layer)
        if ids:
            alts.append(expert_linear_regex(cfg, layer, None if len(ids) == cfg.model.layers[layer].num_experts else ids))
    # one pattern: skip every module except the quantized experts' Linear layers (transformers matches skip
    # patterns with re.match from the start of the module name)
    kwargs["llm_int8_skip_modules"] = [rf"(?!(?:{'|'.join(alts)})$).*"]
    return kwargs, notes


HQQ_BITS = {"int8": 8, "fp8": 8, "int4": 4, "nf4": 4, "int3": 3, "int2": 2}


def hqq_recipe(cfg: ExportConfig) -> tuple[dict[str, Any] | None, list[str]]:
    """HqqConfig kwargs (dynamic_config per expert projection tag), or None with the reason."""
    if cfg.model.layout != "list":
        return None, ["HQQ replaces nn.Linear only; fused 3-D experts would stay bf16"]
    q = sorted({f for row in cfg.formats for f in row if _quantized(f)}, key=precision_rank, reverse=True)
    if not q:
        return None, ["the plan keeps every expert unquantized"]
    spec = parse_format(q[0])
    notes = []
    if len({f for row in cfg.formats for f in row}) > 1:
        notes.append(f"HQQ's dynamic_config is keyed by layer-free tags: one format ({q[0]}) for every expert, "
                     "including experts the plan keeps at other formats")
    group = spec.group if spec.group else 64
    entry = {"nbits": HQQ_BITS[spec.kind], "group_size": group}
    tag = re.sub(r"^(model\.)?(layers\.)?\d+\.", "", cfg.model.layers[0].name)  # e.g. mlp.experts
    tags = {f"{tag}.{p}_proj": dict(entry) for p in ("gate", "up", "down")}
    return {"dynamic_config": tags, "skip_modules": ["lm_head"]}, notes


TORCHAO = {
    "int8": "Int8WeightOnlyConfig()",
    "fp8": "Float8WeightOnlyConfig()",
    "int4": "Int4WeightOnlyConfig(group_size={g})",
    "nf4": "Int4WeightOnlyConfig(group_size={g})",
    "int3": "IntxWeightOnlyConfig(weight_dtype=torch.int3, granularity=PerGroup({g}))",
    "int2": "IntxWeightOnlyConfig(weight_dtype=torch.int2, granularity=PerGroup({g}))",
}


def torchao_recipe(cfg: ExportConfig, rule: str) -> tuple[dict[str, str], list[str]]:
    """FqnToConfig entries: key (with `re:` prefix) -> torchao config constructor as source text."""
    out: dict[str, str] = {}
    notes = []
    by_cfg: dict[str, list[str]] = {}
    for layer, info in enumerate(cfg.model.layers):
        if cfg.model.layout == "list":
            groups: dict[str, list[int]] = {}
            for e, f in enumerate(cfg.formats[layer]):
                groups.setdefault(f, []).append(e)
            for f, ids in groups.items():
                if _quantized(f):
                    whole = len(ids) == info.num_experts
                    by_cfg.setdefault(f, []).append(expert_linear_regex(cfg, layer, None if whole else ids))
        else:
            f = collapse_layer(cfg, layer, rule)
            if len(set(cfg.formats[layer])) > 1:
                notes.append(f"fused layer {layer}: per-expert formats collapsed ({COLLAPSE_RULES[rule]})")
            if _quantized(f):
                by_cfg.setdefault(f, []).append(rf"{re.escape(info.name)}\.{FUSED_PARAMS}")
    for f, pats in by_cfg.items():
        spec = parse_format(f)
        ctor = TORCHAO[spec.kind].format(g=spec.group or 128)
        if spec.kind == "nf4":
            notes.append("torchao has no NF4 weight-only config for FqnToConfig; nf4 experts use Int4WeightOnlyConfig")
        out["re:" + "|".join(f"(?:{p})" for p in pats)] = ctor
    return out, notes


def _gib_ceil(n: float) -> str:
    return f"{max(1, math.ceil(n / 2**30))}GiB"


def export(point: FrontPoint, cfg: ExportConfig, opts: dict[str, str]) -> ExportResult:
    bnb, bnb_notes = bitsandbytes_recipe(cfg)
    hqq, hqq_notes = hqq_recipe(cfg)
    tao, tao_notes = torchao_recipe(cfg, opts["collapse"])
    method = opts["method"]
    if method == "auto":
        exact_bnb = bnb is not None and not bnb_notes
        method = "bitsandbytes" if exact_bnb else "torchao" if tao else "advisor"
    peak = point.values.get("peak_gpu_bytes")
    max_memory = {"0": _gib_ceil(peak)} if peak else None
    store = point.config.get("counted_expert_store_bytes")
    if max_memory is not None and store:
        max_memory["cpu"] = _gib_ceil(store * 1.25)
    plan = plan_of(cfg.precision)
    loader = {
        "model": point.model,
        "precision_plan": json.loads(plan.to_json()),
        "offload": {"slots_per_layer": cfg.slots_per_layer, "policy": cfg.policy, "prefetch": cfg.prefetch},
    }
    data = {
        "target": "hf",
        "method": method,
        "model": point.model,
        "family": cfg.model.family,
        "expert_layout": cfg.model.layout,
        "bitsandbytes": {"kwargs": bnb, "notes": bnb_notes},
        "hqq": {"kwargs": hqq, "notes": hqq_notes},
        "torchao": {"fqn_to_config": tao, "notes": tao_notes},
        "device_map": "auto",
        "max_memory": max_memory,
        "advisor_loader": loader,
    }
    notes = {"bitsandbytes": bnb_notes, "hqq": hqq_notes, "torchao": tao_notes, "advisor": []}[method]
    if cfg.model.family in ("llada_moe", "llada2"):
        notes = [*notes, "remote-code family: from_pretrained needs trust_remote_code=True (or load it with the advisor)"]
    return ExportResult("hf", _snippet(point, cfg, data), data, list(notes))


def _snippet(point: FrontPoint, cfg: ExportConfig, d: dict[str, Any]) -> str:
    L = [f"# {h}" for h in header_lines(point, cfg, "HF transformers")]
    method = d["method"]
    L += [f"# recipe: {method}"]
    L += [f"# note: {n}" for n in d[method]["notes"]] if method in ("bitsandbytes", "hqq") else []
    L += ["import torch", "from transformers import AutoModelForCausalLM", ""]
    mm = d["max_memory"]
    mm_text = "{" + ", ".join(f"{k if k == 'cpu' else int(k)!r}: {v!r}" for k, v in mm.items()) + "}" if mm else "None"
    trust = ", trust_remote_code=True" if cfg.model.family in ("llada_moe", "llada2") else ""
    if method == "bitsandbytes":
        L += ["from transformers import BitsAndBytesConfig", "",
              f"quantization_config = BitsAndBytesConfig(**{json.dumps(d['bitsandbytes']['kwargs'], indent=4)})"]
        L[-1] = L[-1].replace('"bfloat16"', "torch.bfloat16")
    elif method == "hqq":
        L += ["from transformers import HqqConfig", "",
              f"quantization_config = HqqConfig(**{json.dumps(d['hqq']['kwargs'], indent=4)})"]
    elif method == "torchao":
        L += ["from transformers import TorchAoConfig",
              "from torchao.quantization import FqnToConfig, Int4WeightOnlyConfig, Int8WeightOnlyConfig, "
              "Float8WeightOnlyConfig, IntxWeightOnlyConfig, PerGroup",
              "", "quantization_config = TorchAoConfig(FqnToConfig({"]
        L += [f"    {k!r}: {v}," for k, v in d["torchao"]["fqn_to_config"].items()]
        L += ["}))  # unlisted modules stay unquantized (routers, attention, norms, shared experts, lm_head)"]
        L += [f"# note: {n}" for n in d["torchao"]["notes"]]
    if method != "advisor":
        L += ["", f"model = AutoModelForCausalLM.from_pretrained({point.model!r}, dtype=torch.bfloat16, device_map='auto',",
              f"    max_memory={mm_text}, quantization_config=quantization_config{trust})", ""]
    loader = d["advisor_loader"]
    L += [
        "# --- the advisor's own loader: reproduces the exact plan (per expert) and the expert cache ---",
        "from advisor.models.load import load_model",
        "from advisor.models.view import attach_runtime",
        "from advisor.offload.runtime import OffloadRuntime",
        "from advisor.quant.plan import PrecisionPlan",
        "",
        f"plan = PrecisionPlan.from_json({json.dumps(json.dumps(loader['precision_plan']))})",
        f"loaded = load_model({loader['model']!r}, device='cpu')",
        f"runtime = OffloadRuntime(loaded, plan, slots_per_layer={loader['offload']['slots_per_layer']!r},",
        f"                         policy={loader['offload']['policy']!r}, prefetch={loader['offload']['prefetch']!r}, device='cuda')",
        "attach_runtime(loaded.model, runtime)",
    ]
    return "\n".join(L) + "\n"
