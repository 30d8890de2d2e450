"""Pick the configuration to run from stored Pareto fronts, under a memory budget and an accuracy floor.

Read-only and fast (no torch, no optuna): the fronts come from the project's own table
(`advisor.results.read.read_fronts`: stdlib sqlite3 for SQLite files, SQLAlchemy otherwise), and a relative
accuracy floor's reference from all the study's trials, as `report` reads them (`load_trials`: Optuna's tables,
by plain SQL). The answer always says why the chosen point beat its neighbours and where every number came
from; when nothing fits it names the closest points and what would have to change.
"""

from __future__ import annotations

import dataclasses
import math
import re
import shlex
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

from advisor.errors import UserError
from advisor.eval.stats import accuracy_text
from advisor.hardware.profiles import CATALOGUE, DEFAULT_PROFILE, HardwareProfile, format_bytes, priced_device
from advisor.models import spec_path
from advisor.results.config_view import (
    config_format,
    config_in_use,
    formats_in,
    miss_text,
    policy_text,
    precision_rank,
    quant_note,
    recorded_model,
    steps_counted_note,
)
from advisor.results.front import FrontPoint, format_metric, quality_metric, source_kinds
from advisor.results.urls import DEFAULT_STORAGE, storage_flag
from advisor.units import BUDGET_DIGITS, budget_text, digits_apart, names_text, size_argument

if TYPE_CHECKING:
    from advisor.results.trials import StudyTrials

PREFERENCES = ("transfer", "latency", "accuracy")
DEFAULT_MAX_DROP = 0.01
"""Without --min-accuracy/--max-accuracy-drop: stay within 1 accuracy point of the study's full-precision
point (`reference_point`) (the cheapest plan is otherwise always the least accurate one, e.g. int2)."""

# preference -> metrics ranked in order (first that the point has), smaller is better unless negated
# ("accuracy" is top-1 agreement with full precision when no point stores task accuracy: `Recommendation.quality`)
_RANK_KEYS: dict[str, tuple[tuple[str, int], ...]] = {
    "transfer": (("h2d_bytes_per_token", 1), ("transfer_ms_per_token", 1), ("accuracy", -1), ("latency_ms_per_token", 1)),
    "latency": (("time_per_token", 1), ("latency_ms_per_token", 1), ("transfer_ms_per_token", 1), ("h2d_bytes_per_token", 1), ("accuracy", -1)),
    # accuracy ties go to the fastest (time per token, where stored), then the fewest H2D bytes
    "accuracy": (("accuracy", -1), ("time_per_token", 1), ("h2d_bytes_per_token", 1), ("latency_ms_per_token", 1)),
}
_PREF_METRIC = {"transfer": "h2d_bytes_per_token", "latency": "latency_ms_per_token", "accuracy": "accuracy"}
_PREF_WORDS = {"transfer": "lowest H2D bytes/token", "latency": "lowest latency/token", "accuracy": "highest accuracy"}


def point_bytes(n: float, other: float | None = None) -> str:
    """A configuration's bytes (its peak, what it needs beyond a budget) as its stored values print them (3
    decimals, `format_metric`), with two more where `other` (the budget it is compared with) would read alike: the
    reasons said "uses 1.9 MiB" above a stored peak_gpu_bytes of 1.931 MiB."""
    return format_bytes(n, 3 if other is None else digits_apart(n, other, 3))


def _budget_bytes(budget: float, peak: float | None = None) -> str:
    """A budget's bytes alone, at `BUDGET_DIGITS` (more where `peak` would read alike)."""
    return format_bytes(budget, BUDGET_DIGITS if peak is None else digits_apart(budget, peak, BUDGET_DIGITS))


@dataclass
class Query:
    """What the user asked for."""

    budget_bytes: int | None = None
    gpu: HardwareProfile | None = None
    min_accuracy: float | None = None
    max_accuracy_drop: float | None = None
    prefer: str | None = None
    """None: transfer, or accuracy when every stored point fits the budget (transfer is then no constraint)."""
    model: str | None = None
    task: str | None = None
    study: str | None = None
    budget_given: str | None = None
    """`budget_bytes`' option as typed ("--budget 150KB"), shown beside its bytes (`budget_text`)."""

    @property
    def budget(self) -> int | None:
        if self.budget_bytes is not None:
            return self.budget_bytes
        if self.gpu is not None and self.gpu.gpu_memory_bytes > 0:  # not a CPU profile's host RAM
            return self.gpu.gpu_memory_bytes
        return None

    def budget_text(self, digits: int = BUDGET_DIGITS, source: bool = False) -> str:
        """The budget's bytes beside where it came from, as `advisor tune` shows it: "146.48 KiB (--budget 150KB)",
        "24.00 GiB (--gpu RTX 4090 24GB)" (`advisor.units.budget_text`); `source`: a GPU's memory with where its
        figure came from ("--gpu RTX 4090 24GB, catalogue (nominal)")."""
        assert self.budget is not None
        gpu = self.gpu
        given = self.budget_given if self.budget_bytes is not None else \
            f"--gpu {gpu.name}" + (f", {gpu.source}" if source else "") if gpu is not None else None
        return budget_text(self.budget, given, digits)


@dataclass
class Reference:
    """The full-precision point of a study that a relative accuracy floor is measured from."""

    study: str
    trial: int
    accuracy: float
    how: str  # why this point is the reference
    source: str | None = None  # how its accuracy was obtained (it may be off the front, so no candidate says)


@dataclass
class Candidate:
    point: FrontPoint
    floor: float | None
    problems: list[str] = field(default_factory=list)  # empty = feasible

    @property
    def feasible(self) -> bool:
        return not self.problems

    @property
    def label(self) -> str:
        return f"{self.point.study_name}#{self.point.trial_number}"


