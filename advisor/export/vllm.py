"""vLLM export: `vllm serve` arguments - one quantization scheme for every MoE layer, or CPU offload.

vLLM serves autoregressive models and, since 0.33, DiffusionGemma (its first diffusion LLM); the other
diffusion LLMs (LLaDA-MoE, LLaDA2) are refused with the reason. vLLM quantizes a BF16 checkpoint's experts on the fly with `--quantization experts_int8` (experts
only) or `fp8` (all linear layers); it has no per-layer or per-expert scheme, so the plan collapses to one
scheme: the highest-precision quantized format any expert uses. It has no expert cache either: the host-side
share of the experts becomes `--cpu-offload-gb` (weights streamed to the GPU every forward), in GiB as vLLM
reads it (a float, x 1024**3: `int(cpu_offload_gb * 1024**3)` bytes), written exactly (`gib_arg`), and left out
when nothing is offloaded.

The two never go together. vLLM 0.33 quantizes online on the meta device: `OnlineMoEMethodBase.create_weights`
(model_executor/layers/quantization/online/moe_base.py, which `experts_int8` and `fp8` on a BF16 checkpoint
both use) creates the expert parameters with `device="meta"` and quantizes them only as the weights load,
while `--cpu-offload-gb` moves parameters to host memory as the model is built (`make_layers` ->
`UVAOffloader._maybe_offload_to_cpu`, model_executor/offloader/uva.py: `p.data.to(device="cpu")`), which a
meta tensor cannot do ("Cannot copy out of meta tensor"; model_loader/reload/__init__.py lists composition
with CPU offloading as not implemented). So a point that quantizes and keeps experts in host memory is served
one way or the other (`--opt prefer`): at the checkpoint's dtype with no `--quantization`, the offload leaving on
the GPU the tuned cache's bytes (each layer's slots x its experts' bytes in the plan's formats), or quantized with
every expert on the GPU and no offload; `auto` quantizes when that fits the study's budget (counted from the
point's peak; with `export --from-recommend`, the budget recommend was given), else offloads. Notes give both sizes and how to get both (a checkpoint quantized ahead, whose
parameters vLLM creates quantized).

A pre-quantized checkpoint (config.json's `quantization_config`, recorded by the study as `quant_method`; or
experts recorded as float8, as transformers keeps them on a GPU that runs FP8) is such a checkpoint: vLLM reads
its `quantization_config` and serves it with the checkpoint's own quantization (for FP8, `Fp8MoEMethod` creates
the expert parameters in fp8 on the device, so they can be offloaded), and it refuses a `--quantization` that
differs from the checkpoint's ("does not match the quantization method specified in the `quantization`
argument", config/model.py): no `--quantization` is written, whatever dtype the study loaded it in (on a CPU,
transformers dequantizes FP8 to bf16). The offload is counted in fp8 bytes for FP8; for another method (gptq,
awq, compressed-tensors), whose bytes per expert depend on settings no study records, at the loaded dtype, said
in a note that gives what a 4- and an 8-bit checkpoint would take. `--cpu-offload-params` names the checkpoint's
expert weights as vLLM names them for its quantization (`EXPERT_PARAMS`: GPTQ/AWQ's are w13_qweight/w2_qweight,
which a w13_weight filter would not match, offloading nothing).
"""

from __future__ import annotations

import json
import math
import shlex

from advisor.errors import UserError
from advisor.export.base import ExportResult, header_lines, model_spec, served_path, slot_count
from advisor.quant.spec import parse_format
from advisor.results.config_view import ExportConfig, ModelInfo, precision_rank
from advisor.results.front import FrontPoint
from advisor.units import format_bytes

LOADS_FILES = True  # the runtime reads the model from disk or the hub: not a tiny:* model (`targets_for`)

