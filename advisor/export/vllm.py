"""vLLM export: `vllm serve` arguments - one quantization scheme for every MoE layer, plus CPU offload.

vLLM serves autoregressive models and, since 0.33, DiffusionGemma (its first diffusion LLM); the other
diffusion LLMs (LLaDA-MoE, LLaDA2) are refused with the reason. vLLM quantizes a BF16 checkpoint's experts on the fly with `--quantization experts_int8` (experts
only) or `fp8` (all linear layers); it has no per-layer or per-expert scheme, so the plan collapses to one
scheme: the highest-precision quantized format any expert uses. It has no expert cache either: the host-side
share of the experts becomes `--cpu-offload-gb` (weights streamed to the GPU every forward), in GiB as vLLM
reads it, rounded up to 0.01 GiB, and left out when nothing is offloaded.

vLLM fills that budget while it builds the model (`UVAOffloader._maybe_offload_to_cpu`, summing
`numel * element_size` of each parameter it moves), so it is counted in the dtype the quantization method
creates the expert parameters in: int8 for `experts_int8` (`ExpertsInt8MoEMethod.create_weights`), but the
checkpoint's bf16 for `fp8` on a BF16 checkpoint (`Fp8MoEMethod.create_weights` keeps `params_dtype`; the
weights become fp8 only in `process_weights_after_loading`). The value is written in those bytes.
"""

from __future__ import annotations

import math
import shlex

from advisor.errors import UserError
from advisor.export.base import ExportResult, header_lines, model_spec, served_path, slot_range
from advisor.quant.spec import parse_format
from advisor.results.config_view import ExportConfig, ModelInfo, precision_rank
from advisor.results.front import FrontPoint

LOADS_FILES = True  # the runtime reads the model from disk or the hub: not a tiny:* model (`targets_for`)

OPTIONS = {
    "offload_params": ("experts", ("experts", "all"), "offload only expert weights (w13/w2) or any parameter"),
}
DENSE = ("bf16", "fp16", "fp32")
SERVED_DIFFUSION = ("diffusion_gemma",)  # vLLM 0.33+


def scheme(cfg: ExportConfig) -> tuple[str | None, list[str]]:
    """The one `--quantization` value for the plan, and what was given up to get it."""
    q = sorted({f for row in cfg.formats for f in row if parse_format(f).kind not in DENSE}, key=precision_rank, reverse=True)
    if not q:
        return None, []
    notes = []
    kinds = {parse_format(f).kind for f in q}
    top = parse_format(q[0])
    chosen = "fp8" if top.kind == "fp8" else "experts_int8"
    if chosen == "fp8":
        notes.append("--quantization fp8 quantizes every linear layer (attention too), not only experts")
    if kinds - {"int8", "fp8"}:
        notes.append(f"vLLM has no on-the-fly {'/'.join(sorted(kinds - {'int8', 'fp8'}))} scheme for MoE experts of a BF16 "
                     f"checkpoint; {chosen} is the nearest (use a pre-quantized AWQ/GPTQ checkpoint for 4-bit)")
    if any(parse_format(f).kind in DENSE for row in cfg.formats for f in row):
        notes.append(f"one scheme per model: experts the plan keeps in bf16 are quantized by {chosen} too")
    return chosen, notes


def offload_gib(cfg: ExportConfig, quant: str | None) -> tuple[float | None, str]:
    """GiB of expert weights left in host memory: all experts minus the tuned cache's share, in the bytes vLLM
    counts against --cpu-offload-gb (the parameters as it creates them: module docstring)."""
    m = cfg.model
    if not m.hidden_size or not m.intermediate_size:
        return None, "expert shapes not recorded: set --cpu-offload-gb yourself"
    fmt = "int8" if quant == "experts_int8" else m.dtype  # fp8: vLLM counts the bf16 parameters it quantizes later
    one = m.expert_nbytes(fmt) or 0
    host = sum((layer.num_experts - s) * one for layer, s in zip(m.layers, cfg.slots_per_layer, strict=True))
    gib = math.ceil(host / 2**30 * 100) / 100
    where = f"{sum(cfg.slots_per_layer)} of {sum(x.num_experts for x in m.layers)} experts on the GPU as tuned"
    if host == 0:
        return 0.0, f"{where}: nothing offloaded, so no --cpu-offload-gb"
    counted = (f" (vLLM counts --cpu-offload-gb in the {fmt} parameters it creates, before it quantizes them to fp8: "
               f"host memory then holds about half)") if quant == "fp8" else ""
    return gib, f"{where}; the rest ({host} bytes = {gib:.2f} GiB at {fmt}) offloaded{counted}"


def offload_note(cfg: ExportConfig) -> str:
    """What vLLM's offload does in place of the study's expert cache (vllm/model_executor/offloader/uva.py:
    make_layers hands it the decoder layers in order, and it moves whole parameters until the budget is spent)."""
    return (f"vLLM keeps no expert cache: --cpu-offload-gb moves whole expert parameters (w13 or w2 of all of a layer's "
            f"experts) to host memory, from the first layer on until the budget is spent, and the GPU reads them over "
            f"PCIe in every forward (UVA), where the study kept {slot_range(cfg.slots_per_layer)} experts per layer on "
            f"the GPU ({cfg.policy} cache, miss policy {cfg.miss_policy}): its time per token differs from the study's")


def refusal(model: ModelInfo) -> str | None:
    """Why vLLM cannot serve this model family (None when it can); `base.targets_for` asks it too."""
    if model.is_diffusion and model.family not in SERVED_DIFFUSION:
        return (f"vLLM serves no diffusion LLM but DiffusionGemma (family {model.family}: its iterative "
                "unmasking has no vLLM model)")
    return None


def export(point: FrontPoint, cfg: ExportConfig, opts: dict[str, str]) -> ExportResult:
    if (why := refusal(cfg.model)) is not None:
        raise UserError(why)
    quant, notes = scheme(cfg)
    gb, why = offload_gib(cfg, quant)
    args = ["vllm", "serve", served_path(model_spec(point), "vLLM")]
    if quant:
        args += ["--quantization", quant]
    if gb:
        args += ["--cpu-offload-gb", f"{gb:g}"]
        if opts["offload_params"] == "experts":
            args += ["--cpu-offload-params", "w13_weight", "w2_weight"]
    notes.append(why)
    if gb:
        notes.append(offload_note(cfg))
    data = {"target": "vllm", "args": args, "quantization": quant, "cpu_offload_gb": gb, "notes": notes}
    text = "\n".join([*(f"# {h}" for h in header_lines(point, cfg, "vLLM")), *(f"# note: {n}" for n in notes),
                      " ".join(shlex.quote(a) for a in args)]) + "\n"
    return ExportResult("vllm", text, data, notes)
