"""HF transformers export: a loading recipe - Python source that runs as written - plus the same as data.

What each back-end can express of the plan, and how it loads:
* bitsandbytes (`BitsAndBytesConfig`), for list-layout families (LLaDA-MoE, LLaDA2): one bit-width (8-bit
  LLM.int8 or 4-bit NF4) for every quantized expert; `llm_int8_skip_modules` keeps everything else (routers,
  attention, norms, shared experts, lm_head and the experts the plan keeps in bf16) unquantized. These models
  are the project's own definitions, so the recipe loads through `advisor.models.load.load_model`, whose
  experts run the bitsandbytes Linear8bitLt / Linear4bit modules. bitsandbytes replaces `nn.Linear` only:
  fused 3-D experts would stay bf16, so it is not offered for fused families.
* TorchAO (`TorchAoConfig(FqnToConfig({...}))`), for fused families: per layer (`re:` regex keys over the fused
  expert *parameters*); per-expert formats of a layer are collapsed by the `collapse` rule. The forward of
  torchao-quantized fused experts needs `experts_implementation="eager"`; int4 needs torchao's CUDA kernels.
* advisor: the project's own loader with the exact plan (per expert) and the tuned expert cache.
A pre-quantized checkpoint (its own `quantization_config`: FP8, GPTQ, ...) is refused: transformers refuses a
second quantization config of another class for it, and the advisor's loader streams unquantized experts only.
HQQ is refused: transformers 5.x cannot load it (`QuantizationMethod.HQQ is not available yet`). Models that
transformers cannot load (`tiny:<family>`) get the advisor recipe only; `bundled` becomes its directory.
`device_map="auto"` with `max_memory` (on a GPU) needs accelerate and psutil: `pip install "moe-advisor[hf]"`.
"""

from __future__ import annotations

import json
import math
import re
from pprint import pformat
from typing import Any

from advisor.errors import UserError
from advisor.export.base import (
    ExportResult,
    header_lines,
    hot_sets,
    miss_note,
    model_path,
    model_spec,
    slot_range,
    tide_kw,
)
from advisor.quant.spec import parse_format
from advisor.results.config_view import (
    AUTOREGRESSIVE,
    COLLAPSE_RULES,
    ExportConfig,
    ModelInfo,
    collapse_layer,
    decoding_in_use,
    plan_of,
    precision_rank,
)
from advisor.results.front import FrontPoint

OPTIONS = {
    "method": ("auto", ("auto", "bitsandbytes", "torchao", "advisor", "hqq"), "which recipe the script uses"),
    "collapse": ("highest", tuple(COLLAPSE_RULES), "how per-expert formats collapse where a back-end cannot express them"),
}
DENSE = ("bf16", "fp16", "fp32")
LIST_PROJ = "(gate|up|down)_proj"
FUSED_PARAMS = "(gate_up_proj|down_proj)"
HQQ_REFUSED = ("HQQ: transformers 5.x cannot load HQQ-quantized models (QuantizationMethod.HQQ is not available "
               "yet); use --opt method=bitsandbytes (list-layout models), torchao (fused) or advisor")
MODEL_CLASS = {"diffusion_gemma": "DiffusionGemmaForBlockDiffusion"}  # others: AutoModelForCausalLM


def is_quantized(fmt: str) -> bool:
    return parse_format(fmt).kind not in DENSE


def expert_linear_regex(cfg: ExportConfig, layer: int, experts: list[int] | None = None) -> str:
    """Full-match regex of the nn.Linear modules (list layout) of `experts` (all when None) of one layer."""
    base = re.escape(cfg.model.layers[layer].name)
    ids = r"\d+" if experts is None else ("(" + "|".join(map(str, experts)) + ")" if len(experts) > 1 else str(experts[0]))
    return rf"{base}\.{ids}\.{LIST_PROJ}"


def _quantized_experts(cfg: ExportConfig, layer: int) -> list[int]:
    return [e for e, f in enumerate(cfg.formats[layer]) if is_quantized(f)]


