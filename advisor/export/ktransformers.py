"""KTransformers export: the SGLang kt-kernel launch command of current KTransformers releases (0.5+).

KTransformers' YAML optimize rules moved to `archive/` (Nov 2025); current releases run through SGLang's
kt-kernel flags, so this export is a launch command, not a YAML file. kt-kernel keeps `--kt-num-gpu-experts`
experts of *every MoE layer* on the GPU (which ones: its placement strategy, uniform by default) and computes the
others on the CPU. The GPU experts load from `--model-path` at the checkpoint's precision (BF16; fp16 for an fp32
one, as SGLang loads it; fp8 for an FP8 checkpoint, whose dense plan formats also run as kt-kernel's FP8 method on
the checkpoint itself), not the plan's, so the tuned cache becomes one per-layer count of checkpoint experts: as
many as the tuned cache's bytes hold, spread evenly over the MoE layers, rounded down (never more GPU memory than
tuned). `--kt-weight-path` (the
CPU-side expert weights in the format `--kt-method` expects) cannot be known here: the script stops until the
user sets it. Which experts are on the GPU: when the point stored the study's calibration routing (static_hot
points and hot/cold plans), each layer's N most-routed experts, through kt-kernel's `frequency` placement and a
counts file the script writes (`placement` below); otherwise kt-kernel's default `uniform` placement, experts
0..N-1 of every layer, said in a note. `--kt-method` follows the plan's CPU expert format; for int8/int4 it is
kt-kernel's AMX method where the exporting host's CPU has AVX-512F/BW (AMX or not), else LLAMAFILE (GGUF weights),
or `--opt kt_method` (`host_method`, `kt_method`). `--kt-cpuinfer` and `--kt-threadpool-count` are the host's physical
cores and NUMA nodes, as kt-kernel's README asks (counted by lscpu when the script runs; KT_CPUINFER and
KT_THREADPOOL_COUNT override them). LLaDA-MoE and DiffusionGemma are refused with the reason (REFUSED below:
SGLang has no model for LLaDA-MoE; DiffusionGemma's is upstream's only, its experts GELU ones kt-kernel cannot
compute); LLaDA2 is decoded by SGLang's diffusion-LLM path (`--dllm-algorithm`, DLLM below).
A Qwen2-MoE/Qwen3-MoE checkpoint with dense layers (mlp_only_layers, decoder_sparse_step) is refused too: SGLang
and kt-kernel take every layer of it for an MoE layer (ALL_SPARSE below).
Another pre-quantized checkpoint (GPTQ, AWQ, compressed-tensors) is refused: its GPU experts' bytes are not known.
"""

from __future__ import annotations

import json
import shlex
from dataclasses import dataclass
from typing import Any

from advisor.errors import UserError
from advisor.export.base import (
    ExportResult,
    header_lines,
    miss_note,
    model_spec,
    served_path,
    slot_count,
    slot_range,
    tide_kw,
)
from advisor.export.llamacpp import refusal as llamacpp_refusal
from advisor.quant.spec import parse_format
from advisor.results.config_view import ExportConfig, ModelInfo, collapse_layer, precision_rank
from advisor.results.front import FrontPoint
from advisor.units import count

LOADS_FILES = True  # the runtime reads the model from disk or the hub: not a tiny:* model (`targets_for`)