@dataclass
class Recommendation:
    query: Query
    chosen: Candidate | None
    ranked: list[Candidate]  # feasible, best first
    rejected: list[Candidate]
    references: dict[str, Reference]
    reasons: list[str]  # why the chosen one won, or what would have to change
    closest: list[dict[str, Any]] = field(default_factory=list)
    defaults: list[str] = field(default_factory=list)  # what was assumed for what the user did not say
    quality: str = "accuracy"  # what ranks as accuracy: "fidelity_top1" in a study that stores no accuracy

    def to_dict(self, tasks: dict[str, str] | None = None) -> dict[str, Any]:
        """JSON form for scripts (`advisor recommend --json`); `tasks`: study -> its task as the read-only commands
        head it (`advisor.results.read.read_task_text`), each point's `task_text` (its task name when not given)."""
        q = self.query
        tasks = tasks or {}
        return {
            "schema": "moe-advisor/recommendation@1",
            "query": {
                "budget_bytes": q.budget,
                "gpu": q.gpu.to_dict() if q.gpu else None,
                "min_accuracy": q.min_accuracy,
                "max_accuracy_drop": q.max_accuracy_drop,
                "prefer": q.prefer,
                "model": q.model,
                "task": q.task,
                "study": q.study,
            },
            "chosen": _point_dict(self.chosen, q, tasks) if self.chosen else None,
            "reasons": self.reasons,
            "alternatives": [_point_dict(c, q, tasks) for c in self.ranked[1:4]],
            "closest": self.closest,
            "references": {k: vars(v) for k, v in self.references.items()},
            "counts": {"feasible": len(self.ranked), "rejected": len(self.rejected)},
        }


def _point_dict(c: Candidate, q: Query, tasks: dict[str, str]) -> dict[str, Any]:
    p = c.point
    return {
        "study": p.study_name,
        "trial": p.trial_number,
        "model": p.model,
        "task": p.task,  # the name, as --task matches it
        "task_text": tasks.get(p.study_name, p.task),  # as the text answer heads it: why a task was not run
        "device": p.device,
        "config": config_in_use(p.config),  # no tau beside a policy without one
        "values": p.values,
        "sources": p.sources,
        "accuracy_floor": c.floor,
        "modelled_on_target": _modelled_transfer(p, q.gpu),
        "time_per_token_modelled_for": tuned_for(p) if _time_modelled(p) else None,
    }


def tuned_for(p: FrontPoint) -> str:
    """The GPU a point's time per token was modelled for at tune time: the study's --gpu profile (stored with
    the study), its device priced as `advisor.offload.timing.device_roofline` prices it (by name and memory)."""
    name = p.hardware.get("name")
    hw = dataclasses.replace(DEFAULT_PROFILE, name=name, memory_bytes=p.hardware.get("memory_bytes") or 0) \
        if name else None
    dev, _ = priced_device(hw)
    if hw is None:
        return f"{dev.gpu} (no --gpu at tune time)"
    return name if name == dev.gpu else f"{name}, device priced as {dev.gpu}"


def _time_modelled(p: FrontPoint) -> bool:
    """Whether a point's time per token was modelled (replay: for a GPU) rather than measured (a live trial:
    the wall clock of the forward on the trial's own device, which no GPU model priced)."""
    return "time_per_token" in p.values and not p.sources.get("time_per_token", "").startswith("measured:")


def time_basis(p: FrontPoint) -> str:
    """How a point's time per token was obtained, as the reasons name it: modelled for a GPU, or measured."""
    return f"modelled for {tuned_for(p)}" if _time_modelled(p) else f"measured on {p.device}"


def _other_gpu_note(rec: Recommendation) -> list[str]:
    """When --gpu names another GPU than the studies were tuned for and time per token matters, say so: a
    ranking by it (latency) uses the stored times (only the transfer is re-modelled, as bytes and copies alone
    allow); any other ranking picks from a front that time per token, as an objective, helped choose."""
    q = rec.query
    if q.gpu is None or not rec.ranked:
        return []
    by_time = _compared_by(q.prefer, rec.ranked[0].point) == "time_per_token"
    others = sorted({time_basis(c.point) for c in rec.ranked
                     if "time_per_token" in (c.point.values if by_time else c.point.objectives)
                     and c.point.hardware.get("name") != q.gpu.name})
    if not others:
        return []
    retune = f"re-tune with --gpu {q.gpu.name!r} into a new --study"
    if by_time:
        return [f"the stored time per token ranks these points and was {' / '.join(others)}, not for "
                f"the {q.gpu.name} (only the transfer on target is re-modelled for it); for time per token on the "
                f"{q.gpu.name}, {retune}"]
    return [f"the candidates come from the stored Pareto front, built with time per token (an objective) "
            f"{' / '.join(others)}, not for the {q.gpu.name}, so which configurations are on it depends on that "
            f"GPU; for the front on the {q.gpu.name}, {retune}"]


def _mixed_time_note(rec: Recommendation) -> list[str]:
    """When the feasible points come from studies of the model whose time per token was obtained differently -
    modelled for other GPUs or links (a study tuned again with `--gpu` after `advisor profile`, as the README
    suggests, beside the first one in the same database), or measured by a live study - say so: ranking, tie
    breaks and the next best's ratio then compare the pricing as much as the configurations, without a word."""
    bases: dict[str, set[str]] = {}
    for c in rec.ranked:
        if "time_per_token" in c.point.values:
            bases.setdefault(time_basis(c.point), set()).add(c.point.study_name)
    if len(bases) < 2:
        return []

    def studies(names: set[str]) -> str:
        shown = sorted(names)
        return ", ".join(shown[:3]) + (f" and {len(shown) - 3} more" if len(shown) > 3 else "")

    parts = "; ".join(f"{basis} in {studies(names)}" for basis, names in sorted(bases.items()))
    return [f"these points' time per token was obtained differently by study ({parts}), so across studies it "
            "compares how each was priced as well as the configurations; --study NAME ranks one study's points"]