OPTIONS = {
    "offload_params": ("experts", ("experts", "all"), "offload only expert weights (w13/w2) or any parameter"),
    "prefer": ("auto", ("auto", "offload", "quantize"),
               "a point that quantizes and keeps experts in host memory, which vLLM cannot combine: offload at the "
               "checkpoint's dtype, or quantize with every expert on the GPU; auto quantizes when that fits the "
               "study's budget (--from-recommend: its --budget or --gpu)"),
}
DENSE = ("bf16", "fp16", "fp32")
SERVED_DIFFUSION = ("diffusion_gemma",)  # vLLM 0.33+
# The names vLLM 0.33 gives a MoE layer's expert weights, by the checkpoint's own quantization (None: unquantized,
# or quantized online): what `--cpu-offload-params` must name, since UVAOffloader (model_executor/offloader/uva.py)
# offloads only parameters with one of them as a whole name segment (".w13_weight." in ".<name>.", so w13_weight
# matches neither w13_qweight nor w13_weight_packed) and offloads nothing when none matches. Unquantized
# (UnquantizedFusedMoEMethod), online experts_int8/fp8 and an FP8 checkpoint (Fp8MoEMethod): w13_weight/w2_weight;
# GPTQ and AWQ (AutoGPTQMoEMethod, AutoAWQMoEMethod, MoeWNA16Method): w13_qweight/w2_qweight; compressed-tensors:
# w13_weight (W8A8 int8/fp8) or w13_weight_packed (WNA16, W4A4), by a scheme no study records, so both. Another
# method: every name here (a name that matches nothing offloads nothing).
EXPERT_PARAMS: dict[str | None, tuple[str, ...]] = {
    None: ("w13_weight", "w2_weight"),
    "fp8": ("w13_weight", "w2_weight"),
    "gptq": ("w13_qweight", "w2_qweight"),
    "awq": ("w13_qweight", "w2_qweight"),
    "compressed-tensors": ("w13_weight", "w2_weight", "w13_weight_packed", "w2_weight_packed"),
}


def expert_params(model: ModelInfo) -> tuple[str, ...]:
    """`--cpu-offload-params` for the checkpoint's expert weights (`EXPERT_PARAMS`)."""
    own = model.own_quantization
    return EXPERT_PARAMS.get(own) or tuple(dict.fromkeys(n for names in EXPERT_PARAMS.values() for n in names))


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
        notes.append(f"vLLM has no on-the-fly {'/'.join(sorted(kinds - {'int8', 'fp8'}))} scheme for MoE experts of "
                     f"{a_checkpoint(cfg.model)}; {chosen} is the nearest (use a pre-quantized AWQ/GPTQ "
                     "checkpoint for 4-bit)")
    if dense := sorted({f for row in cfg.formats for f in row if parse_format(f).kind in DENSE}):
        notes.append(f"one scheme per model: experts the plan keeps in {'/'.join(dense)} are quantized by {chosen} too")
    return chosen, notes


def a_checkpoint(model: ModelInfo) -> str:
    """"a BF16 checkpoint", "an FP32 checkpoint": the checkpoint by the dtype vLLM creates its unquantized parameters
    in and quantizes online from (`ModelInfo.checkpoint_format`, else the dtype the study loaded)."""
    fmt = model.checkpoint_format or model.dtype
    name = fmt.upper() if fmt in DENSE else fmt
    return f"{'an' if name[:1].lower() in 'aefio' else 'a'} {name} checkpoint"


AUTO_FROM_FP32 = ("bf16", "vLLM's --dtype auto serves an fp32 checkpoint in 16 bits: bf16, fp16 on a GPU before "
                  "Ampere, 2 bytes a weight either way (vLLM's config/model.py `_resolve_auto_dtype` downcasts an fp32 "
                  "model to the GPU's first supported dtype)")


def served_format(model: ModelInfo) -> str:
    """The format vLLM (--dtype auto, which the command keeps) creates unquantized expert parameters in and counts
    --cpu-offload-gb in: the checkpoint's (`ModelInfo.checkpoint_format`), bf16 for an fp32 one (`AUTO_FROM_FP32`),
    else the dtype the study loaded (a pre-quantized checkpoint's bytes are not known here)."""
    fmt = model.checkpoint_format
    return AUTO_FROM_FP32[0] if fmt == "fp32" else fmt or model.dtype