OPTIONS = {
    "collapse": ("highest", ("highest", "traffic"), "how per-expert formats become one CPU expert format"),
    "kt_method": ("auto", ("auto", "amxint8", "amxint4", "llamafile", "bf16", "fp8"),
                  "kt-kernel's CPU method (auto: an int8/int4 plan's from this host's CPU flags, `host_method`)"),
}
# families kt-kernel's SGLang cannot serve with offloaded experts, with the reason (`base.export_point` adds the
# targets that take them). KTransformers' docs (kt-kernel/README.md, install.sh) install sglang-kt, the kvcache-ai
# fork, not upstream sglang. An architecture with no SGLang model falls back to the Transformers backend
# (python/sglang/srt/model_loader/utils.py: resolve_transformers_arch), which refuses a remote-code model that is
# not backend-compatible and otherwise decodes autoregressively with no fused-MoE layer for kt-kernel to take
# over. What was checked (in the stored sources: sglang-kt main of 2026-07-15, ktransformers main of 2026-08-21,
# upstream sglang's PR #34061 code):
# - LLaDA-MoE: no LLaDAMoEModelLM model in sglang-kt (main of 2026-07-15) or upstream sgl-project/sglang, and
#   neither's diffusion-LLM path (srt/dllm/config.py, DLLM_PARAMS) lists it.
# - DiffusionGemma: sglang-kt has no model for it (not even Gemma 4) and its DLLM_PARAMS knows LLaDA2 and SDAR
#   only. Upstream has DiffusionGemmaForBlockDiffusion (srt/models/gemma4_diffusion.py, decoded with
#   --dllm-algorithm Gemma4Renoise) from PR #34061 (opened 2026-08-08; v0.5.14 lacked it, issue #29904), but its
#   experts are a Gemma4MoE FusedMoE with a GELU activation, while kt_ep_wrapper's KTEPWrapperMethod asserts
#   activation == "silu" before submitting CPU experts (upstream and sglang-kt alike) and kt-kernel's CPU kernels
#   compute SiLU (or MiniMax's swigluoai) gates only; the model also refuses any quantized loading (no FP8 route).
REFUSED = {
    "llada_moe": "SGLang serves no LLaDA-MoE: neither sglang-kt (the kvcache-ai fork KTransformers installs) nor "
                 "upstream sgl-project/sglang has a model or a diffusion-LLM entry for LLaDAMoEModelLM, so kt-kernel "
                 "would have no MoE layer to take over",
    "diffusion_gemma": "kt-kernel cannot take over DiffusionGemma's experts: sglang-kt (the kvcache-ai fork "
                       "KTransformers installs) has no model for it, and upstream SGLang's (--dllm-algorithm "
                       "Gemma4Renoise, PR #34061 of 2026-08-08, not in v0.5.14) runs GELU experts, while kt-kernel "
                       "computes SiLU-gated ones only (its SGLang wrapper asserts a silu activation)",
}
# SGLang decodes LLaDA2 as a diffusion LLM only when --dllm-algorithm names one (python/sglang/srt/dllm/config.py:
# DllmConfig.from_server_args returns None without it, and the model is scheduled token by token). LowConfidence
# (srt/dllm/algorithm/low_confidence.py) commits, block by block, every masked token whose greedy probability
# passes `threshold` and at least the most confident one per step: LLaDA2's threshold decoding, as the study ran
# it. family -> (algorithm, SGLang's block size for it (DLLM_PARAMS), LowConfidence's default threshold)
DLLM = {"llada2": ("LowConfidence", 32, 0.95)}
DLLM_CONFIG = "dllm-config.yaml"  # --dllm-algorithm-config: a YAML whose block_size and threshold SGLang reads


def dllm_flags(cfg: ExportConfig) -> tuple[list[str], list[str], str]:
    """SGLang's diffusion-LLM flags for the study's decoding, the YAML they need (empty when SGLang's defaults are
    the study's) and a note."""
    algo, sg_block, sg_threshold = DLLM[cfg.model.family]
    gen = dict(cfg.decoding.get("generate") or {})
    block = cfg.block_length or sg_block
    threshold = float(sg_threshold if gen.get("threshold") is None else gen["threshold"])  # 0 commits every token
    spb = cfg.steps_per_block
    yaml = [f"block_size: {block}", f"threshold: {threshold:g}"] if (block, threshold) != (sg_block, sg_threshold) else []
    args = ["--dllm-algorithm", algo, *(["--dllm-algorithm-config", DLLM_CONFIG] if yaml else [])]
    note = (f"SGLang decodes {cfg.model.family} as a diffusion LLM only with --dllm-algorithm (without it, token by "
            f"token): {algo} in blocks of {block}, committing every masked token above confidence {threshold:g} and at "
            "least the most confident one per step"
            + (f", from {DLLM_CONFIG}, which the script writes (SGLang's own block is {sg_block})" if yaml else "")
            + (f"; the study's {spb} steps per block committed at least {-(-block // spb)} tokens per step, so SGLang "
               "may take more steps" if spb and spb < block else ""))
    return args, yaml, note


