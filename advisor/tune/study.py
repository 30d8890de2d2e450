"""Run (or resume) a tuning study and persist its Pareto front.

A study is an Optuna study in an RDB storage, so it can be resumed by name, shared by many workers, and
opened unchanged in optuna-dashboard. Its metadata (model fingerprint, task, search space, budget, hardware)
is kept as study user attributes and in `advisor_study`; resuming with a different model, task (or --data file,
by its content), space, budget, objectives, trial mode (replay models the times live measures), device type (cpu
or cuda: measured times differ) or hardware profile (its link and GPU price time per token) is refused, because the trials would no longer be comparable.

After every finished trial, and when the run ends (trial budget, timeout or Ctrl-C), the front is
recomputed from *all* trials in storage - every worker's - and saved with `store.save_front`, so the last
writer always leaves the complete front and a killed worker never leaves a stale one behind.
"""

from __future__ import annotations

import contextlib
import dataclasses
import hashlib
import json
import re
import shlex
import time
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass, field
from types import EllipsisType
from typing import Any

from advisor import __version__
from advisor.errors import UserError
from advisor.hardware.profiles import HardwareProfile, cpu_profile_as_gpu
from advisor.results import connections, locks, storage_errors, urls
from advisor.results import storage as st
from advisor.results.config_view import STEPS_COUNTED
from advisor.results.evalcache import EvalCache
from advisor.results.front import FrontPoint, trial_point
from advisor.results.reconnect import redo_when_cut, stop_waiting_when, watch_answers
from advisor.results.registry import register_study
from advisor.results.store import StudyRowGone, create_tables, save_front
from advisor.results.trials import check_objective_values, checked_metric_names
from advisor.tune.backend import Backend
from advisor.tune.budget import BudgetFit, holds_blind_format_draws, holds_blind_hot_draws, stored_spelling
from advisor.tune.interrupt import Interrupted, StopOnSignal, requeue
from advisor.tune.objective import Objective
from advisor.tune.samplers import DEFAULT_SAMPLER, make_sampler, sampler_name
from advisor.tune.space import FIDELITY_REFERENCE, SearchSpace
from advisor.units import format_bytes


@dataclass
class TuneOptions:
    study_name: str | None = None
    storage: str | None = None
    sampler: str = DEFAULT_SAMPLER
    seed: int | None = 0
    n_trials: int | None = 20
    """Trials this process runs (Optuna's meaning: several workers with N each run N x workers)."""
    total_trials: int | None = None
    """If set, the study ends with this many finished trials (a resume tops up; workers share them)."""
    timeout: float | None = None
    heartbeat_interval: int | None = st.HEARTBEAT_INTERVAL_S
    grace_period: int | None = st.GRACE_PERIOD_S
    max_retry: int | None = st.MAX_RETRY
    mode: str = "replay"
    population_size: int | None = None
    warm_start: bool = True
    """Enqueue `BudgetFit.warm_start` (per plan, the most cache that fits) unless the study already has them."""
    budgets: tuple[str, ...] = ()
    """GPU budgets ("10%", "1.5GiB") the study answers at: enqueue `advisor.tune.baseline_trials` for each."""
    load_record: dict[str, Any] | None = None
    """What this run's load gave, with its signature (`advisor.tune.shortcut.load_record`): stored with the study
    at each run, so that the same command run again with nothing to run need not load the model."""


@dataclass
class TuneResult:
    study_name: str
    storage_url: str
    front: list[FrontPoint]
    metrics: list[str]
    directions: list[str]
    n_complete: int
    n_failed: int
    n_retried: int  # of the failed trials, those queued again (interrupted, or a dead worker's)
    n_infeasible: int
    n_trials_run: int  # trials this run ran to their end (an interrupted one not counted: it is queued again)
    interrupted: bool
    counters: dict[str, int]
    distinct_plans: int
    elapsed_s: float
    extra: dict[str, Any] = field(default_factory=dict)
    n_waiting: int = 0
    """Enqueued trials (warm start, --budgets points and baselines, retries) still queued when the run ended."""
    waiting_kinds: tuple[str, ...] = ()
    """What those queued trials are (`queued_kinds`), e.g. ("warm start", "retries")."""
    cpu_note: str = ""
    """Which CPU expert times priced the run (the study's stored ones, completed now if they lacked some, or
    measured now for an older study)."""
    allowance_note: str = ""
    """A `note:` line when the study's earlier trials counted another activation allowance in their peak GPU bytes
    than this run (or one not stored: a study from before it was), else empty."""
    finished_elsewhere: list[int] = field(default_factory=list)
    """Trials this run ran that another worker finished meanwhile (their result there is kept)."""
    unrun_over_budget: list[tuple[int | None, dict[str, Any], int, int]] = field(default_factory=list)
    """This run's trials recorded over budget without running: (trial number, configuration, counted peak, budget) - a
    draw whose formats and cache knobs fit no cache size (`BudgetFit.within`)."""
    dead_workers: list[int] = field(default_factory=list)
    """Trials left RUNNING by a worker that stopped (no heartbeat within the grace period), failed and queued
    again by this run."""


def default_study_name(model: str, task: str, space: str) -> str:
    """A readable, stable name: resuming the same model/task/space without --study continues the study. It is a
    name `--study` takes (`advisor.commands.tune.check_study_name`): `legacy_study_name`, the name before
    2026-12-07, without its leading characters other than letters and digits (`tune ../ckpt` was study
    `.._ckpt-toy-dllm`, which `--study` refused and whose plots were hidden files), and one past 100 characters
    (a Hugging Face snapshot's path) is a digest of it and its last 91 characters."""
    name = re.sub(r"^[^A-Za-z0-9]+", "", legacy_study_name(model, task, space))
    if len(name) > 100:
        name = f"{hashlib.sha256(name.encode()).hexdigest()[:8]}-{name[-91:]}"
    return name


def legacy_study_name(model: str, task: str, space: str) -> str:
    """The default study name until 2026-12-07 (`default_study_name`)."""
    return re.sub(r"[^A-Za-z0-9_.:-]+", "_", f"{model}-{task}-{space}").strip("_")


def study_name_for(storage: str, model: str, task: str, space: str) -> str:
    """The study a run without --study continues or creates: `default_study_name`, or where that differs from
    `legacy_study_name` and the storage holds a study of the legacy name, that one, so that the same command
    still resumes a study an earlier version named."""
    from advisor.results.registry import study_user_attrs
    from advisor.results.store import engine_for

    name, legacy = default_study_name(model, task, space), legacy_study_name(model, task, space)
    return legacy if legacy != name and study_user_attrs(engine_for(storage), legacy) else name


LOAD_RECORD = "load_record"
"""The study attribute holding the last run's `TuneOptions.load_record`."""

REGISTRY_FIELDS = ("model", "model_fingerprint", "task", "space", "space_fingerprint", "budget_bytes", "device",
                   "hardware", "objectives", "sampler")