def bitsandbytes_recipe(cfg: ExportConfig) -> tuple[dict[str, Any] | None, list[str]]:
    """BitsAndBytesConfig kwargs, or None with the reason."""
    if cfg.model.layout != "list":
        return None, ["bitsandbytes replaces nn.Linear only; this family's experts are fused 3-D parameters "
                      "(gate_up_proj/down_proj) and would stay bf16: use torchao or the advisor loader"]
    q = sorted({f for row in cfg.formats for f in row if is_quantized(f)}, key=precision_rank, reverse=True)
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
        widths = {w for w in (cfg.model.hidden_size, cfg.model.intermediate_size) if w}
        if any(w % 64 for w in widths):
            notes.append(f"bitsandbytes' CPU NF4 kernel quantizes rows in blocks of 64, which experts {min(widths)} "
                         "wide do not fill: on a CPU this recipe fails to load (CUDA not tried); int8 loads")
    alts = []
    for layer in range(len(cfg.model.layers)):
        ids = _quantized_experts(cfg, layer)
        if ids:
            alts.append(expert_linear_regex(cfg, layer, None if len(ids) == cfg.model.layers[layer].num_experts else ids))
    # one pattern: skip every module except the quantized experts' Linear layers (transformers matches skip
    # patterns with re.match from the start of the module name)
    kwargs["llm_int8_skip_modules"] = [rf"(?!(?:{'|'.join(alts)})$).*"]
    return kwargs, notes + _all_resident_note(cfg)


def _all_resident_note(cfg: ExportConfig) -> list[str]:
    """Why a bitsandbytes recipe is not the study's point when its cache keeps experts off the GPU: the recipe
    loads every expert onto the device (no cache, no offload), so it needs more GPU memory than the point - for
    a model bigger than the GPU, more than the GPU has."""
    slots = cfg.slots_per_layer
    held = [min(s, info.num_experts) for s, info in zip(slots, cfg.model.layers, strict=False)]
    total = [info.num_experts for info in cfg.model.layers]
    if len(slots) != len(total) or held == total:
        return []
    return [f"bitsandbytes loads every expert onto the GPU ({'/'.join(map(str, sorted(set(total))))} per MoE layer), "
            f"with no expert cache: the study's point holds {slot_range(held)} per layer there and the rest in "
            "host memory, so this recipe needs more GPU memory than the point's peak; --opt method=advisor runs the "
            "tuned cache offloaded"]


TORCHAO = {
    "int8": "Int8WeightOnlyConfig()",
    "fp8": "Float8WeightOnlyConfig()",
    "int4": "Int4WeightOnlyConfig(group_size={g})",
    "nf4": "Int4WeightOnlyConfig(group_size={g})",
    "int3": "IntxWeightOnlyConfig(weight_dtype=torch.int3, granularity=PerGroup({g}))",
    "int2": "IntxWeightOnlyConfig(weight_dtype=torch.int2, granularity=PerGroup({g}))",
}


def torchao_recipe(cfg: ExportConfig, rule: str) -> tuple[dict[str, str] | None, list[str]]:
    """FqnToConfig entries: key (with `re:` prefix) -> torchao config constructor as source text."""
    if cfg.model.layout != "fused":
        return None, ["torchao recipes here target fused expert parameters; list-layout models load through "
                      "the advisor's loader: use bitsandbytes or advisor"]
    if cfg.model.family == "diffusion_gemma":
        return None, ["DiffusionGemma's encoder and decoder share their experts, and transformers' torchao loading "
                      "quantizes none of them (0 tensors, for either name): use advisor"]
    low = sorted({f for layer in range(len(cfg.model.layers)) if parse_format(f := collapse_layer(cfg, layer, rule)).kind
                  in ("int2", "int3")})
    if low:
        return None, [f"torchao's IntxWeightOnlyConfig ({', '.join(low)}) quantizes 2-D and 4-D weights only, and fused "
                      "experts are 3-D: transformers fails to load them; use advisor"]
    out: dict[str, str] = {}
    notes = []
    by_cfg: dict[str, list[str]] = {}
    for layer, info in enumerate(cfg.model.layers):
        f = collapse_layer(cfg, layer, rule)
        if len(set(cfg.formats[layer])) > 1:
            notes.append(f"fused layer {layer}: per-expert formats collapsed ({COLLAPSE_RULES[rule]})")
        if is_quantized(f):
            by_cfg.setdefault(f, []).append(rf"{re.escape(info.name)}\.{FUSED_PARAMS}")
    for f, pats in by_cfg.items():
        spec = parse_format(f)
        ctor = TORCHAO[spec.kind].format(g=spec.group or 128)
        if spec.kind == "nf4":
            notes.append("torchao has no NF4 weight-only config for FqnToConfig; nf4 experts use Int4WeightOnlyConfig")
        if spec.kind in ("int4", "nf4"):
            notes.append("torchao int4 runs on CUDA only (its int4 kernels need a GPU)")
        out["re:" + "|".join(f"(?:{p})" for p in pats)] = ctor
    return out, notes


