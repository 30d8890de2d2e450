"""Which stored trials a report shows: feasible trials, their plans, the headline rows at equal memory,
the accuracy reference and the recommended points. Plain data in, plain data out (no model runs)."""

from __future__ import annotations

import math
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from typing import Any

from advisor.baselines import SIXTEEN_BIT
from advisor.errors import UserError
from advisor.report.data import StudyData, TrialRecord
from advisor.results.config_view import formats_in, miss_policy, policy_text

PRECISIONS = ("fp16", "int8", "int4")
"""The report's precisions: its 16-bit one is the study's (`advisor.baselines.full_precision`), in its place."""
BASELINE_FORMATS = SIXTEEN_BIT
SWEEP_POLICIES_MAX = 4


@dataclass
class HeadlineRow:
    """One precision at the reference memory: stored trial values, and the reduction they imply."""

    precision: str
    trial: int | None = None
    slots_per_layer: list[int] | None = None
    expert_cache_bytes: int | None = None
    peak_gpu_bytes: float | None = None
    h2d_bytes_per_token: float | None = None
    transfer_ms_per_token: float | None = None
    hit_rate: float | None = None
    accuracy: float | None = None
    accuracy_ci: tuple[float, float] | None = None
    accuracy_n: float | None = None
    accuracy_source: str | None = None
    reduction_vs_baseline: float | None = None
    accuracy_change: float | None = None
    replayed_bytes_per_token: float | None = None
    note: str = ""
    time_per_token: float | None = None  # ms of expert work per token (advisor.offload.timing), when stored
    time_source: str | None = None
    strategy: str = ""  # "" for the study's best at this precision; else the baseline's label
    policy: str | None = None  # cache policy ("tide (tau 2)" with its refresh interval)
    miss: str | None = None  # miss policy: copy | cpu | hybrid
    time_cut: float | None = None  # 1 - time_per_token / the no-cache reference's
    h2d_source: str | None = None  # how h2d_bytes_per_token was obtained (its stored source)
    fidelity_top1: float | None = None  # top-1 agreement with full precision, what a fidelity study has for accuracy
    fidelity_source: str | None = None


@dataclass
class Reference:
    """16-bit experts without an expert cache, what every cut is against: a stored trial (`advisor tune --budgets`), else
    a replay."""

    h2d_bytes_per_token: float
    time_per_token: float | None
    trial: TrialRecord | None
    source: str
    fmt: str | None = None  # its 16-bit format as the report names it (`study.baseline_format`)


def feasible_trials(data: StudyData) -> list[TrialRecord]:
    """Finished trials that ran (over-budget trials carry placeholder values and are left out)."""
    return [t for t in data.trials if t.attrs.get("feasible", True) is not False]


def uniform_precision(t: TrialRecord) -> str | None:
    """The single expert format of a trial's plan (None for mixed plans): `TrialRecord.uniform_format`."""
    return t.uniform_format


def expert_cache_bytes(t: TrialRecord, expert_bytes: dict[str, list[int]]) -> int | None:
    """Counted GPU expert-cache bytes of a trial: sum over MoE layers of its slots x one expert's bytes there - for
    a mixed plan (hot/cold or per layer) the layer's `slots` largest experts, the most its cache can hold, as the
    trial's counted peak_gpu_bytes counts them (`advisor.tune.config.counted_peak_bytes`)."""
    slots = t.config.get("slots_per_layer")
    if not isinstance(slots, list):
        return None
    fmt = uniform_precision(t)
    if fmt is None:
        return _mixed_cache_bytes(t, [int(s) for s in slots], expert_bytes)
    per_layer = _format_bytes(t, fmt, expert_bytes)
    if per_layer is None:
        return None
    return int(sum(int(s) * b for s, b in zip(slots, per_layer, strict=False)))