"""What `advisor_study` (`advisor studies`) keeps of the study's metadata (`_study_meta`)."""


def resume_keys(profile: Any, *, task: str | None = None, data_sha256: str | None = None,
                space: SearchSpace | None = None,
                budget_bytes: int | None | EllipsisType = ..., mode: str | None = None,
                device: str | None = None) -> dict[str, Any]:
    """What a resume compares (`check_resume`), for the settings known: the hardware profile always; the task
    (its name and `data_sha256`, the digest of its --data file: None for the task's own data), the space (name, fingerprint,
    objectives), the budget (`...`: not known yet), the trial mode (replay's modelled times and live's
    measured ones do not compare on one front) and the device's type (times measured on the CPU and on a GPU
    do not either; `cuda:0` and `cuda:1` workers do) when given."""
    keys: dict[str, Any] = {"hardware": _profile_dict(profile)}
    if device is not None:
        keys["device_type"] = device.split(":")[0].strip().lower()
    if task is not None:
        keys["task"] = task
        keys["data_sha256"] = data_sha256
    if mode is not None:
        keys["mode"] = mode
    if space is not None:
        keys.update(space=space.name, space_fingerprint=space.fingerprint, objectives=dict(space.objectives))
    if budget_bytes is not ...:
        keys["budget_bytes"] = budget_bytes
    return keys


BUDGETS_GIVEN = "budgets_given"
"""Study user attribute: the `--budgets` of the run that created the study, where their largest is its budget, so
that a resume with another budget is told to give them again (`check_resume`). Studies from before it have none."""


def _budgets_given(budgets: Sequence[str], budget_bytes: int | None, shape: Any) -> dict[str, str]:
    """`BUDGETS_GIVEN` for a new study whose budget is the largest of `budgets` (none where a --budget, --gpu or
    none set it)."""
    from advisor.tune.budget import budget_memory

    if not budgets or budget_bytes is None or budget_bytes != int(max(budget_memory(b, shape)[0] for b in budgets)):
        return {}
    return {BUDGETS_GIVEN: ",".join(budgets)}


def _study_meta(backend: Backend, space: SearchSpace, budget_bytes: int | None, profile: Any, sampler: str,
                mode: str, budgets: Sequence[str] = ()) -> dict:
    return {
        **_budgets_given(budgets, budget_bytes, backend.shape),
        "advisor_version": __version__,
        "model": backend.model_name,
        "model_fingerprint": backend.model_fingerprint,
        **resume_keys(profile, task=backend.task_name, data_sha256=backend.task_data_sha256, space=space,
                      budget_bytes=budget_bytes, mode=mode, device=backend.device),
        "space_toml": space.text,
        FIDELITY_REFERENCE_KEY: FIDELITY_REFERENCE,
        "device": backend.device,
        "sampler": sampler,
        "evaluation": {"task": backend.task_name, **{k: getattr(space.evaluation, k) for k in
                                                     ("limit", "trace_prompts", "fidelity_prompts", "seed",
                                                      "staging", "fidelity_floor", "max_new_tokens")},
                       # the task's --data file, so `advisor report` decodes the same prompts
                       **({"data": backend.task_data} if backend.task_data else {})},
        "model_meta": backend.model_meta,
    }


FIDELITY_REFERENCE_KEY = "fidelity_reference"
"""Study user attribute: how its fidelity reference is computed (`FIDELITY_REFERENCE`), stored with a new study
since 2026-12-07 (and by a resume of an older one, `_reference_mark`) so that a resume can tell a study whose
trials compared with another one (`_check_reference`)."""


def _profile_dict(profile: Any) -> dict[str, Any]:
    if profile is None:
        return {}
    if hasattr(profile, "to_dict"):
        return profile.to_dict()
    return dict(vars(profile))


def _hardware_key(hw: dict[str, Any] | None) -> str:
    """A stored hardware profile as compared on resume: every `HardwareProfile` field (a field added since the
    study was stored reads as unset), in JSON as the study stores it."""
    if not hw:
        return "{}"
    return json.dumps({f.name: hw.get(f.name) for f in dataclasses.fields(HardwareProfile)}, sort_keys=True)


def _gpu_flag(hw: dict[str, Any] | None) -> str:
    """The --gpu that gives a study's stored hardware profile (`--gpu NAME`, quoted for the shell), or none."""
    return f"--gpu {shlex.quote(str(hw.get('name')))}" if hw else "no --gpu"


def _check_hardware(name: str, stored: dict[str, Any], meta: dict[str, Any]) -> None:
    """Refuse to resume study `name` (its stored user attributes `stored`) on another hardware profile: the
    profile's link and GPU (device roofline) price time_per_token, so two on one front do not compare."""
    if "hardware" in stored and _hardware_key(stored["hardware"]) != _hardware_key(meta["hardware"]):
        was, now = stored["hardware"] or {}, meta["hardware"] or {}
        if was.get("name") and was.get("name") == now.get("name"):  # `advisor profile` measured it again since
            fields = [f.name for f in dataclasses.fields(HardwareProfile)
                      if f.name not in ("name", "source") and was.get(f.name) != now.get(f.name)]
            raise UserError(f"study {name!r} was run with GPU profile {was['name']!r} as measured then "
                            f"({was.get('source')}); it has been measured again since ({now.get('source')}; "
                            f"other {', '.join(fields) or 'source'}), which would price new trials otherwise; use a "
                            "new --study name, or restore the profile file the study was tuned with")
        def given(hw: dict[str, Any] | None) -> str:
            return f"{_gpu_flag(hw)} ({hw.get('source') if hw else 'the default link, the device priced as the H200'})"

        row = _cpu_profile_as_gpu(was)  # no --gpu gives it any more: resuming with its name looped on this refusal
        resume = (f" ({_gpu_flag(was)} was a --cpu profile named as the catalogue GPU {row!r}, which --gpu takes "
                  "now; no --gpu gives that profile any more)" if row else f", or resume it with {_gpu_flag(was)}")
        raise UserError(f"study {name!r} was tuned with {given(stored['hardware'])}, this run with "
                        f"{given(meta['hardware'])}; use a new --study name{resume}")


def _cpu_profile_as_gpu(hw: dict[str, Any]) -> str | None:
    """The catalogue GPU a study's stored `--cpu` profile is named as (`profiles.cpu_profile_as_gpu`), else None."""
    try:
        return cpu_profile_as_gpu(HardwareProfile.from_dict(hw)) if hw else None
    except UserError:  # a stored profile this version does not read: compared as stored, named as before
        return None