def _gib_ceil(n: float) -> str:
    return f"{max(1, math.ceil(n / 2**30))}GiB"


def _mib_ceil(n: float) -> str:
    """The GPU's max_memory: to the MiB (accelerate reads "11776MiB"), not rounded up to a whole GiB past the budget."""
    return f"{max(1, math.ceil(n / 2**20))}MiB"


def choose_method(requested: str, bnb: Any, bnb_notes: list[str], tao: Any, path: str | None) -> str:
    """The recipe to write: the one asked for, or (auto) bitsandbytes when it runs the point as tuned (no note:
    exact formats, and every expert on the GPU as in the point), torchao, else advisor."""
    if requested == "hqq":
        raise UserError(HQQ_REFUSED)
    if requested in ("bitsandbytes", "torchao"):
        kwargs, notes = (bnb, bnb_notes) if requested == "bitsandbytes" else (tao, [])
        if path is None:
            raise UserError(f"{requested}: transformers cannot load this model spec (built in code); "
                            "use --opt method=advisor")
        if kwargs is None:
            raise UserError(f"{requested}: " + "; ".join(notes or ["nothing to quantize in this plan"]))
        return requested
    if requested == "advisor" or path is None:
        return "advisor"
    if bnb is not None and not bnb_notes:
        return "bitsandbytes"
    return "torchao" if tao else "advisor"


def refusal(model: ModelInfo) -> str | None:
    """Why no recipe loads this checkpoint (None when one does); `base.targets_for` asks it too."""
    if own := model.own_quantization:
        return (f"the hf recipes cannot load a pre-quantized ({own}) checkpoint: transformers refuses a "
                "BitsAndBytesConfig or TorchAoConfig for a checkpoint quantized by another method ('The model is "
                "quantized with ...'), and the advisor's loader streams unquantized experts only; export the "
                "unquantized checkpoint's study")
    return None