def offload_gib(cfg: ExportConfig) -> tuple[float | None, str]:
    """GiB of expert weights left in host memory, in the format vLLM serves the checkpoint in (`served_format`:
    what vLLM creates the parameters in and counts against --cpu-offload-gb when nothing is quantized online:
    module docstring; the loaded dtype, said in the note, for a pre-quantized format whose bytes are not known
    here): all experts minus the tuned cache's bytes (each layer's `slots` largest experts in the plan's
    formats), so the GPU keeps no more expert bytes than the study's cache held."""
    m = cfg.model
    if not m.hidden_size or not m.intermediate_size:
        return None, "expert shapes not recorded: set --cpu-offload-gb yourself"
    fmt = served_format(m)
    one = m.expert_nbytes(fmt) or 0
    where = f"{sum(cfg.slots_per_layer)} of {sum(x.num_experts for x in m.layers)} experts on the GPU as tuned"
    if all(s >= layer.num_experts for layer, s in zip(m.layers, cfg.slots_per_layer, strict=True)):
        return 0.0, f"{where}: nothing offloaded, so no --cpu-offload-gb"
    total = sum(layer.num_experts * one for layer in m.layers)
    cache = cfg.cache_nbytes()
    host = max(total - cache, 0)
    if host == 0:  # e.g. fp32 experts in the cache: its bytes hold every expert at the served dtype
        return 0.0, (f"{where}; the tuned cache's {format_bytes(cache)} of experts hold every expert's "
                     f"{format_bytes(total)} at {fmt} (counted from the expert shapes): nothing offloaded, so no "
                     "--cpu-offload-gb")
    gib = _gib(host)
    uncounted = "" if m.checkpoint_format else packed_note(cfg, fmt, total, cache)
    if m.checkpoint_format == "fp32":
        uncounted += f"; at bf16, not the checkpoint's fp32: {AUTO_FROM_FP32[1]}"
    # the flag carries the exact bytes (`gib_arg`); the prose a size people read (0.022779464721679688 GiB was shown)
    return gib, (f"{where}; the GPU keeps the tuned cache's {format_bytes(cache)} of experts, the rest "
                 f"({format_bytes(host)} at {fmt}, counted from the expert shapes) offloaded: --cpu-offload-gb is "
                 f"those bytes exactly, in GiB{uncounted}")


def _gib(nbytes: float) -> float:
    """Bytes as vLLM's --cpu-offload-gb reads them: GiB, a float (`OffloadConfig.cpu_offload_gb` / its `uva` form;
    the offloader takes `int(cpu_offload_gb * 1024**3)` bytes). Exact: a whole number of bytes (below 2**53) over
    2**30 is a binary float, which vLLM multiplies back to the same bytes. It was rounded up to 0.01 GiB (10.7 MB),
    which vLLM - moving whole parameters (w13 or w2 of a layer's experts) while fewer bytes than that are moved -
    could spend on one parameter more than the study's cache leaves (every expert, for a small model)."""
    return math.ceil(nbytes) / 2**30


def gib_arg(gib: float) -> str:
    """`--cpu-offload-gb`'s value as written: the shortest decimal that reads back as the same float, so vLLM
    offloads up to the exact bytes counted (`_gib`)."""
    return "0" if gib == 0 else repr(float(gib))


def packed_note(cfg: ExportConfig, fmt: str, total: int, cache: int) -> str:
    """Why a GPTQ/AWQ/compressed-tensors checkpoint's offload, counted at the loaded dtype `fmt`, is not the study's:
    vLLM counts --cpu-offload-gb in the bytes of the parameters it creates (UVAOffloader: numel x element size),
    the checkpoint's packed weights, whose bits per weight the study did not record; with the GPU keeping the
    tuned cache's bytes, what a 4- and an 8-bit checkpoint would take (scales and zero points, which
    --cpu-offload-params does not name, stay on the GPU)."""
    bits = parse_format(fmt).bits
    at = {b: _gib(max(total * b / bits - cache, 0)) for b in (4, 8)}
    names = "/".join(expert_params(cfg.model))
    return (f"; counted at the loaded dtype ({fmt}), not in the checkpoint's own {cfg.model.own_quantization} bytes, "
            f"which vLLM creates its experts in (packed {names}) and counts --cpu-offload-gb in, at bits per weight "
            f"the study did not record: this value offloads more experts than the study kept off the GPU (every one, "
            f"when they take fewer bytes); to keep the tuned cache's bytes on the GPU a 4-bit checkpoint takes about "
            f"--cpu-offload-gb {gib_arg(at[4])}, an 8-bit one {gib_arg(at[8])} (0: no offload)")


