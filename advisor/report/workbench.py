"""The study's model, task and settings rebuilt to record and replay traces exactly as the tuner did."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from advisor.errors import UserError
from advisor.report.data import StudyData, TrialRecord
from advisor.results.config_view import recorded_model


@dataclass
class Workbench:
    """The study's model, task and settings, rebuilt to record traces exactly as the tuner did."""

    data: StudyData
    loaded: Any
    backend: Any
    profile: Any
    settings: Any

    @classmethod
    def open(cls, data: StudyData, task: tuple[Any, Any] | None = None, model: str | None = None) -> Workbench:
        """`task`: (task, settings) from `study_task`, when the caller checked it already (before the model loads);
        `model`: where the study's model is now (`advisor report --model`), else where the study loaded it."""
        from advisor.hardware.profiles import DEFAULT_PROFILE, HardwareProfile
        from advisor.models.load import load_model
        from advisor.tune.model_backend import ModelBackend

        task, settings = task or study_task(data)
        spec = model or study_model(data)
        loaded = load_model(spec)
        stored_fp = data.setting("model_fingerprint")
        if stored_fp and str(stored_fp) != str(loaded.fingerprint):
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
        return cls(data, loaded, backend, profile, settings)

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