def export(point: FrontPoint, cfg: ExportConfig, opts: dict[str, str]) -> ExportResult:
    bnb, bnb_notes = bitsandbytes_recipe(cfg)
    tao, tao_notes = torchao_recipe(cfg, opts["collapse"])
    if opts["method"] == "torchao" and tao is None:
        raise UserError("torchao: " + "; ".join(tao_notes))
    spec = model_spec(point)
    path = model_path(spec)
    method = choose_method(opts["method"], bnb, bnb_notes, tao, path)
    peak = point.values.get("peak_gpu_bytes")
    max_memory: dict[Any, str] | None = {0: _mib_ceil(peak)} if peak else None
    store = point.config.get("counted_expert_store_bytes")
    if max_memory is not None and store:
        max_memory["cpu"] = _gib_ceil(store * 1.25)
    plan = plan_of(cfg.precision)
    costs = hybrid_costs(point) if cfg.miss_policy == "hybrid" else None
    loader = {
        "model": spec,
        "precision_plan": json.loads(plan.to_json()),
        "offload": {"slots_per_layer": cfg.slots_per_layer, "policy": cfg.policy, "prefetch": cfg.prefetch,
                    # hybrid balances by the study's time model: without its CPU expert times, copy those misses
                    "miss": cfg.miss_policy if cfg.miss_policy == "cpu" or costs else "copy",
                    # TIDE as the study ran it: its interval, and the steps per block its last-step rule needs
                    **({"policy_kw": tide_kw(cfg)} if cfg.policy == "tide" else {}),
                    **({"hot": hot_sets(cfg)} if cfg.policy == "static_hot" else {})},
        # (an autoregressive model's without the denoising steps and block length it never read)
        "decoding": dict(decoding_in_use(cfg.decoding, cfg.model.family).get("generate") or {}),
        **({"costs": costs} if costs else {}),
    }
    data = {
        "target": "hf",
        "method": method,
        "model": point.model,
        "model_path": path,
        "family": cfg.model.family,
        "expert_layout": cfg.model.layout,
        "bitsandbytes": {"kwargs": bnb, "notes": bnb_notes},
        "hqq": {"kwargs": None, "notes": [HQQ_REFUSED]},
        "torchao": {"fqn_to_config": tao, "notes": tao_notes},
        "max_memory": max_memory,
        "advisor_loader": loader,
    }
    notes = {"bitsandbytes": bnb_notes, "torchao": tao_notes, "advisor": []}[method]
    if method == "advisor" and costs:
        notes = [miss_note(cfg, "the recipe's OffloadRuntime", "hybrid", "balances each layer's misses between the "
                           f"CPU and the link with the study's time model (CPU expert times {_cpu_origin(costs)}; "
                           "on another host `advisor profile` measures its own)")]
    elif method == "advisor":
        notes = [miss_note(cfg, "the recipe's OffloadRuntime", loader["offload"]["miss"])]
    elif method == "torchao" and max_memory:  # only the torchao recipe loads with device_map + max_memory
        notes = [*notes, miss_note(cfg, "accelerate's device_map offload", "copy")]
    if method == "torchao":
        notes = [*notes, "fused experts quantized by torchao need experts_implementation='eager' (set in the recipe)"]
    if method != "advisor" and cfg.policy == "tide":
        notes = [*notes, "the study's TIDE refresh runs in the advisor's runtime only (--opt method=advisor); "
                         "this recipe's placement does not change during decoding"]
    if method == "torchao" and max_memory:
        notes = [*notes, "on a GPU the recipe uses device_map='auto' + max_memory: needs accelerate and psutil "
                         "(`pip install \"moe-advisor[hf]\"`)"]
    return ExportResult("hf", _script(point, cfg, data, notes), data, list(notes))


def hybrid_costs(point: FrontPoint) -> dict[str, Any] | None:
    """What the recipe's runtime rebuilds the study's time model from (`advisor.offload.timing.model_costs`): the
    CPU expert times it priced CPU misses with (`advisor export` reads them from the study into the point's
    hardware profile) and that profile's link; None when the study stored none (tuned before they were)."""
    hardware = dict(point.hardware or {})
    cpu = hardware.pop("cpu_experts", None)
    return {"cpu_experts": cpu, "hardware": hardware} if cpu else None


def _cpu_origin(costs: dict[str, Any]) -> str:
    cpu = costs["cpu_experts"]
    return f"{cpu.get('source', '?')}" + (f" on {cpu['host']}" if cpu.get("host") else "")


def tide_schedule_lines(kw: dict[str, int], family: str = "") -> list[str]:
    """The refresh schedule stated in the recipe, by the rule the runtime and the simulator run
    (`IntervalRefresh.refreshes`), not a copy of it."""
    from advisor.offload.policies import IntervalRefresh  # torch-free

    tau, spb = kw["tau"], kw.get("steps_per_block", 0)
    if spb == 1:  # one step per block, each its block's last: every tau-th step of the run (blocks b = steps b)
        counted = [b for b, steps in enumerate(IntervalRefresh(0, tau, spb).schedule(3 * tau)) if steps]
    if spb == 1 and family == "diffusion_gemma":  # one denoising step per canvas, beside each encoder pass
        return [f"TIDE (advisor.offload.policies.IntervalRefresh, as the study ran it): with one denoising step per "
                f"canvas every step is its block's last, so the GPU expert set is re-chosen from the current step's "
                f"tokens per expert every {tau} step(s), counted over the whole run (the encoder passes are no "
                f"steps): the steps of canvases {_steps(counted)}, ... of the first generation, and each later "
                f"generation carries on the count"]
    if spb == 1:  # autoregressive decoding: every forward is a block of one step
        return [f"TIDE (advisor.offload.policies.IntervalRefresh, as the study ran it): autoregressive decoding has "
                f"no denoising steps, so the GPU expert set is re-chosen from the current forward's tokens per "
                f"expert every {tau} forward(s), counted over the whole run: forwards {_steps(counted)}, ... of the first "
                f"generation, and each later generation carries on the count (the runtime numbers forwards across "
                f"generations, as the study's replay did)"]
    lines = [f"TIDE (advisor.offload.policies.IntervalRefresh, as the study ran it): the GPU expert set is re-chosen "
             f"from the current step's tokens per expert every {tau} denoising step(s); every step of the first "
             "block; never on a block's last step"]
    if not spb:
        return [*lines, "the study recorded no steps per block (tuned before it did), so this runtime cannot tell a "
                        "block's last step and may refresh on it"]
    first, later = IntervalRefresh(0, tau, spb).schedule(2)
    return [*lines, f"with the study's {spb} steps per block it refreshes at steps {_steps(first)} of the first block "
                    f"and {_steps(later)} of every later one (generate_ids passes each forward's step and block)"]


