"""llama.cpp export: a `--tensor-type-file` for llama-quantize and the placement its runner honours, as a script.

GGUF stores a layer's routed experts as one tensor per projection (`blk.N.ffn_{gate,up,down}_exps.weight`;
shared experts `_shexp`, router `ffn_gate_inp`), so llama.cpp decides type and placement per layer x
projection, never per expert. Per-expert decisions are collapsed by a stated rule (option `collapse`):
`highest` (default) gives a layer the highest-precision format any of its experts uses; `traffic` the format
covering most of its routed traffic.

Types: llama-quantize applies `--tensor-type` rules only when its base type is a quantized type (a BF16 base
quantizes nothing), so the base is the experts' most common quantized type, and a last rule keeps every other
quantizable tensor (attention, embeddings, output, shared experts, dense FFNs) at `high_precision` (bf16).
A type must fit the tensor's row width (k-quants: a multiple of 256; q4_0/q8_0 and the other 32-blocks: of
32): where it does not, the nearest type that does is written, and said (llama.cpp's own fallback would pick
a wider one, silently). Rules never overlap: each quantizable tensor is matched by exactly one.

Placement: llama.cpp has no expert cache; an expert tensor lives on the GPU or in host memory. llama-server
(autoregressive families): the tuned cache's bytes (sum over layers of slots x expert bytes) become whole
(layer, projection) tensors on the GPU, layers with the largest cached fraction first; the others go to the CPU
through one comma-separated `-ot "<regex>=CPU,..."` argument (repeating `-ot` is deprecated). Patterns are
searched (std::regex_search), so layer numbers end with `\\.`.

llama-diffusion-cli (LLaDA-MoE) parses `-ot`, `--n-cpu-moe` and `--cpu-moe` but never uses them: its main()
(examples/diffusion/diffusion-cli.cpp) builds the model's parameters from `-ngl`, devices, load mode and
check-tensors only, never `tensor_buft_overrides`, so with `-ngl 999` every expert would load on the GPU. Its
placement is whole blocks: `-ngl N` puts the output layer and the last N-1 blocks on the GPU
(llama-model.cpp: i_gpu_start = n_layer + 1 - N), so the last blocks go there, as many as the tuned cache's
bytes hold at the GGUF's types. Each of its forwards is the whole `-ub` sequence (at least 32 tokens), so ggml
by default runs the host-resident blocks' matrix products on the GPU, copying the experts they use in every
forward (ggml-backend.cpp op offload; llama-diffusion-cli ignores `--no-op-offload` too): for a study whose
misses were computed on the CPU the script sets `GGML_OP_OFFLOAD_MIN_BATCH` above any batch, so they are.

A pre-quantized checkpoint (FP8, GPTQ, compressed-tensors) is dequantized to bf16 by `convert_hf_to_gguf.py`, as
transformers dequantized it for a CPU study, and quantized as planned; one it cannot read (AWQ, ...) is refused.
"""

from __future__ import annotations

import math
import shlex
from collections.abc import Callable
from typing import Any

from advisor.errors import UserError
from advisor.export.base import ExportResult, header_lines, miss_note, model_spec, served_path, slot_range
from advisor.models import BUNDLED_DIR
from advisor.quant.spec import parse_format
from advisor.results.config_view import COLLAPSE_RULES, ExportConfig, ModelInfo, collapse_layer
from advisor.results.front import FrontPoint

LOADS_FILES = True  # the runtime reads the model from disk or the hub: not a tiny:* model (`targets_for`)

OPTIONS = {
    "collapse": ("highest", tuple(COLLAPSE_RULES), "how per-expert formats become one type per layer"),
    "emit": ("script", ("script", "tensor-types", "override-tensor"), "the whole script, or only one part"),
    "placement": ("cache", ("cache", "all-gpu", "all-cpu"), "expert tensors on GPU as the tuned cache allows, or all"),
    "high_precision": ("bf16", ("bf16", "f16", "f32"), "type kept by everything that is not a routed expert"),
}

# advisor family -> GGUF architecture (gguf.MODEL_ARCH_NAMES spelling)
GGUF_ARCH = {
    "llada_moe": "llada-moe",
    "qwen3_moe": "qwen3moe",
    "olmoe": "olmoe",
    "mixtral": "llama",
    "deepseek_v3": "deepseek2",
}
# families llama.cpp cannot run, with the reason (`base.export_point` adds the targets that take them). Checked in the
# llama.cpp that llama-cpp-python 0.3.36 vendors (LLAMA_CPP_CHECKED; the build benchmarks/build_llamacpp.sh caches):
# llama-diffusion-cli's main() refuses a model that llama_model_is_diffusion() rejects, and src/llama-arch.cpp's
# llm_arch_is_diffusion() accepts dream, llada, llada-moe and rnd1 only; conversion/__init__.py maps no
# LLaDA2MoeModelLM or DiffusionGemmaForBlockDiffusion (convert_hf_to_gguf.py: "Model ... is not supported"), and
# LLaDA2's BailingMoeV2 network converts as bailingmoe2 for BailingMoeV2ForCausalLM only, an autoregressive
# architecture. Pull requests, open in the GitHub threads as last seen, add them: #17454 (LLaDA2.0 in
# llama-diffusion-cli, opened 2025-11-23 as work in progress), #24423 and the draft #24427 (a diffusion-gemma
# architecture with its own decoding flags, both opened 2026-06-10); none is in that commit, and this export is not
# checked against any of them.
LLAMA_CPP_CHECKED = "llama.cpp 0c1e570 of 2026-10-01, as llama-cpp-python 0.3.36 vendors it"
DIFFUSION_CLI_RUNS = "llama-diffusion-cli runs the dream, llada, llada-moe and rnd1 architectures only"
REFUSED = {
    "llada2": f"llama.cpp has no diffusion path for LLaDA2 ({LLAMA_CPP_CHECKED}): convert_hf_to_gguf.py has no "
              "LLaDA2MoeModelLM (its BailingMoeV2 network converts only as BailingMoeV2ForCausalLM, to bailingmoe2, "
              f"which runs autoregressively), and {DIFFUSION_CLI_RUNS}; LLaDA2.0 support (pull request #17454) is "
              "not in that commit and unverified here",
    "diffusion_gemma": f"llama.cpp has no diffusion path for DiffusionGemma ({LLAMA_CPP_CHECKED}): no diffusion-gemma "
                       "GGUF architecture, no DiffusionGemmaForBlockDiffusion in convert_hf_to_gguf.py, and "
                       f"{DIFFUSION_CLI_RUNS}; pull request #24423, which adds that architecture, is not in that commit "
                       "and unverified here",
}
DIFFUSION_ARCHS = {"llada-moe"}  # GGUF architectures llama-diffusion-cli runs (of those above)
# quant_method of the pre-quantized checkpoints convert_hf_to_gguf.py dequantizes to the bf16 GGUF the script starts
# from (ModelBase.dequant_model: fp8 and compressed-tensors with their scales, GPTQ's packed integers); any other
# method stops it ("Quant method is not yet supported")
DEQUANTIZED = ("fp8", "gptq", "compressed-tensors")