def _format_bytes(t: TrialRecord, fmt: str, expert_bytes: dict[str, list[int]]) -> list[int] | None:
    """One expert's bytes per MoE layer in `fmt`: those of the trace replayed in it (bf16 and fp16 count the same,
    those of the 16-bit trace), else from the expert shapes the trial stored (int4:g64, int2, ...)."""
    if fmt in BASELINE_FORMATS:
        fmt = next((f for f in BASELINE_FORMATS if f in expert_bytes), fmt)
    return expert_bytes.get(fmt) or _layer_expert_bytes(t, fmt)


def _mixed_cache_bytes(t: TrialRecord, slots: list[int], expert_bytes: dict[str, list[int]]) -> int | None:
    """`expert_cache_bytes` of a mixed plan: each layer's `slots` largest experts under the plan's formats (None
    without the stored plan or expert shapes)."""
    from advisor.results.config_view import plan_of

    layers = (t.config.get("model_meta") or {}).get("layers")
    try:
        grid = plan_of(t.precision).grid([int(m["num_experts"]) for m in layers])
    except (TypeError, KeyError, ValueError, UserError):
        return None
    sizes: dict[str, list[int] | None] = {f: _format_bytes(t, f, expert_bytes) for f in {f for row in grid for f in row}}
    if any(v is None or len(v) < len(grid) for v in sizes.values()) or len(slots) != len(grid):
        return None
    return int(sum(sum(sorted((sizes[f][layer] for f in row), reverse=True)[:s])  # type: ignore[index]
                   for layer, (row, s) in enumerate(zip(grid, slots, strict=True))))