def online_offload_note(quant: str, model: ModelInfo) -> str:
    """Why a point that offloads is served without its quantization scheme (module docstring)."""
    return (f"served without --quantization {quant}: vLLM quantizes {a_checkpoint(model)} online, "
            "creating the expert "
            "parameters on the meta device (OnlineMoEMethodBase.create_weights) and quantizing them as they load, "
            "and --cpu-offload-gb moves parameters to host memory while the model is built (UVAOffloader), which "
            "fails on a meta tensor ('Cannot copy out of meta tensor'); so the experts stay in the checkpoint's "
            "dtype, offloaded down to the tuned cache's bytes on the GPU. For both, serve a checkpoint quantized "
            "ahead (compressed-tensors int8, AWQ, GPTQ), whose parameters vLLM creates quantized")


def quantized_fit(point: FrontPoint, cfg: ExportConfig, quant: str) -> tuple[bool | None, str]:
    """Whether `quant` with every expert on the GPU (no offload) fits the budget (`cfg.budget`, else the study's) -
    counted: the point's peak minus its cache's bytes plus every expert's bytes in the scheme's format - (None when
    no budget, peak or expert shapes are stored), and the numbers, for the choice vLLM forces (module docstring)."""
    m = cfg.model
    every = sum(layer.num_experts * (m.expert_nbytes("fp8" if quant == "fp8" else "int8") or 0) for layer in m.layers)
    cache, peak = cfg.cache_nbytes(), point.values.get("peak_gpu_bytes")
    budget, whose = cfg.budget or (point.budget_bytes, "the study's budget")
    text = (f"--quantization {quant} with every expert on the GPU holds {format_bytes(every)} of experts where the "
            f"tuned cache held {format_bytes(cache)}")
    if not every or not cache or peak is None or budget is None:
        return None, f"{text} (the study stored no budget, peak or expert shapes to compare them with)"
    need = peak - cache + every
    fits = need <= budget
    return fits, (f"{text}: a peak of about {format_bytes(need)} (counted: the point's peak minus its cache plus those "
                  f"experts), {'within' if fits else 'over'} {whose} of {format_bytes(budget)}")


def offload_note(cfg: ExportConfig) -> str:
    """What vLLM's offload does in place of the study's expert cache (vllm/model_executor/offloader/uva.py:
    make_layers hands it the decoder layers in order, and it moves whole parameters until the budget is spent)."""
    return (f"vLLM keeps no expert cache: --cpu-offload-gb moves whole expert parameters (w13 or w2 of all of a layer's "
            f"experts) to host memory, from the first layer on until the budget is spent, and the GPU reads them over "
            f"PCIe in every forward (UVA), where the study kept {slot_count(cfg.slots_per_layer, 'expert')} per layer on "
            f"the GPU ({cfg.policy} cache, miss policy {cfg.miss_policy}): its time per token differs from the study's")


def refusal(model: ModelInfo) -> str | None:
    """Why vLLM cannot serve this model family (None when it can); `base.targets_for` asks it too."""
    if model.is_diffusion and model.family not in SERVED_DIFFUSION:
        return (f"vLLM serves no diffusion LLM but DiffusionGemma (family {model.family}: its iterative "
                "unmasking has no vLLM model)")
    return None


def decoding_args(cfg: ExportConfig) -> list[str]:
    """`--diffusion-config` with the canvas length and denoising steps the study decoded with, as `vllm serve`
    takes them (vLLM 0.33.0 vllm/engine/arg_utils.py: `--diffusion-config`/`-dc`, a JSON object read by
    `json.loads` into `DiffusionConfig(canvas_length, max_denoising_steps)`, vllm/config/diffusion.py; its
    examples/features/structured_diffusion/README.md serves DiffusionGemma with it); written without spaces, so a
    wrapped line keeps it whole. Empty for an autoregressive model, and where the study recorded no decoding (tuned
    before it did): vLLM then decodes with its own defaults, which `decoding_note` says."""
    canvas, steps = cfg.block_length, cfg.steps_per_block
    if not cfg.model.is_diffusion or not canvas or not steps:
        return []
    return ["--diffusion-config", json.dumps({"canvas_length": canvas, "max_denoising_steps": steps},
                                             separators=(",", ":"))]


