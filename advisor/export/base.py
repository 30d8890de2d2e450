"""What every exporter shares: the result type, the target registry, option checking, atomic writes.

An exporter is a module with `OPTIONS` ({name: (default, choices or None, help)}) and
`export(point: FrontPoint, cfg: ExportConfig, opts: dict[str, str]) -> ExportResult`. Modules are imported
only when their target is asked for, and none imports torch.
"""

from __future__ import annotations

import importlib
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any, ClassVar

from advisor.errors import BadVariable, UserError
from advisor.models import BUNDLED_DIR
from advisor.registry import Registry
from advisor.results.config_view import (
    ExportConfig,
    export_config,
    model_info,
    policy_text,
    recorded_model,
    steps_counted_note,
)
from advisor.results.front import FrontPoint, format_metric


class ExportTargets(Registry):
    """Export targets by name -> the module that renders them (imported only when asked for)."""

    _global_mapping: ClassVar[dict[str, str]] = {
        "llama.cpp": "advisor.export.llamacpp",
        "hf": "advisor.export.hf",
        "vllm": "advisor.export.vllm",
        "ktransformers": "advisor.export.ktransformers",
        "json": "advisor.export.json_format",
    }
    unknown = "unknown export target {name!r}; available: {names}"


TARGETS = ExportTargets()
ALIASES = {"llamacpp": "llama.cpp", "gguf": "llama.cpp", "transformers": "hf", "sglang": "ktransformers", "kt": "ktransformers"}


def targets_help() -> str:
    """The targets as `export --to` lists them, each with the other names it takes ("llama.cpp (llamacpp, gguf)")."""
    return " | ".join(f"{t} ({', '.join(a for a, to in ALIASES.items() if to == t)})"
                      if t in ALIASES.values() else t for t in TARGETS)


def model_path(spec: str) -> str | None:
    """What another runtime loads for the advisor's model spec: `bundled` is its directory; a `tiny:*` model is
    built in code and has nothing on disk (None)."""
    if spec == "bundled":
        return str(BUNDLED_DIR)
    return None if spec.startswith("tiny:") else spec


def model_spec(point: FrontPoint) -> str:
    """The model a runtime should load for `point` (`recorded_model`)."""
    return recorded_model(point.model, _meta(point))[0]


def _meta(point: FrontPoint) -> Any:
    return point.config.get("model_meta") if isinstance(point.config, dict) else None


def served_path(spec: str, target: str) -> str:
    """`model_path`, or the one-line refusal for a model another runtime cannot load."""
    path = model_path(spec)
    if path is None:
        raise UserError(f"{target} cannot load {spec!r}: tiny models are built in code; export a model directory "
                        "or hub id, or use --to hf (the advisor's loader) / --to json")
    return path


@dataclass
class ExportResult:
    """One export: `text` is what lands in the output file (or on stdout); `data` the same content as a
    structure (for --json and tests); `notes` the decisions a person should know about."""

    target: str
    text: str
    data: dict[str, Any]
    notes: list[str] = field(default_factory=list)


def resolve_target(name: str) -> str:
    key = ALIASES.get(name.lower(), name.lower())
    TARGETS.get_or_raise(key, shown=name)
    return key


def parse_options(target: str, pairs: list[str] | None) -> dict[str, str]:
    """`key=value` strings checked against the target's OPTIONS; unknown keys/values are one-line errors. Keys and
    the values of a fixed list are fixed names, read in any case as `--to HF` is (`advisor.errors.choose`)."""
    mod = importlib.import_module(TARGETS[target])
    spec: dict[str, tuple[str, tuple[str, ...] | None, str]] = mod.OPTIONS
    opts = {k: v[0] for k, v in spec.items()}
    given: dict[str, str] = {}
    for pair in pairs or []:
        key, eq, value = pair.partition("=")
        key = key.strip().lower()
        if not eq or key not in spec:
            known = ", ".join(f"{k}=<{'|'.join(v[1]) if v[1] else v[0]}>" for k, v in spec.items()) or "none"
            raise UserError(f"unknown option {pair!r} for --to {target}; options: {known}")
        choices = spec[key][1]
        value = value.strip().lower() if choices else value
        if choices and value not in choices:
            raise UserError(f"option {key}={value!r} for --to {target} must be one of: {', '.join(choices)}")
        if given.setdefault(key, value) != value:  # the last one won, without a word
            raise UserError(f"option {key} given twice for --to {target} ({given[key]!r}, then {value!r}); give it once")
        opts[key] = value
    return opts


