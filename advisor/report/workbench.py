"""The study's model, task and settings rebuilt to record and replay traces exactly as the tuner did."""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, replace
from typing import TYPE_CHECKING, Any

from advisor.errors import UserError
from advisor.report.data import StudyData, TrialRecord
from advisor.results.config_view import recorded_model

if TYPE_CHECKING:
    from advisor.tune.config import ModelShape


@dataclass
class Workbench:
    """The study's model, task and settings, rebuilt to record traces exactly as the tuner did."""

    data: StudyData
    loaded: Any
    backend: Any
    profile: Any
    settings: Any
    model_check: str = ""
    """How the model loaded here was checked to be the study's (`check_unfingerprinted`), as the report says it."""
    fingerprint_checked: bool = True
    """False where the study stored no fingerprint to check the model by: `model_check` says what was compared."""

    @classmethod
    def open(cls, data: StudyData, task: tuple[Any, Any] | None = None, model: str | None = None,
             warn: Callable[[str], None] = lambda _: None) -> Workbench:
        """`task`: (task, settings) from `study_task`, when the caller checked it already (before the model loads);
        `model`: where the study's model is now (`advisor report --model`), else where the study loaded it; `warn`:
        told, as soon as it is known, that a study with no stored fingerprint could not be checked by one."""
        from advisor.hardware.profiles import DEFAULT_PROFILE, HardwareProfile
        from advisor.models.load import load_model
        from advisor.tune.model_backend import ModelBackend

        task, settings = task or study_task(data)
        spec = model or study_model(data)
        loaded = load_model(spec)
        stored_fp = stored_fingerprint(data)
        if stored_fp and stored_fp != str(loaded.fingerprint):
            if model:
                raise UserError(f"--model {model} is not the model study {data.name!r} ran (fingerprint "
                                f"{loaded.fingerprint} != stored {stored_fp}); point --model at that checkpoint")
            # `spec` may be the name it ran as (`ckpt`) where the recorded directory is gone: another checkpoint
            raise UserError(f"model {spec} is not the one study {data.name!r} ran (fingerprint "
                            f"{loaded.fingerprint} != stored {stored_fp}): it changed since, or is another checkpoint; "
                            "pass --model with where the study's checkpoint is (its fingerprint is checked)")
        hw = data.setting("hardware", default={}) or {}
        profile = HardwareProfile.from_dict(hw) if hw else DEFAULT_PROFILE
        backend = ModelBackend(loaded, task, settings, profile=profile)
        stored_cpu = data.study_attrs.get("cpu_experts")
        if stored_cpu:  # the CPU expert times the study was priced with, so hybrid replays match its trials
            backend.adopt_cpu_profile(stored_cpu)
        if stored_fp:
            return cls(data, loaded, backend, profile, settings, "checked equal to the stored one")
        check = check_unfingerprinted(data, backend, f"--model {model}" if model else f"model {spec}")
        warn(check)
        return cls(data, loaded, backend, profile, settings, check, fingerprint_checked=False)

    def uniform_plan(self, fmt: str) -> Any:
        from advisor.tune.config import build_plan

        shape = self.backend.shape
        return build_plan([fmt] * shape.n_layers, 0.0, fmt, shape, None)

    def trace(self, fmt: str) -> Any:
        return self.backend.trace(self.uniform_plan(fmt))

    def trace_of(self, t: TrialRecord) -> Any:
        """A routing trace under a stored trial's own precision plan (a mixed plan routes as no uniform one does)."""
        from advisor.tune.config import TrialConfig

        return self.backend.trace(TrialConfig.from_json(t.config, self.backend.shape.num_experts).plan)

    def replay_stored(self, run: Any, t: TrialRecord) -> float:
        """Bytes/token of a stored trial, replayed on a fresh trace (must equal the stored value)."""
        from advisor.tune.config import TrialConfig

        cfg = TrialConfig.from_json(t.config, self.backend.shape.num_experts)
        m = self.backend.replay(run, cfg)
        return m.values["bytes_h2d"] / max(1, run.tokens)


def stored_fingerprint(data: StudyData) -> str | None:
    """The fingerprint of the model the study ran: its own setting, else the one its trials' model description
    keeps (`model_meta`); None where it stored neither (a study not written by `advisor tune`)."""
    fp = data.setting("model_fingerprint")
    if not fp:
        meta = data.setting("model_meta")
        fp = meta.get("fingerprint") if isinstance(meta, dict) else None
    return str(fp) if fp else None


_SIZES = (("model family", lambda m: m.get("family")),
          ("MoE layers", lambda m: len(m.get("layers") or [])),
          ("routed experts per layer", lambda m: [x.get("num_experts") for x in m.get("layers") or []]),
          ("top-k per layer", lambda m: [x.get("top_k") for x in m.get("layers") or []]),
          ("hidden size per layer", lambda m: [x.get("hidden_size") for x in m.get("layers") or []]),
          ("expert FFN size per layer", lambda m: [x.get("intermediate_size") for x in m.get("layers") or []]),
          ("expert dtypes", lambda m: m.get("dtype")))