def copies_per_token(p: FrontPoint) -> float | None:
    """Expert copies per token: recorded by newer studies; else recovered from the stored modelled transfer time
    and the link it names (time = bytes / bandwidth + copies x latency, the one formula); None if neither."""
    if "copies_per_token" in p.values:
        return p.values["copies_per_token"]
    m = re.search(r"bw=([\d.]+)GB/s,lat=([\d.]+)us", p.sources.get("transfer_ms_per_token", ""))
    t, nbytes = p.values.get("transfer_ms_per_token"), p.values.get("h2d_bytes_per_token")
    if m is None or t is None or nbytes is None or float(m[2]) <= 0:
        return None
    return max(0.0, (t - nbytes / (float(m[1]) * 1e9) * 1e3) / (float(m[2]) / 1e3))


def _modelled_transfer(p: FrontPoint, gpu: HardwareProfile | None) -> dict[str, Any] | None:
    """The point's counted bytes and copies per token over the target GPU's link, by the one transfer formula."""
    nbytes = p.values.get("h2d_bytes_per_token")
    if gpu is None or nbytes is None:
        return None
    copies = copies_per_token(p)
    note = (f"{copies:.3g} copies/token" if copies is not None
            else "copies per token not recorded: per-copy latency not included")
    return {
        "transfer_ms_per_token": gpu.transfer_ms(nbytes, copies=copies or 0.0),
        "copies_per_token": copies,
        "source": f"{gpu.transfer_source} {gpu.name} [{gpu.source}], {note}",
    }


# ------------------------------------------------------------------------------------------ loading


class NoFront(UserError):
    """The database reads, and holds no stored Pareto front for the study asked for (`load_points`): `export`
    then says what the trial asked for is, where it did not complete; no other refusal reads the database again."""


def load_points(storage: str = DEFAULT_STORAGE, study: str | None = None) -> list[FrontPoint]:
    """Stored front points; a missing, empty or foreign database is one clear UserError, one without a front for
    `study` (or any) `NoFront`."""
    from advisor.results.read import read_fronts

    url = storage.strip() or DEFAULT_STORAGE  # as `normalize_url` reads it: '' must not open an in-memory database
    try:
        points = read_fronts(url, study)
    except UserError:
        raise
    except Exception as e:  # driver errors, unreachable servers
        raise UserError(f"cannot read {url}: {type(e).__name__}: {str(e).splitlines()[0]}") from e
    if not points:
        what = f"study {study!r}" if study else "any study"
        # a mistyped name: say which studies do have a front (as `pareto` does), not only "run advisor tune"
        others = sorted({p.study_name for p in read_fronts(url, None)}) if study else []
        hint = (f" (studies with a front there: {names_text(others, study)})" if others
                else "; run `advisor tune` first")
        raise NoFront(f"no stored Pareto front for {what} in {url}{hint}; see `advisor studies`")
    return points


def load_trials(storage: str = DEFAULT_STORAGE) -> Callable[[str], StudyTrials | None]:
    """A reader of one study's complete trials (`advisor.results.trials.read_study_trials`: plain SQL, no optuna)
    in `storage`, for `recommend`'s `trials`; None for a study whose trials the database does not keep."""
    from advisor.results.trials import read_study_trials

    url = storage.strip() or DEFAULT_STORAGE  # as `load_points` reads it
    return lambda study: read_study_trials(url, study)


# ------------------------------------------------------------------------------------------ choosing


def _match(value: str, wanted: str | None) -> bool:
    return wanted is None or value == wanted or wanted.lower() in value.lower()


def _loaded_from(point: FrontPoint) -> Path | None:
    """The directory `point`'s study loaded its model from, absolute (`recorded_model`); None for a hub id, a
    built-in model or a directory that is not here."""
    meta = point.config.get("model_meta") if isinstance(point.config, dict) else None
    where, gone = recorded_model(point.model, meta)
    path = spec_path(where)
    return None if gone or not path.is_dir() else path.resolve()


def filter_points(points: list[FrontPoint], q: Query) -> list[FrontPoint]:
    """Points of the requested model/task/study; none left is a UserError listing what exists. `--model` is a
    stored model name (or part of one), or the directory as given to `tune` (`./ckpt`, an absolute path, `~/...`):
    the name a study stores for `tune ./ckpt` is `ckpt`, and `--model ./ckpt` matched none."""
    exact = q.model is not None and any(p.model == q.model for p in points)  # `bundled` beside `bundled-v2`
    here = spec_path(q.model) if q.model is not None and not exact else None
    directory = here.resolve() if here is not None and here.is_dir() else None

    def model_ok(p: FrontPoint) -> bool:
        if exact:
            return p.model == q.model
        return _match(p.model, q.model) or (directory is not None and _loaded_from(p) == directory)

    out = [p for p in points if model_ok(p) and _match(p.task, q.task) and (q.study is None or p.study_name == q.study)]
    if not out:
        asked = ", ".join(f"{k}={v!r}" for k, v in (("model", q.model), ("task", q.task), ("study", q.study)) if v)
        # a shared PostgreSQL database holds hundreds of studies: the ones most like the name asked, not all
        have = "; ".join(
            f"{k}: {names_text(sorted({getattr(p, a) for p in points}), wanted)}"
            for k, a, wanted in (("models", "model", q.model), ("tasks", "task", q.task),
                                 ("studies", "study_name", q.study))
        )
        raise UserError(f"no front point matches {asked}; stored {have}")
    models = sorted({p.model for p in out})
    if len(models) > 1:
        # ranking one model's bytes or time against another's answers nothing, and each study has its own floor:
        # the README's own flow (bundled, then a tiny fidelity study, in one database) chose a tiny random model
        where = f"--model {q.model!r} matches" if q.model else "the stored fronts are of"
        raise UserError(f"{where} {len(models)} models ({', '.join(models)}), whose configurations do not compare; "
                        "pass --model NAME or --study NAME")
    return out


