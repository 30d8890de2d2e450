"""`advisor tune --trials N` run again on a study whose N trials are finished, answered without loading the model
(minutes for a real checkpoint): each run stores what its load gave (`load_record`: the model's fingerprint,
shape, decoding, activation allowance ...) under the key of everything the load depends on (`load_key`); a run
whose key is the stored one stands on those values (`StoredModel`) and makes the full path's own checks with them
(`advisor.tune.study.check_resumable`, the budget, `BudgetFit`, the space against the model), re-saves the front
and says the activation-allowance note. Anything missing or unsure - no key (a hub id, a file just changed, a
budget set by the free memory now), another key, a study stored before records were, --budgets to queue, a
running trial, a database other than a SQLite file - and the run loads the model as before."""

from __future__ import annotations

import contextlib
import json
from dataclasses import asdict, dataclass
from typing import Any

from advisor.tune.config import ModelShape


def load_key(spec: str, device: str, *, offload: bool | None, budget_bytes: int | None, budgets: tuple[str, ...],
             space: Any, task: Any, mode: str, host_bytes: int | None) -> dict[str, Any] | None:
    """Everything the load of `spec` and the model's values depend on, or None where any is unknown before the
    load: the checkpoint and environment (`load_signature`), and the run's settings that decide the offload
    (without a budget or --offload/--resident, the free memory now decides it) and the workload its probe and
    decoding take (task, the examples it holds, space)."""
    from advisor.models.signature import load_signature

    if space is None or task is None:
        return None
    fraction = space.budget_fraction if budget_bytes is None and not budgets else None
    if offload is None and budget_bytes is None and not budgets and not fraction and not spec.startswith("tiny:"):
        return None
    signature = load_signature(spec, device)
    examples = task.examples_sha256()  # read from a --data file or the hub's cache alike (a new revision there)
    if signature is None or examples is None:
        return None
    return _json({"signature": signature, "spec": spec, "offload": offload, "budget_bytes": budget_bytes,
                  "budgets": list(budgets), "fraction": fraction, "space": space.fingerprint, "task": task.name,
                  "examples": examples, "mode": mode, "host_bytes": host_bytes})


def load_record(key: dict[str, Any], backend: Any) -> dict[str, Any] | None:
    """What the loaded model (`backend`, a `ModelBackend`) gave that the checks of a resume compare, under `key`;
    None where a value is missing or not plain data (nothing is stored: the next run loads the model)."""
    with contextlib.suppress(AttributeError, TypeError, ValueError):
        loaded = backend.loaded
        return _json({"key": key, "model": backend.model_name, "fingerprint": backend.model_fingerprint,
                      "model_meta": backend.model_meta, "shape": asdict(backend.shape), "decoding": backend.decoding,
                      "offloaded": backend.offloaded, "activation_source": backend.activation_source,
                      "device": backend.device, "tokenizer": loaded.tokenizer is not None})
    return None


class Unsure(Exception):
    """A value the stored record does not hold: the run loads the model."""


@dataclass
class StoredModel:
    """The loaded model's values a resume's checks read (`ModelBackend`'s names), from a stored record."""

    model_name: str
    model_fingerprint: str
    model_meta: dict[str, Any]
    shape: ModelShape
    decoding: dict[str, Any]
    offloaded: bool
    activation_source: str
    device: str
    task_name: str
    task_data: str | None
    task_data_sha256: str | None
    tokenizer: bool

    @classmethod
    def of(cls, record: dict[str, Any], task: Any) -> StoredModel:
        """The record's values; `Unsure` where it lacks one, holds another shape or a value of another type than
        this code writes (a damaged or edited row: the checks that read it would end the run with a traceback)."""
        try:
            shape = ModelShape(**{k: tuple(v) if isinstance(v, list) else v for k, v in record["shape"].items()})
            model = cls(record["model"], record["fingerprint"], record["model_meta"], shape, record["decoding"],
                        record["offloaded"], record["activation_source"], record["device"], task.name,
                        getattr(task, "data", None), task.data_sha256, record["tokenizer"])
        except (KeyError, TypeError, AttributeError) as e:
            raise Unsure(f"the stored record is not one this code writes ({e!r})") from None
        if not model._typed():
            raise Unsure("the stored record holds a value of another type than this code writes")
        return model

    def _typed(self) -> bool:
        """Whether every value read from the record has the type `load_record` stores (JSON's, read back)."""
        from advisor.models import is_count
        from advisor.units import dtype_format

        s = self.shape
        per_layer = (s.num_experts, s.top_k, s.hidden, s.intermediate)
        return (all(isinstance(v, str) for v in (self.model_name, self.model_fingerprint, self.activation_source,
                                                 self.device, s.native_format))
                and dtype_format(s.native_format) == s.native_format  # bf16, fp16 or fp32, as `model_shape` gives
                and all(isinstance(v, bool) for v in (self.offloaded, self.tokenizer, s.staging))
                and all(is_count(v) for v in (s.resident_bytes, s.activation_bytes))
                and all(isinstance(t, tuple) and len(t) == len(s.num_experts) > 0 and all(map(is_count, t))
                        for t in per_layer)
                and isinstance(self.model_meta, dict) and isinstance(self.decoding, dict)
                and is_count(self.decoding.get("steps_per_block")) and self.decoding["steps_per_block"] > 0)

    def calibration_counts(self) -> dict[int, list[int]]:
        raise Unsure("calibration counts are measured by running the model")