"""What a stored model description (`advisor.models.load.model_meta`) says of a model's kind and sizes."""

def other_sizes(stored: dict[str, Any], here: dict[str, Any]) -> str | None:
    """The first of `_SIZES` that model descriptions `stored` and `here` both give and give differently, as
    "model family ('qwen3_moe' here, 'llada_moe' stored)"; None where every one both give agrees (a field an older
    description, or one read from config.json, lacks is not compared)."""

    def known(value: Any) -> bool:
        return value not in (None, "", 0, []) and None not in (value if isinstance(value, list) else [])

    for what, of in _SIZES:
        told, have = of(stored), of(here)
        if known(told) and known(have) and told != have:
            return f"{what} ({have!r} here, {told!r} stored)"
    return None


def refuse_other_config(data: StudyData, spec: str, named: str, remedy: str) -> None:
    """Before the model loads: `UserError` where the config.json of the model `spec` names (`spec_config`, no
    torch) gives another family, MoE layer count or routed experts per layer than the study's stored model
    description - a model the fingerprint check would refuse only after the load (minutes for a real checkpoint).
    `named`: how the user named it; `remedy`: what to do, as the fingerprint refusal says it."""
    from advisor.models import config_family, moe_expert_count, moe_layer_count, spec_config

    stored, config = data.setting("model_meta"), spec_config(spec)
    if not isinstance(stored, dict) or not stored.get("layers") or config is None:
        return
    layers, experts = moe_layer_count(config), moe_expert_count(config)
    here = {"family": config_family(config),
            "layers": [{"num_experts": experts}] * layers if layers else None}
    if differ := other_sizes(stored, here):
        unchecked = "" if stored_fingerprint(data) else "it stores no fingerprint to check it by, and "
        raise UserError(f"{named} is not the model study {data.name!r} ran: {unchecked}it has other {differ}, as its "
                        f"config.json gives them; {remedy}")


_PEAKS_CHECKED = 20
"""Stored trials whose counted peak is counted again by `check_unfingerprinted`: every byte the report's budgets
count (resident weights, each layer's experts) takes part in each; a few are enough."""


def check_unfingerprinted(data: StudyData, backend: Any, named: str) -> str:
    """What can be checked of a model (`named`: how the user named it) against a study that stored no fingerprint
    - its MoE sizes against the stored model description, and stored trials' counted peak GPU bytes counted again
    on it, which every replay, format's least configuration and `--memory` share of the report is counted from
    (resident weights, expert bytes) - as the warning and the report say it; `UserError` where they differ: the
    report of another model was written without a word (the fingerprint check skipped where none was stored)."""
    from advisor.tune.config import TrialConfig, counted_peak_bytes
    from advisor.units import count, format_bytes

    name = data.name
    stored, here = data.setting("model_meta"), backend.model_meta
    checked = []
    if isinstance(stored, dict) and stored.get("layers"):
        if differ := other_sizes(stored, here):
            raise UserError(f"{named} is not the model study {name!r} ran: it stores no fingerprint to check it "
                            f"by, and it has other {differ}; point --model at that checkpoint")
        checked.append("its family and MoE sizes")
    shape = counted_shape(backend.shape, data)
    peaks: list[tuple[int, int, int]] = []  # (trial, counted here, stored) of the first trials storing a peak
    for t in data.trials:
        if (stored_peak := t.config.get("counted_peak_gpu_bytes")) and len(peaks) < _PEAKS_CHECKED:
            try:
                cfg = TrialConfig.from_json(t.config, shape.num_experts)
            except (KeyError, TypeError, ValueError, UserError):  # a configuration another version stored
                continue
            peaks.append((t.number, counted_peak_bytes(shape, cfg.plan, cfg.slots, cfg.prefetch, cfg.miss),
                          int(stored_peak)))
    same = sum(counted == kept for _, counted, kept in peaks)
    if peaks and not same:  # (a resumed study may have counted its later trials with another activation allowance)
        number, counted, kept = peaks[0]
        raise UserError(f"{named} is not the model study {name!r} ran: it stores no fingerprint to check it by, "
                        f"and no stored trial's counted peak GPU memory is counted on it (trial #{number}: "
                        f"{format_bytes(counted, 2)} here, {format_bytes(kept, 2)} stored; its resident weights "
                        "or expert bytes differ); point --model at that checkpoint")
    if same:
        checked.append(f"the counted peak GPU bytes of {same} of {count(len(peaks), 'stored trial')}")
    what = (" and ".join(checked) + " match it, its weights were not compared"
            if checked else "nor does it store its model's sizes or counted peaks: nothing was compared")
    return (f"study {name!r} stores no model fingerprint, so {named} could not be checked to be the model it ran; "
            f"{what}")