def refuse_incompatible(storage: str, name: str, keys: dict[str, Any], *alternatives: dict[str, Any]) -> None:
    """Before the model loads (minutes for a real one): `check_resume` of the settings known without the model
    (`resume_keys`) against study `name` as stored (read only; nothing is written, no file created). An
    alternative (the keys with another space the model may turn out to need) is compared instead of `keys`
    when the stored study's space is its space."""
    from advisor.results.registry import study_user_attrs
    from advisor.results.store import engine_for

    stored = study_user_attrs(engine_for(storage), name)
    same = [k for k in alternatives if stored and "space_fingerprint" in k
            and stored.get("space_fingerprint") == k["space_fingerprint"]]
    check_resume(name, stored, same[0] if same else keys)


def _cpu_meta(backend: Any) -> dict[str, Any]:
    """The CPU expert times a new study is priced with, stored with it so that a resume and `advisor report`
    reuse them instead of measuring again (on a shared host they moved by a third between runs)."""
    return {"cpu_experts": backend.cpu_profile().to_dict()} if hasattr(backend, "adopt_cpu_profile") else {}


def _allowance_meta(backend: Any) -> dict[str, Any]:
    """The activation allowance a model's counted peaks include (an offloaded model's, probed by
    `ModelBackend._probe_activation`; none for a resident one), stored with a new study so that a resume counting
    another one (another advisor version, another device) says its trials' peaks are not like for like."""
    if not hasattr(backend, "offloaded"):
        return {}
    if not backend.offloaded:
        return {"activation_allowance": {"bytes": 0, "source": "none: experts resident"}}
    source = getattr(backend, "activation_source", "") or "not probed"  # (a backend without a probe: none ran)
    return {"activation_allowance": {"bytes": int(backend.shape.activation_bytes), "source": source}}


def allowance_note(stored: dict[str, Any], backend: Any) -> str:
    """The `note:` line of a resume whose earlier trials' counted peak GPU bytes included another activation
    allowance than this run's (or an unknown one: an offloaded model's study stored before allowances were),
    else ''. The stored allowance stays the study's first: the trials counted with it are still in the study."""
    now = _allowance_meta(backend).get("activation_allowance")
    was = stored.get("activation_allowance")
    if now is None or (was is None and not backend.offloaded):
        return ""
    this = f"{format_bytes(now['bytes'])} ({now['source']})"
    if was is None:
        return (f"note: this study predates storing the activation allowance, so the allowance its earlier trials' "
                f"peak GPU bytes counted is unknown; this run counts {this}, and earlier trials' peaks may be low or "
                "high by the difference; re-tune into a new study (--study) to compare like with like")
    if (was.get("bytes"), was.get("source")) == (now["bytes"], now["source"]):
        return ""
    was_bytes = int(was.get("bytes") or 0)
    diff = now["bytes"] - was_bytes
    if diff > 0:
        by = f"low by {format_bytes(diff)} (one that fit the budget by less may not fit it now)"
    elif diff < 0:
        by = f"high by {format_bytes(-diff)} (one over the budget by less may fit it now)"
    else:
        by = "the same in bytes"
    return (f"note: the study's earlier trials' peak GPU bytes counted an activation allowance of "
            f"{format_bytes(was_bytes)} ({was.get('source')}); this run counts {this}: next to this run's, the earlier "
            f"trials' peaks are {by}; re-tune into a new study (--study) to compare like with like")


def _price_cpu(study: Any, backend: Any, created: bool) -> str:
    """Price this run with the study's stored CPU expert times; what they lack is measured and stored back with
    them (under the study's seed lock: a worker resuming beside this one finds them complete, and the stored
    set only grows), so the next resume and `advisor report` measure nothing. Returns the line saying which."""
    if not hasattr(backend, "adopt_cpu_profile"):
        return ""
    stored = study.user_attrs.get("cpu_experts")
    if not stored:
        return (f"CPU expert times: {backend.cpu_profile().source}, taken by this run (the study predates "
                "storing them: its earlier runs may have had others)")
    measured = backend.adopt_cpu_profile(stored)
    src = backend.cpu_profile().source
    if created:
        return (f"CPU expert times: {src}, {_cpu_origin(backend, src)}, stored with the study (a resume and "
                "`advisor report` reuse them)")
    from advisor.hardware.profiles import other_cpu

    where = other_cpu(backend.cpu_profile().host)
    if not measured:
        return f"CPU expert times: the study's stored measurement {src}{where}"
    study.set_user_attr("cpu_experts", backend.cpu_profile().to_dict())
    return (f"CPU expert times: the study's stored measurement, what it lacked ({', '.join(measured)}) measured now "
            f"and stored with it: {src}{where}")


def _not_queued(stored: dict[str, Any], space: SearchSpace, shape: Any, budgets: Sequence[str]) -> dict[str, Any]:
    """The study attribute naming the `--budgets` baselines that cannot fit their budget at all, and so are not
    queued there (`baseline_trials.unfit_baselines`), with this run's added - where they add any: `advisor report`
    says so in that budget's row, where it said "over budget" of the trial queued for nothing."""
    from advisor.tune.baseline_trials import NOT_QUEUED, not_queued_attr, unfit_baselines

    unfit = unfit_baselines(space, shape, budgets) if budgets else []
    merged = not_queued_attr(stored.get(NOT_QUEUED), unfit)
    return {NOT_QUEUED: merged} if unfit and merged != stored.get(NOT_QUEUED) else {}


def _stored_as_written(stored: dict[str, Any], wrote: dict[str, Any]) -> bool:
    """Whether a study's stored attributes are the ones this run wrote as it created the study (`wrote`, empty
    where it created none): every one as stored (JSON), the CPU expert times this run measured among them - so a
    study another worker created in the moment between a cut try and its redo is not taken for this run's."""
    return bool(wrote) and all(stored.get(k) == json.loads(json.dumps(v)) for k, v in wrote.items())


def _cpu_origin(backend: Any, src: str) -> str:
    """Whose CPU expert times a new study got: the hardware profile --gpu names, that profile completed here
    (its source names both parts), or this run's own measurement."""
    from advisor.hardware.profiles import other_cpu

    stored = getattr(backend.profile, "cpu_experts", None)
    if not stored:
        return "measured by this run"
    where = other_cpu(stored.get("host"))
    if src != stored["source"]:  # `CpuProfile.filled` keeps the source only when it added nothing
        return f"from the hardware profile {backend.profile.name!r}{where}, completed by this run"
    return f"from the hardware profile {backend.profile.name!r}{where}"


_COMPARED = (("model_fingerprint", "model"), ("task", "task"), ("space_fingerprint", "search space"),
             ("data_sha256", "--data file"), ("budget_bytes", "memory budget"), ("objectives", "objectives"),
             ("mode", "--mode"), ("device_type", "--device type"))