@dataclass
class NothingToRun:
    """A finished study, checked as the full path checks it: its counts, front and the notes to print."""

    n_complete: int
    n_failed: int
    n_retried: int
    n_infeasible: int
    n_waiting: int
    waiting_kinds: tuple[str, ...]
    allowance_note: str
    front: list[Any]  # the stored front's points (`advisor.results.front.FrontPoint`), as saved now
    metrics: list[str]
    model: StoredModel  # what the header says of the model, as the full path's header says it of the loaded one
    space: Any  # the space as checked (a model without a tokenizer's: fidelity for accuracy)
    budget_bytes: int | None
    budget_note: str  # where the budget came from (`study_budget`)


def nothing_to_run(key: dict[str, Any] | None, name: str | None, space: Any, task: Any, opts: Any, *,
                   budget_bytes: int | None, budget_note: str, profile: Any) -> NothingToRun | None:
    """The study `name` this run (`opts`: --trials N, no --budgets) would leave as it is - N or more finished,
    none running, its stored record's key this run's `key` - checked, its front re-saved; else None: the run
    loads the model. A refusal the full path would make is raised (a UserError)."""
    from advisor.results import urls
    from advisor.results.registry import study_user_attrs
    from advisor.results.store import engine_for
    from advisor.tune.study import LOAD_RECORD

    if key is None or name is None or opts.total_trials is None or opts.budgets:
        return None
    url = urls.normalize_url(opts.storage, create_dirs=False)
    if urls.sqlite_path(url) is None:  # PostgreSQL: peers on other hosts (an in-memory SQLite holds no study)
        return None
    engine = engine_for(url)
    record = study_user_attrs(engine, name).get(LOAD_RECORD)  # plain SQL: {} where there is no such study
    if not isinstance(record, dict) or record.get("key") != key:
        return None
    try:
        return _check(record, engine, name, space, task, opts, budget_bytes, budget_note, profile)
    except Unsure:
        return None


def _check(record: dict[str, Any], engine: Any, name: str, space: Any, task: Any, opts: Any,
           budget_bytes: int | None, budget_note: str, profile: Any) -> NothingToRun | None:
    """`nothing_to_run` once the stored record is this run's: the full path's checks on its values."""
    import optuna
    from optuna.trial import TrialState

    from advisor.results import locks
    from advisor.results import storage as st
    from advisor.results.registry import register_study
    from advisor.tune.budget import BudgetFit, BudgetTooSmall, study_budget
    from advisor.tune.study import (
        REGISTRY_FIELDS,
        _study_meta,
        allowance_note,
        check_resumable,
        create_or_load,
        queued_kinds,
        save_study_front,
        trial_counts,
    )

    optuna.logging.set_verbosity(optuna.logging.WARNING)  # as the full path (`_run_tune`)
    model = StoredModel.of(record, task)
    if not model.tokenizer:  # as `advisor.commands.tune._load` takes it
        space = space.without_tokenizer(model.model_name)
    space.check_model(model.shape.n_layers, model.shape.min_experts)
    budget_bytes, budget_note = study_budget(budget_bytes, budget_note, opts.budgets, space, model.shape)
    try:  # a budget no format fits: refused by the full path, which names where a budget not given came from
        BudgetFit(space, model.shape, budget_bytes, model.calibration_counts)
    except BudgetTooSmall:
        raise Unsure("the full path says it") from None
    with locks.sqlite_lock(engine.url, "seed"):  # as the full path checks: not beside a worker seeding the study
        storage = st.open_storage(opts.storage, heartbeat_interval=opts.heartbeat_interval,
                                  grace_period=opts.grace_period, max_retry=opts.max_retry)
        metrics = list(space.objectives)
        study = create_or_load(storage, name, metrics, [space.objectives[m] for m in metrics], None)
        meta = _study_meta(model, space, budget_bytes, profile, opts.sampler, opts.mode)
        check_resumable(study, model, meta, opts.sampler)
        trials = study.get_trials(deepcopy=False)
    complete = [t for t in trials if t.state == TrialState.COMPLETE]
    if len(complete) < opts.total_trials or any(t.state == TrialState.RUNNING for t in trials):
        return None  # trials to run, or a worker's running (a dead one's is failed by the full path)
    front = save_study_front(study, engine)  # as the full path: repairs a kill between a trial's end and its save
    register_study(engine, name, **{k: meta[k] for k in REGISTRY_FIELDS}, n_complete=len(complete))
    waiting = [t for t in trials if t.state == TrialState.WAITING]
    return NothingToRun(**trial_counts(trials), n_waiting=len(waiting), waiting_kinds=queued_kinds(waiting),
                        allowance_note=allowance_note(study.user_attrs, model), front=front, metrics=metrics,
                        model=model, space=space, budget_bytes=budget_bytes, budget_note=budget_note)


def _json(value: Any) -> Any:
    """`value` as stored and read back (tuples as lists), so that a key compares equal to the stored one."""
    return json.loads(json.dumps(value))