SOURCE_TYPE = "bf16"  # the --outtype of the GGUF the script starts from (its SRC_GGUF line)

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
# ggml block size (values per row a type packs together): the row width must be a multiple of it
BLOCK = {"q2_K": 256, "q3_K": 256, "q4_K": 256, "q5_K": 256, "q6_K": 256,
         "q4_0": 32, "q4_1": 32, "q5_0": 32, "q5_1": 32, "q8_0": 32, "iq4_nl": 32,
         "f32": 1, "f16": 1, "bf16": 1}
# bytes of one block of each type (ggml's block structs: scales included), so BLOCK_BYTES / BLOCK per value
BLOCK_BYTES = {"q2_K": 84, "q3_K": 110, "q4_K": 144, "q5_K": 176, "q6_K": 210,
               "q4_0": 18, "q4_1": 20, "q5_0": 22, "q5_1": 24, "q8_0": 34, "iq4_nl": 18,
               "f32": 4, "f16": 2, "bf16": 2}
# when the row width does not fit: the nearest 32-block type (same bits and scheme where ggml has one;
# llama.cpp's own fallback for q4_K is q5_0); a row that 32 does not divide stays at high precision
FALLBACK = {"q4_K": "q4_1", "q3_K": "q4_0", "q2_K": "q4_0", "q5_K": "q5_1", "q6_K": "q8_0"}
# llama-quantize base types (ftype names) for the expert types
FTYPE = {"q8_0": "Q8_0", "q4_0": "Q4_0", "q4_1": "Q4_1", "q5_0": "Q5_0", "q5_1": "Q5_1", "q4_K": "Q4_K_S",
         "q3_K": "Q3_K_S", "q2_K": "Q2_K", "q5_K": "Q5_K_S", "q6_K": "Q6_K", "iq4_nl": "IQ4_NL"}
PROJS = ("gate", "up", "down")
EXPERT_TENSOR = r"blk\.\d+\.ffn_(gate|up|down)_exps\."
DIFFUSION_RUNNER = "llama-diffusion-cli"
DEFAULT_UBATCH = 512  # llama.cpp's -ub default: llama-diffusion-cli's whole sequence (prompt + generation)
DEFAULT_BATCH = 2048  # llama.cpp's -b default: llama_context caps the ubatch at it, and llama-diffusion-cli, whose
# sequence is -ub long, then fails ("get_sub_batch: failed to add token 1 at index 2048") unless -b is as large
LLADA_BLOCK = 32  # LLaDA's published block length, for a study that did not store its decoding