def reference_point(points: list[FrontPoint], full: str | None = None,
                    trials: StudyTrials | None = None) -> Reference | None:
    """The study's full-precision point, by the rule `report` measures its accuracy changes with
    (`advisor.results.reference`), looked for among `trials` (all the study's complete trials, as `report` reads
    them: the reference may be dominated, off the front) where the database keeps them, else among `points`: a
    uniform plan of the study's 16-bit format (`full`, else `trials.full`, else `full_format` of the points: the one
    16-bit format they ran at, else the model's dtype), else of the other 16-bit format, else fp32; the
    lowest-numbered. Without one: the most accurate of the highest-precision uniform plans, else the most accurate
    point, and the reason says it is not full precision."""
    from advisor.results.reference import full_format, full_precision_reference

    def fmt_of(p: FrontPoint) -> str | None:
        return config_format(p.config)

    def ref(p: FrontPoint, how: str) -> Reference:
        return Reference(p.study_name, p.trial_number, p.values["accuracy"], how, p.sources.get("accuracy"))

    if not any("accuracy" in p.values for p in points):
        return None
    if trials is not None and not any("accuracy" in p.values for p in trials.points):
        trials = None  # (trials that disagree with their own front: the front's points, as without trials)
    where = "on the stored Pareto front" if trials is None else "in the study stores accuracy"
    with_acc = [p for p in (points if trials is None else trials.points) if "accuracy" in p.values]
    if not with_acc:
        return None
    if full is None and trials is not None:
        full = trials.full
    elif full is None:
        meta = next((m for p in points if isinstance(m := p.config.get("model_meta"), dict)), {})
        full = full_format(meta.get("dtype"), (fmt_of(p) for p in points))
    found = full_precision_reference(with_acc, full, fmt_of, lambda p: p.trial_number)
    if found is not None:
        p, fmt = found
        how = f"uniform {fmt} plan (the study's full precision)" if fmt == full else \
            f"uniform {fmt} plan (no uniform {full} point, the study's full precision, stores accuracy)"
        return ref(p, how)
    uniform = [(precision_rank(f), f, p) for p in with_acc if (f := fmt_of(p))]
    if uniform:
        best_rank = max(r for r, _, _ in uniform)
        top = [(f, p) for r, f, p in uniform if r == best_rank]
        fmt, p = max(top, key=lambda fp: fp[1].values["accuracy"])  # named as the point used (int8, fp8 tie)
        tied = sorted({f for f, _ in top})
        how = (f"uniform {fmt} plan (the highest-precision uniform plan in the study)" if len(tied) == 1 else
               f"uniform {fmt} plan (the most accurate of the study's highest-precision uniform plans, "
               f"{', '.join(tied)})")
        return ref(p, how + f"; note: no bf16/fp16/fp32 point {where}, so this is not full precision")
    return ref(max(with_acc, key=lambda p: p.values["accuracy"]),
               "most accurate point (the study stored no uniform-precision plan)")


def _sort_key(p: FrontPoint, prefer: str, quality: str = "accuracy") -> tuple[float, ...]:
    key = []
    for metric, sign in _RANK_KEYS[prefer]:
        v = p.values.get(quality if metric == "accuracy" else metric)
        key.append(math.inf if v is None else sign * v)
    return tuple(key)


def check_accuracy_fraction(name: str, value: float) -> None:
    """Refuse an accuracy option (`name`: --min-accuracy, --max-accuracy-drop) outside 0..1, echoed as typed
    (`5`, not `5.0`); a percentage (95 for 0.95) is told its fraction in the same line."""
    if 0.0 <= value <= 1.0:
        return
    hint = f"; for {value:g} % give {name} {value / 100:g} (or {value:g}%)" if 1.0 < value <= 100.0 else ""
    raise UserError(f"{name} {value:g} must be between 0 and 1 (accuracy is a fraction){hint}")