def targets_for(point: FrontPoint) -> list[str]:
    """The targets that accept this point's model - its family, and a pre-quantized checkpoint's own format (a
    module's `refusal(model)` says why one does not) - and, for a `tiny:*` model, need no files (`LOADS_FILES`), so
    a printed hint never names a target the export would refuse; every such target when the family is unknown."""
    on_disk = model_path(model_spec(point)) is not None
    try:
        info = model_info(point.config, point.model)
    except BadVariable:
        raise
    except UserError:
        info = None
    mods = {t: importlib.import_module(m) for t, m in TARGETS.items()}
    return [t for t, mod in mods.items() if (on_disk or not getattr(mod, "LOADS_FILES", False))
            and (info is None or getattr(mod, "refusal", lambda _m: None)(info) is None)]


def export_point(point: FrontPoint, target: str, options: list[str] | None = None,
                 task_text: str | None = None, budget: tuple[float, str] | None = None,
                 said: list[str] | None = None) -> ExportResult:
    """Render one stored front point for `target`; `task_text`: the point's task as the read-only commands head
    it (`advisor.results.read.read_task_text`, which reads the study: a study that measured no task accuracy says
    so beside its task), the task name alone when not given; `budget`: the GPU budget (bytes, how to name it) the
    export must fit where it chooses by one (`export --from-recommend --budget`), else the study's; `said`: notes
    the caller prints itself (a trial off the stored front), put in the file's `# note:` lines and --json's notes
    too but not in the result's `notes`, which the caller prints after them."""
    target = resolve_target(target)
    opts = parse_options(target, options)
    cfg = export_config(point.config, point.model)
    cfg.task_text = task_text or ""
    cfg.budget = budget
    mod = importlib.import_module(TARGETS[target])
    if (why := getattr(mod, "refusal", lambda _m: None)(cfg.model)) is not None:
        # the way out from `targets_for`, as recommend's `Export it:` line: a fixed one named vLLM for a tiny
        # DiffusionGemma, which vLLM then refused too (it cannot load a model built in code)
        others = [f"--to {t}" for t in targets_for(point) if t != target]
        raise UserError(f"{why}; export with {', '.join(others[:-1]) + ' or ' if len(others) > 1 else ''}"
                        f"{others[-1] if others else 'another target'} instead")
    extra = [note for note in (steps_counted_note(point.config),  # (a DiffusionGemma study stored before 2026-12-05)
                               cfg.model.quant_note,  # (a study that may predate the record of its quantization)
                               moved_model_note(point)) if note]
    cfg.notes = [*(said or []), *extra]
    result = mod.export(point, cfg, opts)
    result.notes += extra
    if target != "json":  # (the json target's document carries its own source, metrics and notes, in its schema)
        result.text = with_comment_notes(result.text, cfg.notes)
        result.data = {**result.data, "source": source_record(point, cfg), "notes": [*(said or []), *result.notes]}
    return result


def with_comment_notes(text: str, notes: list[str]) -> str:
    """`text` (a script or recipe, which opens with `#` comment lines) with `notes` as `# note:` lines at the end of
    that opening block, beside the target's own: the notes `export_point` adds after the target rendered its file
    (the directory it names is not here, ...) were printed but missing from the file they are about."""
    if not notes:
        return text
    lines = text.split("\n")
    end = next((i for i, line in enumerate(lines) if not line.startswith("#")), len(lines))
    return "\n".join([*lines[:end], *(f"# note: {n}" for n in notes), *lines[end:]])


def source_record(point: FrontPoint, cfg: Any) -> dict[str, Any]:
    """What `header_lines` says, as data: `export --json` of llama.cpp and hf gave the runtime's settings with no
    study, trial, stored value or source (and no notes - a q4_K that fell back to q4_1 unsaid), vllm and
    ktransformers the notes the target made but not those added here."""
    return {"study": point.study_name, "trial": point.trial_number, "model": point.model,
            "fingerprint": point.model_fingerprint, "family": cfg.model.family, "task": cfg.task_text or point.task,
            "device": point.device,
            "stored_values": {k: {"value": v, "source": point.sources.get(k)} for k, v in sorted(point.values.items())}}


