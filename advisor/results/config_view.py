"""Read a front point's configuration the way `recommend` and the exporters need it, without torch.

A front point's `config` is written by the tuner (`advisor.tune`). This module is the one place that
interprets it - for the read-only side, and for the tuner's `TrialConfig.from_json`, which reads the plan and
the cache through it: the precision plan as a grid of formats per (MoE layer, expert),
the cache (slots per layer, policy, prefetch) and the model's MoE layout (family, decoder layer and module
name of every MoE layer). Precision plans are read through `advisor.quant.plan.PrecisionPlan` when that
module is importable without torch; otherwise from the plan's JSON / spec string directly.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from advisor.errors import BadVariable, UserError
from advisor.models import DIFFUSION_FAMILIES, spec_path
from advisor.parsing import loads_json
from advisor.quant.plan import PrecisionPlan
from advisor.quant.spec import parse_format
from advisor.units import dtype_format

# families whose model cannot be served by an autoregressive engine (vLLM, llama.cpp's main loop)
LIST_LAYOUT_FAMILIES = ("llada_moe", "llada2")  # experts are a list of nn.Linear MLPs, not fused 3-D tensors


def precision_rank(name: str) -> tuple[int, int]:
    """Orders formats by fidelity: more bits first; at equal bits, finer groups first."""
    spec = parse_format(name)
    return spec.bits, -(spec.group or 0)


def plan_of(precision: Any) -> PrecisionPlan:
    """The stored plan (PrecisionPlan JSON dict, inline JSON, or spec string) as a `PrecisionPlan`."""
    if isinstance(precision, PrecisionPlan):
        return precision
    if isinstance(precision, dict):
        return PrecisionPlan.from_json(precision)
    return PrecisionPlan.parse(str(precision))


def formats_in(precision: Any, n_experts: list[int] | None = None) -> set[str]:
    """Formats a plan gives to experts (of a model with `n_experts` per layer, when known)."""
    plan = plan_of(precision)
    if n_experts is None:
        return plan.formats_used()
    return {f for row in plan.grid(n_experts) for f in row}


def uniform_format(precision: Any, n_experts: list[int] | None = None) -> str | None:
    """The single format of a uniform plan, else None."""
    fmts = formats_in(precision, n_experts)
    return next(iter(fmts)) if len(fmts) == 1 else None


def config_format(config: Mapping[str, Any]) -> str | None:
    """The single format of a stored configuration's uniform plan (`precision`, else `plan`); None for a mixed
    plan or none recorded."""
    return uniform_format(config.get("precision", config.get("plan")))


def tide_tau(config: Mapping[str, Any]) -> int:
    """TIDE's refresh interval in a stored configuration (0: not stored); 0 for any other policy, which has no
    interval (a `tau` drawn beside it changed nothing)."""
    return int(config.get("tau") or 0) if config.get("policy") == "tide" else 0


def config_in_use(config: Mapping[str, Any]) -> dict[str, Any]:
    """A stored configuration as `recommend --json` shows it: for any policy but `tide`, without the `tau` a
    trial drew beside it (in `params`, the sampler's draw) nor the top-level `tau: 0` - the policy has no refresh
    interval, and the two read `params.tau: 1` beside `tau: 0`; a `tide` point keeps both, which agree. Its
    decoding as `decoding_in_use` shows it (an autoregressive point's without the denoising keys it never used)."""
    out = config_decoding_in_use(config)
    if out.get("policy") != "tide":
        out.pop("tau", None)
        if isinstance(out.get("params"), Mapping) and "tau" in out["params"]:
            out["params"] = {k: v for k, v in out["params"].items() if k != "tau"}
    return out


NO_SLOTS = "none (0 slots)"
"""The policy of a configuration with no GPU slot in any layer: a policy places experts in slots, so with none it
places nothing - the stored policy (lru, tide ...) would describe a cache the configuration does not have."""


def policy_text(config: dict[str, Any]) -> str:
    """A stored configuration's cache policy, with TIDE's refresh interval: "tide (tau 2)"; `NO_SLOTS` where it
    keeps no expert on the GPU (FP16 without cache, a llama.cpp-style baseline at a budget that holds no layer)."""
    slots = config.get("slots_per_layer")
    if isinstance(slots, list) and slots and not any(slots):
        return NO_SLOTS
    p, tau = str(config.get("policy", "?")), tide_tau(config)
    return f"{p} (tau {tau})" if tau else p


def miss_policy(config: Mapping[str, Any]) -> str:
    """Where a stored configuration's misses compute: copy | cpu | hybrid (`copy` for studies stored before
    the miss policy was)."""
    return str(config.get("miss_policy", "copy"))


@dataclass(frozen=True)
class StoredCache:
    """A stored configuration's GPU expert cache, as the runtime and the exporters take it."""

    slots: tuple[int, ...]  # GPU slots per MoE layer (at most the layer's experts)
    policy: str
    prefetch: str
    miss: str  # copy | cpu | hybrid
    tau: int  # TIDE's refresh interval (policy tide, `tide_tau`); 0: not stored (the policy's default), or not tide


def cache_of(config: Mapping[str, Any], n_experts: Sequence[int]) -> StoredCache:
    """The cache of a stored configuration for a model with `n_experts` routed experts per MoE layer: the one
    reader of these keys, for the exporters and the tuner's `TrialConfig.from_json`."""
    slots = config.get("slots_per_layer", config.get("slots"))
    if slots is None:
        raise UserError("this front point records no cache size (config['slots_per_layer'])")
    if isinstance(slots, int | float):
        slots = [int(slots)] * len(n_experts)
    slots = [min(int(s), n) for s, n in zip(slots, n_experts, strict=False)]
    if len(slots) != len(n_experts):
        raise UserError(f"config['slots_per_layer'] has {len(slots)} entries for {len(n_experts)} MoE layers")
    return StoredCache(slots=tuple(slots), policy=str(config.get("policy", "lru")),
                       prefetch=str(config.get("prefetch", "none")), miss=miss_policy(config),
                       tau=tide_tau(config))


def miss_text(config: dict[str, Any]) -> str:
    """Where a stored configuration's misses compute, "" for the default `copy`."""
    miss = miss_policy(config)
    return "" if miss == "copy" else f"misses {miss}"


@dataclass
class MoELayerInfo:
    """One MoE layer as an exporter needs it."""

    index: int  # MoE layer number (0..n_moe-1)
    decoder_layer: int  # block number in the checkpoint (GGUF `blk.N`)
    name: str  # module path of the experts module, e.g. model.layers.3.mlp.experts
    num_experts: int
    shared: str | None = None  # module path of the shared expert(s), if any


@dataclass
class ModelInfo:
    family: str
    name: str
    layout: str  # "fused" | "list"
    layers: list[MoELayerInfo]
    hidden_size: int | None = None
    intermediate_size: int | None = None  # one expert's FFN width
    top_k: int | None = None
    dtype: str = "bf16"  # the experts' dtype as the study loaded them (an FP8 checkpoint dequantized on a CPU: bfloat16)
    quant_method: str | None = None  # a pre-quantized checkpoint's own method (`advisor.models.quant_method`)
    num_hidden_layers: int | None = None  # decoder layers, dense included (recorded since 2026-12-05; before: the
    # checkpoint's config.json where it can be read, `unrecorded_config`; else None)
    quant_note: str = ""  # how `quant_method` was settled for a point that may predate its record (`unrecorded_config`)

    @property
    def own_quantization(self) -> str | None:
        """The quantization the checkpoint carries, which runtimes that read it serve it in whatever `dtype` the
        study loaded it as: its recorded `quant_method`, or fp8 for experts recorded as float8 (a study that
        loaded an FP8 checkpoint on a GPU that runs FP8, stored before `quant_method` was); None when unquantized."""
        return self.quant_method or ("fp8" if self.dtype.startswith("float8") else None)

    @property
    def checkpoint_format(self) -> str | None:
        """The advisor format of the checkpoint's own experts, as a runtime that reads the checkpoint holds them:
        fp8 for an FP8 checkpoint (whose torch name float8_e4m3fn no format parses, and which a CPU study records
        as bfloat16), the recorded dtype's format for an unquantized one (float32: fp32, `advisor.units.dtype_format`);
        None for another pre-quantized one (gptq, awq, compressed-tensors, ...), whose bytes per weight depend on
        settings no study records."""
        own = self.own_quantization
        return (dtype_format(self.dtype) or self.dtype) if own is None else "fp8" if own == "fp8" else None

    def expert_nbytes(self, fmt: str) -> int | None:
        """Exact bytes of one expert in `fmt` (None when the shapes were not recorded)."""
        if not self.hidden_size or not self.intermediate_size:
            return None
        from advisor.quant.spec import expert_nbytes_of

        return expert_nbytes_of(fmt, int(self.hidden_size), int(self.intermediate_size))

    @property
    def is_diffusion(self) -> bool:
        return self.family in DIFFUSION_FAMILIES


@dataclass
class ExportConfig:
    """Everything an exporter renders: model layout, format per (layer, expert), cache settings."""

    model: ModelInfo
    formats: list[list[str]]  # [moe layer][expert] -> format name
    slots_per_layer: list[int]
    policy: str
    prefetch: str
    precision: Any  # the plan as stored (JSON dict or spec string), for the project's own loader
    frequencies: dict[int, list[float]] | None = None  # routed traffic per expert, when the plan kept it
    extra: dict[str, Any] = field(default_factory=dict)
    miss_policy: str = "copy"  # where a non-resident expert computed in the study: copy | cpu | hybrid
    tau: int = 0  # TIDE's refresh interval in denoising steps (policy tide, `tide_tau`; 0: not stored)
    decoding: dict[str, Any] = field(default_factory=dict)  # how the study generated (stored since 2026-12-03)
    task_text: str = ""  # the study's task as the read-only commands head it (`advisor.results.front.task_text`;
    # set by `advisor.export.base.export_point` from its caller, which reads the study; "": the task name alone)
    budget: tuple[float, str] | None = None  # the GPU budget an export fits (bytes, how it reads): the caller's
    # (`export --from-recommend --budget/--gpu`), set by `export_point`; None: the study's stored budget
    notes: list[str] = field(default_factory=list)  # what the export says of the point beside the file (a trial off
    # the front, a model directory not here, ...), set by `export_point`: the json document carries them as data

    def layer_formats(self, layer: int) -> set[str]:
        return set(self.formats[layer])

    @property
    def block_length(self) -> int:
        """The block length the study decoded (stored since 2026-12-05: the family's default, cut to the generation
        length), else the one it asked for; 0 where it stored neither."""
        return int(self.decoding.get("block_length") or (self.decoding.get("generate") or {}).get("block_length") or 0)

    @property
    def steps_per_block(self) -> int:
        """The denoising steps per block the study decoded with (0: not stored)."""
        return int(self.decoding.get("steps_per_block") or 0)

    def cache_nbytes(self) -> int:
        """Bytes of the tuned expert cache as the tuner counts them: each layer's `slots` largest experts in the
        plan's formats (0 when the expert shapes were not recorded)."""
        return sum(sum(sorted((self.model.expert_nbytes(f) or 0 for f in row), reverse=True)[:n])
                   for row, n in zip(self.formats, self.slots_per_layer, strict=True))


def _model_meta(config: dict[str, Any]) -> dict[str, Any]:
    for key in ("model_meta", "model_info", "model"):
        v = config.get(key)
        if isinstance(v, dict):
            return v
    return config


def recorded_model(model: str, meta: Any) -> tuple[str, bool]:
    """What the report (`study_model`), an export and a read of the checkpoint's config load as a study's model
    (`model`: the name it ran as), and whether it is a local directory that is not here now: the absolute directory
    the study recorded (`model_meta['path']`: a relative path as typed at tune time breaks elsewhere, and
    `dir/name` reads as a hub id); where that is gone but the name it ran as is a directory here (`ckpt`, from
    `advisor tune ./ckpt`: the project moved with its checkpoint, another machine with the same layout), that
    directory, absolute (an export runs from anywhere); else the hub id or spec it ran as."""
    path = meta.get("path") if isinstance(meta, dict) else None
    if not path:
        return str(model), False
    if Path(path).is_dir():
        return str(path), False
    here = spec_path(str(model))
    if model and here.is_dir():
        return str(here.resolve()), False
    return str(path), True


def model_info(config: dict[str, Any], model_name: str = "") -> ModelInfo:
    """The MoE layout recorded with a front point (config['model_meta'])."""
    meta = _model_meta(config)
    family = meta.get("family")
    if not family:
        raise UserError("this front point does not record the model family (config['model_meta']['family']); "
                        "re-run `advisor tune` with this version of the advisor")
    layout = meta.get("layout") or ("list" if family in LIST_LAYOUT_FAMILIES else "fused")
    raw_layers = meta.get("layers") or meta.get("moe_layers")
    num_experts = meta.get("num_experts")
    layers: list[MoELayerInfo] = []
    if isinstance(raw_layers, list) and raw_layers and isinstance(raw_layers[0], dict):
        for i, d in enumerate(raw_layers):
            dec = int(d.get("decoder_layer", d.get("index", i)))
            layers.append(MoELayerInfo(
                index=int(d.get("index", i)),
                decoder_layer=dec,
                name=str(d.get("name") or _default_name(family, dec)),
                num_experts=int(d.get("num_experts", num_experts or 0)),
                shared=d.get("shared"),
            ))
    else:
        n = meta.get("num_moe_layers")
        decs = meta.get("decoder_layers") or meta.get("moe_decoder_layers")
        if n is None and decs is None:
            raise UserError("this front point does not record its MoE layers (config['model_meta']['layers'] or "
                            "'num_moe_layers'); re-run `advisor tune` with this version of the advisor")
        decs = list(decs) if decs is not None else list(range(int(n)))
        per = num_experts if isinstance(num_experts, list) else [num_experts or 0] * len(decs)
        layers = [MoELayerInfo(i, int(d), _default_name(family, int(d)), int(e)) for i, (d, e) in enumerate(zip(decs, per, strict=False))]
    if any(layer.num_experts <= 0 for layer in layers):
        raise UserError("this front point does not record experts per layer (config['model_meta']['num_experts'])")
    dtype = str(meta.get("dtype") or "bf16")
    quant, quant_note = str(meta["quant_method"]) if meta.get("quant_method") else None, ""
    n_hidden = int(meta["num_hidden_layers"]) if meta.get("num_hidden_layers") else None
    if n_hidden is None:  # a record from before 7f5235b: the checkpoint's config.json, where it can be read
        known = quant is not None or dtype.startswith("float8")
        raw, quant_note = unrecorded_config(meta, model_name, dtype, known)
        if raw is not None:
            from advisor.models import quant_method  # torch-free

            quant = quant if known else quant_method(raw)
            text = raw.get("text_config") if isinstance(raw.get("text_config"), dict) else raw
            n = text.get("num_hidden_layers", raw.get("num_hidden_layers"))  # as `advisor.models.load.decoder_layers`
            n_hidden = n if isinstance(n, int) and not isinstance(n, bool) and n > 0 else None
    return ModelInfo(
        family=str(family),
        name=str(meta.get("name") or model_name),
        layout=str(layout),
        layers=layers,
        hidden_size=_first(meta.get("hidden_size", meta.get("hidden"))),
        intermediate_size=_first(meta.get("intermediate_size", meta.get("intermediate"))),
        top_k=_first(meta.get("top_k")),
        dtype=dtype,
        quant_method=quant,
        num_hidden_layers=n_hidden,
        quant_note=quant_note,
    )


def unrecorded_config(meta: dict[str, Any], model_name: str, dtype: str,
                      quant_known: bool = False) -> tuple[dict[str, Any] | None, str]:
    """The checkpoint's config.json for a point recorded before `num_hidden_layers` was (7f5235b), and a note.
    A model_meta records `quant_method` since ef40146, earlier the same day (2026-12-05), so such a point that names
    none (nor float8 experts: `quant_known` False) may come from an FP8 checkpoint that a CPU study loaded
    dequantized, recorded as bfloat16 like an unquantized one: the exports would serve it as unquantized (vLLM's
    --quantization and offload bytes, kt-kernel's GPU expert count and method, an hf recipe transformers refuses).
    Its precision plan cannot tell (the advisor quantizes a bf16 checkpoint to fp8 as readily); the checkpoint's
    config.json can, and gives the decoder layers too (kt-kernel's counts file and dense layers). It is read where
    the report and the exports load the model (`recorded_model`) or from the Hugging Face cache,
    never the network. The note: what it names of the quantization ("" when it names none, or `quant_known`); when
    none can be read, what the export assumed (None and no note for a spec that names no checkpoint: the advisor's
    own models, a bare name that is no directory here)."""
    spec = recorded_model(model_name or str(meta.get("name") or ""), meta)[0]
    if "/" not in spec and not spec_path(spec).is_dir():
        # `bundled`, a `tiny:*` model (the advisor's own, unquantized) or a name that is no checkpoint: neither a
        # directory here nor a hub repository (an MoE's is owner/name); a local directory is recorded as `path`
        return None, ""
    config_file = spec_path(spec) / "config.json"
    if not config_file.is_file():  # a hub id's, in the local hub cache: a variable huggingface_hub's import cannot
        # read (HF_HUB_ETAG_TIMEOUT=abc) is refused in one line, as by every command that imports it; the import
        # failed inside a catch-all here and the export took an FP8 checkpoint for unquantized
        from advisor.models import cached_hub_snapshot

        snapshot = cached_hub_snapshot(spec)
        config_file = snapshot / "config.json" if snapshot is not None else config_file
    try:
        raw = loads_json(config_file.read_text())
    except (OSError, ValueError):
        raw = None
    if not isinstance(raw, dict):
        return None, ("" if quant_known else
                      f"this point may predate 2026-12-05, when studies began to record a checkpoint's own "
                      f"quantization, and {spec}'s config.json is not here to read: the export takes the checkpoint "
                      f"for unquantized ({dtype}); if it is pre-quantized (an FP8 checkpoint tuned on a CPU host is "
                      "recorded as bfloat16), its flags are wrong: export where the model is, or re-tune")
    from advisor.models import quant_method  # torch-free

    method = None if quant_known else quant_method(raw)
    return raw, ("" if method is None else
                 f"this point predates the record of a checkpoint's own quantization (2026-12-05); {config_file} "
                 f"names {method}, which the export serves the checkpoint in")


def quant_note(config: dict[str, Any], model_name: str = "") -> str:
    """`ModelInfo.quant_note` of a stored configuration ("" when its model is not recorded), for recommend."""
    try:
        return model_info(config, model_name).quant_note
    except BadVariable:  # the hub cache's config.json could not be read: said, not taken for no note
        raise
    except UserError:
        return ""


def _first(v: Any) -> Any:
    return v[0] if isinstance(v, list | tuple) and v else v


def _default_name(family: str, decoder_layer: int) -> str:
    """Module path of a layer's experts for families whose layout is fixed (used when not recorded)."""
    if family == "diffusion_gemma":
        return f"model.decoder.layers.{decoder_layer}.experts"
    return f"model.layers.{decoder_layer}.mlp.experts"


STEPS_COUNTED = ("steps_per_block_counts", "denoising steps")
"""The mark a trial's stored decoding carries since 2026-12-05: its `steps_per_block` counts denoising steps only
(DiffusionGemma's encoder pass that opens each canvas is none of them). Decodings stored before lack it."""


def steps_counted_note(config: dict[str, Any]) -> str:
    """One note for a DiffusionGemma point whose stored decoding lacks the `STEPS_COUNTED` mark: until 567d9a4
    (2026-12-05) its study counted the encoder pass that opens each canvas as a denoising step, so the steps per
    block it stored - what exports give as TIDE's schedule and vLLM's steps - may be one more than it decoded. The
    decoding's own `steps`, where the task gave them, settle it (S per block: counted as now, no note; S + 1: as
    before). "" for any other point."""
    decoding = config.get("decoding") if isinstance(config.get("decoding"), dict) else {}
    spb = decoding.get("steps_per_block")
    key, mark = STEPS_COUNTED
    if _model_meta(config).get("family") != "diffusion_gemma" or not spb or decoding.get(key) == mark:
        return ""
    steps = (decoding.get("generate") or {}).get("steps")
    if steps and int(spb) == int(steps):
        return ""
    sure = bool(steps) and int(spb) == int(steps) + 1
    return (f"this DiffusionGemma study {'was' if sure else 'may have been'} stored before 2026-12-05, when the "
            f"encoder pass that opens each canvas counted as a denoising step: its {spb} steps per block "
            f"{'are' if sure else 'may be'} one more than it decoded ({int(spb) - 1}), and so are the TIDE schedule "
            "and the steps exported from them; a study tuned since says how it counted")


DENOISING_KEYS = ("steps", "block_length")
"""`generate`'s keywords that only a denoising sampler reads (an autoregressive model's greedy decoding ignores them)."""

AUTOREGRESSIVE = "autoregressive: one token per forward, no denoising steps or blocks"
"""How an autoregressive point decoded, as `decoding_in_use` says it."""


def decoding_in_use(decoding: Mapping[str, Any], family: str) -> dict[str, Any]:
    """A stored decoding (`config['decoding']`) as the readers show it. The tuner stores the same keys for every
    model, and a resumed study compares them, so they stay stored as they are: an autoregressive model's hold the
    task's denoising steps and block length among `generate`'s keywords, beside `steps_per_block` 1, `block_length`
    0 and the mark of how denoising steps are counted - none of which its decoding has. For a `family` that decodes
    autoregressively: the `generate` keywords it reads and `mode` `AUTOREGRESSIVE`; a denoising family's, an
    unknown family's or an empty decoding: as stored."""
    if not family or family in DIFFUSION_FAMILIES or not decoding:
        return dict(decoding)
    generate = decoding.get("generate") if isinstance(decoding.get("generate"), Mapping) else {}
    kept = {k: v for k, v in decoding.items() if k not in ("generate", "steps_per_block", "block_length",
                                                               STEPS_COUNTED[0])}
    return {"generate": {k: v for k, v in generate.items() if k not in DENOISING_KEYS}, **kept,
            "mode": AUTOREGRESSIVE}


def config_decoding_in_use(config: Mapping[str, Any]) -> dict[str, Any]:
    """A stored configuration with its decoding as the readers show it (`decoding_in_use`, by its model's family)."""
    if not isinstance(config.get("decoding"), Mapping):
        return dict(config)
    family = str(_model_meta(dict(config)).get("family") or "")
    return {**config, "decoding": decoding_in_use(config["decoding"], family)}


def precision_of(config: dict[str, Any]) -> Any:
    for key in ("precision", "plan", "precision_plan"):
        if key in config:
            return config[key]
    raise UserError("this front point records no precision plan (config['precision'])")


def export_config(config: dict[str, Any], model_name: str = "") -> ExportConfig:
    """The exporters' view of a front point's configuration."""
    info = model_info(config, model_name)
    precision = precision_of(config)
    n_experts = [layer.num_experts for layer in info.layers]
    plan = plan_of(precision)
    grid = plan.grid(n_experts)
    cache = cache_of(config, n_experts)
    freqs = None
    counts = config.get("routing_counts") or _model_meta(config).get("routing_counts")
    if isinstance(counts, dict):
        freqs = {int(k): [float(x) for x in v] for k, v in counts.items()}
    return ExportConfig(
        model=info,
        formats=grid,
        slots_per_layer=list(cache.slots),
        policy=cache.policy,
        prefetch=cache.prefetch,
        precision=precision,
        frequencies=freqs,
        miss_policy=cache.miss,
        tau=cache.tau,
        decoding=dict(config.get("decoding") or {}),
    )


def collapse_layer(cfg: ExportConfig, layer: int, rule: str = "highest") -> str:
    """One format for a whole layer, for runtimes that store a layer's experts as one tensor.

    rule "highest": the highest-precision format any expert of the layer uses (accuracy never below what
    was measured; bytes may grow). rule "traffic": the format covering most routed traffic (by the plan's
    calibration frequencies; by expert count when the plan kept none).
    """
    fmts = cfg.formats[layer]
    if rule == "highest":
        return max(set(fmts), key=precision_rank)
    if rule == "traffic":
        weights = (cfg.frequencies or {}).get(layer) or [1.0] * len(fmts)
        share: dict[str, float] = {}
        for f, w in zip(fmts, weights, strict=False):
            share[f] = share.get(f, 0.0) + w
        return max(share, key=lambda f: (share[f], precision_rank(f)))
    raise UserError(f"unknown collapse rule {rule!r}; use one of: highest, traffic")


COLLAPSE_RULES = {
    "highest": "a layer takes the highest-precision format any of its experts uses",
    "traffic": "a layer takes the format covering most of its routed traffic (calibration counts; expert count if none)",
}