def recommend(points: list[FrontPoint], q: Query, full: dict[str, str] | None = None,
              trials: Callable[[str], StudyTrials | None] | None = None) -> Recommendation:
    """Choose from `points` (already loaded) for query `q`; `full`: a study's 16-bit format where the caller knows
    it from all its trials (`report`), else `reference_point` takes it from them or the points; `trials`: a study's
    complete trials (`load_trials`), read only where a relative accuracy floor needs the study's reference."""
    if q.prefer is not None and q.prefer not in PREFERENCES:
        raise UserError(f"unknown preference {q.prefer!r}; use one of: {', '.join(PREFERENCES)}")
    for name, v in (("--min-accuracy", q.min_accuracy), ("--max-accuracy-drop", q.max_accuracy_drop)):
        if v is not None:
            check_accuracy_fraction(name, v)
    points = filter_points(points, q)
    budget = q.budget
    defaults = []
    accuracy_stored = any("accuracy" in p.values for p in points)
    # what ranks as accuracy: top-1 agreement with full precision in a fidelity study (no tokenizer, no task)
    quality = quality_metric(points)
    fidelity_study = quality == "fidelity_top1"
    if fidelity_study:
        if q.min_accuracy is not None:  # every point would fall below it (a relative drop just finds no reference)
            raise UserError("the study stores no task accuracy (a fidelity study: the model has no tokenizer), so "
                            "--min-accuracy cannot apply; drop it")
        defaults.append("no task accuracy stored (a fidelity study): top-1 agreement with full precision stands in "
                        "for accuracy wherever this ranks by it")
    if q.min_accuracy is None and q.max_accuracy_drop is None and accuracy_stored:
        q = dataclasses.replace(q, max_accuracy_drop=DEFAULT_MAX_DROP)
        defaults.append(f"no accuracy floor given: within {DEFAULT_MAX_DROP:g} ({100 * DEFAULT_MAX_DROP:g} accuracy "
                        "point) of the study's full-precision point (else its highest-precision one, named below); "
                        "--max-accuracy-drop or --min-accuracy to change")
    if q.prefer is None:
        # the candidates are the stored front's points: a trial off the front may still need more than `budget`
        fits = budget is not None and all(p.values.get("peak_gpu_bytes", math.inf) <= budget for p in points)
        # a study tuned for time per token is ranked by it: by H2D bytes, a pick with every miss computed on the
        # CPU (few bytes, slow) won at 10.5 ms/token beside a 0.16 ms one
        timed = any("time_per_token" in p.objectives for p in points)
        q = dataclasses.replace(q, prefer="accuracy" if fits else "latency" if timed else "transfer")
        if fits:
            defaults.append(f"every configuration on the stored Pareto front fits {q.budget_text()}, so transfer is "
                            f"no constraint: the most {'accurate' if quality == 'accuracy' else 'faithful'} wins "
                            "(ties: lowest time per token where stored, then H2D bytes/token); --prefer transfer to "
                            "change")
        elif timed:
            defaults.append("no --prefer given: the lowest time per token wins, an objective of this study; "
                            "--prefer transfer ranks by H2D bytes/token")
        else:
            defaults.append("no --prefer given: the fewest H2D bytes/token win; --prefer latency or accuracy to change")
    # said below, in one wording whether the floor was the default or a --max-accuracy-drop given
    no_floor = fidelity_study and (q.max_accuracy_drop is not None or q.prefer != "accuracy")
    by_study: dict[str, list[FrontPoint]] = {}
    for p in points:
        by_study.setdefault(p.study_name, []).append(p)
    refs: dict[str, Reference] = {}
    if q.max_accuracy_drop is not None:
        for s, pts in by_study.items():
            read = trials is not None and any("accuracy" in p.values for p in pts)  # (a fidelity study: none)
            r = reference_point(pts, (full or {}).get(s), trials(s) if read else None)
            if r:
                refs[s] = r

    cands: list[Candidate] = []
    for p in points:
        floor = q.min_accuracy
        if q.max_accuracy_drop is not None:
            ref = refs.get(p.study_name)
            # an accuracy is never below 0: a floor under it (a drop larger than the reference's accuracy) is 0
            rel = None if ref is None else max(0.0, ref.accuracy - q.max_accuracy_drop)
            floor = rel if floor is None else (floor if rel is None else max(floor, rel))
        c = Candidate(p, floor)
        peak = p.values.get("peak_gpu_bytes")
        if budget is not None:
            if peak is None:
                c.problems.append("no peak GPU memory recorded")
            elif peak > budget:
                c.problems.append(f"needs {point_bytes(peak, budget)} > budget {_budget_bytes(budget, peak)}")
        if floor is not None:
            acc = p.values.get("accuracy")
            if acc is None:
                c.problems.append("no accuracy measured")
            elif acc < floor - 1e-12:
                c.problems.append(f"accuracy {acc:.3f} < floor {floor:.3f}")
        if _PREF_METRIC[q.prefer] not in p.values and not any((quality if m == "accuracy" else m) in p.values
                                                               for m, _ in _RANK_KEYS[q.prefer][:2]):
            c.problems.append(f"no {_PREF_METRIC[q.prefer]} recorded")
        cands.append(c)

    feasible = sorted((c for c in cands if c.feasible), key=lambda c: _sort_key(c.point, q.prefer, quality))
    rejected = [c for c in cands if not c.feasible]
    if no_floor:  # no default floor: say so, and what that means for the pick - or, with none, for the points
        means = ("none was excluded for its top-1 agreement with full precision" if not feasible or
                 q.prefer == "accuracy" else
                 "the pick may agree with full precision far less than other points do - see its fidelity_top1")
        which = (f"--max-accuracy-drop {q.max_accuracy_drop:g} is not applied" if q.max_accuracy_drop is not None
                 else "not the default 1 point below the full-precision point")
        defaults.insert(1, f"no accuracy floor applies ({which}: there is no task accuracy), so {means}"
                           + ("; --prefer accuracy ranks by top-1 agreement" if q.prefer != "accuracy" else ""))
    rec = Recommendation(q, feasible[0] if feasible else None, feasible, rejected, refs, [], defaults=defaults,
                         quality=quality)
    if rec.chosen:
        rec.reasons = defaults + _why(rec) + _above_study_budget(rec.chosen.point, q)
    else:
        rec.reasons, rec.closest = _what_would_change(rec, cands, budget)
        rec.reasons = defaults + rec.reasons + _below_study_budget(cands, q)
    return rec


def _above_study_budget(p: FrontPoint, q: Query) -> list[str]:
    """A budget above the one the pick's study was tuned within: no configuration that uses the difference was
    tried (a study keeps to its budget), so the pick is the study's best within its own budget - `--budget 400KiB`
    of a study tuned at 150 KiB picked int8 with the 12 slots 150 KiB holds, where every bf16 expert fits 400 KiB,
    under 'every stored configuration fits 400.0 KiB' and nothing more (`report --memory` says so in a note). The
    study's budget reads as `studies`, `pareto` and `tune` print it (4.34 MiB, not 4.3 MiB)."""
    study, budget = p.budget_bytes, q.budget
    if budget is None or not study or budget <= float(study) + 0.5:
        return []
    return [f"the study was tuned within {_budget_bytes(float(study))}, less than the {q.budget_text()} asked "
            "about: no configuration using more memory was tried, so this is the study's best within its budget, not "
            f"what {_budget_bytes(budget)} would hold; tune a study with that --budget (or --budgets) to answer it"]


