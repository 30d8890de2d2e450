"""`advisor report`: the answer to "how much do INT8/INT4 experts plus caching cut host-to-device transfer,
and what does accuracy lose?" for one tuned study, as Markdown + self-contained HTML with PNG plots.

Where each number comes from (the report repeats this for its reader):

* the **headline table** and the accuracy table are the study's stored trial values, read back unchanged
  from the Optuna storage (`report.json` keeps them with their trial numbers, so they can be checked);
* the **FP16-no-cache baseline** and the **transfer curves** are fresh replays of routing traces recorded on
  the study's own model, prompts and decoding (`advisor.tune.model_backend.ModelBackend`), through the
  same simulator the tuner used; every headline trial is replayed too and must reproduce its stored bytes;
* the **block-diffusion section** records extra traces at block lengths 8/16/32 on the same prompts.

Nothing is written until every number exists: the report is built in a temporary directory and renamed
into place at the end, so a failure never leaves half a report.
"""

from __future__ import annotations

import json
import math
import shutil
import tempfile
import time
from collections.abc import Callable, Sequence
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

from advisor.errors import UserError
from advisor.report.data import DEFAULT_STORAGE, StudyData, TrialRecord, load_study_data
from advisor.report.render import Bullets, Document, Figure, Heading, Para, Table, write_document

PRECISIONS = ("fp16", "int8", "int4")
BASELINE_FORMATS = ("fp16", "bf16")
DEFAULT_BLOCK_LENGTHS = (8, 16, 32)
SWEEP_POLICIES_MAX = 4


@dataclass
class HeadlineRow:
    """One precision at the reference memory: stored trial values, and the reduction they imply."""

    precision: str
    trial: int | None
    slots_per_layer: list[int] | None
    expert_cache_bytes: int | None
    peak_gpu_bytes: float | None
    h2d_bytes_per_token: float | None
    transfer_ms_per_token: float | None
    hit_rate: float | None
    accuracy: float | None
    accuracy_ci: tuple[float, float] | None
    accuracy_n: float | None
    accuracy_source: str | None
    reduction_vs_baseline: float | None
    accuracy_change: float | None
    replayed_bytes_per_token: float | None = None
    note: str = ""


@dataclass
class ReportResult:
    out_dir: Path
    markdown: Path
    html: Path
    data: Path
    figures: list[Path]
    headline: list[HeadlineRow]
    seconds: float
    extra: dict[str, Any] = field(default_factory=dict)


# ------------------------------------------------------------------------------------ stored values


def feasible_trials(data: StudyData) -> list[TrialRecord]:
    """Finished trials that ran (over-budget trials carry placeholder values and are left out)."""
    return [t for t in data.trials if t.attrs.get("feasible", True) is not False]


def plan_formats(t: TrialRecord) -> set[str]:
    """Every expert format of a trial's precision plan (as `advisor tune` stored it)."""
    prec = t.config.get("precision")
    if isinstance(prec, dict):
        from advisor.quant.plan import PrecisionPlan

        try:
            return set(PrecisionPlan.from_json(json.dumps(prec)).formats_used())
        except (UserError, ValueError, KeyError, TypeError):
            pass
    plan = t.config.get("plan")
    if isinstance(plan, dict) and isinstance(plan.get("formats"), list):
        return {str(f) for row in plan["formats"] for f in row}
    u = t.uniform_format
    return {u} if u else set()


def uniform_precision(t: TrialRecord) -> str | None:
    fmts = plan_formats(t)
    return next(iter(fmts)) if len(fmts) == 1 else None


def expert_cache_bytes(t: TrialRecord, expert_bytes: dict[str, list[int]]) -> int | None:
    """Counted GPU expert-cache bytes of a uniform-plan trial: sum over layers of slots x expert bytes."""
    fmt = uniform_precision(t)
    slots = t.config.get("slots_per_layer")
    if fmt is None or not isinstance(slots, list) or fmt not in expert_bytes:
        return None
    return int(sum(int(s) * b for s, b in zip(slots, expert_bytes[fmt], strict=False)))


def plan_label(t: TrialRecord) -> str:
    if isinstance(t.config.get("precision_description"), str):
        return t.config["precision_description"]
    plan = t.config.get("plan")
    if isinstance(plan, dict) and plan.get("describe"):
        return str(plan["describe"])
    return t.plan_label