def _advisor_load(spec: str) -> list[str]:
    """The recipe's load: on the GPU when there is one, with the routed experts left in the checkpoint (the
    runtime's host store and GPU slots hold them, as an offloaded study ran); a tiny model is built in memory."""
    if spec.startswith("tiny:"):
        return [f"loaded = load_model({spec!r}, device='cuda' if gpu else 'cpu')"]
    return ["# routed experts stay in the checkpoint: only the runtime's host store and GPU slots hold them",
            f"loaded = load_model({spec!r}, device='cuda' if gpu else 'cpu', offload=True)"]


def _steps(steps: list[int]) -> str:
    return ", ".join(map(str, steps)) or "none"


def _script(point: FrontPoint, cfg: ExportConfig, d: dict[str, Any], notes: list[str]) -> str:
    """The recipe as Python source: every value written with repr/pformat, so it parses as it prints."""
    method = d["method"]
    L = [f"# {h}" for h in header_lines(point, cfg, "HF transformers")]
    L += [f"# recipe: {method}"]
    L += [f"# note: {n}" for n in notes]
    L += ["import torch"]
    gpu = ["", "gpu = torch.cuda.is_available()"]
    if method == "bitsandbytes":
        L += ["from transformers import BitsAndBytesConfig", "",
              "from advisor.models.load import load_model", *gpu, "",
              f"quantization_config = BitsAndBytesConfig(**{pformat(d['bitsandbytes']['kwargs'], width=100)})",
              "# the project's own model definition, loaded with bitsandbytes experts; they compute through "
              "Linear8bitLt / Linear4bit",
              f"loaded = load_model({d['model_path']!r}, device='cuda' if gpu else 'cpu', "
              "quantization_config=quantization_config)",
              "model = loaded.model"]
    elif method == "torchao":
        cls = MODEL_CLASS.get(cfg.model.family, "AutoModelForCausalLM")
        ctors = sorted({re.match(r"\w+", v).group(0) for v in d["torchao"]["fqn_to_config"].values()})
        extra = ["PerGroup"] if any("PerGroup" in v for v in d["torchao"]["fqn_to_config"].values()) else []
        L += ["from torchao.quantization import " + ", ".join(["FqnToConfig", *ctors, *extra]),
              f"from transformers import {cls}, TorchAoConfig", *gpu, "",
              "quantization_config = TorchAoConfig(FqnToConfig({"]
        L += [f"    {k!r}: {v}," for k, v in d["torchao"]["fqn_to_config"].items()]
        L += ["}))  # unlisted modules stay unquantized (routers, attention, norms, shared experts, lm_head)",
              f"max_memory = {d['max_memory']!r} if gpu else None",
              f"model = {cls}.from_pretrained(",
              f"    {d['model_path']!r}, dtype=torch.bfloat16, quantization_config=quantization_config,",
              "    experts_implementation='eager',  # torchao-quantized fused experts run in the eager implementation",
              "    device_map='auto' if gpu else 'cpu', max_memory=max_memory)"]
    else:
        loader = d["advisor_loader"]
        L += ["from advisor.models.generate import generate",
              "from advisor.models.load import load_model",
              "from advisor.offload.runtime import OffloadRuntime",
              *(["from advisor.offload.timing import model_costs"] if "costs" in loader else []),
              "from advisor.quant.plan import PrecisionPlan", *gpu, "",
              "# the advisor's own loader: the exact plan (per expert) and the tuned expert cache",
              f"plan = PrecisionPlan.from_json({json.dumps(loader['precision_plan'])!r})",
              *_advisor_load(loader["model"])]
        if "costs" in loader:
            L += ["# hybrid misses balanced by the study's time model: its CPU expert times and link profile",
                  f"costs = {loader['costs']!r}",
                  "costs = model_costs(plan, [m.hidden_size for m in loaded.moe], "
                  "[m.intermediate_size for m in loaded.moe],",
                  "                    costs['cpu_experts'], costs['hardware'])"]
        L += [f"runtime = OffloadRuntime(loaded, plan, slots_per_layer={loader['offload']['slots_per_layer']!r},",
              f"                         policy={loader['offload']['policy']!r}, "
              f"prefetch={loader['offload']['prefetch']!r}, miss={loader['offload']['miss']!r}, "
              + (f"policy_kw={loader['offload']['policy_kw']!r}, " if "policy_kw" in loader["offload"] else "")
              + (f"hot={loader['offload']['hot']!r}, " if "hot" in loader["offload"] else "")
              + ("costs=costs, " if "costs" in loader else "")
              + "device='cuda' if gpu else 'cpu')",
              "model = loaded.model"]
        if "policy_kw" in loader["offload"]:
            L += [f"# {line}" for line in tide_schedule_lines(loader["offload"]["policy_kw"], cfg.model.family)]
        said = ("" if not loader["decoding"] else f"  # {AUTOREGRESSIVE}" if not cfg.model.is_diffusion else "")
        L += [f"decoding = {loader['decoding']!r}" + (said if loader["decoding"] else
                                                      "  # the study stored none: pass max_new_tokens etc."),
              "", "",
              "def generate_ids(input_ids, **overrides):",
              '    """New token ids after the prompts `input_ids` [B, L], decoded as the study decoded; on_forward',
              "    gives the runtime each forward's denoising step and block, which its policy and prefetch follow.\"\"\"",
              "    return generate(loaded, input_ids, on_forward=runtime.on_forward, **{**decoding, **overrides})"]
        L += _demo(loader["model"])
    return "\n".join(L) + "\n"