GGUF_WEIGHTS = "a GGUF directory quantized with `advisor export ... --to llama.cpp`"
# BF16_AS_STORED: kt-kernel's BF16 method (ktransformers main of 2026-08-21, kt-kernel/python/utils/amx.py
# NativeMoEWrapper.load_weights) takes each expert tensor from --kt-weight-path's safetensors through
# utils/loader.py BF16SafeTensorLoader (load_tensor: `f.get_tensor(key).to(device)`, no dtype conversion) and passes
# its data_ptr() to the BF16 kernels, so an fp16 or fp32 checkpoint must be saved in bf16 first
# advisor format kind -> --kt-method (CPU expert kernels) and the weights --kt-weight-path must hold, where the
# format alone decides it (int8/int4/nf4: `host_method`)
KT_METHOD = {
    "bf16": ("BF16", "the original BF16 checkpoint"),
    "fp16": ("BF16", "the original checkpoint (BF16 kernels)"),
    "fp32": ("BF16", "the original checkpoint (BF16 kernels)"),
    "fp8": ("FP8", "an FP8 checkpoint"),
    "int3": ("LLAMAFILE", GGUF_WEIGHTS),
    "int2": ("LLAMAFILE", GGUF_WEIGHTS),
}
# kt-kernel's methods for 8- and 4-bit CPU experts and what they need, as its sources say (ktransformers main of
# 2026-08-21, kt-kernel/): the wheel loads one build by the serving machine's /proc/cpuinfo (python/_cpu_detect.py:
# `amx` with amx_tile, amx_int8, amx_bf16; `avx512_*` with avx512f and avx512bw; else `avx2`). AMXINT8/AMXINT4
# (experts.py INFERENCE_METHODS, utils/amx.py AMXMoEWrapper) exist in the amx and avx512 builds (setup.py turns
# CPUINFER_ENABLE_AVX512 into KTRANSFORMERS_CPU_USE_AMX_AVX512, under which ext_bindings.cpp binds AMXInt8_MOE and
# AMXInt4_MOE; without HAVE_AMX, operators/amx/la/amx_kernels.hpp integer_mat_mul runs their AVX-512 kernel), not in
# the avx2 build, where AMXMoEWrapper raises "AMXINT4 backend not available. Required ISA: AVX512F + AVX512BW"
# (its README's table says AMX hardware; the code runs them without it); they read the safetensors its
# scripts/convert_cpu_weights.py writes (--quant-method int8|int4, --input-type fp8|fp16|bf16 only). LLAMAFILE
# (utils/llamafile.py, the `MOE` binding every build has; README: AVX2 minimum) reads a GGUF directory's
# ffn_{gate,up,down}_exps tensors in their own ggml types. SGLang passes --kt-method to kt-kernel unchecked
# (sglang-kt server_args.py: a free string).
AMX_METHOD = {"int8": ("AMXINT8", "int8"), "int4": ("AMXINT4", "int4"), "nf4": ("AMXINT4", "int4")}
AVX512 = ("avx512f", "avx512bw")  # what kt-kernel's AMX INT8/INT4 kernels need without AMX


def host_method(amx: str) -> tuple[str, str]:
    """kt-kernel's method for 8- or 4-bit CPU experts on this host (`amx` where its CPU flags have AVX-512F/BW, else
    LLAMAFILE), and why, from the flags of this host's /proc/cpuinfo (the machine the export runs on, not
    necessarily the one that serves)."""
    from advisor.hardware import profiles

    text = profiles.cpuinfo_field("flags")
    if text is None:
        return "LLAMAFILE", f"no CPU flags could be read from {profiles.CPUINFO} here"
    flags = set(text.split())
    if {"amx_tile", "amx_int8"} <= flags:
        return amx, "this host's CPU has AMX (amx_tile, amx_int8)"
    if set(AVX512) <= flags:
        return amx, f"this host's CPU has no AMX but AVX-512F/BW, on which kt-kernel's avx512 builds run {amx} with AVX-512 kernels"
    return "LLAMAFILE", f"this host's CPU has neither AMX nor AVX-512F/BW, and kt-kernel's avx2 build has no {amx} kernel"


def amx_weights(method: str, quant: str, model: ModelInfo) -> str:
    """What --kt-weight-path holds for an AMX method: kt-kernel's converted safetensors, and the command that writes
    them."""
    own = model.checkpoint_format
    itype = own if own in ("fp8", "fp16", "bf16") else "bf16"
    return (f"expert weights converted for {method} by kt-kernel's scripts/convert_cpu_weights.py --input-path <the "
            f"checkpoint> --input-type {itype} --quant-method {quant} --output <that directory>"
            + (" (it reads fp8, fp16 or bf16 checkpoints: save this fp32 one as bf16 first)" if own == "fp32" else ""))