def moved_model_note(point: FrontPoint) -> str | None:
    """A note when the directory the study loaded its model from is not here (moved, or the study ran on another
    machine): the export names it as stored, which the runtime would not find - or, where the name it ran as is a
    directory here (`recorded_model`), that one, which nothing here checks is the same checkpoint."""
    meta = _meta(point)
    spec, gone = recorded_model(point.model, meta)
    recorded = str(meta.get("path") or spec) if isinstance(meta, dict) else spec
    if gone:
        return (f"the study loaded its model from the directory {recorded}, which is not here (moved, or the study ran "
                "on another machine): the export names it as stored; change it to where the checkpoint is")
    if spec != recorded:
        return (f"the study loaded its model from the directory {recorded}, which is not here: the export names "
                f"{spec}, the directory here of the name it ran as ({point.model}); the export does not check that it "
                f"holds the same checkpoint (`advisor report` does, by its fingerprint {point.model_fingerprint}): "
                "if it does not, change the path")
    return None


def header_lines(point: FrontPoint, cfg: Any, target: str) -> list[str]:
    """Provenance lines every export starts with (as comments in the target's syntax)."""
    v = point.values
    metrics = ", ".join(f"{k}={format_metric(k, v[k])} [{point.sources.get(k, '?')}]" for k in sorted(v))
    return [
        f"moe-advisor export for {target}: study {point.study_name!r} trial #{point.trial_number}",
        f"model {point.model} (family {cfg.model.family}, fingerprint {point.model_fingerprint}); task {cfg.task_text or point.task}; trial run on {point.device}",
        f"stored values [how each was obtained]: {metrics}",
        f"the study's cache: GPU expert slots per MoE layer {_slots_text(cfg.slots_per_layer)}, policy "
        f"{policy_text(point.config)}, prefetch {cfg.prefetch}, miss policy {cfg.miss_policy} ({MISS_WORDS.get(cfg.miss_policy, '?')})",
    ]


def tide_kw(cfg: ExportConfig) -> dict[str, int]:
    """The runtime's keywords for the study's TIDE: its tau (the policy's default for a study stored before tau
    was) and, when the study recorded its decoding, the steps per block that the last-step rule needs."""
    from advisor.offload.policies import DEFAULT_TAU  # torch-free

    spb = cfg.steps_per_block
    return {"tau": cfg.tau or DEFAULT_TAU, **({"steps_per_block": spb} if spb else {})}


def hot_sets(cfg: ExportConfig) -> dict[int, list[int]]:
    """static_hot's pinned experts per MoE layer, as the study profiled them: each layer's most-routed experts of
    the calibration routing stored with the trial, as many as the layer has slots."""
    from advisor.offload.policies import hot_order  # torch-free

    if not cfg.frequencies:
        raise UserError("this static_hot point stored no calibration routing (tuned before 2026-12-04), so its hot "
                        "set cannot be exported; re-tune, or export another point")
    return {layer: hot_order(counts)[: cfg.slots_per_layer[layer]] for layer, counts in sorted(cfg.frequencies.items())
            if layer < len(cfg.slots_per_layer)}


def slot_range(slots: Sequence[int]) -> str:
    """A cache's slots per layer in one note: "26" when every layer has as many, else "26..27" (fewest..most)."""
    return str(slots[0]) if len(set(slots)) == 1 else f"{min(slots)}..{max(slots)}"


def slot_count(slots: Sequence[int], noun: str) -> str:
    """`slot_range` with its noun: "1 slot", "26 slots", "1..2 slots"."""
    text = slot_range(slots)
    return f"{text} {noun}" + ("" if text == "1" else "s")


def _slots_text(slots: list[int]) -> str:
    return f"{slots[0]} in each of {len(slots)}" if len(set(slots)) == 1 else " ".join(map(str, slots))


MISS_WORDS = {"copy": "each missed expert copied to the GPU", "cpu": "each missed expert computed on the CPU",
              "hybrid": "per layer and forward, each missed expert computed on the CPU or copied to the GPU, whichever "
                        "balanced the two"}


def miss_note(cfg: Any, runtime: str, computes: str, how: str | None = None) -> str:
    """Whether `runtime`, which computes an expert it does not hold on the GPU as `computes` ("cpu": on the
    host, "copy": copied in), runs the miss policy the study modelled; when not, that its speed differs.
    `how` words what the runtime does in its own terms (default: by `computes`)."""
    how = how or {"cpu": "computes the experts it keeps off the GPU on the CPU",
                  "copy": "copies every expert it does not hold to the GPU"}[computes]
    if cfg.miss_policy == computes:
        return f"miss policy {cfg.miss_policy}: {runtime} {how}, as the study modelled"
    return (f"the study modelled miss policy {cfg.miss_policy} ({MISS_WORDS.get(cfg.miss_policy, '?')}); {runtime} "
            f"{how}, so its speed differs from the study's time per token")