def _below_study_budget(cands: list[Candidate], q: Query) -> list[str]:
    """`_above_study_budget`'s other side: where points are over a budget below the one their study was tuned
    within, no configuration that fits it was tried (a study's draws fill its own budget), so 'more memory' is not
    the only way on: `--budget 10MiB` of a study tuned at 12 MiB said only 'e.g. --budget 11.85MiB', which a 10 MiB
    GPU cannot take."""
    budget = q.budget
    if budget is None:
        return []
    studies: dict[str, float] = {}
    for c in cands:
        study = c.point.budget_bytes
        if study and budget < float(study) - 0.5 and any(s.startswith("needs") for s in c.problems):
            studies.setdefault(c.point.study_name, float(study))
    if not studies:
        return []
    within = (_budget_bytes(next(iter(studies.values()))) if len(studies) == 1 else
              ", ".join(f"{name} within {_budget_bytes(b)}" for name, b in studies.items()))
    return [f"{'the study was' if len(studies) == 1 else 'the studies were'} tuned within {within}, more than the "
            f"{q.budget_text()} asked about: its configurations were drawn to fill that budget, and none stored fits "
            f"{_budget_bytes(budget)}; tune a study with that --budget (or --budgets) to search within it"]


def _compared_by(prefer: str, *points: FrontPoint) -> str:
    """The metric `prefer` compares `points` by: time per token for latency where they all store it (the
    latency ranking's first key), else the preference's metric."""
    if prefer == "latency" and all("time_per_token" in p.values for p in points):
        return "time_per_token"
    return _PREF_METRIC[prefer]


def _accuracy(p: FrontPoint) -> str:
    """A point's accuracy with how it was obtained and, where its source gives the sample size, its Wilson 95%
    interval: "0.960 (measured, n=200, 95% CI 0.923-0.980)" - so that a floor passed by less than the noise
    reads as such."""
    return accuracy_text(p.values["accuracy"], _kind("accuracy", p), p.sources.get("accuracy"))


def _kind(metric: str, *points: FrontPoint) -> str:
    """How `metric`'s values at `points` were obtained, as a number's short label in the reasons: measured, counted
    or modelled - `pareto`'s header-row label (`source_kinds`) of the sources `--json` and the stored values give
    in full."""
    return source_kinds((p.sources.get(metric) for p in points), missing="source not recorded")


def _ratio_text(best: FrontPoint, other: FrontPoint, prefer: str, quality: str = "accuracy") -> str:
    metric = _compared_by(prefer, best, other)
    name = "accuracy"
    if metric == "accuracy" and quality == "fidelity_top1":
        metric, name = quality, "top-1 agreement"
    a, b = best.values.get(metric), other.values.get(metric)
    if a is None or b is None:
        return ""
    kind = _kind(metric, best, other)
    if prefer == "accuracy":
        if b != a:
            return f"{name} {b:.3f} vs {a:.3f} ({kind})"
        for tie, then in (("time_per_token", "latency"), ("h2d_bytes_per_token", "transfer")):  # what broke the tie
            x, y = best.values.get(tie), other.values.get(tie)
            if x is not None and y is not None and x != y:
                return f"the same {name} {a:.3f} ({kind}) and {_ratio_text(best, other, then)}"
        return f"the same {name} {a:.3f} ({kind}; a tie)"
    word = {"h2d_bytes_per_token": "transfer", "time_per_token": "time per token"}.get(metric, "latency")
    if b == a:  # "1.00x the transfer" read as a rounded difference; two points can store the same values
        return f"the same {word} ({kind})"
    if a > 0:
        ratio = f"{b / a:.2f}"
        return f"{ratio if ratio != '1.00' else f'{b / a:.4f}'}x the {word} ({kind})"
    return f"{metric} {b:.4g} vs {a:.4g} ({kind})"


def _why(rec: Recommendation) -> list[str]:
    q, c = rec.query, rec.chosen
    assert c is not None
    p = c.point
    out = []
    budget = q.budget
    peak = p.values.get("peak_gpu_bytes")
    if budget is not None and peak is not None:
        out.append(f"fits {q.budget_text(digits_apart(budget, peak, BUDGET_DIGITS), source=True)}: uses "
                   f"{point_bytes(peak, budget)} "
                   f"({_kind('peak_gpu_bytes', p)})")
    elif budget is None:
        out.append(f"--gpu {q.gpu.name} is a CPU profile (`advisor profile --cpu`: a host memcpy, no GPU), whose "
                   f"{format_bytes(q.gpu.memory_bytes, BUDGET_DIGITS)} is host RAM, not a GPU budget: memory not checked; give "
                   "--budget" if q.gpu is not None and q.gpu.host_only else
                   "no memory budget given (--budget or --gpu): memory not checked")
    acc = p.values.get("accuracy")
    if c.floor is not None and acc is not None:
        ref = rec.references.get(p.study_name)
        below = ref is not None and q.max_accuracy_drop is not None and ref.accuracy - q.max_accuracy_drop < 0
        ref_kind = source_kinds([ref.source if ref is not None else None], missing="source not recorded")
        basis = (f" ({'' if below else '= '}{ref.accuracy:.3f} of trial #{ref.trial}, {ref_kind}, minus "
                 f"{q.max_accuracy_drop}"
                 f"{' is below 0, so 0: no accuracy is excluded' if below else ''}; trial #{ref.trial}: {ref.how})"
                 if ref and q.max_accuracy_drop is not None and (q.min_accuracy is None or c.floor > q.min_accuracy)
                 else "")
        if ref and q.max_accuracy_drop is not None and q.min_accuracy is not None:  # both given: the stricter
            rel = max(0.0, ref.accuracy - q.max_accuracy_drop)  # floor applies; say which, and the other's value
            basis = (f" (--min-accuracy and --max-accuracy-drop alike: {ref.accuracy:.3f} of trial #{ref.trial} "
                     f"minus {q.max_accuracy_drop})" if abs(q.min_accuracy - rel) < 1e-9
                     else basis[:-1] + f"; stricter than --min-accuracy {q.min_accuracy:g})" if rel > q.min_accuracy
                     else f" (--min-accuracy; stricter than --max-accuracy-drop's {rel:.3f} = {ref.accuracy:.3f} of "
                          f"trial #{ref.trial} minus {q.max_accuracy_drop})")
        out.append(f"accuracy {_accuracy(p)} >= floor {c.floor:.3f}{basis}")
    elif q.max_accuracy_drop is not None and p.study_name not in rec.references and rec.quality == "accuracy":
        out.append("no accuracy stored in this study: relative floor not applied")
    by_time = _compared_by(q.prefer, p) == "time_per_token"
    words = "lowest time per token" if by_time else _PREF_WORDS[q.prefer]
    if q.prefer == "accuracy" and rec.quality == "fidelity_top1":
        words = "highest top-1 agreement with full precision"
    out.append(f"{words} among {len(rec.ranked)} feasible point(s)" + (f", {time_basis(p)}" if by_time
                                                                        else ""))
    out += _other_gpu_note(rec)
    out += _mixed_time_note(rec)
    if len(rec.ranked) > 1 and (apart := _ratio_text(p, rec.ranked[1].point, q.prefer, rec.quality)):
        nxt = rec.ranked[1].point
        out.append(f"next best {rec.ranked[1].label} has {apart}"
                   + (f", accuracy {_accuracy(nxt)}"
                      if "accuracy" in nxt.values and q.prefer != "accuracy" else ""))
    better = [r for r in rec.rejected if _sort_key(r.point, q.prefer, rec.quality) < _sort_key(p, q.prefer, rec.quality)]
    if better:
        kinds: dict[str, int] = {}
        for r in better:
            k = r.problems[0].split(" ")[0] if r.problems else "?"
            kinds[k] = kinds.get(k, 0) + 1
        detail = ", ".join(f"{n} {'exceed memory' if k == 'needs' else 'fall below the floor' if k == 'accuracy' else 'lack data'}"
                           for k, n in kinds.items())
        out.append(f"{len(better)} point(s) rank better by preference but are excluded ({detail})")
    return out