def check_resume(name: str, stored: dict[str, Any], keys: dict[str, Any]) -> None:
    """Refuse to mix incomparable trials in one study: resuming study `name` (its stored user attributes
    `stored`) with another hardware profile, model, task, search space, budget, objectives, trial mode or device
    type. A key missing from `keys` (the model's fingerprint before the model loads) or from `stored` (a study
    from before it was stored) is not compared."""
    if not stored:
        return
    if "hardware" in keys:
        _check_hardware(name, stored, keys)
    for key, what in _COMPARED:
        if key in stored and key in keys and stored[key] != keys[key]:
            if key == "budget_bytes":
                was, now = (format_bytes(b, 2) if b else "none" for b in (stored[key], keys[key]))
                if was == now:  # --budget 2.73MiB against a study whose budget was 50% of a model: 2.73 MiB each
                    was, now = (f"{int(b)} bytes" for b in (stored[key], keys[key]))
                    now += f", both {format_bytes(stored[key], 2)} to two decimals"
                shown = f"{was}; this run's: {now}"
                if stored.get(BUDGETS_GIVEN) and stored[key]:  # a resume without them: say what sets its budget
                    given = shlex.quote(",".join(stored_spelling(b) for b in str(stored[BUDGETS_GIVEN]).split(",")))
                    raise UserError(f"study {name!r} was run with another {what} ({shown}): it was tuned with "
                                    f"--budgets {given}, whose largest is its budget; resume it with --budgets "
                                    f"{given} (or --budget {int(stored[key])}B), choose a new --study name, or "
                                    f"delete it first (`advisor studies --delete {name}` with the same --storage)")
            elif key == "data_sha256":  # the file is shown by its path, stored with the evaluation settings
                path = (stored.get("evaluation") or {}).get("data")
                shown = f"{path}, sha256 {stored[key][:12]}" if stored[key] else "none: the task's own data"
            else:  # a fingerprint is shown by the name stored beside it
                named = {"model_fingerprint": "model", "space_fingerprint": "space"}.get(key, key)
                shown = stored.get(named)
                if named != key and shown is not None and shown == keys.get(named):
                    # an edited copy keeps the name (the README's tiny.toml is quick.toml with one line changed):
                    # "another search space (quick)" read as a contradiction
                    shown = f"also named {shown!r}, with other contents"
            raise UserError(f"study {name!r} was run with another {what} ({shown}); resume it with the same "
                            f"settings, choose a new --study name, or delete it first (`advisor studies --delete "
                            f"{name}` with the same --storage)")


def create_or_load(storage: Any, name: str, metrics: Sequence[str], directions: Sequence[str], sampler: Any) -> Any:
    import optuna

    try:
        study = optuna.create_study(study_name=name, storage=storage, sampler=sampler, directions=list(directions),
                                    load_if_exists=True)
    except ValueError as e:  # e.g. stored directions differ
        raise UserError(f"cannot resume study {name!r}: {e}; choose a new --study name") from e
    except LookupError as e:  # a stored direction Optuna has no name for (a garbled row)
        raise _unreadable_study(name, e) from e
    if [d.name.lower() for d in study.directions] != list(directions):
        raise UserError(f"study {name!r} optimises {len(study.directions)} objectives in other directions; "
                        "choose a new --study name")
    try:  # every stored trial decoded once, here (Optuna keeps the finished ones): a row garbled in Optuna's own
        done = [t for t in study.get_trials(deepcopy=False) if t.values is not None]  # tables (a choice index past
        # its list, an unknown state, a NULL value: Optuna's assert) was Optuna's error, later; what it decodes
        # without checking (text in a value column, metric names that are not a list) is checked here
        checked_metric_names(study.metric_names or [])
        for t in done:
            check_objective_values(t.values)
    except (LookupError, TypeError, ValueError, AssertionError) as e:
        raise _unreadable_study(name, e) from e
    if not study.metric_names:
        with contextlib.suppress(Exception):
            study.set_metric_names(list(metrics))
    return study


def _unreadable_study(name: str, e: BaseException) -> UserError:
    """The one line for a study to resume whose stored rows Optuna cannot decode (damaged or edited)."""
    reason = storage_errors.driver_reason(e) if str(e) else "a stored value Optuna cannot decode"
    return UserError(f"cannot resume study {name!r}: a stored trial cannot be read ({reason}); the database was "
                     f"damaged or edited - choose a new --study name, or delete the study first (`advisor studies "
                     f"--delete {name}` with the same --storage)")


@contextlib.contextmanager
def _study_lock(engine: Any, name: str, what: str = "front") -> Iterator[None]:
    """Serialise the study's front writers (or its seeding: reading, completing and storing back the CPU expert
    times) across workers: on PostgreSQL an advisory lock per study and purpose; on a SQLite file a file lock
    beside it (`locks.sqlite_lock`: the file's turn `<file>.lock` for the front, `<file>.seed.lock` for the
    seeding, which may measure for seconds; each one for the whole file, re-entered, not waited on for ever,
    when taken again inside itself - another study); an in-memory database has one process, so no lock. On
    PostgreSQL a wait for either is given up on once its holder's run has sent the server nothing for
    `ADVISOR_PG_WAIT_S` (`locks.advisory_lock`); the seed lock's holder, which measures without the server,
    beats on its lock session meanwhile. On a SQLite file the seeding turn's holder beats in a file beside it
    (`<file>.seed.beat`), and a wait for it is given up on once that has not changed for its busy timeout
    (`locks.sqlite_lock`); a wait for its turn ends after its busy timeout."""
    if engine.dialect.name != "postgresql":
        with locks.sqlite_lock(engine.url, "seed" if what == "seed" else ""):  # a no-op for in-memory SQLite
            yield
        return
    import zlib

    key = zlib.crc32(f"advisor_{what}:{name}".encode())
    # the seed lock is held while a worker measures the CPU expert times (minutes for a big model on a slow
    # CPU), sending nothing: its lock session beats meanwhile, so a waiter tells a measuring holder from a
    # paused one; the front lock's holder works on the database while it holds it
    with (engine.connect() as c,
          locks.advisory_lock(c, key, f"the {what} lock of study {name!r}", beat=what == "seed")):
        yield


def front_points(study: Any) -> list[FrontPoint]:
    """`study.best_trials` (feasible, non-dominated) as front points with configs, values and sources."""
    meta = study.user_attrs
    names = list(study.metric_names or meta.get("objectives", {}))
    return [trial_point(study.study_name, meta, names, t.number, t.values, t.user_attrs, t.params)
            for t in sorted(study.best_trials, key=lambda t: t.number)]


def trial_counts(trials: Sequence[Any]) -> dict[str, int]:
    """The counts of a study's trials its front's title gives (`advisor.tune.display.front_counts`): finished,
    over budget among them, failed, and of the failed those queued again (`TuneResult`'s names)."""
    from optuna.trial import TrialState

    complete = [t for t in trials if t.state == TrialState.COMPLETE]
    failed = {t.number for t in trials if t.state == TrialState.FAIL}
    return {"n_complete": len(complete), "n_failed": len(failed),
            "n_retried": len({t.user_attrs.get("retry_of", t.system_attrs.get("failed_trial")) for t in trials}
                             & failed),
            "n_infeasible": sum(1 for t in complete if t.user_attrs.get("feasible") is False)}