def kt_method(cfg: ExportConfig, fmt: str, choice: str) -> tuple[str, str, str]:
    """--kt-method for the CPU experts' format `fmt`, the weights --kt-weight-path must hold, and where the method
    came from: the format, `host_method` (`choice` auto) or `--opt kt_method`, which must compute `fmt`."""
    kind = parse_format(fmt).kind
    if kind in AMX_METHOD:
        amx, quant = AMX_METHOD[kind]
        fits = (amx, "LLAMAFILE")
        method, why = host_method(amx) if choice == "auto" else (choice.upper(), "given with --opt kt_method")
        weights = amx_weights(method, quant, cfg.model) if method == amx else GGUF_WEIGHTS
    else:
        method, weights = KT_METHOD[kind]
        own = cfg.model.checkpoint_format
        if method == "BF16" and own == "fp8":  # the checkpoint's experts are fp8, not BF16
            method, weights = "FP8", "the FP8 checkpoint itself (its experts are fp8, what kt-kernel's FP8 method reads)"
        elif method == "BF16" and own in ("fp16", "fp32"):  # `BF16_AS_STORED`
            weights = (f"this {own} checkpoint saved in bf16 (its experts as bf16 tensors): kt-kernel's BF16 method "
                       f"hands the checkpoint's expert tensors to its kernels as stored, so {own} ones would be read "
                       "as bf16")
        fits, why = (method,), f"the {fmt} CPU experts' one kt-kernel method"
        if choice not in ("auto", method.lower()):
            method = choice.upper()
    if method not in fits:
        raise UserError(f"--opt kt_method={choice} does not compute this plan's {fmt} CPU experts; give "
                        f"{' or '.join(m.lower() for m in fits)}, or auto")
    if method == "LLAMAFILE" and (why_not := llamacpp_refusal(cfg.model)) is not None:  # LLaDA2: no GGUF to point to
        weights = ("a GGUF directory of its experts, for which `advisor export --to llama.cpp` writes no script and "
                   f"llama.cpp's own converter, as checked, no GGUF: {why_not}")
    if kind in AMX_METHOD and choice == "auto":  # `amx`: the format's AMX method, set above
        why = (f"chosen from the CPU flags of the machine this export ran on: {why}; the serving machine's may differ: "
               f"kt-kernel runs {amx} on AVX-512F/BW CPUs, AMX or not, from weights its convert_cpu_weights.py "
               f"converts, and LLAMAFILE on any x86-64 (AVX2) from GGUF files; --opt kt_method={amx.lower()} or "
               "llamafile picks one")
    if kind == "nf4" and method != "LLAMAFILE":
        why += "; kt-kernel has no NF4 kernel, so these nf4 experts run as int4"
    return method, weights, why


WEIGHT_PATH_VAR = "KT_WEIGHT_PATH"
# kt-kernel's README: --kt-cpuinfer is the physical cores ("do NOT set to hyperthread count"), --kt-threadpool-count
# the NUMA nodes; the script counts both with lscpu unless the variable is set
HOST_VARS = {
    "KT_CPUINFER": ("lscpu -p=Core,Socket | grep -v '^#' | sort -u | wc -l", "physical cores, not hyperthreads"),
    "KT_THREADPOOL_COUNT": ("lscpu -p=Node | grep -v '^#' | sort -u | wc -l", "NUMA nodes"),
}


GPU_FORMAT = "bf16"  # what the GPU experts are counted in when the checkpoint's format is not recorded
# SGLang's --dtype auto (the command keeps it; srt/configs/model_config.py `_get_and_verify_dtype`) loads an fp32
# checkpoint in float16 (bfloat16 for Gemma models only, which this export refuses): 2 bytes a weight
FROM_FP32 = "fp16"


def gpu_format(model: ModelInfo) -> str:
    """What SGLang loads the GPU experts as from --model-path: fp8 from an FP8 checkpoint (its own quantization,
    `ModelInfo.checkpoint_format`, whatever dtype the study loaded it as), fp16 from an fp32 one (`FROM_FP32`), a
    16-bit checkpoint's own format, else `GPU_FORMAT`."""
    fmt = model.checkpoint_format
    return FROM_FP32 if fmt == "fp32" else fmt if fmt in ("fp8", "bf16", "fp16") else GPU_FORMAT


def gpu_precision(model: ModelInfo) -> str:
    """`gpu_format` in words: the checkpoint's precision, or what SGLang loads it as where that differs."""
    fmt, own = gpu_format(model), model.checkpoint_format
    if own in (None, fmt):
        return f"the checkpoint's precision ({fmt})"
    return f"{fmt} (the checkpoint is {own}; SGLang's --dtype auto loads it as {fmt})"