def _more_drop(floor: float, acc: float) -> float:
    """The extra --max-accuracy-drop, at the 3 decimals shown, that admits `acc`: rounded up, since a drop
    rounded to nearest (0.0215 -> 0.021) still leaves the point below the floor."""
    return math.ceil(round((floor - acc) * 1000, 9)) / 1000


def _more_memory(need: float, q: Query) -> str:
    """What to ask instead, in proportion to `need`: the --budget that holds it, and where the budget was a GPU's,
    the smallest catalogued GPU that holds it. Three 8 GB GPUs were named for a 1.23 MiB need."""
    ask = f"--budget {size_argument(need)}"
    if q.budget_bytes is not None or q.gpu is None:
        return ask
    gpu = min((g for g in CATALOGUE if g.memory_bytes >= need), key=lambda g: g.memory_bytes, default=None)
    return f"{ask}, or --gpu {shlex.quote(gpu.name)}, the smallest catalogued GPU that holds it" if gpu else ask


def _what_would_change(rec: Recommendation, cands: list[Candidate], budget: int | None) -> tuple[list[str], list[dict]]:
    closest: list[dict[str, Any]] = []
    mem_ok = [c for c in cands if not any(s.startswith(("needs", "no peak")) for s in c.problems)]
    acc_ok = [c for c in cands if not any(s.startswith(("accuracy", "no accuracy")) for s in c.problems)]
    # "nothing fits" alone read as memory when every point fitted and the floor excluded them all; a point that
    # records no peak is not said to exceed the budget (nor to fit it)
    unknown = sum(any(s.startswith("no peak") for s in c.problems) for c in cands)
    over, low = len(cands) - len(mem_ok) - unknown, len(cands) - len(acc_ok)
    of = f" of {rec.query.budget_text()}" if budget is not None else ""
    if not over and not unknown and low:
        reasons = [f"all {len(cands)} point(s) fall below the accuracy floor"
                   + (" (every one fits the memory)" if budget is not None else "")]
    elif over == len(cands) and not low:
        reasons = [f"nothing fits: all {len(cands)} point(s) exceed the memory budget{of}"]
    else:
        parts = [*([f"{over} exceed the memory budget{of}"] if over or not unknown else []),
                 *([f"{unknown} record no peak GPU memory to compare with it"] if unknown else []),
                 *([f"{low} fall below the accuracy floor"] if low or not unknown else [])]
        reasons = [f"nothing fits: all {len(cands)} point(s) excluded ({', '.join(parts)})"]
    if acc_ok and budget is not None:
        c = min((c for c in acc_ok if "peak_gpu_bytes" in c.point.values),
                key=lambda c: c.point.values["peak_gpu_bytes"], default=None)
        if c is not None:
            need = c.point.values["peak_gpu_bytes"]
            meets = "meets the accuracy floor with" if c.floor is not None else "needs"  # a fidelity study has none
            reasons.append(f"more memory: {c.label} {meets} {point_bytes(need, budget)} "
                           f"({_kind('peak_gpu_bytes', c.point)}; {point_bytes(need - budget)} over the budget)"
                           f"; e.g. {_more_memory(need, rec.query)}")
            closest.append({"study": c.point.study_name, "trial": c.point.trial_number, "change": "memory",
                            "needs_bytes": need, "over_by_bytes": need - budget})
    if mem_ok:
        c = max((c for c in mem_ok if "accuracy" in c.point.values),
                key=lambda c: c.point.values["accuracy"], default=None)
        if c is not None and c.floor is not None:
            acc = c.point.values["accuracy"]
            reasons.append(f"lower floor: {c.label} fits with accuracy {_accuracy(c.point)}"
                           f" (floor {c.floor:.3f}; allow {_more_drop(c.floor, acc):.3f} more drop, "
                           f"e.g. --min-accuracy {math.floor(acc * 1000) / 1000})")
            closest.append({"study": c.point.study_name, "trial": c.point.trial_number, "change": "accuracy_floor",
                            "accuracy": acc, "floor": c.floor})
    if not closest:
        smallest = min((c for c in cands if "peak_gpu_bytes" in c.point.values),
                       key=lambda c: c.point.values["peak_gpu_bytes"], default=None)
        if smallest is not None:
            reasons.append(f"smallest stored point {smallest.label} needs "
                           f"{point_bytes(smallest.point.values['peak_gpu_bytes'])} "
                           f"({_kind('peak_gpu_bytes', smallest.point)}) and: {'; '.join(smallest.problems)}")
        else:
            reasons.append("no point records peak GPU memory; re-run `advisor tune`")
    return reasons, closest