def decoding_note(cfg: ExportConfig) -> str:
    """How the study decoded the diffusion LLM it measured, and how `vllm serve` is told (`decoding_args`): vLLM
    decodes with its DiffusionConfig's `canvas_length` and `max_denoising_steps` (the steps, when not set, from
    the checkpoint's generation_config.json), not the study's, unless the command sets them."""
    served = ("vLLM decodes with its diffusion config's canvas_length and max_denoising_steps (the steps, when "
              "not set, from the checkpoint's generation_config.json)")
    if not decoding_args(cfg):
        return (f"decoding: the study recorded none (tuned before it did); {served}, which may not be how the study's "
                "time and accuracy were measured; `vllm serve` takes them as --diffusion-config "
                "'{\"canvas_length\":N,\"max_denoising_steps\":S}'")
    return (f"decoding: the study measured this point decoding canvases of {cfg.block_length} tokens with at most "
            f"{cfg.steps_per_block} denoising steps each (a canvas stops sooner once stable); {served}: the command "
            "sets them to the study's with --diffusion-config, so the served decoding is the one measured")


def export(point: FrontPoint, cfg: ExportConfig, opts: dict[str, str]) -> ExportResult:
    if (why := refusal(cfg.model)) is not None:
        raise UserError(why)
    quant, notes = scheme(cfg)
    if quant and (own := cfg.model.own_quantization):  # vLLM serves the checkpoint's own quantization
        what = "an FP8 checkpoint" if own == "fp8" else f"a pre-quantized {own} checkpoint"
        notes = [f"served without --quantization {quant}: {what} (the study loaded its experts as {cfg.model.dtype}), "
                 "which vLLM serves with its own quantization (its config.json's quantization_config) and refuses "
                 "another --quantization for"]
        quant = None
    gb, why = offload_gib(cfg)
    # bytes left in host memory (with the shapes unknown, experts left out of the cache: the user sets the offload)
    offloads = bool(gb) if gb is not None else any(s < layer.num_experts for layer, s in
                                                   zip(cfg.model.layers, cfg.slots_per_layer, strict=True))
    if quant and offloads:  # offloading an online-quantized parameter fails (module docstring): one or the other
        fits, numbers = quantized_fit(point, cfg, quant)
        if opts["prefer"] == "quantize" or (opts["prefer"] == "auto" and fits):
            gb, why = 0.0, (f"not offloaded: vLLM cannot offload the experts it quantizes online (its CPU offload "
                            f"moves parameters it creates on the meta device); {numbers}; --opt prefer=offload serves "
                            f"them at {served_format(cfg.model)} offloaded down to the cache's bytes instead")
        else:
            notes = [online_offload_note(quant, cfg.model), f"{numbers}; --opt prefer=quantize serves that instead"]
            quant = None
    args = ["vllm", "serve", served_path(model_spec(point), "vLLM")]
    if quant:
        args += ["--quantization", quant]
    if gb:
        args += ["--cpu-offload-gb", gib_arg(gb)]
        if opts["offload_params"] == "experts":
            args += ["--cpu-offload-params", *expert_params(cfg.model)]
    args += decoding_args(cfg)
    notes.append(why)
    if gb:
        notes.append(offload_note(cfg))
    if cfg.model.is_diffusion:
        notes.append(decoding_note(cfg))
    counted = served_format(cfg.model)  # `offload_gib`'s bytes
    data = {"target": "vllm", "args": args, "quantization": quant, "cpu_offload_gb": gb,
            # the format --cpu-offload-gb was counted in, and whether it is the one vLLM counts it in
            "cpu_offload_counted_at": {"format": counted, "checkpoint_format": cfg.model.checkpoint_format is not None},
            "notes": notes}
    text = "\n".join([*(f"# {h}" for h in header_lines(point, cfg, "vLLM")), *(f"# note: {n}" for n in notes),
                      " ".join(shlex.quote(a) for a in args)]) + "\n"
    return ExportResult("vllm", text, data, notes)