def save_study_front(study: Any, engine: Any) -> list[FrontPoint]:
    """Store the study's front. Read under the lock: a front read before it (while another worker held it to
    store a front with its newer trial) would overwrite that front and drop the other worker's trial. Done again
    where a PostgreSQL restart cut it (`redo_when_cut`; the lock went with the session): the front is read
    afresh and replaced in one transaction, so a redo leaves no half-written front."""
    def store() -> list[FrontPoint]:
        with _study_lock(engine, study.study_name):
            points = front_points(study)
            save_front(engine, study.study_name, points, touch=True)  # (`advisor studies`' updated: a trial finished)
        return points

    return redo_when_cut(store)


def _check_decoding(study: Any, backend: Any) -> None:
    """Refuse to resume a study whose trials decoded another number of denoising steps per block than this run
    would (with model, task and space the same): TIDE's schedule and the measured times depend on it. Studies of
    DiffusionGemma stored before 2026-12-05 counted the encoder pass that opens a canvas as a step (one more);
    the stored decoding is the only place that says it, so it is compared once the model has loaded. Nor one of
    DiffusionGemma whose trials' decoding lacks the mark of how steps are counted (`STEPS_COUNTED`, stored since
    2026-12-05): block_aware then took the encoder pass for a step and fidelity scored another canvas."""
    import optuna

    decoding = getattr(backend, "decoding", None)  # (a closed-form test backend decodes nothing)
    if not decoding:
        return
    for t in study.get_trials(deepcopy=False, states=(optuna.trial.TrialState.COMPLETE,)):
        stored = (t.user_attrs.get("config") or {}).get("decoding") or {}
        if "steps_per_block" in stored:
            break
    else:
        return
    if stored["steps_per_block"] != decoding["steps_per_block"]:
        raise UserError(f"study {study.study_name!r}: its trials decoded {stored['steps_per_block']} denoising steps "
                        f"per block, this run decodes {decoding['steps_per_block']} (a DiffusionGemma study stored "
                        "before 2026-12-05 counted the encoder pass as a step): its TIDE schedules and times would "
                        "not compare; use a new --study name")
    key, mark = STEPS_COUNTED
    family = (getattr(backend, "model_meta", None) or {}).get("family")
    if family == "diffusion_gemma" and stored.get(key) != mark and decoding.get(key) == mark:
        raise UserError(f"study {study.study_name!r}: its DiffusionGemma trials were stored before 2026-12-05 (their "
                        "decoding does not say how it counted denoising steps), when block_aware took the encoder "
                        "pass for a step and fidelity scored another canvas than the one decoded: its trials and "
                        "this run's would not compare; use a new --study name")


def _check_reference(study: Any) -> None:
    """Refuse to resume a study whose trials' fidelity compared with another full-precision reference than this
    run's. Before 2026-12-07 a resident fused-experts model's reference ran transformers' default experts kernel
    (grouped_mm), not the advisor seam every plan computes through: a bf16 DiffusionGemma's own bf16 plan agreed
    0.97 on top-1 with it, 1.000 with this run's, so one plan's earlier and later trials scored apart. Such a
    study stores no `FIDELITY_REFERENCE_KEY`; one of a model whose experts are a list of modules (transformers'
    kernel is not theirs), or whose finished trials measured no fidelity resident (over budget: placeholders;
    offloaded: its reference was the seam's already), is resumed as before."""
    import optuna

    stored = study.user_attrs
    if FIDELITY_REFERENCE_KEY in stored or (stored.get("model_meta") or {}).get("layout") != "fused":
        return

    def scored_resident(sources: dict[str, str]) -> bool:
        """Fidelity measured (an over-budget or out-of-memory trial's is a placeholder, "not-run:...") on the
        model loaded resident: an offloaded load's counted peak holds its activation allowance, said in the
        source since before studies stored the allowance itself (`_allowance_meta`, 2026-12-05)."""
        return (str(sources.get("fidelity_top1", "")).startswith("measured")
                and "activation-allowance" not in str(sources.get("peak_gpu_bytes", "")))

    done = study.get_trials(deepcopy=False, states=(optuna.trial.TrialState.COMPLETE,))
    if any(scored_resident(t.user_attrs.get("sources") or {}) for t in done):
        raise UserError(f"study {study.study_name!r}: its trials' fidelity (top-1 agreement, KL) compared with a "
                        "full-precision reference computed by transformers' default experts kernel (stored before "
                        "2026-12-07), this run's with one computed through the advisor seam, as every plan is: "
                        "one plan scores apart under the two; use a new --study name")


def _reference_mark(stored: dict[str, Any]) -> dict[str, Any]:
    """`FIDELITY_REFERENCE_KEY` for a study stored before it that `_check_reference` let resume: its trials from
    this run on compare with the seam's reference. Unmarked, one whose first trials had not finished (interrupted,
    failed) was refused on its next resume for the very trials this run scored through the seam."""
    return {FIDELITY_REFERENCE_KEY: FIDELITY_REFERENCE} if stored and FIDELITY_REFERENCE_KEY not in stored else {}


def check_resumable(study: Any, backend: Any, meta: dict[str, Any], sampler: str) -> None:
    """Every refusal of resuming `study` (its stored attributes and trials) with this run's `meta`
    (`_study_meta`), model (`backend`: its decoding) and sampler - the run's, or the stored one a run with nothing
    to run stands on (`advisor.tune.shortcut`)."""
    check_resume(study.study_name, study.user_attrs, meta)
    _check_reference(study)
    _check_decoding(study, backend)
    _check_constraint_names(study, sampler)


def _check_constraint_names(study: Any, sampler: str) -> None:
    """Optuna's GP sampler needs one set of constraint names on every finished trial. Studies stored before
    every trial recorded both (memory budget, fidelity floor) mix sets, and the sampler stopped the run with a
    traceback once past its start-up trials: refused in one line before anything runs."""
    import optuna

    if sampler_name(sampler) != "gp":
        return
    done = study.get_trials(deepcopy=False, states=(optuna.trial.TrialState.COMPLETE,))
    names = {tuple(sorted(t.constraints)) for t in done}
    if len(names) > 1:
        # (optuna-dashboard's list format reads as constraint "0": not a name a user would know)
        shown = " and ".join(sorted({", ".join(k for k in n if not k.isdigit()) or "none" for n in names}))
        raise UserError(f"study '{study.study_name}' holds trials stored with different constraints ({shown}; "
                        "stored by an earlier version), which the gp sampler cannot read; resume it with "
                        "--sampler tpe, nsga2 or random, or start a new --study name")