def gpu_experts_per_layer(cfg: ExportConfig) -> int:
    """The one per-MoE-layer GPU expert count: checkpoint experts (`gpu_format`) in the tuned cache's bytes (each
    layer's `slots` largest experts of the plan, as the tuner counts them), spread evenly, rounded down; the tuned
    slots spread evenly when the point did not record the expert shape."""
    slots = cfg.slots_per_layer
    gpu = cfg.model.expert_nbytes(gpu_format(cfg.model))
    if gpu is None:
        return sum(slots) // len(slots)
    tuned = cfg.cache_nbytes()
    return min(tuned // (gpu * len(slots)), min(layer.num_experts for layer in cfg.model.layers))


# kt-kernel's GPU experts (sglang-kt 0.5.2 to 0.7.2, python/sglang/srt/layers/moe/kt_ep_wrapper.py,
# _init_kt_gpu_experts_masks): one boolean mask per decoder layer, made by --kt-expert-placement-strategy. `uniform`
# (the default) marks experts 0..N-1 of each MoE layer; `frequency` reads --init-expert-location when it names a
# `.pt` file: torch.load(weights_only=True) of a dict whose "logical_count" is an integer tensor
# [records, decoder layers, experts] (summed over records; row i is decoder layer i, dense layers included: the
# layers and experts must be the HF config's num_hidden_layers and num_experts, or it raises "Activation counts
# num_layers (..) doesn't match model num_layers (..)"), and kt-kernel's generate_gpu_experts_masks marks the N x (MoE layers)
# largest sums over all layers at once - not N per layer. SGLang's expert-location setup
# (srt/eplb/expert_location.py, compute_initial_expert_location_metadata) reads the same file and keeps the
# identity expert mapping for a dict with "logical_count" once --kt-weight-path is set, which the script requires.
COUNTS_FILE = "kt-expert-counts.pt"


@dataclass
class Placement:
    """kt-kernel's frequency placement of a study's hot experts."""

    rows: list[list[int]]  # [decoder layer][expert]: the counts file's one record
    gpu: dict[int, list[int]]  # decoder layer -> its experts on the GPU, most routed first
    raised: int  # what each layer's N most-routed experts gain over their count
    layers_known: bool  # rows are the recorded num_hidden_layers (else: up to the last MoE layer)


def placement(cfg: ExportConfig, n_gpu: int) -> Placement | None:
    """Each MoE layer's `n_gpu` most-routed experts of the study's calibration routing (static_hot's order: ties to
    the lower index), as a counts table whose global top N x layers is exactly them: their counts raised above
    every other count of the model. One row per decoder layer, as kt-kernel requires: the recorded
    num_hidden_layers (a point tuned before it was recorded: up to the last MoE layer, said in the note); dense
    layers' rows stay 0 (SGLang gives them all their experts anyway). None when the point stored no routing (the
    tuner keeps it for static_hot and hot/cold plans only) or none is on the GPU."""
    from advisor.offload.policies import hot_order  # torch-free

    layers = cfg.model.layers
    counts = {layer.index: (cfg.frequencies or {}).get(layer.index) for layer in layers}
    if n_gpu <= 0 or any(c is None or len(c) != layer.num_experts for layer, c in zip(layers, counts.values(), strict=True)):
        return None
    counts = {i: [round(x) for x in c] for i, c in counts.items()}
    raised = max(max(c) for c in counts.values()) + 1
    width = max(layer.num_experts for layer in layers)
    last = max(layer.decoder_layer for layer in layers) + 1
    n_rows = max(cfg.model.num_hidden_layers or 0, last)
    rows = [[0] * width for _ in range(n_rows)]
    gpu: dict[int, list[int]] = {}
    for layer in layers:
        gpu[layer.decoder_layer] = hot_order(counts[layer.index])[:n_gpu]
        rows[layer.decoder_layer][: layer.num_experts] = counts[layer.index]
        for e in gpu[layer.decoder_layer]:
            rows[layer.decoder_layer][e] += raised
    return Placement(rows, gpu, raised, cfg.model.num_hidden_layers is not None)


def counts_script(place: Placement) -> list[str]:
    """Shell lines that write COUNTS_FILE with the Python (and torch) that runs SGLang: the export never imports
    torch."""
    return [f"python - <<'EOF'   # {COUNTS_FILE}: routed tokens per expert, for --init-expert-location",
            "import torch",
            "counts = torch.tensor([[  # one record: [decoder layer][expert]",
            *(json.dumps(row, separators=(",", ":")) + "," for row in place.rows),
            "]], dtype=torch.int64)",
            f'torch.save({{"logical_count": counts}}, "{COUNTS_FILE}")',
            "EOF"]


def cpu_format(cfg: ExportConfig, rule: str) -> str:
    """One format for the CPU experts (kt-kernel has one method per model): the highest over layers."""
    return max((collapse_layer(cfg, layer, rule) for layer in range(len(cfg.model.layers))), key=precision_rank)


# SGLang's Qwen2-MoE and Qwen3-MoE models build every decoder layer as a sparse MoE block: they read neither
# mlp_only_layers nor decoder_sparse_step (python/sglang/srt/models/qwen3_moe.py, Qwen3MoeDecoderLayer: "Qwen3MoE all
# layers are sparse", is_layer_sparse = True; qwen2_moe.py the same), and their load_weights skips the checkpoint's
# dense mlp.gate_proj/up_proj/down_proj, which no parameter of theirs takes. kt-kernel agrees with them: its GPU
# expert masks (kt_ep_wrapper.py, _init_kt_gpu_experts_masks and generate_*_masks) count decoder layer i as MoE when
# i >= first_k_dense_replace and i % moe_layer_freq == 0, fields such a config has not (0 and 1: every layer). So a
# checkpoint of these families with dense layers runs, in those layers, an MoE block with no weights from it - no
# counts file or flag fixes that (vLLM reads both fields: `--to vllm`). DeepSeek-V3 and LLaDA2 configs carry the
# first_k_dense_replace (and moe_layer_freq) their own models decide by, which kt-kernel reads the same way.
ALL_SPARSE = ("qwen3_moe", "qwen2_moe")


def dense_layers(model: ModelInfo) -> list[int]:
    """The decoder layers the study found no MoE layer in, as far as the point records them: below its last MoE
    layer, and up to the recorded num_hidden_layers (a point tuned before 2026-12-05 did not record it)."""
    moe = {layer.decoder_layer for layer in model.layers}
    return [i for i in range(max(model.num_hidden_layers or 0, max(moe, default=-1) + 1)) if i not in moe]


def all_sparse_text(model: ModelInfo) -> str:
    """What SGLang and kt-kernel do with a Qwen-style model's dense layers."""
    return (f"SGLang (sglang-kt) builds every decoder layer of a {model.family} model as an MoE block (it reads no "
            "mlp_only_layers or decoder_sparse_step, and skips the checkpoint's dense MLP weights), and kt-kernel "
            "counts every layer as MoE too (it decides by first_k_dense_replace and moe_layer_freq only, which this "
            "config has not)")


def refusal(model: ModelInfo) -> str | None:
    """Why SGLang cannot serve this model family, or kt-kernel's GPU experts cannot be counted for this checkpoint
    (None when it can); `base.targets_for` asks it too."""
    if (own := model.own_quantization) not in (None, "fp8"):
        return (f"kt-kernel loads its GPU experts from --model-path in this pre-quantized checkpoint's own {own} "
                "format, whose bytes per expert depend on settings no study records, so --kt-num-gpu-experts cannot "
                "be counted from the tuned cache; export the unquantized checkpoint's study")
    if model.family in ALL_SPARSE and (dense := dense_layers(model)):
        return (f"{all_sparse_text(model)}: this checkpoint's dense decoder layer{'s' if len(dense) > 1 else ''} "
                f"{', '.join(map(str, dense))} would run MoE blocks with no weights from the checkpoint, and no counts "
                "file or flag changes that")
    return REFUSED.get(model.family)


def placement_note(cfg: ExportConfig, n_gpu: int, place: Placement | None) -> str:
    """Which experts kt-kernel keeps on the GPU, and how they relate to the study's cache."""
    if not n_gpu:
        return "kt-kernel keeps no expert on the GPU: the tuned cache holds less than one checkpoint expert per layer"
    if place is None:
        which = "expert 0" if n_gpu == 1 else f"experts 0..{n_gpu - 1}"
        return (f"kt-kernel's GPU experts are {which} of every MoE layer (its default placement, "
                f"uniform), not the experts the study's {cfg.policy} cache held: this point stored no per-expert "
                "routing counts (the tuner keeps them for static_hot points and hot/cold precision plans), which "
                "--kt-expert-placement-strategy frequency would need, so the GPU's share of routed tokens is not the "
                "study's hit rate")
    pinned = slot_range(cfg.slots_per_layer)
    which = (f"the first {n_gpu} of the {pinned} per layer the study's static_hot cache pinned"
             if cfg.policy == "static_hot" and n_gpu <= min(cfg.slots_per_layer) else
             f"the {pinned} per layer the study's static_hot cache pinned, and the next most-routed"
             if cfg.policy == "static_hot" else
             f"not the study's {cfg.policy} cache, which changed its experts as it ran")
    kept = "most-routed expert" if n_gpu == 1 else f"{n_gpu} most-routed experts"
    return (f"kt-kernel keeps on the GPU the {kept} of each MoE layer in the study's calibration "
            f"routing ({which}): the script writes the routed tokens per expert to {COUNTS_FILE}, which "
            "--kt-expert-placement-strategy frequency reads through --init-expert-location; kt-kernel takes the "
            f"highest counts of all layers at once, so the file adds {place.raised} (more than any count) to each "
            f"layer's {n_gpu} to keep {'it' if n_gpu == 1 else 'them'} per layer"
            + ("" if place.layers_known else
               f"; its {len(place.rows)} rows end at the last MoE layer (this point did not record the model's decoder "
               "layers - tuned before 2026-12-05 - nor is the checkpoint's config.json here to read), and kt-kernel "
               "refuses a file with fewer rows than the config's num_hidden_layers, so for a model ending in dense "
               "layers add zero rows for them"
               + (" (none of this family: see the note on its dense layers)" if cfg.model.family in ALL_SPARSE else "")))


# kt-kernel's GPU experts are fixed once loaded: its one way to change them, --kt-enable-dynamic-expert-update
# (kt_ep_wrapper.py, _update_gpu_experts_from_batch), runs only on a forward of at least
# --kt-gpu-prefill-token-threshold tokens, which it computes with the whole layer loaded on the GPU (its full-GPU
# prefill fallback), and then keeps that batch's most-routed experts; a decode step, or one of SGLang's 32-token
# diffusion blocks, below the threshold never moves one. No study policy is that, so the export sets neither.
DYNAMIC_UPDATE = ("kt-kernel's GPU experts stay fixed once loaded: --kt-enable-dynamic-expert-update, its one way to "
                  "change them, re-picks a layer's GPU experts only after a forward of at least "
                  "--kt-gpu-prefill-token-threshold tokens that it computes with every expert of the layer loaded on "
                  "the GPU, never between the forwards below it, so the export sets neither")


def cache_mapping(cfg: ExportConfig, n_gpu: int, place: Placement | None) -> tuple[dict[str, Any], str]:
    """What of the study's expert cache the launch reproduces and what kt-kernel cannot (its GPU experts are a fixed
    set, `DYNAMIC_UPDATE`), as data and a note."""
    maps = [f"its GPU bytes (at most), as {count(n_gpu, 'checkpoint expert')} per MoE layer"]
    cannot = []
    if cfg.policy == "static_hot":
        if place is not None:
            maps.append("its pinned hot set" if n_gpu >= min(cfg.slots_per_layer) else "the hottest of its pinned set")
    else:
        if place is not None:
            maps.append("the calibration's most-routed experts, as a fixed set")
        tau = tide_kw(cfg)["tau"]
        every = (f"each refresh step's tokens every {count(tau, 'denoising step')}" if cfg.model.family in DLLM else
                 f"the current forward's tokens every {count(tau, 'forward')} (autoregressive decoding, one token per "
                 "forward, has no denoising steps)")  # kt-kernel serves no other diffusion family (`refusal`)
        cannot.append(f"its {cfg.policy} policy, which re-chose its GPU experts from {every}" if cfg.policy == "tide"
                      else f"its {cfg.policy} policy, which admitted and evicted experts as the model ran")
    if place is None and n_gpu:
        cannot.append("which experts it held (no routing stored: kt-kernel's experts 0..N-1)")
    if cfg.prefetch not in ("", "none"):
        cannot.append(f"its prefetch ({cfg.prefetch}): kt-kernel loads no expert ahead")
    data = {"policy": cfg.policy, "maps": maps, "not_mapped": cannot,
            "runtime_placement": "fixed at load" if n_gpu else "none on the GPU"}
    text = f"of the study's cache the launch reproduces {'; '.join(maps)}"
    if cannot:
        text += f"; not {'; nor '.join(cannot)}: {DYNAMIC_UPDATE}"
    return data, text


def export(point: FrontPoint, cfg: ExportConfig, opts: dict[str, str]) -> ExportResult:
    if (why := refusal(cfg.model)) is not None:
        raise UserError(why)
    n_gpu = gpu_experts_per_layer(cfg)
    fmt = cpu_format(cfg, opts["collapse"])
    method, weights, method_why = kt_method(cfg, fmt, opts["kt_method"])
    args = ["python", "-m", "sglang.launch_server", "--model-path", served_path(model_spec(point), "SGLang"),
            "--kt-method", method, "--kt-weight-path", f"${WEIGHT_PATH_VAR}",
            "--kt-cpuinfer", "$KT_CPUINFER", "--kt-threadpool-count", "$KT_THREADPOOL_COUNT",
            "--kt-num-gpu-experts", str(n_gpu)]
    place = placement(cfg, n_gpu)
    if place is not None:
        args += ["--kt-expert-placement-strategy", "frequency", "--init-expert-location", COUNTS_FILE]
    slots = cfg.slots_per_layer
    tuned = f"{slot_count(slots, 'slot')} per layer"
    per_layer = (f"{n_gpu} of {cfg.model.layers[0].num_experts} in every layer: the tuned {tuned} of the plan's "
                 f"experts {'holds' if slot_range(slots) == '1' else 'hold'} the bytes of {count(n_gpu, 'expert')} at "
                 f"{gpu_precision(cfg.model)}, which "
                 "SGLang loads the GPU experts at from --model-path (kt-kernel takes one count for every layer)")
    notes = [f"--kt-weight-path is a placeholder you must fill: set {WEIGHT_PATH_VAR} to {weights}",
             f"--kt-num-gpu-experts is per MoE layer: {per_layer}",
             f"CPU experts run as {method} (plan format {fmt}, collapsed: {opts['collapse']} rule; kt-kernel has one "
             f"method per model): {method_why}",
             miss_note(cfg, "kt-kernel", "cpu"),
             placement_note(cfg, n_gpu, place)]
    mapping, mapping_note = cache_mapping(cfg, n_gpu, place)
    notes.append(mapping_note)
    if cfg.model.family in ALL_SPARSE and cfg.model.num_hidden_layers is None:  # `refusal` saw no dense layer
        notes.append(f"this point did not record the model's decoder layers (tuned before 2026-12-05), nor is the "
                     "checkpoint's config.json here to read: "
                     f"{all_sparse_text(cfg.model)}, so if the checkpoint's config.json lists mlp_only_layers or a "
                     "decoder_sparse_step above 1, those dense layers would run MoE blocks with no weights from it; "
                     "serve such a checkpoint with `--to vllm`, which reads both")
    yaml: list[str] = []
    if cfg.model.family in DLLM:
        flags, yaml, note = dllm_flags(cfg)
        args += flags
        notes.append(note)
    data = {"target": "ktransformers", "args": args, "kt_method": method, "kt_method_why": method_why,
            "kt_num_gpu_experts": n_gpu,
            "kt_expert_placement": "uniform" if place is None else "frequency",
            # decoder layer -> the experts kt-kernel puts on the GPU
            "gpu_experts": {str(d): (list(range(n_gpu)) if place is None else place.gpu[d])
                            for d in (layer.decoder_layer for layer in cfg.model.layers)},
            "cache_mapping": mapping, "weight_path_placeholder": WEIGHT_PATH_VAR, "dllm_config": yaml, "notes": notes}
    head = [f"# {h}" for h in header_lines(point, cfg, "KTransformers (SGLang kt-kernel)")]
    head += [f"# note: {n}" for n in notes]
    body = ["set -euo pipefail",
            # not ${VAR:?text}: bash reads quotes inside that text (an apostrophe there broke the script)
            f'[ -n "${{{WEIGHT_PATH_VAR}:-}}" ] || {{ echo {shlex.quote(f"set {WEIGHT_PATH_VAR} to {weights}")} >&2; exit 2; }}',
            *(f'{var}="${{{var}:-$({cmd})}}"   # {what}' for var, (cmd, what) in HOST_VARS.items()),
            *([f"cat > {DLLM_CONFIG} <<'EOF'", *yaml, "EOF"] if yaml else []),
            *(counts_script(place) if place is not None else []),
            " ".join(f'"{a}"' if a.startswith("$") else shlex.quote(a) for a in args) + ' "$@"']
    text = "\n".join(["#!/usr/bin/env bash", *head, *body]) + "\n"
    return ExportResult("ktransformers", text, data, notes)