def _demo(spec: str) -> list[str]:
    """`python recipe.py "a prompt"`: one decoding through the tuned runtime and what its expert cache did (the
    bundled model's default prompt in the form it was trained on)."""
    from advisor.eval.toy import prompt  # torch-free: the form the bundled model was trained on

    default = prompt("Kim's eggs: has 58, gave 18. How many?") if spec == "bundled" else "What is 58 - 18?"
    return ["", "",
            'if __name__ == "__main__":  # python recipe.py "a prompt": the study\'s decoding through the tuned runtime',
            "    import sys", "",
            "    tok = loaded.tokenizer",
            "    if tok is None:  # no tokenizer (a tiny:* model, a checkpoint without one): seeded random ids",
            "        if sys.argv[1:]:  # the prompt cannot be encoded: say so rather than answer another one",
            "            print('note: the model has no tokenizer, so the prompt is not used: decoding 8 seeded random '",
            "                  'token ids instead', file=sys.stderr)",
            "        ids = torch.randint(3, 200, (1, 8), generator=torch.Generator().manual_seed(0))",
            "    else:",
            f"        ids = tok(' '.join(sys.argv[1:]) or {default!r}, return_tensors='pt').input_ids",
            "    out = generate_ids(ids.to(loaded.device))",
            "    print(tok.decode(out[0], skip_special_tokens=True) if tok is not None else out[0].tolist())",
            "    st = runtime.stats()",
            "    print(f'expert cache: hit rate {st.hit_rate:.3f}, {st.bytes_h2d / 2**20:.2f} MiB host->device in '",
            "          f'{st.copies} copies, {st.total(\"cpu_experts\")} misses computed on the CPU '",
            "          f'({st.total(\"cpu_tokens\")} tokens) (counted); host->device time {st.transfer_ms:.2f} ms '",
            "          f'({st.transfer_source})')"]