def run_tune(
    backend: Backend,
    space: SearchSpace,
    opts: TuneOptions,
    *,
    budget_bytes: int | None,
    profile: Any = None,
    on_trial: Callable[[Any, Any, Objective], None] | None = None,
    on_start: Callable[[Any, Objective], None] | None = None,
    on_stage: Callable[[str, int | None], None] | None = None,
    on_seeded: Callable[[int | None], None] | None = None,
) -> TuneResult:
    """Run `opts.n_trials` trials (or up to `opts.total_trials` finished ones, or until `opts.timeout`) of the
    study, resuming it if it exists. Ctrl-C/SIGTERM end the run cleanly (`TuneResult.interrupted`).
    `on_seeded(seed)` is told the seed the sampler draws with once this run's number is taken (before
    `on_start`): `opts.seed` for a study's first run, `opts.seed + k` for a run with k runs before it."""
    url = urls.normalize_url(opts.storage, create_dirs=False)
    created: list[bool] = []  # [whether this run creates the SQLite file], once it holds the seeding turn
    tuning: list[tuple[Any, Any]] = []  # [(its storage, the study)], once opened
    # the run's engines name it to PostgreSQL (`connections.named_run`): a worker waiting for a lock this run holds
    # judges its activity by this run's sessions, not by the other runs of its process (threads) or of its pid and
    # host
    with (StopOnSignal() as stop, stop_waiting_when(lambda: stop.requested), watch_answers(),
          connections.named_run()):
        try:
            return _run_tune(stop, backend, space, opts, budget_bytes=budget_bytes, profile=profile,
                             on_trial=on_trial, on_start=on_start, on_stage=on_stage, on_seeded=on_seeded,
                             created_file=created, tuning=tuning)
        except Exception as e:  # the database failed mid-run (a server stopped, a disk full): one line naming it
            if tuning and not isinstance(e, UserError) and (isinstance(e, StudyRowGone) or _deleted(*tuning[0])):
                raise UserError(f"study {tuning[0][1].study_name!r} was deleted (`advisor studies --delete`) while "
                                "this worker tuned it; it stopped, writing nothing more of it") from e
            # (also under the UserError of tables a new file had no room for)
            failure = storage_errors.storage_failure(e, url)
            if (failure is not None and created and created[0] and not storage_errors.is_locked_error(e)
                    and st.discard_unfinished(url)):  # a new file with nothing finished: no half-made study left
                raise storage_errors.storage_failure(e, url, removed=True) from e
            if failure is not None and stop.requested:  # Ctrl-C/SIGTERM ended a wait for the server (`reconnect`;
                raise KeyboardInterrupt from None  # also opening the storage, a UserError): the interrupt's line
            if failure is None or isinstance(e, UserError):
                raise
            raise failure from e