def diffusion_args(cfg: ExportConfig) -> tuple[list[str], str]:
    """llama-diffusion-cli's decoding flags for the study's (block length, steps per block), and a comment on them.

    llama-diffusion-cli aborts without --diffusion-block-length or --diffusion-eps (an assert: neither has a
    default), spreads --diffusion-steps over -ub / block-length blocks, prompt included, and asserts that -ub is a
    multiple of the block length: where the default 512 is not, -ub is the next multiple above it, and -b as large
    where that passes llama.cpp's default -b 2048 (a block longer than 1536 tokens). -ub is the sequence length for
    LLaDA-MoE in llama.cpp as llama-cpp-python 0.3.36 vendors it (master 0c1e570, 2026-10-01: `max_length =
    params.n_ubatch`) and in the DiffusionGemma pull request (#24423, not in that master), whose diffusion-cli grows
    -ub, -b and -c (never below what is given) only for a model with `diffusion.canvas_length` run with -n. So the
    canvas is -ub tokens, the prompt's among them: the comment says which -ub decodes the study's canvas, its prompt
    and the `max_new_tokens` it stored (-n does not set it there)."""
    block = cfg.block_length or LLADA_BLOCK
    spb = cfg.steps_per_block or block  # LLaDA's default: one token per step
    ubatch = -(-DEFAULT_UBATCH // block) * block  # llama-diffusion-cli: GGML_ASSERT(max_length % block_length == 0)
    steps = spb * (ubatch // block)
    source = ("the study's" if cfg.block_length else
              f"LLaDA's default block length {LLADA_BLOCK} (the study did not store its block length)")
    a, b = spb // math.gcd(spb, block), block // math.gcd(spb, block)  # steps per -ub token, reduced
    per_n = ("N" if a == 1 else f"{a}*N") + ("" if b == 1 else f"/{b}")  # "N" when spb == block
    at = (f"the default -ub {DEFAULT_UBATCH}" if ubatch == DEFAULT_UBATCH else
          f"-ub {ubatch}, passed since the default {DEFAULT_UBATCH} is not a multiple of {block}")
    new_tokens = int((cfg.decoding.get("generate") or {}).get("max_new_tokens") or 0)
    comment = (f"decoding: {source}, block length {block}, {spb} steps per block"
               + (f", {new_tokens} new tokens after each prompt" if new_tokens else "")
               + f"; llama-diffusion-cli spreads --diffusion-steps over -ub/{block} blocks (prompt included), so with "
               f"-ub N pass --diffusion-steps {per_n} ({steps} at {at}); N must be a multiple of {block}, and above "
               f"{DEFAULT_BATCH} needs -b N too"
               + (f"; its canvas is those N tokens, prompt included, so it generates N less the prompt's tokens "
                  f"({ubatch} less them as the script runs): N = the prompt's tokens + {new_tokens}, rounded up to a "
                  f"multiple of {block}, decodes about the study's canvas" if new_tokens else ""))
    ub = [] if ubatch == DEFAULT_UBATCH else ["-ub", str(ubatch)]
    if ubatch > DEFAULT_BATCH:
        ub += ["-b", str(ubatch)]
    return ["--diffusion-block-length", str(block), "--diffusion-steps", str(steps), *ub], comment


def sampling_note(cfg: ExportConfig) -> str | None:
    """How llama-diffusion-cli's token choice differs from the study's greedy low-confidence decoding (None when
    the study sampled: then it is the study's own randomness)."""
    gen = dict(cfg.decoding.get("generate") or {})
    if float(gen.get("temperature") or 0.0) != 0.0 or gen.get("remasking", "low_confidence") != "low_confidence":
        return None
    # diffusion.cpp: a top-k, top-p, temp, dist sampler chain per masked position; confidence = p of the drawn token
    return ("the study decoded greedily, unmasking each block's most confident tokens first; llama-diffusion-cli draws "
            "every token from its sampler chain (defaults --temp 0.8 --top-k 40 --top-p 0.95; at --temp 0 it still "
            "draws, at temperature 1), so its text and accuracy can differ from the study's; --top-k 1 makes it "
            "greedy, but then every confidence is 1 and it unmasks each block left to right")


def ggml_type(fmt: str) -> str:
    """The ggml type wanted for an advisor format (int4 with 32-wide groups maps to q4_0 / q4_1 exactly)."""
    spec = parse_format(fmt)
    if spec.kind == "int4" and spec.group == 32:
        return "q4_0" if spec.symmetric else "q4_1"
    return TYPE_MAP[spec.kind][0]


def fitted_type(wanted: str, row: int | None, high: str) -> str:
    """`wanted` if llama.cpp can store rows `row` values wide in it, else the nearest type that can."""
    if row is None or row % BLOCK[wanted] == 0:
        return wanted
    alt = FALLBACK.get(wanted)
    return alt if alt is not None and row % BLOCK[alt] == 0 else high


def row_width(cfg: ExportConfig, proj: str) -> int | None:
    """Values per GGUF row (ne0) of an expert tensor: hidden for gate/up, the expert FFN width for down."""
    m = cfg.model
    width = m.intermediate_size if proj == "down" else m.hidden_size
    return int(width) if width else None


def _alt(items: list[Any]) -> str:
    items = [str(i) for i in items]
    return items[0] if len(items) == 1 else "(" + "|".join(items) + ")"


def _words(items: list[Any]) -> str:
    """Items as English prose: "0", "0 and 1", "0, 1 and 2" (`_alt` writes them as a regex)."""
    items = [str(i) for i in items]
    return items[0] if len(items) == 1 else ", ".join(items[:-1]) + " and " + items[-1]


def _blocks(numbers: list[int]) -> str:
    """ "block 1", "blocks 0 and 1": decoder blocks named in a note."""
    return ("block " if len(numbers) == 1 else "blocks ") + _words(numbers)


def _tensors(projs: list[str]) -> str:
    """The expert tensors of projections `projs`: "ffn_gate_exps and ffn_up_exps"."""
    return _words([f"ffn_{p}_exps" for p in projs])


def _rule(blocks: list[int], projs: list[str], suffix: str) -> str:
    return rf"blk\.{_alt(sorted(blocks))}\.ffn_{_alt(projs)}_exps\.{suffix}"


def _proj_bytes(cfg: ExportConfig, layer: int, fmt: str, proj: str) -> float:
    """Bytes of one (layer, projection) expert tensor in the plan's format `fmt` (what the study's cache held);
    relative units (bits per value) when shapes are unknown."""
    m = cfg.model
    n = m.layers[layer].num_experts
    if m.hidden_size and m.intermediate_size:
        h, i = int(m.hidden_size), int(m.intermediate_size)
        return float(n * parse_format(fmt).nbytes((h, i) if proj == "down" else (i, h)))
    return float(n * parse_format(fmt).bits)


def _gguf_bytes(cfg: ExportConfig, layer: int, ggml: str) -> float:
    """Bytes of one (layer, projection) expert tensor (hidden x FFN values per expert, whichever projection) as the
    GGUF stores it in type `ggml`; relative units (bits per value, as `_proj_bytes`) when shapes are unknown."""
    m = cfg.model
    per_value = BLOCK_BYTES[ggml] / BLOCK[ggml]
    if m.hidden_size and m.intermediate_size:
        return float(m.layers[layer].num_experts * int(m.hidden_size) * int(m.intermediate_size) * per_value)
    return float(m.layers[layer].num_experts * 8 * per_value)


def plan_layers(cfg: ExportConfig, rule: str) -> list[str]:
    """The format of each MoE layer after collapsing per-expert decisions."""
    return [collapse_layer(cfg, layer, rule) for layer in range(len(cfg.model.layers))]


def cache_bytes(cfg: ExportConfig, layer_fmts: list[str]) -> float:
    """The tuned cache's bytes: sum over MoE layers of (slots / experts) x the layer's expert bytes in the plan's
    formats (what the study's GPU held of the experts)."""
    return sum(cfg.slots_per_layer[layer] / cfg.model.layers[layer].num_experts
               * sum(_proj_bytes(cfg, layer, fmt, p) for p in PROJS) for layer, fmt in enumerate(layer_fmts))


def ngl_meaning(ngl: int) -> str:
    """What `-ngl N` puts on the GPU, said beside it: llama.cpp counts the output layer as one of the N, so
    `-ngl 1` holds no block and `-ngl 4` three (llama-model.cpp: i_gpu_start = n_layer + 1 - N)."""
    if ngl >= 999:
        return "every block and the output layer"
    blocks = ngl - 1
    return ("llama.cpp counts the output layer among them: the output layer and "
            + ("no block" if not blocks else "the last block" if blocks == 1 else f"the last {blocks} blocks"))


def block_placement(cfg: ExportConfig, layer_fmts: list[str], types: dict[tuple[int, str], str],
                    mode: str) -> tuple[dict[tuple[int, str], str], dict[str, Any], int]:
    """llama-diffusion-cli's placement (it ignores -ot: module docstring): whole blocks by `-ngl`, the last MoE
    blocks on the GPU, as many as the tuned cache's bytes hold at the GGUF's types; the `-ngl` value with it."""
    layers = cfg.model.layers
    n = len(layers)
    if mode in ("all-gpu", "all-cpu"):
        k = n if mode == "all-gpu" else 0
    else:
        left, k = cache_bytes(cfg, layer_fmts), 0
        for layer in reversed(range(n)):
            size = sum(_gguf_bytes(cfg, layer, types[(layer, p)]) for p in PROJS)
            if size > left + 1e-9:
                break
            left, k = left - size, k + 1
    # -ngl N: the output layer and blocks n_layer+1-N.. (llama-model.cpp); every block when all MoE blocks fit.
    # n_layer is every block, dense ones after the last MoE block included (the recorded num_hidden_layers)
    blocks = max(cfg.model.num_hidden_layers or 0, layers[-1].decoder_layer + 1)
    ngl = 999 if k == n else blocks - (layers[n - k].decoder_layer if k else blocks) + 1
    where = {(layer, p): "GPU" if layer >= n - k else "CPU" for layer in range(n) for p in PROJS}
    exact = bool(cfg.model.hidden_size and cfg.model.intermediate_size)
    gpu = sum(_gguf_bytes(cfg, layer, types[(layer, p)]) for layer in range(n - k, n) for p in PROJS)
    info = {
        "mode": mode if mode != "cache" else "cache (whole blocks)",
        "ngl": ngl,
        "gpu_blocks": [layers[layer].decoder_layer for layer in range(n - k, n)],
        "cache_bytes": cache_bytes(cfg, layer_fmts) if exact and mode == "cache" else None,
        "gpu_expert_bytes": gpu if exact else None,
        "units": "bytes (counted from expert shapes)" if exact else "relative (expert shapes not recorded)",
        "rule": f"whole blocks by -ngl {ngl} (llama-diffusion-cli ignores -ot; {ngl_meaning(ngl)}): the last {k} of {n} "
                "MoE blocks, "
                "attention included, on the GPU" + (", as many as the tuned cache's bytes (sum of slots x expert "
                                                     "bytes in the plan's formats) hold at the GGUF's types"
                                                     if mode == "cache" else "") + f"; the other {n - k} on the CPU",
    }
    return where, info, ngl


# llama-server keeps -ot =CPU experts on the CPU for a decoding forward (one token), but ggml's op offload copies
# them to the GPU for a forward of 32 tokens or more (a prompt); --no-op-offload (common args) turns that off
PROMPT_BATCHES = ("while decoding (one token per forward; a prompt batch of 32 tokens or more copies them to the GPU, "
                  "ggml's op offload, unless --no-op-offload is added)")
OP_OFFLOAD_ENV = "GGML_OP_OFFLOAD_MIN_BATCH"
NO_OP_OFFLOAD = "2147483647"  # above any batch: ggml then computes host-resident weights where they are


def diffusion_miss_note(cfg: ExportConfig, on_cpu: bool) -> str | None:
    """What llama-diffusion-cli does with the blocks it keeps in host memory, against the study's miss policy."""
    if not on_cpu:
        return None
    if cfg.miss_policy == "cpu":
        return miss_note(cfg, "llama.cpp", "cpu", how=(
            f"computes the CPU blocks (their attention too) on the CPU: the script sets {OP_OFFLOAD_ENV}, without "
            "which ggml copies their weights to the GPU in every forward (each is the whole -ub sequence, at least "
            "32 tokens) and llama-diffusion-cli ignores --no-op-offload"))
    how = ("copies the experts each forward uses of the CPU blocks to the GPU (ggml's op offload: every forward is "
           "the whole -ub sequence, at least 32 tokens) and keeps none between forwards")
    if cfg.miss_policy == "copy":
        return (f"miss policy copy: llama.cpp {how}, where the study's copies stayed in its expert cache, so it copies "
                f"more than the study counted; {OP_OFFLOAD_ENV}={NO_OP_OFFLOAD} computes them on the CPU instead")
    return miss_note(cfg, "llama.cpp", "copy", how=how)


def held_every_expert_note(cfg: ExportConfig, where: dict[tuple[int, str], str], types: dict[tuple[int, str], str],
                           mode: str, how: str) -> str | None:
    """For a study whose cache held every expert of some layers (slots = experts) and none of the others' (no layer
    partly held: `partly_held_note` says that case) but whose export keeps expert tensors of the wholly held layers
    in host memory - the GGUF's types take more bytes than the plan's formats, and the placement never spends more
    than the tuned cache's bytes (or --opt placement=all-cpu): that the study kept those experts on the GPU, so its
    miss policy says next to nothing of them (the miss-policy notes spoke of misses it never had there). `how` words
    what llama.cpp does with them. None otherwise."""
    m = cfg.model
    n = len(m.layers)
    if any(0 < cfg.slots_per_layer[i] < m.layers[i].num_experts for i in range(n)):
        return None
    full = [i for i in range(n) if cfg.slots_per_layer[i] >= m.layers[i].num_experts]
    cpu = sorted({layer for (layer, _), d in where.items() if d == "CPU" and layer in full})
    if not cpu:
        return None
    by_cpu: dict[tuple[str, ...], list[int]] = {}  # projections in host memory -> the blocks with those
    for layer in cpu:
        by_cpu.setdefault(tuple(p for p in PROJS if where[(layer, p)] == "CPU"), []).append(m.layers[layer].decoder_layer)
    what = _words([f"the experts of {_blocks(b)}" if g == PROJS else
                   f"the {_words(list(g))} projection{'s' * (len(g) * len(b) > 1)} ({_tensors(list(g))}) of the experts "
                   f"of {_blocks(b)}" for g, b in by_cpu.items()])
    one = len(by_cpu) == 1 and all(len(g) == 1 and len(b) == 1 for g, b in by_cpu.items())  # one tensor
    kept = sorted({types[(layer, p)] for (layer, p), d in where.items() if d == "CPU" and layer in full})
    every = len(full) == n
    held = ("every expert (slots = experts in every MoE layer)" if every else
            f"every expert of {_blocks([m.layers[i].decoder_layer for i in full])} "
            "(slots = experts) and none of the other blocks'")
    why = ("as --opt placement=all-cpu asks" if mode == "all-cpu" else
           f"only because the GGUF's types ({', '.join(kept)}) take more bytes than the plan's formats and the export "
           "never puts more expert bytes on the GPU than the tuned cache's; --opt placement=all-gpu puts them there"
           if every else
           f"as placed within the tuned cache's bytes at the GGUF's types ({', '.join(kept)}), which take more bytes "
           "than the plan's formats; --opt placement=all-gpu puts them on the GPU")
    return (f"the study's cache held {held}: {what} "
            f"stayed on the GPU once loaded, its miss policy {cfg.miss_policy} handling at most each one's first use; "
            f"here {'it stays' if one else 'they stay'} in host memory {why}; llama.cpp {how}, so its speed differs from the study's time per "
            "token, which counted them on the GPU")


def partly_held_note(cfg: ExportConfig, where: dict[tuple[int, str], str], mode: str, how: str | None) -> str | None:
    """For a study whose cache held some but not all experts of a layer (0 < slots < experts): GGUF fuses a layer's
    experts into one tensor per projection and llama.cpp places whole tensors (llama-model-loader.cpp matches
    `-ot` patterns against tensor names), so such a layer cannot be split as the study modelled; which of those
    layers go whole to the GPU, which to host memory (and which are split by projection), and that llama.cpp's
    speed differs. `how` words what llama.cpp does with host-resident experts (None: a miss-policy note says it).
    None when no layer is partly held."""
    m = cfg.model
    partial = [i for i in range(len(m.layers)) if 0 < cfg.slots_per_layer[i] < m.layers[i].num_experts]
    if not partial:
        return None
    by_gpu: dict[tuple[str, ...], list[int]] = {}
    for i in partial:
        by_gpu.setdefault(tuple(p for p in PROJS if where[(i, p)] == "GPU"), []).append(m.layers[i].decoder_layer)

    parts = [f"the experts of {_blocks(by_gpu[PROJS])} go whole to the GPU, where none misses"] if PROJS in by_gpu else []
    if () in by_gpu:
        parts.append(f"those of {_blocks(by_gpu[()])} whole to host memory")
    parts += [f"those of {_blocks(b)} are split by projection, {_tensors(list(g))} on the GPU and "
              f"{_tensors([p for p in PROJS if p not in g])} in host memory" for g, b in by_gpu.items() if g not in ((), PROJS)]
    full = [m.layers[i].decoder_layer for i in range(len(m.layers))
            if cfg.slots_per_layer[i] >= m.layers[i].num_experts and any(where[(i, p)] == "CPU" for p in PROJS)]
    if full:
        parts.append(f"and {_blocks(full)}, whose experts the study held all of, {'has' if len(full) == 1 else 'have'} "
                     "expert tensors in host memory too")
    why = "within the tuned cache's bytes" if mode == "cache" else f"as --opt placement={mode} asks"
    slots = [cfg.slots_per_layer[i] for i in partial]
    experts = [m.layers[i].num_experts for i in partial]
    return (f"the study's cache held part of the experts of {_blocks([m.layers[i].decoder_layer for i in partial])} "
            f"({slot_range(slots)} of {slot_range(experts)} slots), the most used on the GPU and the others by its miss "
            f"policy {cfg.miss_policy}; llama.cpp keeps a layer's experts in one tensor per projection "
            "(ffn_{gate,up,down}_exps), each all on the GPU or all in host memory, so it cannot split "
            f"{'that block' if len(partial) == 1 else 'those blocks'} as the study modelled; placing whole tensors {why}, {'; '.join(parts)}"
            + (f"; for the experts in host memory, the most used included, llama.cpp {how}, so its" if how else
               ", so llama.cpp's") + " speed differs from the study's time per token")


def placement_notes(cfg: ExportConfig, where: dict[tuple[int, str], str], types: dict[tuple[int, str], str],
                    mode: str, how: str, miss: Callable[[], str | None]) -> list[str]:
    """The notes on where the study's experts went: `held_every_expert_note` or `partly_held_note`, and the
    miss-policy note `miss` makes unless one of those already says how llama.cpp's placement differs from what the
    study modelled (for a cpu-miss study the miss-policy note would say 'as the study modelled': llama.cpp computes
    host-resident experts on the CPU as the study computed its misses, but not the same experts)."""
    whole = held_every_expert_note(cfg, where, types, mode, how=how)
    partly = partly_held_note(cfg, where, mode, how if cfg.miss_policy == "cpu" else None)
    every = all(cfg.slots_per_layer[i] >= layer.num_experts for i, layer in enumerate(cfg.model.layers))
    # a study that held every expert missed none: no miss-policy note; one that held none of some layers' experts
    # missed there, as a copy-miss note says (a cpu-miss note's 'as the study modelled' is not true of all)
    said = ((whole is not None and (every or cfg.miss_policy == "cpu"))
            or (partly is not None and cfg.miss_policy == "cpu"))
    return [n for n in (whole, partly, None if said else miss()) if n is not None]


def placement(cfg: ExportConfig, layer_fmts: list[str], types: dict[tuple[int, str], str],
              mode: str) -> tuple[dict[tuple[int, str], str], dict[str, Any]]:
    """(layer, projection) -> "GPU" | "CPU", and the numbers behind it: the tuned cache's bytes (in the plan's
    formats) spent on whole tensors as the GGUF stores them (`types`, fallbacks included)."""
    units = [(layer, p) for layer in range(len(layer_fmts)) for p in PROJS]
    if mode in ("all-gpu", "all-cpu"):
        dev = "GPU" if mode == "all-gpu" else "CPU"
        return {u: dev for u in units}, {"mode": mode}
    size = {(layer, p): _gguf_bytes(cfg, layer, types[(layer, p)]) for layer, p in units}
    budget = cache_bytes(cfg, layer_fmts)
    order = sorted(range(len(layer_fmts)),
                   key=lambda layer: (-cfg.slots_per_layer[layer] / cfg.model.layers[layer].num_experts, layer))
    left, where = budget, {}
    for layer in order:
        for p in PROJS:
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
        "rule": "GPU holds whole (layer, projection) expert tensors, at the GGUF's types, up to the tuned cache's "
                "bytes (sum of slots x expert bytes in the plan's formats), layers with the largest cached fraction "
                "first",
    }
    return where, info


def tensor_types(cfg: ExportConfig, layer_fmts: list[str], high: str) -> tuple[dict[tuple[int, str], str], list[str]]:
    """The ggml type of every (layer, projection) expert tensor, and the fallbacks taken (one line each)."""
    types: dict[tuple[int, str], str] = {}
    fallbacks: dict[tuple[str, str, int | None], tuple[set[str], set[int]]] = {}
    for layer, fmt in enumerate(layer_fmts):
        for p in PROJS:
            wanted, row = ggml_type(fmt), row_width(cfg, p)
            types[(layer, p)] = got = fitted_type(wanted, row, high)
            if got != wanted:
                projs, blocks = fallbacks.setdefault((wanted, got, row), (set(), set()))
                projs.add(p)
                blocks.add(cfg.model.layers[layer].decoder_layer)
    notes = [f"{_tensors([q for q in PROJS if q in projs])} rows are {row} wide, which {wanted} (block {BLOCK[wanted]}) "
             f"does not divide: {got} instead in {_blocks(sorted(blocks))}" for (wanted, got, row), (projs, blocks) in fallbacks.items()]
    return types, notes


def _group(cfg: ExportConfig, value: dict[tuple[int, str], str]) -> dict[str, dict[tuple[str, ...], list[int]]]:
    """value -> {projections of a layer with that value: decoder layers}, for compact non-overlapping rules."""
    out: dict[str, dict[tuple[str, ...], list[int]]] = {}
    for layer in range(len(cfg.model.layers)):
        per: dict[str, list[str]] = {}
        for p in PROJS:
            per.setdefault(value[(layer, p)], []).append(p)
        for v, projs in per.items():
            out.setdefault(v, {}).setdefault(tuple(projs), []).append(cfg.model.layers[layer].decoder_layer)
    return out


def tensor_type_rules(cfg: ExportConfig, types: dict[tuple[int, str], str], high: str) -> list[str]:
    """`pattern=type` lines: each routed-expert tensor matched once, then every other tensor kept at `high`."""
    rules = [f"{_rule(blocks, list(projs), 'weight')}={t}"
             for t, groups in _group(cfg, types).items() for projs, blocks in groups.items()]
    return [*rules, f"^(?!{EXPERT_TENSOR})={high}"]


def override_rules(cfg: ExportConfig, where: dict[tuple[int, str], str]) -> list[str]:
    """`-ot` entries ("<regex>=CPU") for the expert tensors computed on the CPU."""
    return [f"{_rule(blocks, list(projs), '')}=CPU" for projs, blocks in _group(cfg, where).get("CPU", {}).items()]


def n_cpu_moe_equivalent(cfg: ExportConfig, where: dict[tuple[int, str], str]) -> int | None:
    """N when the CPU set is exactly the experts of the first N blocks (then `--n-cpu-moe N` says the same)."""
    n = len(cfg.model.layers)
    cpu_layers = [layer for layer in range(n) if all(where[(layer, p)] == "CPU" for p in PROJS)]
    partial = [layer for layer in range(n) if any(where[(layer, p)] == "CPU" for p in PROJS) and layer not in cpu_layers]
    if partial or cpu_layers != list(range(len(cpu_layers))):
        return None
    return cfg.model.layers[cpu_layers[-1]].decoder_layer + 1 if cpu_layers else 0


def unquantized_note(layer_fmts: list[str], types: dict[tuple[int, str], str], high: str) -> str:
    """What runs when no expert is quantized: the converted GGUF as it is (`SOURCE_TYPE`), whatever 16/32-bit type the
    plan's formats (or --opt high_precision) name - llama-quantize applies per-tensor types only over a quantized base
    type, so the script runs none."""
    said = "the plan keeps every expert unquantized: the converted GGUF is the model, no llama-quantize step"
    other = sorted({t for t in types.values() if t != SOURCE_TYPE})
    if not other and high == SOURCE_TYPE:
        return said
    fmts = sorted({f for i, f in enumerate(layer_fmts) if types[(i, PROJS[0])] != SOURCE_TYPE})
    what = []
    if other:
        what.append(f"the plan's {_words(fmts)} experts run as {SOURCE_TYPE}, not {_words(other)}")
    if high != SOURCE_TYPE:
        what.append(f"--opt high_precision={high} changes nothing")
    hint = ""
    if len(other) == 1:
        t = other[0]
        hint = (f"; for {t} experts convert with --outtype {t} (every tensor is then {t}) and give that GGUF as SRC_GGUF"
                + ("" if BLOCK_BYTES[t] == BLOCK_BYTES[SOURCE_TYPE] else
                   f", {BLOCK_BYTES[t] // BLOCK_BYTES[SOURCE_TYPE]}x the bytes this placement counted"))
    return (f"{said} (llama-quantize applies per-tensor types only over a quantized base type), so every tensor runs "
            f"as the converter wrote it, {SOURCE_TYPE}: {'; '.join(what)}{hint}")


def base_type(types: dict[tuple[int, str], str]) -> str | None:
    """llama-quantize's base type: the most common quantized expert type (None when nothing is quantized)."""
    counts: dict[str, int] = {}
    for t in types.values():
        if t in FTYPE:
            counts[t] = counts.get(t, 0) + 1
    return FTYPE[max(counts, key=lambda t: (counts[t], t))] if counts else None


def refusal(model: ModelInfo) -> str | None:
    """Why llama.cpp cannot run this model family, or convert this checkpoint (None when it can);
    `base.targets_for` asks it too."""
    if model.family in REFUSED:
        return REFUSED[model.family]
    if model.family not in GGUF_ARCH:
        return f"no GGUF architecture known for family {model.family!r}; llama.cpp export supports: {', '.join(GGUF_ARCH)}"
    if (own := model.own_quantization) is not None and own not in DEQUANTIZED:
        return (f"llama.cpp's convert_hf_to_gguf.py cannot make the script's bf16 GGUF from a pre-quantized {own} "
                f"checkpoint (it dequantizes {', '.join(DEQUANTIZED)} only: 'Quant method is not yet supported'); "
                "export the unquantized checkpoint's study")
    return None


def export(point: FrontPoint, cfg: ExportConfig, opts: dict[str, str]) -> ExportResult:
    if (why := refusal(cfg.model)) is not None:
        raise UserError(why)
    arch = GGUF_ARCH[cfg.model.family]
    notes: list[str] = []
    if own := cfg.model.own_quantization:  # the study quantized what transformers dequantized: the same values
        notes.append(f"a pre-quantized {own} checkpoint: convert_hf_to_gguf.py dequantizes it (with its scales) to the "
                     "bf16 GGUF the script starts from, which llama-quantize quantizes as planned")
    rule, high = opts["collapse"], opts["high_precision"]
    layer_fmts = plan_layers(cfg, rule)
    mixed = [i for i in range(len(layer_fmts)) if len(cfg.layer_formats(i)) > 1]
    if mixed:
        notes.append(f"per-expert formats in MoE layer{'s' * (len(mixed) > 1)} {_words(mixed)} collapsed: {COLLAPSE_RULES[rule]}")
    types, fallback_notes = tensor_types(cfg, layer_fmts, high)
    notes += fallback_notes
    as_converted = base_type(types) is None  # no llama-quantize step: every tensor is as converted
    if as_converted:
        notes.append(unquantized_note(layer_fmts, types, high))
        types, high = dict.fromkeys(types, SOURCE_TYPE), SOURCE_TYPE
    if cfg.model.hidden_size is None or cfg.model.intermediate_size is None:
        notes.append("expert row widths not recorded: llama-quantize may fall back to other types where k-quants do not fit")
    used_kinds = sorted({parse_format(f).kind for f in layer_fmts})
    type_notes = {k: f"{SOURCE_TYPE}: as converted (no llama-quantize step)" if as_converted else
                  f"{TYPE_MAP[k][0]}: {TYPE_MAP[k][1]}" for k in used_kinds}
    runner = DIFFUSION_RUNNER if arch in DIFFUSION_ARCHS else "llama-server"
    run_env: dict[str, str] = {}
    if runner == DIFFUSION_RUNNER:
        where, pinfo, ngl = block_placement(cfg, layer_fmts, types, opts["placement"])
    else:
        (where, pinfo), ngl = placement(cfg, layer_fmts, types, opts["placement"]), 999
    rules = tensor_type_rules(cfg, types, high)
    ots = override_rules(cfg, where)
    ncpu = n_cpu_moe_equivalent(cfg, where) if runner != DIFFUSION_RUNNER else None
    base = base_type(types)
    run_args = [runner, "-m", "$OUT_GGUF", "-ngl", str(ngl)]
    decoding = ""
    if runner == DIFFUSION_RUNNER:
        on_cpu = bool(ots)
        if on_cpu:
            k, n = len(pinfo["gpu_blocks"]), len(cfg.model.layers)
            last = cfg.model.layers[n - k - 1].decoder_layer  # the first block that did not fit
            held = (f"the last {k} of {n} MoE blocks on the GPU" if k else f"none of the {n} MoE blocks on the GPU") + (
                f"; -ngl can only take blocks from the end, and block {last}'s experts would pass the tuned cache's "
                "bytes" if opts["placement"] == "cache" else f", as --opt placement={opts['placement']} asks")
            notes.append("llama-diffusion-cli ignores -ot, --n-cpu-moe and --cpu-moe (its main() never passes tensor "
                         f"overrides to the model): the script places whole blocks instead, -ngl {ngl} ({ngl_meaning(ngl)}; "
                         f"{held})")
            if cfg.miss_policy == "cpu":
                run_env[OP_OFFLOAD_ENV] = NO_OP_OFFLOAD
        how = (f"computes them (their attention too) on the CPU, as the script's {OP_OFFLOAD_ENV} asks"
               if cfg.miss_policy == "cpu" else
               "copies the experts each forward uses of them to the GPU and keeps none between forwards (ggml's op "
               f"offload; {OP_OFFLOAD_ENV}={NO_OP_OFFLOAD} computes them on the CPU instead)")
        notes += placement_notes(cfg, where, types, opts["placement"], how, lambda: diffusion_miss_note(cfg, on_cpu))
        if (why := sampling_note(cfg)) is not None:
            notes.append(why)
        flags, decoding = diffusion_args(cfg)
        run_args += flags
    else:
        run_args += ["-ot", ",".join(ots)] if ots else []
        notes += placement_notes(cfg, where, types, opts["placement"], f"computes them on the CPU (-ot =CPU) {PROMPT_BATCHES}",
                                 lambda: miss_note(cfg, "llama.cpp", "cpu", how="computes the -ot =CPU experts on the "
                                                   f"CPU {PROMPT_BATCHES}") if ots else None)
    data = {
        "target": "llama.cpp",
        "miss_policy": cfg.miss_policy,
        "gguf_arch": arch,
        "collapse_rule": rule,
        "collapse_rule_text": COLLAPSE_RULES[rule],
        "layer_types": {str(cfg.model.layers[i].decoder_layer): SOURCE_TYPE if as_converted else ggml_type(f)
                        for i, f in enumerate(layer_fmts)},
        "expert_tensor_types": {f"blk.{cfg.model.layers[layer].decoder_layer}.ffn_{p}_exps.weight": t
                                for (layer, p), t in sorted(types.items())},
        "high_precision": high,
        "type_map": type_notes,
        "tensor_types": rules,
        "override_tensor": ots if runner != DIFFUSION_RUNNER else [],  # the rules a runner ignores are no placement
        "placement": {f"blk.{cfg.model.layers[layer].decoder_layer}.ffn_{p}_exps": d for (layer, p), d in sorted(where.items())},
        "placement_info": pinfo,
        "n_cpu_moe_equivalent": ncpu,
        "base_type": base,
        "quantize_command": (["llama-quantize", "--tensor-type-file", "tensor-types.txt", "$SRC_GGUF", "$OUT_GGUF", base]
                             if base else None),
        "run_command": run_args,
        "run_env": run_env,
        "decoding": decoding,
    }
    if opts["emit"] == "tensor-types":
        text = "\n".join(rules) + "\n"
    elif opts["emit"] == "override-tensor":
        if runner == DIFFUSION_RUNNER:  # rules its runner drops would place nothing
            raise UserError(f"--opt emit=override-tensor: {DIFFUSION_RUNNER} ignores -ot (its main() never passes "
                            f"tensor overrides to the model); {cfg.model.family} is placed by whole blocks, -ngl {ngl}: "
                            "use --opt emit=script")
        text = ",".join(ots) + ("\n" if ots else "")
    else:
        if model_spec(point).startswith("tiny:"):  # nothing on disk for the script to convert
            served_path(model_spec(point), "llama.cpp")
        text = _script(point, cfg, data, notes)
    return ExportResult("llama.cpp", text, data, notes)


def _sh(args: list[str]) -> str:
    return " ".join(f'"{a}"' if a.startswith("$") else shlex.quote(a) for a in args)


def _source_gguf(model: str) -> str:
    """How the bf16 GGUF is made: llama.cpp's converter (in a llama.cpp checkout, LLAMA_CPP_DIR, beside its gguf-py:
    named by the directory as the bundled model's line names it), which refuses the bundled model's toy tokenizer."""
    if model != "bundled":
        return (f"from: python LLAMA_CPP_DIR/convert_hf_to_gguf.py {shlex.quote(model)} --outtype bf16 --outfile "
                "model-bf16.gguf (LLAMA_CPP_DIR: a llama.cpp checkout)")
    script = BUNDLED_DIR.parents[2] / "scripts" / "bundled_to_gguf.py"  # the repository's (not in a wheel)
    where = shlex.quote(str(script)) if script.is_file() else "the moe-advisor repository's scripts/bundled_to_gguf.py"
    return (f"from: python {where} LLAMA_CPP_DIR {shlex.quote(str(BUNDLED_DIR))} --outtype bf16 --outfile "
            "model-bf16.gguf (llama.cpp's convert_hf_to_gguf.py refuses the bundled model's toy tokenizer)")


def _script(point: FrontPoint, cfg: ExportConfig, data: dict[str, Any], notes: list[str]) -> str:
    lines = ["#!/usr/bin/env bash"]
    lines += [f"# {h}" for h in header_lines(point, cfg, "llama.cpp")]
    lines += [
        f"# GGUF architecture: {data['gguf_arch']}. Experts are one tensor per layer x projection, so:",
        f"#   type rule: {data['collapse_rule_text']}",
        f"#   placement: {data['placement_info'].get('rule', data['placement_info']['mode'])}",
        f"#   everything that is not a routed expert stays {data['high_precision']} (last tensor-type rule)",
    ]
    lines += [f"#   format {k}: {v}" for k, v in data["type_map"].items()]
    lines += [f"# note: {n}" for n in notes]
    if data["n_cpu_moe_equivalent"]:
        lines.append(f"# the -ot rules below equal --n-cpu-moe {data['n_cpu_moe_equivalent']}")
    lines += ["set -euo pipefail", 'SRC_GGUF="${SRC_GGUF:-model-bf16.gguf}"   # ' + _source_gguf(model_spec(point))]
    if data["quantize_command"]:
        lines += [
            'OUT_GGUF="${OUT_GGUF:-model-advisor.gguf}"',
            "cat > tensor-types.txt <<'EOF'",
            *data["tensor_types"],
            "EOF",
            _sh(data["quantize_command"]),
        ]
    else:
        lines.append('OUT_GGUF="$SRC_GGUF"')
    if data["decoding"]:
        lines.append(f"# {data['decoding']}")
    for key, value in data["run_env"].items():  # the caller's own value wins
        lines.append(f'export {key}="${{{key}:-{value}}}"   # ggml computes host-resident weights on the CPU')
    run = data["run_command"]
    head, rest = run[:5], run[5:]
    parts = [_sh(head)] + [_sh(rest[i:i + 2]) for i in range(0, len(rest), 2)]
    lines.append(" \\\n  ".join(parts) + ' "$@"')
    return "\n".join(lines) + "\n"