def stored_shape(data: StudyData) -> ModelShape | None:
    """The study's model shape with its resident weights, from what it stored alone (before the model loads): its
    MoE sizes from the stored model description, its resident bytes from stored trials' counted peak GPU bytes
    less what their configuration counts on top of them (`counted_peak_bytes` on `counted_shape`), where the
    first trials storing a peak (up to `_PEAKS_CHECKED`) all give the same; None otherwise (no description or
    peak stored, or peaks counted with other allowances: the loaded model's shape answers)."""
    from advisor.tune.config import ModelShape, TrialConfig, counted_peak_bytes
    from advisor.units import dtype_format

    meta = data.setting("model_meta")
    try:
        layers = meta["layers"]
        shape = ModelShape(tuple(int(x["num_experts"]) for x in layers), tuple(int(x["top_k"]) for x in layers),
                           tuple(int(x["hidden_size"]) for x in layers),
                           tuple(int(x["intermediate_size"]) for x in layers),
                           dtype_format(meta.get("dtype")) or "bf16", 0)
    except (KeyError, TypeError, ValueError):  # an older or edited description
        return None
    if not layers:
        return None
    on = counted_shape(shape, data)
    resident: set[int] = set()
    for t in [t for t in data.trials if t.config.get("counted_peak_gpu_bytes")][:_PEAKS_CHECKED]:
        try:
            cfg = TrialConfig.from_json(t.config, shape.num_experts)
            resident.add(int(t.config["counted_peak_gpu_bytes"]) - counted_peak_bytes(on, cfg.plan, cfg.slots,
                                                                                     cfg.prefetch, cfg.miss))
        except (KeyError, TypeError, ValueError, UserError):  # a configuration another version stored
            return None
    if len(resident) != 1 or min(resident) < 0:
        return None
    return replace(shape, resident_bytes=resident.pop())


def counted_shape(shape: ModelShape, data: StudyData) -> ModelShape:
    """`shape` as the study counted its peaks, whichever way the report loads the model (whole where it fits in
    host memory, else offloaded): an offloaded model's study (its stored `activation_allowance` one that was
    probed) counts that allowance and the staging of copied misses; a resident one's ("none: experts resident")
    neither. A study stored before allowances were is counted as the model loads now."""
    allowance = data.study_attrs.get("activation_allowance")
    if not isinstance(allowance, dict):
        return shape
    if str(allowance.get("source", "none")).startswith("none"):
        return replace(shape, activation_bytes=0, staging=False)
    return replace(shape, activation_bytes=int(allowance.get("bytes", 0)), staging=True)


def study_model(data: StudyData) -> str:
    """What to load as the study's model, as an export names it (`recorded_model`: the absolute directory the study
    recorded, else the relative name it ran as where that is a directory here, else the hub id or spec; its
    fingerprint is checked as it loads). A local directory gone by both names is one line before torch imports,
    naming --model: the name it ran as read as a hub id (`hf download NAME` was the advice)."""
    spec, gone = recorded_model(str(data.setting("model")), data.setting("model_meta"))
    if not gone:
        return spec
    raise UserError(f"study {data.name!r} was tuned on the local directory {spec}, which is not there now; "
                    "pass --model with where that checkpoint is now (its fingerprint is checked)")


def study_task(data: StudyData, task_data: str | None = None) -> tuple[Any, Any]:
    """The study's task and evaluation settings, as `advisor tune` built them (torch-free, so a bad data file
    fails before the model loads). `task_data`: the task's data file (`advisor report --data`), else the one the
    study stored."""
    from advisor.eval.tasks import get_task
    from advisor.tune.space import EvaluationSettings

    if not data.setting("model"):
        raise UserError(f"study {data.name!r} does not record its model; it was not written by `advisor tune`")
    ev = dict(data.setting("evaluation", default={}) or {})
    task_name = str(ev.pop("task", None) or data.setting("task", default="toy"))
    stored = ev.pop("data", None)
    known = set(EvaluationSettings.__dataclass_fields__)
    settings = EvaluationSettings(task=task_name, **{k: v for k, v in ev.items() if k in known and k != "task"})
    # as `advisor tune` builds it: the whole task (the evaluation draws its `limit` examples itself), so the traces
    # replay the tuner's prompts
    try:
        return get_task(task_name, seed=settings.seed, path=task_data or stored), settings
    except UserError as e:
        if task_data or not stored:
            raise
        raise UserError(f"{e} (the file study {data.name!r} was tuned on; where it is now: advisor report --data "
                        "FILE)") from e