def reference_memory(data: StudyData, trials: Sequence[TrialRecord], override: int | None) -> tuple[float, str]:
    """The GPU memory every precision gets in the headline, and why that value."""
    if override is not None:
        return float(override), "given with --memory"
    budget = data.setting("budget_bytes")
    if budget:
        return float(budget), "the study's memory budget"
    base = [t.values["peak_gpu_bytes"] for t in trials
            if uniform_precision(t) in BASELINE_FORMATS and "peak_gpu_bytes" in t.values]
    if base:
        return float(max(base)), "the most GPU memory any FP16 trial of the study used (no budget was set)"
    mem = sorted(t.values["peak_gpu_bytes"] for t in trials if "peak_gpu_bytes" in t.values)
    if not mem:
        raise UserError(f"study {data.name!r} records no peak_gpu_bytes; it was not written by `advisor tune`")
    return float(mem[len(mem) // 2]), "the median GPU memory of the study's trials (no budget, no FP16 trial)"


def memory_spec(spec: str) -> float | int:
    """One `--memory` value checked before any model loads: a share in (0, 1] ("25%"), or a size in bytes."""
    from advisor.hardware.profiles import parse_budget

    spec = spec.strip()
    if not spec.endswith("%"):
        return parse_budget(spec)
    try:
        share = float(spec[:-1]) / 100
    except ValueError:
        share = -1.0
    if not 0 < share <= 1:
        raise UserError(f"--memory {spec!r}: a share must be between 0% and 100%, e.g. 25%")
    return share


def budget_memory(spec: str, shape: Any) -> tuple[float, str]:
    """GPU memory of one `--memory` value: a size ("1.5MiB"), or "25%" = the resident (non-expert) weights plus
    that share of every routed expert at FP16 - the budgets real offloading runs under."""
    value = memory_spec(spec)
    if isinstance(value, int):
        return float(value), f"{spec.strip()}, given with --memory"
    experts = sum(n * shape.expert_bytes(layer, "fp16") for layer, n in enumerate(shape.num_experts))
    return shape.resident_bytes + value * experts, f"resident weights + {spec.strip()} of the FP16 expert bytes"


@dataclass
class BudgetAnswer:
    """The headline question answered at one GPU budget: per precision, its best stored trial."""

    label: str
    memory_bytes: float
    rule: str
    rows: list[HeadlineRow]
    policies: dict[int, str]


def accuracy_reference(trials: Sequence[TrialRecord]) -> tuple[TrialRecord | None, str]:
    """The trial whose accuracy is the FP16 reference (accuracy depends on the plan only)."""
    for fmts in (BASELINE_FORMATS, ("fp32",)):
        cands = [t for t in trials if uniform_precision(t) in fmts and "accuracy" in t.values]
        if cands:
            return min(cands, key=lambda t: t.number), f"stored accuracy of the {uniform_precision(cands[0])} plan"
    return None, "no FP16 plan in the study: accuracy change not available"


def _ci(t: TrialRecord) -> tuple[float, float] | None:
    d = t.attrs.get("accuracy_detail") or {}
    lo, hi = d.get("accuracy_ci_low"), d.get("accuracy_ci_high")
    return (float(lo), float(hi)) if lo is not None and hi is not None else None


def headline_rows(
    trials: Sequence[TrialRecord],
    memory: float,
    baseline_bytes: float,
    expert_bytes: dict[str, list[int]],
    precisions: Sequence[str] = PRECISIONS,
) -> list[HeadlineRow]:
    """Per precision, the stored trial with the least H2D bytes/token within `memory` (ties: more accurate)."""
    ref, _ = accuracy_reference(trials)
    ref_acc = ref.values.get("accuracy") if ref else None
    rows = []
    for prec in precisions:
        same = [t for t in trials if _same_format(uniform_precision(t), prec) and "h2d_bytes_per_token" in t.values]
        fit = [t for t in same if t.values.get("peak_gpu_bytes", math.inf) <= memory]
        if not fit:
            why = "no trial of this precision in the study" if not same else "no trial of this precision fits"
            rows.append(HeadlineRow(prec, None, None, None, None, None, None, None, None, None, None, None, None,
                                    None, note=why))
            continue
        best = min(fit, key=lambda t: (t.values["h2d_bytes_per_token"], -t.values.get("accuracy", 0.0), t.number))
        v = best.values
        acc = v.get("accuracy")
        d = best.attrs.get("accuracy_detail") or {}
        rows.append(HeadlineRow(
            precision=uniform_precision(best) or prec,
            trial=best.number,
            slots_per_layer=list(best.config.get("slots_per_layer") or []),
            expert_cache_bytes=expert_cache_bytes(best, expert_bytes),
            peak_gpu_bytes=v.get("peak_gpu_bytes"),
            h2d_bytes_per_token=v["h2d_bytes_per_token"],
            transfer_ms_per_token=v.get("transfer_ms_per_token"),
            hit_rate=v.get("hit_rate"),
            accuracy=acc,
            accuracy_ci=_ci(best),
            accuracy_n=d.get("accuracy_n"),
            accuracy_source=best.sources.get("accuracy"),
            reduction_vs_baseline=(1.0 - v["h2d_bytes_per_token"] / baseline_bytes) if baseline_bytes > 0 else None,
            accuracy_change=(acc - ref_acc) if acc is not None and ref_acc is not None else None,
        ))
    return rows


def _same_format(fmt: str | None, prec: str) -> bool:
    if fmt is None:
        return False
    if prec in BASELINE_FORMATS:
        return fmt in BASELINE_FORMATS
    return fmt == prec or fmt.startswith(prec + ":")


# ------------------------------------------------------------------------------------ measuring


@dataclass
class Workbench:
    """The study's model, task and settings, rebuilt to record traces exactly as the tuner did."""

    data: StudyData
    loaded: Any
    backend: Any
    profile: Any
    settings: Any

    @classmethod
    def open(cls, data: StudyData) -> Workbench:
        from advisor.hardware.profiles import DEFAULT_PROFILE, HardwareProfile
        from advisor.models.load import load_model
        from advisor.tune.model_backend import ModelBackend
        from advisor.tune.space import EvaluationSettings

        model = data.setting("model")
        if not model:
            raise UserError(f"study {data.name!r} does not record its model; it was not written by `advisor tune`")
        loaded = load_model(str(model))
        stored_fp = data.setting("model_fingerprint")
        if stored_fp and str(stored_fp) != str(loaded.fingerprint):
            raise UserError(f"model {model!r} has changed since study {data.name!r} ran (fingerprint "
                            f"{loaded.fingerprint} != stored {stored_fp}); report on the model the study measured")
        ev = dict(data.setting("evaluation", default={}) or {})
        task_name = str(ev.pop("task", None) or data.setting("task", default="toy"))
        known = set(EvaluationSettings.__dataclass_fields__)
        settings = EvaluationSettings(task=task_name, **{k: v for k, v in ev.items() if k in known and k != "task"})
        from advisor.eval.tasks import get_task

        task = get_task(task_name, limit=settings.limit, seed=settings.seed)
        hw = data.setting("hardware", default={}) or {}
        profile = HardwareProfile.from_dict(hw) if hw else DEFAULT_PROFILE
        backend = ModelBackend(loaded, task, settings, profile=profile)
        return cls(data, loaded, backend, profile, settings)

    def uniform_plan(self, fmt: str) -> Any:
        from advisor.tune.config import build_plan

        shape = self.backend.shape
        return build_plan([fmt] * shape.n_layers, 0.0, fmt, shape, None)

    def trace(self, fmt: str) -> Any:
        return self.backend.trace(self.uniform_plan(fmt))

    def replay_stored(self, run: Any, t: TrialRecord) -> float:
        """Bytes/token of a stored uniform-plan trial, replayed on a fresh trace (must equal the stored value)."""
        from advisor.tune.config import TrialConfig

        fmt = uniform_precision(t)
        cfg = TrialConfig(params=dict(t.config.get("params") or {}), plan=self.uniform_plan(fmt),
                          layer_formats=tuple([fmt] * self.backend.shape.n_layers), hot_fraction=0.0,
                          hot_format=fmt, slots=tuple(int(s) for s in t.config["slots_per_layer"]),
                          policy=str(t.config.get("policy", "lru")), prefetch=str(t.config.get("prefetch", "none")))
        m = self.backend.replay(run, cfg)
        return m.values["bytes_h2d"] / max(1, run.tokens)


def _policies(data: StudyData) -> list[str]:
    """Policies the study's trials used (most used first), at most SWEEP_POLICIES_MAX; LRU if none."""
    counts: dict[str, int] = {}
    for t in data.trials:
        p = t.config.get("policy")
        if isinstance(p, str):
            counts[p] = counts.get(p, 0) + 1
    pols = sorted(counts, key=lambda p: (-counts[p], p))[:SWEEP_POLICIES_MAX]
    return pols or ["lru"]


def recommended_points(data: StudyData, max_accuracy_drop: float, n_budgets: int = 3) -> list[dict[str, Any]]:
    """`advisor.recommend` at a few memory budgets spanning the stored front (lowest transfer, accuracy floor)."""
    from advisor.recommend import Query, recommend

    pts = [p for p in data.front if "peak_gpu_bytes" in p.values]
    if not pts:
        return []
    mems = sorted({p.values["peak_gpu_bytes"] for p in pts})
    picks = sorted({mems[round(i * (len(mems) - 1) / max(1, n_budgets - 1))] for i in range(n_budgets)})
    out, seen = [], set()
    for budget in picks:
        rec = recommend(pts, Query(budget_bytes=int(budget), max_accuracy_drop=max_accuracy_drop, study=data.name))
        if rec.chosen is None:
            continue
        p = rec.chosen.point
        key = (p.trial_number, budget)
        if key in seen:
            continue
        seen.add(key)
        out.append({"budget_bytes": int(budget), "trial": p.trial_number, "values": dict(p.values),
                    "reasons": list(rec.reasons)})
    return out


# ------------------------------------------------------------------------------------ building


def default_out_dir(study: str) -> Path:
    safe = "".join(c if c.isalnum() or c in "-_." else "_" for c in study)
    return Path("reports") / safe


def build_report(
    study: str,
    storage: str = DEFAULT_STORAGE,
    out_dir: str | Path | None = None,
    *,
    memory: Sequence[str] = (),
    block_lengths: Sequence[int] = DEFAULT_BLOCK_LENGTHS,
    max_accuracy_drop: float = 0.05,
    progress: Callable[[str], None] | None = None,
) -> ReportResult:
    """Build the report of `study` into `out_dir` (replaced as a whole, only once everything succeeded).

    `memory`: GPU budgets (sizes or shares, see `budget_memory`); the first is the headline's reference, and
    with two or more the answer is also tabled at each. None: the study's own budget."""
    import torch

    from advisor.report import blocks as report_blocks
    from advisor.report import plots as report_plots
    from advisor.report.replay import sweep

    say = progress or (lambda msg: None)
    t0 = time.perf_counter()
    for m in memory:
        memory_spec(m)  # a bad value fails here, before the model loads
    data = load_study_data(study, storage)
    trials = feasible_trials(data)
    if not trials:
        raise UserError(f"study {study!r} has no trial that fits its memory budget ({len(data.trials)} finished, "
                        "all over budget); raise the budget or tune again")
    out = Path(out_dir) if out_dir is not None else default_out_dir(study)
    torch.set_num_threads(max(1, min(torch.get_num_threads(), 4)))

    say("loading the study's model")
    wb = Workbench.open(data)
    say("recording one routing trace per precision (fp16, int8, int4)")
    runs = {fmt: wb.trace(fmt) for fmt in PRECISIONS}
    policies = _policies(data)
    say(f"replaying traces over slot counts with policies {', '.join(policies)} and Belady's MIN")
    sw = sweep({f: r.trace for f, r in runs.items()}, policies=policies, profile=wb.profile)
    budgets = [budget_memory(m, wb.backend.shape) for m in memory]
    ref_memory, memory_why = reference_memory(data, trials, int(budgets[0][0]) if budgets else None)
    if budgets:
        memory_why = budgets[0][1]
    rows = headline_rows(trials, ref_memory, sw.baseline_bytes_per_token, sw.expert_bytes)
    policy_of = {t.number: str(t.config.get("policy", "-")) for t in trials}
    answers = [BudgetAnswer(spec.strip(), mem, why, headline_rows(trials, mem, sw.baseline_bytes_per_token,
                                                                  sw.expert_bytes), policy_of)
               for spec, (mem, why) in zip(memory, budgets, strict=True)] if len(budgets) > 1 else []
    for r in rows:
        if r.trial is not None:
            t = next(t for t in trials if t.number == r.trial)
            r.replayed_bytes_per_token = wb.replay_stored(runs[_run_key(r.precision)], t)
    recs = recommended_points(data, max_accuracy_drop)

    blocks: dict[str, Any] = {"rows": [], "curves": []}
    if wb.loaded.is_diffusion and block_lengths:
        say(f"recording block-diffusion traces at block lengths {', '.join(map(str, block_lengths))}")
        prompts = wb.backend.prompts(wb.settings.trace_prompts)
        blocks = report_blocks.block_length_study(wb.loaded, prompts, block_lengths, label=str(wb.loaded.name),
                                                  seed=wb.settings.seed, profile=wb.profile)

    tmp = Path(tempfile.mkdtemp(prefix=f".{out.name}-", dir=_parent(out)))
    try:
        figs = tmp / "figures"
        figs.mkdir()
        say("drawing figures")
        figures = {
            "transfer_vs_slots": report_plots.transfer_vs_slots(sw, figs / "transfer_vs_slots.png"),
            "transfer_vs_memory": report_plots.transfer_vs_slots(sw, figs / "transfer_vs_memory.png", x="memory"),
            "accuracy": report_plots.accuracy_by_plan(accuracy_rows(trials), figs / "accuracy.png"),
            "pareto": report_plots.pareto(trials, {p.trial_number for p in data.front},
                                          [_RecMark(r) for r in recs], figs / "pareto.png"),
        }
        if blocks["rows"]:
            figures["block_reuse"] = report_plots.block_reuse(blocks["rows"], blocks["curves"],
                                                              figs / "block_reuse.png")
        ctx = _Context(data, trials, wb, runs, sw, rows, ref_memory, memory_why, recs, blocks, figures, policies,
                       max_accuracy_drop, answers)
        doc = compose(ctx)
        md, page = write_document(doc, tmp)
        payload = report_json(ctx)
        (tmp / "report.json").write_text(json.dumps(payload, indent=2, default=_json_default) + "\n")
        _replace_dir(tmp, out)
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        raise
    fig_paths = [out / "figures" / p.name for p in figures.values()]
    return ReportResult(out, out / md.name, out / page.name, out / "report.json", fig_paths, rows,
                        time.perf_counter() - t0, {"recommended": recs, "answers": answers})


def _run_key(precision: str) -> str:
    return "fp16" if precision in BASELINE_FORMATS else precision.split(":")[0]


def _parent(out: Path) -> Path:
    parent = out.resolve().parent
    parent.mkdir(parents=True, exist_ok=True)
    return parent


def _replace_dir(new: Path, out: Path) -> None:
    """Move the finished report into place; an older report at `out` is replaced only after that succeeds."""
    old = None
    if out.exists():
        if not out.is_dir():
            raise UserError(f"{out} exists and is not a directory; choose another -o")
        old = out.with_name(f".{out.name}.old-{int(time.time() * 1000)}")
        out.rename(old)
    try:
        new.rename(out)
    except OSError:
        if old is not None:
            old.rename(out)
        raise
    if old is not None:
        shutil.rmtree(old, ignore_errors=True)


class _RecMark:
    """A recommended point as the Pareto plot draws it."""

    def __init__(self, r: dict[str, Any]):
        from advisor.hardware.profiles import format_bytes

        self.bytes_per_token = r["values"].get("h2d_bytes_per_token", float("nan"))
        self.accuracy = r["values"].get("accuracy", float("nan"))
        self.label = f"#{r['trial']} @ {format_bytes(r['budget_bytes'])}"


@dataclass
class AccuracyRow:
    plan: str
    plan_fingerprint: str
    trials: list[int]
    accuracy: float | None
    ci_low: float | None
    ci_high: float | None
    n: float | None
    fidelity_kl: float | None
    fidelity_top1: float | None
    source: str


def accuracy_rows(trials: Sequence[TrialRecord]) -> list[AccuracyRow]:
    """One row per distinct precision plan (accuracy is measured once per plan and shared by its trials)."""
    by_plan: dict[str, list[TrialRecord]] = {}
    for t in trials:
        fp = str(t.attrs.get("plan_fingerprint") or plan_label(t))
        by_plan.setdefault(fp, []).append(t)
    rows = []
    for fp, ts in by_plan.items():
        t = min(ts, key=lambda t: t.number)
        ci = _ci(t)
        d = t.attrs.get("accuracy_detail") or {}
        rows.append(AccuracyRow(plan_label(t), fp, sorted(x.number for x in ts), t.values.get("accuracy"),
                                ci[0] if ci else None, ci[1] if ci else None, d.get("accuracy_n"),
                                t.values.get("fidelity_kl"), t.values.get("fidelity_top1"),
                                t.sources.get("accuracy", "-")))
    return sorted(rows, key=lambda r: (-(r.fidelity_top1 or 0.0), r.plan))


@dataclass
class _Context:
    data: StudyData
    trials: list[TrialRecord]
    wb: Workbench
    runs: dict[str, Any]
    sweep: Any
    headline: list[HeadlineRow]
    memory: float
    memory_why: str
    recommended: list[dict[str, Any]]
    blocks: dict[str, Any]
    figures: dict[str, Path]
    policies: list[str]
    max_accuracy_drop: float
    answers: list[BudgetAnswer] = field(default_factory=list)


def _json_default(o: Any) -> Any:
    if isinstance(o, Path):
        return str(o)
    if hasattr(o, "__dataclass_fields__"):
        return asdict(o)
    return str(o)


def report_json(c: _Context) -> dict[str, Any]:
    """Every number of the report, with trial numbers, for scripts and for checking against storage."""
    sw = c.sweep
    return {
        "schema": "moe-advisor/report@1",
        "study": c.data.name,
        "storage": c.data.storage,
        "model": c.data.setting("model"),
        "model_fingerprint": c.wb.loaded.fingerprint,
        "task": c.wb.settings.task,
        "reference_memory_bytes": c.memory,
        "reference_memory_rule": c.memory_why,
        "baseline": {"precision": "fp16", "h2d_bytes_per_token": sw.baseline_bytes_per_token,
                     "transfer_ms_per_token": sw.baseline_ms_per_token, "source": "counted:trace-replay(0 slots)",
                     "time_source": sw.time_source},
        "headline": [asdict(r) for r in c.headline],
        "answer_by_budget": [{"budget": a.label, "memory_bytes": a.memory_bytes, "rule": a.rule,
                              "rows": [{**asdict(r), "policy": a.policies.get(r.trial) if r.trial is not None else None,
                                        "transfer_time_cut": _time_cut(r, c.sweep)} for r in a.rows]}
                             for a in c.answers],
        "accuracy": [asdict(r) for r in accuracy_rows(c.trials)],
        "sweep": {"points": [asdict(p) for p in sw.points], "expert_bytes": sw.expert_bytes,
                  "traces": {k: asdict(v) for k, v in sw.traces.items()}, "policies": sw.policies},
        "recommended": c.recommended,
        "block_reuse": c.blocks,
        "trials": {"finished": len(c.data.trials), "feasible": len(c.trials), "failed": c.data.n_failed,
                   "total": c.data.n_total},
        "figures": {k: f"figures/{p.name}" for k, p in c.figures.items()},
    }


# ------------------------------------------------------------------------------------ the document


def _mib(n: float | None) -> str:
    return "-" if n is None else f"{n / 2**20:.3f} MiB"


def _kib(n: float | None) -> str:
    return "-" if n is None else f"{n / 2**10:.1f} KiB"


def _pct(x: float | None) -> str:
    return "-" if x is None else f"{100 * x:.1f}%"


def _pp(x: float | None) -> str:
    return "-" if x is None else f"{100 * x:+.1f} pt"


def compose(c: _Context) -> Document:
    from advisor.hardware.profiles import format_bytes

    d, sw, wb = c.data, c.sweep, c.wb
    model = d.setting("model")
    doc = Document(f"Expert precision x expert caching: {model} on {wb.settings.task} (study {d.name})")
    doc.add(Para(
        f"This report answers, for **{model}** (fingerprint `{wb.loaded.fingerprint}`) on the task "
        f"**{wb.settings.task}**: how much do INT8/INT4 experts plus a GPU expert cache cut host-to-device (H2D) "
        "expert transfer, and what does accuracy lose? Every number below was produced by this project's own "
        "measurements; the last section says how each was obtained."
    ))

    doc.add(Heading("Headline: transfer saved and accuracy lost, at equal GPU memory"))
    doc.add(Para(
        f"Reference memory: **{format_bytes(c.memory)}** of GPU memory ({c.memory_why}). For each precision, the "
        "stored trial with the fewest H2D bytes per generated token whose peak GPU memory fits that reference; "
        "bytes, time, hit rate and accuracy are that trial's stored values (trial number given)."
    ))
    base_acc_t, base_acc_why = accuracy_reference(c.trials)
    base_acc = base_acc_t.values.get("accuracy") if base_acc_t else None
    rows = [["fp16, no cache (baseline)", "-", "0", "0", _kib(sw.baseline_bytes_per_token), "0%",
             f"{sw.baseline_ms_per_token:.4g}", "0", _acc_text(base_acc, _ci(base_acc_t) if base_acc_t else None),
             "0 pt"]]
    for r in c.headline:
        if r.trial is None:
            rows.append([r.precision, "-", "-", "-", "-", "-", "-", "-", "-", r.note])
            continue
        rows.append([
            r.precision, f"#{r.trial}", _slots_text(r.slots_per_layer), _mib(r.expert_cache_bytes),
            _kib(r.h2d_bytes_per_token), _pct(r.reduction_vs_baseline),
            f"{r.transfer_ms_per_token:.4g}" if r.transfer_ms_per_token is not None else "-",
            f"{r.hit_rate:.3f}" if r.hit_rate is not None else "-",
            _acc_text(r.accuracy, r.accuracy_ci), _pp(r.accuracy_change),
        ])
    doc.add(Table(["precision", "trial", "GPU slots/layer", "expert cache", "H2D / token", "transfer cut",
                   "transfer ms / token", "hit rate", "accuracy [95% CI]", "accuracy change"], rows,
                  caption="Transfer cut = 1 - (H2D bytes/token) / (FP16-no-cache bytes/token). "
                          "Accuracy change is against the FP16 plan's stored accuracy."))
    doc.add(Para("**Definitions.** *FP16-no-cache baseline*: no expert stays on the GPU between forwards; every "
                 "routed expert a forward needs is copied for that forward, once per MoE layer, at FP16 size - "
                 "bytes = sum over forwards and MoE layers of (distinct experts routed) x (one expert's FP16 bytes), "
                 "divided by generated tokens; counted by replaying the FP16 plan's routing trace with zero slots. "
                 "*Equal GPU memory*: every precision gets the same GPU memory (resident weights are identical, so "
                 "this is the same expert-cache byte budget); a smaller format fits more experts in it (INT8 about "
                 "2x the FP16 slots, INT4 about 3-4x, scales included). *Per token*: per generated token of the "
                 "study's trace workload. Accuracy reference: " + base_acc_why + "."))
    doc.add(Table(["precision", "GPU slots/layer", "expert cache", "policy", "H2D / token", "transfer cut"],
                  equal_memory_replay(c),
                  caption="The same question answered by trace replay at exactly equal expert-cache memory (the "
                          "FP16 headline trial's cache bytes; each precision takes as many slots as fit, with the "
                          "best policy of the study). Replay values, not stored trials: they fill gaps in what the "
                          "study sampled."))
    doc.add(Bullets(_answer_lines(c)))
    if c.answers:
        doc.add(Table(["GPU budget", "precision", "trial", "GPU slots/layer", "policy", "H2D / token",
                       "transfer cut", "transfer ms / token", "time cut", "accuracy [95% CI]", "accuracy change"],
                      budget_rows(c),
                      caption="The answer at several GPU budgets (" + "; ".join(f"{a.label} = {format_bytes(a.memory_bytes)}"
                                                                               for a in c.answers)
                              + ", each = " + c.answers[0].rule.split(" + ")[0] + " + that share of the FP16 expert "
                              "bytes): per precision, the stored trial with the fewest H2D bytes per token that fits. "
                              "Cuts are against FP16 without a cache; time is the modelled transfer time."))

    doc.add(Heading("Transfer vs GPU expert slots (trace replay)"))
    doc.add(Figure(c.figures["transfer_vs_slots"],
                   "H2D bytes (left, counted) and transfer time (right, " + sw.time_source + ") per generated token "
                   "vs GPU expert slots per MoE layer; one curve per precision and policy; dotted: Belady's MIN "
                   "(an upper bound on any policy's hits); black line: FP16 with no cache."))
    doc.add(Figure(c.figures["transfer_vs_memory"],
                   "The same curves against GPU expert-cache memory: at equal memory, lower-precision experts "
                   "both fit more slots and move fewer bytes per miss."))
    doc.add(Table(
        ["precision", "policy", *[str(s) for s in sw.slot_grid]],
        [[f, p, *[_kib(pt.bytes_per_token) for pt in sw.curve(f, p)]] for f in sw.expert_bytes
         for p in [*sw.policies, "belady"]],
        caption="H2D per generated token by slots per layer (columns), by trace replay.",
    ))

    doc.add(Heading("Accuracy per precision plan"))
    doc.add(Figure(c.figures["accuracy"], "Task accuracy with 95% confidence interval (Wilson) and fidelity "
                                          "against the full-precision model (top-1 agreement, KL) per plan."))
    doc.add(Table(["plan", "trials", "accuracy", "95% CI", "n", "fidelity top-1", "fidelity KL", "source"],
                  [[r.plan, ", ".join(f"#{n}" for n in r.trials[:6]) + (" ..." if len(r.trials) > 6 else ""),
                    r.accuracy, f"[{r.ci_low:.3f}, {r.ci_high:.3f}]" if r.ci_low is not None else "-", r.n,
                    r.fidelity_top1, r.fidelity_kl, r.source] for r in accuracy_rows(c.trials)]))

    doc.add(Heading("Pareto front: transfer vs accuracy vs memory"))
    doc.add(Figure(c.figures["pareto"], "Every feasible trial; red: the stored Pareto front; stars: what "
                                        f"`advisor recommend` picks at the budgets shown (lowest transfer, accuracy "
                                        f"within {c.max_accuracy_drop:.0%} of the study's full-precision plan)."))
    if c.recommended:
        doc.add(Table(["budget", "trial", "H2D / token", "accuracy", "peak GPU memory"],
                      [[format_bytes(r["budget_bytes"]), f"#{r['trial']}", _kib(r["values"].get("h2d_bytes_per_token")),
                        r["values"].get("accuracy"), format_bytes(r["values"].get("peak_gpu_bytes", 0))]
                       for r in c.recommended]))

    _block_section(doc, c)
    _provenance(doc, c)
    return doc


def _time_cut(r: HeadlineRow, sw: Any) -> float | None:
    if r.transfer_ms_per_token is None or not sw.baseline_ms_per_token:
        return None
    return 1.0 - r.transfer_ms_per_token / sw.baseline_ms_per_token


def budget_rows(c: _Context) -> list[list[Any]]:
    """The rows of the several-budgets answer table (also what the README quotes)."""
    rows = []
    for a in c.answers:
        for r in a.rows:
            if r.trial is None:
                rows.append([a.label, r.precision, "-", "-", "-", "-", "-", "-", "-", "-", r.note])
                continue
            rows.append([a.label, r.precision, f"#{r.trial}", _slots_text(r.slots_per_layer), a.policies.get(r.trial),
                         _kib(r.h2d_bytes_per_token), _pct(r.reduction_vs_baseline),
                         f"{r.transfer_ms_per_token:.4g}" if r.transfer_ms_per_token is not None else "-",
                         _pct(_time_cut(r, c.sweep)), _acc_text(r.accuracy, r.accuracy_ci), _pp(r.accuracy_change)])
    return rows


def equal_memory_replay(c: _Context) -> list[list[Any]]:
    """Per precision, the largest slot count whose cache fits the FP16 headline trial's cache bytes (replay)."""
    sw = c.sweep
    ref = next((r.expert_cache_bytes for r in c.headline if r.precision in BASELINE_FORMATS and r.expert_cache_bytes),
               None)
    if ref is None:
        return [["-", "-", "-", "-", "no FP16 trial in the headline: no reference cache size", "-"]]
    rows = []
    for fmt in sw.expert_bytes:
        pts = [p for p in sw.points if p.precision == fmt and p.policy in sw.policies and p.cache_bytes <= ref]
        if not pts:
            rows.append([fmt, "-", "-", "-", "not even one slot per layer fits", "-"])
            continue
        top = max(p.slots for p in pts)
        best = min((p for p in pts if p.slots == top), key=lambda p: p.bytes_per_token)
        rows.append([fmt, best.slots, _mib(best.cache_bytes), best.policy, _kib(best.bytes_per_token),
                     _pct(1 - best.bytes_per_token / sw.baseline_bytes_per_token)])
    return rows


def _acc_text(acc: float | None, ci: tuple[float, float] | None) -> str:
    if acc is None:
        return "-"
    return f"{acc:.3f}" + (f" [{ci[0]:.3f}, {ci[1]:.3f}]" if ci else "")


def _slots_text(slots: list[int] | None) -> str:
    if not slots:
        return "-"
    return str(slots[0]) if len(set(slots)) == 1 else ",".join(map(str, slots))


def _answer_lines(c: _Context) -> list[str]:
    """The direct answer in words, generated from the headline rows (no number typed by hand)."""
    lines = []
    for r in c.headline:
        if r.trial is None:
            lines.append(f"{r.precision}: {r.note}.")
            continue
        acc = "accuracy change not measured" if r.accuracy_change is None else \
            f"accuracy {r.accuracy:.3f} ({_pp(r.accuracy_change)} vs FP16)"
        lines.append(f"{r.precision} experts with {_slots_text(r.slots_per_layer)} GPU slots per layer "
                     f"(trial #{r.trial}) cut H2D transfer by {_pct(r.reduction_vs_baseline)} vs FP16 without a "
                     f"cache; {acc}.")
    return lines


def _block_section(doc: Document, c: _Context) -> None:
    doc.add(Heading("Block diffusion: expert reuse across denoising steps"))
    if not c.blocks.get("rows"):
        doc.add(Para("Not measured: the study's model is autoregressive (or no block lengths were asked for)."))
        return
    doc.add(Para(
        "A diffusion LLM denoises a block over several steps, each a full forward. One forward touches many more "
        "distinct experts per layer than one autoregressive token, but consecutive steps of one block route "
        "almost the same way: that reuse is what a GPU expert cache turns into hits. Traces of the study's model "
        "(full precision, the study's prompts, one token unmasked per step) at several block lengths:"))
    doc.add(Figure(c.figures["block_reuse"], "Left: distinct experts per MoE layer per forward. Middle: Jaccard "
                   "overlap of the expert sets of consecutive forwards, within a block vs across a block boundary. "
                   "Right: cache hit rate vs slots (share of a layer's experts) by block length."))
    doc.add(Table(["model", "block length", "forwards", "distinct experts / layer / forward", "max",
                   "Jaccard within block", "Jaccard across blocks", "no-cache MiB / token"],
                  [[r["model"], r["block_length"], r["forwards"], r["distinct_mean"], r["distinct_max"],
                    r["jaccard_within_block"], r["jaccard_across_blocks"], r["no_cache_bytes_per_token"] / 2**20]
                   for r in c.blocks["rows"]]))


def _provenance(doc: Document, c: _Context) -> None:
    d, sw, wb = c.data, c.sweep, c.wb
    p = wb.profile
    ev = wb.settings
    trace_rows = [[k, v.forwards, v.layers, v.routed_rows, v.lookups, v.tokens] for k, v in sw.traces.items()]
    devices = sorted({str(t.attrs.get("device", d.setting("device", default="?"))) for t in c.trials})
    sources: dict[str, set[str]] = {}
    for t in c.trials:
        for k, v in t.sources.items():
            sources.setdefault(k, set()).add(v)
    doc.add(Heading("How every number was obtained"))
    doc.add(Bullets([
        f"Study `{d.name}` in `{d.storage}`: {len(d.trials)} finished trials ({len(c.trials)} within the memory "
        f"budget), {d.n_failed} failed, {d.n_total} in all; sampler {d.setting('sampler', default='?')}; search "
        f"space `{d.setting('space', default='?')}`; objectives {', '.join(d.objectives) or '-'}.",
        f"Model `{d.setting('model')}`, fingerprint `{wb.loaded.fingerprint}` (checked equal to the stored one); "
        f"family {wb.loaded.family}; {len(wb.loaded.moe)} MoE layers x {wb.loaded.moe[0].num_experts} experts, "
        f"top-{wb.loaded.moe[0].top_k}.",
        f"Trials ran on: {', '.join(devices)}. This report's replays ran on: {wb.backend.device}.",
        f"Workload (accuracy): task {ev.task}, {ev.limit} examples, seed {ev.seed}. Workload (transfer): the task's "
        f"first {ev.trace_prompts} prompts, batch 1, the family's decoding, {wb.backend.max_new_tokens} new tokens "
        f"each; fidelity on {ev.fidelity_prompts} prompts.",
        "H2D bytes: counted exactly (each expert's payload plus its scales at its format) by replaying routing "
        "traces through the same cache-policy objects the offload runtime uses.",
        f"Transfer time: {sw.time_source} - modelled from hardware profile `{p.name}` (pinned "
        f"{p.h2d_gbps_pinned:g} GB/s, {p.copy_latency_us:g} us per copy; profile source: {p.source}) unless the "
        "trial sources below say measured.",
        "Stored metric sources: " + "; ".join(f"{k}: {', '.join(sorted(v))}" for k, v in sorted(sources.items())),
        "Headline check: each headline trial, replayed on a fresh trace here, moves "
        + ", ".join(f"{r.precision} #{r.trial}: {_kib(r.replayed_bytes_per_token)} (stored {_kib(r.h2d_bytes_per_token)})"
                    for r in c.headline if r.trial is not None) + ".",
        "Limits: accuracy intervals are Wilson 95% intervals on the stated sample size; a small sample cannot "
        "separate plans whose intervals overlap. Transfer times are a bandwidth model unless measured on CUDA. "
        "Routing under quantized experts is recorded per precision (it can differ from FP16).",
    ]))
    doc.add(Table(["trace (precision)", "forwards", "MoE layers", "routed rows", "cache look-ups", "generated tokens"],
                  trace_rows, caption="Routing traces replayed for this report."))