def _run_tune(
    stop: StopOnSignal,
    backend: Backend,
    space: SearchSpace,
    opts: TuneOptions,
    *,
    budget_bytes: int | None,
    profile: Any,
    on_trial: Callable[[Any, Any, Objective], None] | None,
    on_start: Callable[[Any, Objective], None] | None,
    on_stage: Callable[[str, int | None], None] | None,
    on_seeded: Callable[[int | None], None] | None = None,
    created_file: list[bool] | None = None,
    tuning: list[tuple[Any, Any]] | None = None,
) -> TuneResult:
    import optuna
    from optuna.trial import TrialState

    from advisor.results.store import engine_for

    optuna.logging.set_verbosity(optuna.logging.WARNING)
    t0 = time.perf_counter()
    space.check_mode(opts.mode)
    metrics = list(space.objectives)
    directions = [space.objectives[m] for m in metrics]
    name = opts.study_name or study_name_for(opts.storage, backend.model_name, backend.task_name, space.name)
    # a budget that no format fits is refused before anything is written
    fit = BudgetFit(space, backend.shape, budget_bytes, backend.calibration_counts)
    url = urls.normalize_url(opts.storage)
    # a SQLite file's seeding turn is taken before the file is opened, not once its study is loaded: a worker
    # that had opened a file another run had just created held no turn until then, so that run, failing to
    # write, removed the file (`discard_unfinished`) under it (re-entered by `_study_lock` below)
    with locks.sqlite_lock(url, "seed"):
        path = urls.sqlite_path(url)
        if created_file is not None:
            created_file.append(path is not None and not path.exists())  # this run creates it
        storage = st.open_storage(opts.storage, heartbeat_interval=opts.heartbeat_interval,
                                  grace_period=opts.grace_period, max_retry=opts.max_retry)
        engine = engine_for(url)
        sampler = make_sampler(opts.sampler, opts.seed, len(metrics), population_size=opts.population_size)
        study = redo_when_cut(lambda: create_or_load(storage, name, metrics, directions, sampler))  # (found, if made)
        if tuning is not None:
            tuning.append((storage, study))
        meta = _study_meta(backend, space, budget_bytes, profile, opts.sampler, opts.mode, opts.budgets)
        check_resumable(study, backend, meta, opts.sampler)

        wrote: dict[str, Any] = {}  # the new study's attributes a try of `seed_study` below wrote

        def seed_study() -> tuple[bool, int | None, str, str, BudgetFit]:
            """Take this run's number, store a new study's attributes, queue its seeded points: under the study's
            seed lock, done again whole where a PostgreSQL restart cut it (`redo_when_cut`; the lock went with the
            cut): each step reads what is stored first - a queued point found is not queued again, a run number
            already taken is passed over (a number skipped, never one shared). A redo that finds the attributes an
            earlier try of this run stored (the cut came after their commit) still has this run as the study's
            creator: its CPU price note said the study's "stored measurement" of a study it had just made."""
            fit_now = fit
            with _study_lock(engine, study.study_name, "seed"):  # workers starting together seed the study once
                stored = study.user_attrs
                created = not stored or _stored_as_written(stored, wrote)
                # this run's number, taken under the lock: unique per worker (a study from before it was
                # counted: 1 if begun)
                run = int(stored.get("runs", 1 if study.get_trials(deepcopy=False) else 0))
                new = {**meta, **_cpu_meta(backend), **_allowance_meta(backend)} if not stored else {}
                wrote.update(new)
                with _attrs_held(storage, study._study_id, of="study"):  # a new study's ~20: one commit
                    record = {LOAD_RECORD: opts.load_record} if opts.load_record else {}
                    for k, v in {**new, **_not_queued(stored, space, backend.shape, opts.budgets), **record,
                                 **_reference_mark(stored), "runs": run + 1}.items():
                        study.set_user_attr(k, v)
                seed = opts.seed + run if opts.seed is not None else None
                if run and seed is not None:  # a resume or another worker: seeded anew, or it repeats earlier
                    study.sampler = make_sampler(opts.sampler, seed, len(metrics),  # draws
                                                 population_size=opts.population_size)
                cpu_note = _price_cpu(study, backend, created)
                act_note = "" if created else allowance_note(study.user_attrs, backend)
                drawn = [{**t.system_attrs.get("fixed_params", {}), **t.params}  # (a queued trial's: fixed)
                         for t in study.get_trials(deepcopy=False)]
                # begun before the hot fraction or the formats were drawn within the budget: drawn as its trials
                # were (`draws_hot_blind`, `draws_formats_blind`)
                fill_hot = not ("hot_fraction" in fit_now.fills and holds_blind_hot_draws(drawn))
                fill_formats = not (any(k.startswith("fmt_g") for k in fit_now.fills)
                                    and holds_blind_format_draws(drawn))
                if not (fill_hot and fill_formats):
                    fit_now = BudgetFit(space, backend.shape, budget_bytes, backend.calibration_counts,
                                        fill_hot=fill_hot, fill_formats=fill_formats)
                enqueue = _enqueue_once(study)
                if opts.warm_start:
                    for p in fit_now.warm_start():
                        enqueue(p, {"seeded": "warm-start"})
                if opts.budgets:
                    from advisor.baselines import baseline_keys
                    from advisor.results.sqlite_storage import queue_trial
                    from advisor.tune.baseline_trials import baseline_trials, budget_points

                    for spec, p in budget_points(fit_now, opts.budgets):
                        enqueue(p, {"seeded": f"budget {spec}"})
                    have = {k for t in study.get_trials(deepcopy=False) for k in baseline_keys(t.user_attrs)}
                    for attrs in baseline_trials(space, backend.shape, opts.budgets, have):
                        queue_trial(study, {}, attrs)
            return created, seed, cpu_note, act_note, fit_now

        created, seed, cpu_note, act_note, fit = redo_when_cut(seed_study)
    registry_fields = {k: meta[k] for k in REGISTRY_FIELDS}
    create_tables(engine)  # the study's row for `advisor studies` before anything is printed: an interrupt while
    register_study(engine, name, **registry_fields)  # the header prints left it seeded, listed as `model ?`
    if on_seeded is not None:  # outside the lock: a slow reader of the output holds up no other worker
        on_seeded(seed)

    objective = Objective(stop.measuring(backend), space, budget_bytes=budget_bytes, eval_cache=EvalCache(engine),
                          study_name=name, profile=profile, mode=opts.mode, on_stage=on_stage,
                          stop_requested=lambda: stop.requested, fill_hot=not fit.draws_hot_blind,
                          fill_formats=not fit.draws_formats_blind)
    if on_start is not None:
        on_start(study, objective)

    ran = 0

    def after_trial(study: Any, trial: Any) -> None:
        nonlocal ran
        ran += trial.number not in stop.interrupted_trials
        if trial.state == TrialState.COMPLETE:
            save_study_front(study, engine)
        if on_trial is not None:
            on_trial(study, trial, objective)

    dead = fail_dead_workers_trials(study, storage)  # before counting: a killed worker's trial is not running any more
    n_trials = opts.n_trials
    callbacks: list[Callable[[Any, Any], None]] = [after_trial, stop.stop_if_requested]
    if opts.total_trials is not None:  # the study ends with this many finished trials, whoever runs them
        done = len(study.get_trials(deepcopy=False, states=(TrialState.COMPLETE,)))
        n_trials = max(0, opts.total_trials - done)
        callbacks.append(optuna.study.MaxTrialsCallback(opts.total_trials, states=(TrialState.COMPLETE,)))
    elsewhere: list[int] = []
    if n_trials and not stop.requested:
        func = _attrs_in_one_commit(storage, stop.wrap(objective))
        if storage.get_heartbeat_interval() is None:  # a heartbeat-less worker's trials: never stamped by others
            func = _marked_without_heartbeat(storage, func)
        elsewhere = _optimize(study, func, n_trials, opts.timeout, callbacks, lambda: stop.requested)
    requeue(study, stop.interrupted_trials)
    dead += fail_dead_workers_trials(study, storage)  # a worker killed while this one ran: no trial left RUNNING for it
    trials = study.get_trials(deepcopy=False)
    front = save_study_front(study, engine)
    complete = [t for t in trials if t.state == TrialState.COMPLETE]
    register_study(engine, name, **registry_fields, n_complete=len(complete))
    plans = {t.user_attrs.get("plan_fingerprint") for t in complete if t.user_attrs.get("feasible", True)}
    plans.discard(None)
    return TuneResult(
        study_name=name, storage_url=url, front=front, metrics=metrics, directions=directions, **trial_counts(trials),
        n_trials_run=ran, interrupted=stop.requested, counters=dict(objective.counters),
        distinct_plans=len(plans), elapsed_s=time.perf_counter() - t0,
        n_waiting=sum(t.state == TrialState.WAITING for t in trials),
        waiting_kinds=queued_kinds([t for t in trials if t.state == TrialState.WAITING]),
        cpu_note=cpu_note, finished_elsewhere=elsewhere,
        allowance_note=act_note,
        dead_workers=sorted(set(dead)),
        unrun_over_budget=list(objective.unrun_over_budget),
    )


def _deleted(storage: Any, study: Any) -> bool:
    """Whether `study` is gone from `storage`: deleted (`advisor studies --delete`) under this worker - one between
    two trials, or running without heartbeats, sends none, so the delete does not wait for it, and its next write
    fails. False where the database cannot say (a server gone: that error is the one to tell)."""
    try:
        return storage.get_study_name_from_id(study._study_id) != study.study_name
    except KeyError:
        return True
    except Exception:
        return False


def fail_dead_workers_trials(study: Any, storage: Any) -> list[int]:
    """Fail, and queue again (the storage's stale-trial callback), the trials whose worker stopped sending its
    heartbeat; their numbers. Optuna does this only when a worker starts another trial, so a study whose last
    trials were done when a worker was killed kept that worker's trial RUNNING for ever, even across resumes."""
    import optuna
    from optuna.trial import TrialState

    trials = study.get_trials(deepcopy=False, states=(TrialState.RUNNING,))
    running = {t._trial_id: t.number for t in trials}
    if not running:
        return []
    _first_heartbeats(storage, trials)
    optuna.storages.fail_stale_trials(study)
    failed = {t._trial_id for t in study.get_trials(deepcopy=False, states=(TrialState.FAIL,))}
    return sorted(n for i, n in running.items() if i in failed)


NO_HEARTBEAT = "advisor:no_heartbeat"
"""Trial system attribute of a trial run by a worker without heartbeats (`TuneOptions(heartbeat_interval=None)`):
its silence is no sign that its worker died, so no other worker stamps it (`_first_heartbeats`)."""


def _attrs_held(storage: Any, owner_id: int, of: str = "trial") -> contextlib.AbstractContextManager[None]:
    """The block's attribute writes of trial (or study, `of`) `owner_id` in one transaction at its end
    (`HeartbeatStorage.attrs_in_one_commit`), not one each; another storage (a test's in-memory one) writes them
    as they come."""
    batched = getattr(storage, "attrs_in_one_commit", None)
    return contextlib.nullcontext() if batched is None else batched(owner_id, of=of)