# ------------------------------------------------------------------------------------------ text


def _metric_line(name: str, v: float, source: str) -> str:
    return f"  {name:<22} {format_metric(name, v):>14}   [{source}]"


METRIC_SOURCE_INDENT = 6
"""Where a `_metric_line`'s source goes on when wrapped: a few columns in, not under its bracket (column 42),
which at 80 columns left 38 for sources of up to 400 characters."""
WHOLE = -1
"""`render_lines`' indent for a line printed whole (the `Export it:` command: a line break would cut it when pasted)."""


def describe_config(config: dict[str, Any]) -> str:
    """One line for a configuration: precision formats, cache size, policy, prefetch."""
    prec = config.get("precision", config.get("plan"))
    fmts = sorted(formats_in(prec), key=precision_rank, reverse=True) if prec is not None else []
    desc = config.get("precision_description") or (
        f"uniform {fmts[0]}" if len(fmts) == 1 else f"mixed {'/'.join(fmts)}" if fmts else "?")
    slots = config.get("slots_per_layer", config.get("slots"))
    if isinstance(slots, list):
        slots = f"{min(slots)}-{max(slots)} per layer" if len(set(slots)) > 1 else f"{slots[0]} per layer"
    miss = f"; {m}" if (m := miss_text(config)) else ""
    return f"precision {desc}; GPU expert slots {slots}; policy {policy_text(config)}; " \
           f"prefetch {config.get('prefetch', 'none')}{miss}"


def export_command(rec: Recommendation, targets: list[str], storage: str, query_args: list[str] | None) -> str:
    """The `advisor export` command (without --to) that exports `rec`'s choice for the budget it was asked about:
    `STUDY TRIAL`, or - when vLLM is offered and the budget recommend was given (--budget, or --gpu's memory)
    differs from the study's - `--from-recommend` with the same recommend options, since vLLM chooses between
    quantizing and offloading by a budget: the study's for STUDY TRIAL, the one given for --from-recommend
    (`advisor.export.vllm.quantized_fit`). Copying the STUDY TRIAL form judged a point picked for 8 GiB by the
    24 GiB it was tuned under."""
    assert rec.chosen is not None
    p = rec.chosen.point
    budget = rec.query.budget
    if "vllm" in targets and query_args is not None and budget is not None and budget != p.budget_bytes:
        return f"advisor export --from-recommend {shlex.join(query_args)}{storage_flag(storage)}"
    return f"advisor export {shlex.quote(p.study_name)} {p.trial_number}{storage_flag(storage)}"


def render(rec: Recommendation, targets: list[str] | None = None, storage: str = DEFAULT_STORAGE,
           task: str | None = None, query_args: list[str] | None = None) -> str:
    """Human-readable answer, one line per item (`render_lines`, unwrapped)."""
    return "\n".join(line for line, _ in render_lines(rec, targets, storage, task, query_args))


def render_lines(rec: Recommendation, targets: list[str] | None = None, storage: str = DEFAULT_STORAGE,
                 task: str | None = None, query_args: list[str] | None = None) -> list[tuple[str, int]]:
    """The answer's lines, each with the indent its continuation takes where a terminal wraps it (under a
    reason's text, a value's source, a note's text; `WHOLE`: never broken, a command to paste); `targets`: the
    export targets to offer for the chosen point (the caller asks `advisor.export.base.targets_for`, which this
    layer may not import), all five when not given; `task`: the chosen study's task as `advisor.results.registry.study_task_text` heads it (the
    point's task name when not given); `query_args`: the recommend options as given (`--budget 12GiB`, ...),
    for the `Export it:` line's `--from-recommend` form (`export_command`)."""
    lines: list[tuple[str, int]] = []
    reasons = [(f"  - {r}", 4) for r in rec.reasons]
    if rec.chosen:
        p = rec.chosen.point
        lines.append((f"Recommended: study {p.study_name!r}, trial #{p.trial_number}  "
                      f"(model {p.model}, task {task or p.task})", 4))
        lines.append((f"  {describe_config(p.config)}", 4))
        lines.append(("Why:", 0))
        lines += reasons
        lines.append((f"Stored values (trial run on {p.device}; how each was obtained in brackets):", 4))
        for name in sorted(p.values):
            source = p.sources.get(name, "source not recorded")
            if name == "time_per_token" and _time_modelled(p):
                source = f"for {tuned_for(p)}: {source}"
            lines.append((_metric_line(name, p.values[name], source), METRIC_SOURCE_INDENT))
        mt = _modelled_transfer(p, rec.query.gpu)
        if mt:
            lines.append((_metric_line("transfer_ms_per_token", mt["transfer_ms_per_token"], mt["source"]).replace(
                "transfer_ms_per_token ", "transfer on target    "), METRIC_SOURCE_INDENT))
        targets = targets or ['llama.cpp', 'hf', 'vllm', 'ktransformers', 'json']
        # one runnable command (a `--to a|b` list pasted into a shell pipes into a command named b), the other
        # targets beside it on a line of their own
        lines.append((f"Export it: {export_command(rec, targets, storage, query_args)} --to {targets[0]}", WHOLE))
        if others := targets[1:]:
            lines.append((f"  or --to {', '.join(others)}", 4))
        if note := steps_counted_note(p.config):  # (a DiffusionGemma study stored before 2026-12-05)
            lines.append((f"note: {note}", 6))
        if note := quant_note(p.config, p.model):  # (a study that may predate the record of quant_method)
            lines.append((f"note: {note}", 6))
    else:
        lines.append(("No stored configuration meets the requirements.", 0))
        lines += reasons
    return lines