def _layer_expert_bytes(t: TrialRecord, fmt: str) -> list[int] | None:
    """One expert's bytes per MoE layer in `fmt`, from the expert shapes the trial stored (None without them)."""
    from advisor.quant.spec import expert_nbytes_of

    layers = (t.config.get("model_meta") or {}).get("layers")
    try:
        return [expert_nbytes_of(fmt, int(m["hidden_size"]), int(m["intermediate_size"])) for m in layers]
    except (TypeError, KeyError, ValueError, UserError):
        return None


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
        return float(max(base)), "the most GPU memory any 16-bit trial of the study used (no budget was set)"
    mem = sorted(t.values["peak_gpu_bytes"] for t in trials if "peak_gpu_bytes" in t.values)
    if not mem:
        raise UserError(f"study {data.name!r} records no peak_gpu_bytes; it was not written by `advisor tune`")
    return float(mem[len(mem) // 2]), "the median GPU memory of the study's trials (no budget, no 16-bit trial)"


@dataclass
class BudgetAnswer:
    """The headline question answered at one GPU budget: per precision its best stored trial, and the baseline
    strategies stored at this budget."""

    label: str
    memory_bytes: float
    rule: str
    rows: list[HeadlineRow]
    baselines: list[HeadlineRow] = field(default_factory=list)


def stored_reference(trials: Sequence[TrialRecord]) -> TrialRecord | None:
    """The study's stored no-cache trial (`advisor tune --budgets`), if any."""
    from advisor.baselines import NO_CACHE

    return next((t for t in sorted(trials, key=lambda t: t.number) if t.attrs.get("baseline") == NO_CACHE.name),
                None)


def rank(t: TrialRecord) -> tuple:
    """Best first: least time per token when stored (device + copies + CPU experts), then fewest H2D bytes,
    then more accurate."""
    v = t.values
    return (v.get("time_per_token", 0.0), v["h2d_bytes_per_token"], -v.get("accuracy", 0.0), t.number)


def accuracy_reference(trials: Sequence[TrialRecord], metric: str = "accuracy",
                       full: str | None = None) -> tuple[TrialRecord | None, str]:
    """The trial whose `metric` (task accuracy, or a fidelity study's fidelity_top1) is the full-precision
    reference (`advisor.results.reference`: a trial of `full`, the report's 16-bit baseline format, else of the
    other 16-bit format, else of fp32; the lowest-numbered), and the reason, naming that trial and its format."""
    from advisor.results.reference import full_precision_reference

    found = full_precision_reference([t for t in trials if metric in t.values], full, uniform_precision,
                                     lambda t: t.number)
    if found is not None:
        ref, fmt = found
        why = f"stored {metric} of the {fmt} plan (trial #{ref.number})"
        if full in BASELINE_FORMATS and fmt != full:
            why += f"; no {full} trial stores {metric}"
        return ref, why
    if metric != "accuracy":
        return None, f"no 16- or 32-bit plan in the study stores {metric}"
    if not any("accuracy" in t.values for t in trials):  # e.g. a fidelity study of a model without a tokenizer
        return None, ("no trial of the study measured task accuracy (not among its objectives): accuracy change "
                      "not available; fidelity per plan below")
    return None, "no 16- or 32-bit plan in the study: accuracy change not available"


def interval(t: TrialRecord) -> tuple[float, float] | None:
    d = t.attrs.get("accuracy_detail") or {}
    lo, hi = d.get("accuracy_ci_low"), d.get("accuracy_ci_high")
    return (float(lo), float(hi)) if lo is not None and hi is not None else None


def headline_rows(
    trials: Sequence[TrialRecord],
    memory: float,
    reference: Reference,
    expert_bytes: dict[str, list[int]],
    precisions: Sequence[str] = PRECISIONS,
    least_peak: Callable[[str], tuple[int, str]] | None = None,
) -> list[HeadlineRow]:
    """Per precision, the best stored trial (`rank`: its best cache and miss policy) within `memory`; then, so
    that every stored trial that fits is compared, each other uniform format the study stored (int2, fp8, another
    group size: int4:g64 is not int4, g128) and its mixed plans (hot/cold, per layer) as one row, labelled by the
    chosen trial's plan. Only the 16-bit row takes either 16-bit format (`_same_format`). `least_peak`: a
    format's least counted peak in the study's space and what it counts (`advisor.tune.budget.least_uniform_peak`),
    so that a row none of whose configurations can fit `memory` says so, with the bytes, not that the study ran no
    trial of it."""
    measured = [t for t in trials if "h2d_bytes_per_token" in t.values]
    mixed = [t for t in measured if uniform_precision(t) is None]
    rows = []
    for prec in precisions:
        same = [t for t in measured if _same_format(uniform_precision(t), prec)]
        mixes = any(_same_format(f, prec) for t in mixed if t.precision is not None for f in formats_in(t.precision))
        rows.append(_best_row(same, memory, prec, "this precision", trials, reference, expert_bytes, least_peak, mixes))
    rest = [t for t in measured if not any(_same_format(uniform_precision(t), p) for p in precisions)]
    for fmt in sorted({f for t in rest if (f := uniform_precision(t)) is not None}):
        same = [t for t in rest if uniform_precision(t) == fmt]
        rows.append(_best_row(same, memory, fmt, "this precision", trials, reference, expert_bytes, least_peak))
    if mixed:
        rows.append(_best_row(mixed, memory, MIXED, "a mixed plan", trials, reference, expert_bytes))
    return rows


def memory_text(n: float) -> str:
    """A report's GPU memory (the headline's, each --memory answer's) in the one form its lines all print, where
    the headline read "at 1.5 MiB" above its rows' "cannot fit in 1.53 MiB": two decimals, since a format's least
    configuration can be a hundredth of it away."""
    from advisor.units import format_bytes

    return format_bytes(n, 2)


MIXED = "mixed plans"
"""The headline's row of the study's mixed plans (hot/cold or per-layer formats) when none fits."""


def _best_row(same: Sequence[TrialRecord], memory: float, label: str, what: str, trials: Sequence[TrialRecord],
              reference: Reference, expert_bytes: dict[str, list[int]],
              least_peak: Callable[[str], tuple[int, str]] | None = None, mixed: bool = False) -> HeadlineRow:
    """The best of `same` within `memory` (a mixed plan's row is labelled by its plan), or why there is none: a
    format that cannot fit `memory` in any configuration says so with its least counted bytes - a study leaves
    such a format out of its search (`advisor tune`'s note), and the row read "no trial of this precision".
    `mixed`: the study's mixed plans (hot/cold, per layer) use the format, so a study of only such plans is not
    said to have no trial of it: its int8 row read "no trial of this precision in the study" beside int8 hot sets."""
    fit = [t for t in same if t.values.get("peak_gpu_bytes", math.inf) <= memory]
    if not fit:
        need, counted = least_peak(label) if least_peak is not None and label != MIXED else (None, "")
        # a stored trial below it (a --budgets baseline: no expert on the GPU) is no less a configuration
        if need is not None and need > memory and all(t.values.get("peak_gpu_bytes", math.inf) >= need
                                                      for t in same):
            from advisor.units import format_bytes

            return HeadlineRow(label, note=f"cannot fit in {memory_text(memory)}: even its least configuration "
                               f"({counted}) needs {format_bytes(need, 2)} (counted)"
                               + ("" if same else "; the study has no trial of it"))
        if not same and mixed:
            return HeadlineRow(label, note="no uniform trial in the study; trials mixing it with other formats are in "
                               "the mixed-plan row")
        return HeadlineRow(label, note=f"no trial of {what} in the study" if not same else f"no trial of {what} fits")
    best = min(fit, key=rank)
    return trial_row(best, best.plan_label if label == MIXED else label, trials, reference, expert_bytes)


def baseline_rows(trials: Sequence[TrialRecord], budget: str, reference: Reference,
                  expert_bytes: dict[str, list[int]], memory: float | None = None,
                  over: Sequence[TrialRecord] = (), not_queued: Sequence[dict[str, Any]] | None = ()) -> list[HeadlineRow]:
    """The baseline strategies stored at `budget` (`advisor tune --budgets`), each at its best setting within
    `memory` (the budget's bytes; unchecked when None): a trial that measured several alike (`baseline_keys`: e.g.
    every strategy at a budget that holds no expert) answers for each. A strategy whose trials do not fit - over
    `memory`, or over the study's budget (`over`: the study's infeasible trials, whose values are placeholders, not
    measured) - is a row that says so (`over_budget_note`), with no values; so is one tune did not queue at
    `budget` because it cannot fit there at all (`not_queued`: the study's `baseline_trials.NOT_QUEUED`)."""
    from advisor.baselines import BASELINES, NO_CACHE, baseline_keys
    from advisor.tune.budget import budget_key
    from advisor.units import BUDGET_DIGITS, format_bytes

    at = budget_key(budget)  # the tune's spelling of it need not be this one ("90.5KiB" here, "90.5 KiB" there)
    unqueued = {d.get("baseline"): d for d in not_queued or () if budget_key(str(d.get("budget"))) == at}

    def at_budget(t: TrialRecord, name: str) -> bool:
        return any(k[0] == name and budget_key(k[1]) == at for k in baseline_keys(t.attrs))

    rows = []
    for b in BASELINES:
        stored = [t for t in trials if at_budget(t, b.name) and "h2d_bytes_per_token" in t.values]
        runs = [t for t in stored if memory is None or t.values.get("peak_gpu_bytes", math.inf) <= memory]
        unfit = [*(t for t in stored if t not in runs), *(t for t in over if at_budget(t, b.name))]
        if not runs and unfit:
            least = min(unfit, key=lambda t: (t.values.get("peak_gpu_bytes", math.inf), t.number))
            rows.append(HeadlineRow(uniform_precision(least) or "fp16", strategy=b.label,
                                    note=over_budget_note(least, budget, memory)))
        elif not stored and (d := unqueued.get(b.name)) is not None:
            limit = format_bytes(memory if memory is not None else d.get("budget_bytes"), BUDGET_DIGITS)
            rows.append(HeadlineRow(str(d.get("format") or "fp16"), strategy=b.label, note=(
                f"over budget: not queued, counts {format_bytes(d.get('peak_bytes'), BUDGET_DIGITS)} > {budget} "
                f"({limit}); with no "
                "expert on the GPU it cannot fit there at all")))
        if runs:
            best = min(runs, key=rank)
            row = trial_row(best, uniform_precision(best) or "fp16", trials, reference, expert_bytes, b.label)
            own = best.attrs.get("baseline")
            if own != b.name:  # a trial of another strategy, the same configuration (`baseline_also`): its policy
                # is not this strategy's - alike only because no layer has a slot for either to place anything in
                label = next((o.label for o in (*BASELINES, NO_CACHE) if o.name == own), str(own))
                row.policy = f"{row.policy}; measured by the {label} trial"
            rows.append(row)
    return rows


def over_budget_note(t: TrialRecord, budget: str, memory: float | None) -> str:
    """Why a stored baseline answers nothing at `budget` (`memory` bytes): its counted peak is over it - and with
    no expert on the GPU, whatever its policy, it cannot fit there at all (e.g. an offloaded model's no-cache
    baseline: its copies need staging buffers). Its stored values are not shown (over the study's budget they are
    placeholders, not measured)."""
    from advisor.units import BUDGET_DIGITS, format_bytes

    # at a budget's 2 decimals, as `tune --budgets` names the same bytes ('counts 90.75 KiB' at '90.50 KiB')
    peak = t.values.get("peak_gpu_bytes")
    need = f"needs {format_bytes(peak, BUDGET_DIGITS)}" if peak is not None else "does not fit"
    staging = " (staging buffers counted)" if "staging" in str(t.sources.get("peak_gpu_bytes", "")) else ""
    limit = f"{budget} ({format_bytes(memory, BUDGET_DIGITS)})" if memory is not None else budget
    slots = t.config.get("slots_per_layer")
    none = isinstance(slots, list) and bool(slots) and not any(slots)
    return (f"over budget: trial #{t.number} {need}{staging} > {limit}"
            + ("; with no expert on the GPU it cannot fit there at all" if none else ""))


def trial_row(t: TrialRecord, prec: str, trials: Sequence[TrialRecord], reference: Reference,
              expert_bytes: dict[str, list[int]], strategy: str = "") -> HeadlineRow:
    """One stored trial as a table row: its values, and the cuts they imply against `reference`."""
    ref, _ = accuracy_reference(trials, full=reference.fmt)
    ref_acc = ref.values.get("accuracy") if ref else None
    v = t.values
    acc = v.get("accuracy")
    d = t.attrs.get("accuracy_detail") or {}
    base, time = reference.h2d_bytes_per_token, v.get("time_per_token")
    return HeadlineRow(
        precision=uniform_precision(t) or prec,
        trial=t.number,
        slots_per_layer=list(t.config.get("slots_per_layer") or []),
        expert_cache_bytes=expert_cache_bytes(t, expert_bytes),
        peak_gpu_bytes=v.get("peak_gpu_bytes"),
        h2d_bytes_per_token=v["h2d_bytes_per_token"],
        h2d_source=t.sources.get("h2d_bytes_per_token"),
        transfer_ms_per_token=v.get("transfer_ms_per_token"),
        hit_rate=v.get("hit_rate"),
        accuracy=acc,
        accuracy_ci=interval(t),
        accuracy_n=d.get("accuracy_n"),
        accuracy_source=t.sources.get("accuracy"),
        reduction_vs_baseline=(1.0 - v["h2d_bytes_per_token"] / base) if base > 0 else None,
        accuracy_change=(acc - ref_acc) if acc is not None and ref_acc is not None else None,
        time_per_token=time,
        time_source=t.sources.get("time_per_token"),
        strategy=strategy,
        policy=policy_text(t.config),  # `none (0 slots)` where it keeps no expert on the GPU
        miss=miss_policy(t.config),
        time_cut=(1.0 - time / reference.time_per_token) if time is not None and reference.time_per_token else None,
        fidelity_top1=v.get("fidelity_top1"),
        fidelity_source=t.sources.get("fidelity_top1"),
    )


def _same_format(fmt: str | None, prec: str) -> bool:
    """Whether a trial of format `fmt` belongs to the headline row of `prec`: the 16-bit row takes bf16 and fp16
    (the study's 16-bit format, as its baseline); any other row its own format only. The int4 row took int4:g64
    too, so the better of the two hid the other, and an int4:g64 study's note read 'int4: ... fits'."""
    if fmt is None:
        return False
    if prec in BASELINE_FORMATS:
        return fmt in BASELINE_FORMATS
    return fmt == prec


def trial_policies(data: StudyData) -> list[str]:
    """Policies the study's trials used (most used first), at most SWEEP_POLICIES_MAX; LRU if none."""
    counts: dict[str, int] = {}
    for t in data.trials:
        if "baseline" in t.attrs:  # fixed strategies, not the study's search
            continue
        p = t.config.get("policy")
        if isinstance(p, str):
            counts[p] = counts.get(p, 0) + 1
    pols = sorted(counts, key=lambda p: (-counts[p], p))[:SWEEP_POLICIES_MAX]
    return pols or ["lru"]


def timed(data: StudyData) -> bool:
    """Whether the study was tuned for time per token: the report then ranks its rows by it and shows it first,
    plots its Pareto figure against it and stars recommend's fastest picks (`star_preference`)."""
    return "time_per_token" in data.objectives


def star_preference(data: StudyData) -> str:
    """What the report's recommended points are ranked by: time per token in a study tuned for it (`timed`: the
    Pareto figure's x axis there, and `advisor recommend`'s default ranking in such a study), else H2D bytes."""
    return "latency" if timed(data) else "transfer"


def recommended_points(data: StudyData, max_accuracy_drop: float, full: str | None = None,
                       n_budgets: int = 3) -> list[dict[str, Any]]:
    """`advisor.recommend` at a few memory budgets spanning the stored front (`star_preference`, accuracy floor
    from the full-precision plan of 16-bit format `full`, the report's baseline's, among all the study's trials)."""
    from advisor.recommend import Query, recommend
    from advisor.results.front import trial_point
    from advisor.results.trials import StudyTrials

    prefer = star_preference(data)
    pts = [p for p in data.front if "peak_gpu_bytes" in p.values]
    if not pts:
        return []
    # the floor's reference is the report's own (`accuracy_reference`), read from all the study's trials: on the
    # front alone it was another trial (#14 where the report names #0), or none where full precision is dominated
    every = StudyTrials([trial_point(data.name, data.study_attrs, [], t.number, None,
                                     {"config": t.config, "values": t.values, "sources": t.sources})
                         for t in feasible_trials(data)], None, None)
    mems = sorted({p.values["peak_gpu_bytes"] for p in pts})
    picks = sorted({mems[round(i * (len(mems) - 1) / max(1, n_budgets - 1))] for i in range(n_budgets)})
    out, seen = [], set()
    for budget in picks:
        rec = recommend(pts, Query(budget_bytes=int(budget), max_accuracy_drop=max_accuracy_drop, study=data.name,
                                  prefer=prefer), full={data.name: full} if full else None,
                        trials=lambda _: every)
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
        fp = str(t.attrs.get("plan_fingerprint") or t.plan_label)
        by_plan.setdefault(fp, []).append(t)
    rows = []
    for fp, ts in by_plan.items():
        t = min(ts, key=lambda t: t.number)
        ci = interval(t)
        d = t.attrs.get("accuracy_detail") or {}
        rows.append(AccuracyRow(t.plan_label, fp, sorted(x.number for x in ts), t.values.get("accuracy"),
                                ci[0] if ci else None, ci[1] if ci else None, d.get("accuracy_n"),
                                t.values.get("fidelity_kl"), t.values.get("fidelity_top1"),
                                t.sources.get("accuracy", "-")))
    # best first: top-1 agreement, then (ties: fp16, int2, int4, int8 read alphabetically) the lower KL, then name
    return sorted(rows, key=lambda r: (-(r.fidelity_top1 or 0.0),
                                       math.inf if r.fidelity_kl is None else r.fidelity_kl, r.plan))