def _attrs_in_one_commit(storage: Any, func: Callable[[Any], Any]) -> Callable[[Any], Any]:
    """`func`, its trial's attributes (results, constraints) written in one transaction when it returns or raises,
    before Optuna finishes the trial (`_attrs_held`)."""
    def run(trial: Any) -> Any:
        with _attrs_held(storage, trial._trial_id):
            return func(trial)

    return run


def _marked_without_heartbeat(storage: Any, func: Callable[[Any], Any]) -> Callable[[Any], Any]:
    """`func`, marking each trial `NO_HEARTBEAT` first (milliseconds after Optuna created it)."""
    def run(trial: Any) -> Any:
        storage.set_trial_system_attr(trial._trial_id, NO_HEARTBEAT, True)
        return func(trial)

    return run


def _first_heartbeats(storage: Any, trials: Sequence[Any]) -> None:
    """A heartbeat, stamped now, for each of these running trials that has none. Optuna writes a trial's first
    heartbeat from a thread started after the trial is created; a worker killed in between left a trial that no
    stale check judges (they compare heartbeats), RUNNING for ever. Stamped, it is failed once the grace period
    passes without a beat from its worker; a live worker's own beats update the stamp (a concurrent first
    write is one row: Optuna's `record_heartbeat` ignores the duplicate).

    Not stamped: a trial of a worker that runs without heartbeats (marked `NO_HEARTBEAT`: stamped, it was failed
    as stale while that worker ran it), nor one younger than a heartbeat interval (such a worker marks its trial
    just after Optuna creates it; a worker with heartbeats has beaten by then)."""
    import datetime

    from sqlalchemy import bindparam, text

    interval = storage.get_heartbeat_interval()
    if interval is None:  # no heartbeats in this run: nothing is judged stale
        return
    settled = datetime.datetime.now() - datetime.timedelta(seconds=interval)
    trial_ids = [t._trial_id for t in trials if not t.system_attrs.get(NO_HEARTBEAT)
                 and t.datetime_start is not None and t.datetime_start < settled]
    if not trial_ids:
        return
    q = text("SELECT trial_id FROM trial_heartbeats WHERE trial_id IN :ids").bindparams(
        bindparam("ids", expanding=True))
    with storage.engine.connect() as c:
        beating = {int(i) for (i,) in c.execute(q, {"ids": trial_ids})}
    for trial_id in set(trial_ids) - beating:
        storage.record_heartbeat(trial_id)


QUEUED_KINDS = ("warm start", "--budgets points", "baselines", "retries")


def queued_kinds(trials: list[Any]) -> tuple[str, ...]:
    """What queued `trials` are, from what enqueued them, in `QUEUED_KINDS` order: a retry (`retry_of`, or Optuna's
    `failed_trial` for a dead worker's) whatever it retries, a `--budgets` baseline (`baseline`), or a seeded point
    (`seeded`: "warm-start", "budget SPEC"); a trial queued by none of these (by hand, through Optuna) adds nothing."""
    kinds = set()
    for t in trials:
        seeded = str(t.user_attrs.get("seeded", ""))
        if "retry_of" in t.user_attrs or "failed_trial" in t.system_attrs:
            kinds.add("retries")
        elif "baseline" in t.user_attrs:
            kinds.add("baselines")
        elif seeded == "warm-start":
            kinds.add("warm start")
        elif seeded.startswith("budget "):
            kinds.add("--budgets points")
    return tuple(k for k in QUEUED_KINDS if k in kinds)


def _enqueue_once(study: Any) -> Callable[[dict[str, Any], dict[str, Any]], None]:
    """`study.enqueue_trial(params, skip_if_exists=True)` with the study's trials read once: Optuna's
    `skip_if_exists` reads every trial of the study for each point, so seeding a few hundred `--budgets` points
    read the whole study hundreds of times (28 s of a 36 s resume of a tiny model, and quadratic in the study's
    size). The same rule as Optuna's: a trial whose fixed (else sampled) params have the same names and equal
    values (floats: `np.isclose`, atol 0) is the point already; points enqueued here count as existing too. Run
    under the study's seed lock, so no other worker enqueues meanwhile."""
    from numbers import Integral, Real

    import numpy as np

    from advisor.results.sqlite_storage import queue_trial

    seen = [dict(t.system_attrs.get("fixed_params", t.params)) for t in study.get_trials(deepcopy=False)]

    def same(a: dict[str, Any], b: dict[str, Any]) -> bool:
        if a.keys() != b.keys():
            return False
        for k, v in b.items():
            old = a[k]
            if not isinstance(v, type(old)):
                return False
            if isinstance(v, Real) and not isinstance(v, Integral):
                if not np.isclose(float(v), float(old), atol=0.0, equal_nan=True):
                    return False
            elif v != old:
                return False
        return True

    def enqueue(params: dict[str, Any], user_attrs: dict[str, Any]) -> None:
        if any(same(t, params) for t in seen):
            return
        queue_trial(study, params, user_attrs)
        seen.append(dict(params))

    return enqueue


def _optimize(study: Any, func: Callable[[Any], Any], n_trials: int | None, timeout: float | None,
              callbacks: list[Callable[[Any, Any], None]], stopped: Callable[[], bool]) -> list[int]:
    """`study.optimize`, going on when a trial this worker ran was finished meanwhile by another worker (its
    heartbeat judged stale, or claimed twice): Optuna's tell then raises (a ValueError, an AssertionError on a
    FAIL trial, or the storage's UpdateFinishedTrialError when it was finished just before); that trial keeps
    the other worker's result, and its number is returned for a one-line note."""
    from optuna.exceptions import UpdateFinishedTrialError

    started: list[int] = []
    elsewhere: list[int] = []
    raised: list[BaseException] = []  # the objective's own errors, which Optuna re-raises after its tell
    deadline = None if timeout is None else time.monotonic() + timeout

    def run(trial: Any) -> Any:
        started.append(trial.number)
        try:
            return func(trial)
        except UpdateFinishedTrialError:  # writing its results: finished elsewhere; Optuna's tell raises below
            return None
        except Exception as e:
            raised.append(e)
            raise

    while True:
        left = None if deadline is None else deadline - time.monotonic()
        todo = None if n_trials is None else n_trials - len(started)
        if (left is not None and left <= 0) or todo == 0:
            return elsewhere
        try:
            study.optimize(run, n_trials=todo, timeout=left, callbacks=callbacks, catch=(Interrupted,),
                           gc_after_trial=False, show_progress_bar=False)
            return elsewhere
        except (ValueError, AssertionError, UpdateFinishedTrialError) as e:
            last = started and study.get_trials(deepcopy=False)[started[-1]]
            if not last or not last.state.is_finished() or last.number in elsewhere or e in raised:
                raise
            elsewhere.append(last.number)
            if stopped():  # Ctrl-C/SIGTERM came during that trial
                return elsewhere
