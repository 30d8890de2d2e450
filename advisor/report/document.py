"""The report as a document: every table, paragraph and provenance line, and `report.json`, composed from
the numbers the other modules produced (prose only; nothing is measured here)."""

from __future__ import annotations

import contextlib
import re
from dataclasses import asdict, dataclass, field
from datetime import datetime
from pathlib import Path
from typing import Any

from advisor.errors import UserError
from advisor.eval.stats import SAMPLE_SIZE, accuracy_text
from advisor.report.data import StudyData, TrialRecord
from advisor.report.render import Bullets, Document, Figure, Heading, Para, Table
from advisor.report.select import (
    BudgetAnswer,
    HeadlineRow,
    Reference,
    accuracy_reference,
    accuracy_rows,
    interval,
    memory_text,
    over_budget_note,
    star_preference,
    stored_reference,
    trial_row,
)
from advisor.report.workbench import Workbench
from advisor.results.config_view import miss_policy
from advisor.results.front import quality_metric, short_source, task_text
from advisor.units import count, format_bytes, h2d_unit


@dataclass
class ReportContext:
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
    reference: Reference
    answers: list[BudgetAnswer] = field(default_factory=list)
    equal_memory: dict[str, Any] = field(default_factory=dict)  # precision -> replay at the 16-bit headline's cache
    memory_notes: list[str] = field(default_factory=list)  # --memory values above the study's budget, said as such

    @property
    def full(self) -> str:
        """The study's 16-bit format, as the baseline is named everywhere (`advisor.baselines.full_precision`)."""
        return self.sweep.baseline_format

    @property
    def h2d_unit(self) -> tuple[str, int]:
        """The unit every H2D-bytes-per-token cell and axis of the report takes (`advisor.units.h2d_unit`)."""
        return h2d_unit(self.sweep.baseline_bytes_per_token)


def json_default(o: Any) -> Any:
    if isinstance(o, Path):
        return str(o)
    if hasattr(o, "__dataclass_fields__"):
        return asdict(o)
    return str(o)


def report_json(c: ReportContext) -> dict[str, Any]:
    """Every number of the report, with trial numbers, for scripts and for checking against storage."""
    sw = c.sweep
    return {
        "schema": "moe-advisor/report@1",
        "study": c.data.name,
        "storage": c.data.storage,
        "model": c.data.setting("model"),
        "trials_ran": [t.isoformat() for t in c.data.ran] if c.data.ran else None,  # first start, last end
        "model_fingerprint": c.wb.loaded.fingerprint,
        "model_fingerprint_checked": c.wb.fingerprint_checked,  # False: the study stored none (`model_check` says
        "model_check": c.wb.model_check,  # what was compared instead)
        "task": c.wb.settings.task,
        "reference_memory_bytes": c.memory,
        "reference_memory_rule": c.memory_why,
        "baseline": {"precision": c.full, "h2d_bytes_per_token": c.reference.h2d_bytes_per_token,
                     "time_per_token": c.reference.time_per_token,
                     "trial": c.reference.trial.number if c.reference.trial else None, "source": c.reference.source,
                     "replay": {"h2d_bytes_per_token": sw.baseline_bytes_per_token,
                                "transfer_ms_per_token": sw.baseline_ms_per_token,
                                "source": "counted:trace-replay(0 slots)", "time_source": sw.time_source}},
        "headline": [asdict(r) for r in c.headline],
        "answer_by_budget": [{"budget": a.label, "memory_bytes": a.memory_bytes, "rule": a.rule,
                              "rows": [asdict(r) for r in a.rows], "baselines": [asdict(r) for r in a.baselines]}
                             for a in c.answers],
        "accuracy": [asdict(r) for r in accuracy_rows(c.trials)],
        "sweep": {"points": [asdict(p) for p in sw.points], "expert_bytes": sw.expert_bytes,
                  "traces": {k: asdict(v) for k, v in sw.traces.items()}, "policies": sw.policies},
        "equal_memory": c.equal_memory,
        "recommended": c.recommended,
        "block_reuse": c.blocks,
        "trials": {"finished": len(c.data.trials), "feasible": len(c.trials), "failed": c.data.n_failed,
                   "total": c.data.n_total},
        "figures": {k: f"figures/{p.name}" for k, p in c.figures.items()},
    }


def _bytes_cell(n: float | None) -> str:
    """An expert cache's bytes in the unit they fill (`format_bytes`, 2 decimals): a tiny model's read "0.003 MiB"
    in a fixed MiB."""
    return "-" if n is None else format_bytes(n, 2)


def _h2d(n: float | None, unit: tuple[str, int]) -> str:
    """H2D bytes (per token) in the report's one unit for them (`ReportContext.h2d_unit`)."""
    name, size = unit
    return "-" if n is None else f"{n / size:.1f} {name}"


def _pct(x: float | None) -> str:
    return "-" if x is None else f"{100 * x:.1f}%"


def _pp(x: float | None) -> str:
    return "-" if x is None else f"{100 * x:+.1f} pt"


def compose(c: ReportContext) -> Document:
    d, sw, wb = c.data, c.sweep, c.wb
    full, FULL = c.full, c.full.upper()
    model = d.setting("model")
    task = task_text(wb.settings.task, dict.fromkeys(d.objectives), d.setting("space_toml"))
    doc = Document(f"Expert precision x expert caching: {model} on {task} (study {d.name})")
    doc.add(Para(
        f"This report answers, for **{model}** (fingerprint `{wb.loaded.fingerprint}`"
        + ("" if wb.fingerprint_checked else ", **not checked**: the study stores none") + ") on the task "
        f"**{task}**: how much do INT8/INT4 experts plus a GPU expert cache cut host-to-device (H2D) "
        "expert transfer, and what does accuracy lose? Every number below comes from this project's own runs - "
        "measured, counted from recorded routing, or modelled, as each is labelled; the last section says how each "
        "was obtained."
    ))

    fidelity = _fidelity_study(c.trials)  # no task accuracy: top-1 agreement says the quality
    doc.add(Heading("Headline: transfer saved and " + ("top-1 agreement kept" if fidelity else "accuracy lost")
                    + ", at equal GPU memory"))
    doc.add(Para(
        f"Reference memory: **{memory_text(c.memory)}** of GPU memory ({c.memory_why}). For each precision (and "
        "each other format the study stored, then its mixed plans - hot/cold or per-layer - as one row), the "
        "stored trial whose peak GPU memory fits that reference with the least time per generated token (its "
        "best cache and miss policy; fewest H2D bytes when the study stores no time); bytes, time, hit rate and "
        + ("top-1 agreement" if fidelity else "accuracy") + " are that trial's stored values (trial number given)."
    ))
    for note in c.memory_notes:
        doc.add(Para(f"**Note:** {note}."))
    _, base_acc_why = accuracy_reference(c.trials, full=c.full)
    ref = c.reference
    ref_ms = ref.trial.values.get("transfer_ms_per_token") if ref.trial else sw.baseline_ms_per_token
    rows = [[f"{full}, no cache (baseline)", f"#{ref.trial.number}" if ref.trial else "-", "0", "0",
             _h2d(ref.h2d_bytes_per_token, c.h2d_unit), "0%", _ms(ref_ms), "0",
             *_baseline_quality(c.trials, fidelity, c.full)]]
    for r in c.headline:
        if r.trial is None:
            rows.append([r.precision, "-", "-", "-", "-", "-", "-", "-", "-", "-"])
            continue
        rows.append([
            r.precision, f"#{r.trial}", _slots_text(r.slots_per_layer), _bytes_cell(r.expert_cache_bytes),
            _h2d(r.h2d_bytes_per_token, c.h2d_unit), _pct(r.reduction_vs_baseline),
            _ms(r.transfer_ms_per_token),  # as the time column: 3 decimals, not 0.04429 beside 0.005061
            f"{r.hit_rate:.3f}" if r.hit_rate is not None else "-", *_quality(c.trials, r, fidelity, c.full),
        ])
    header = ["precision", "trial", "GPU slots/layer", "expert cache", "H2D / token", "transfer cut",
              "transfer ms / token", "hit rate", *_quality_columns(fidelity)]
    caption = (f"Transfer cut = 1 - (H2D bytes/token) / ({FULL}-no-cache bytes/token). "
               + (FIDELITY_CAPTION if fidelity else "Accuracy change is against the full-precision plan's stored "
                  "accuracy (the accuracy reference below). ")
               + "Expert cache = sum over MoE layers of slots x one expert's bytes; for a mixed plan, each "
               "layer's largest experts under the plan (the most its cache holds, as its peak memory counts it).")
    if _searches_misses(c):  # where each point's misses compute, beside its cache
        header.insert(4, "miss")
        rows[0].insert(4, miss_policy(ref.trial.config) if ref.trial else "copy")
        for row, r in zip(rows[1:], c.headline, strict=True):
            row.insert(4, r.miss if r.trial is not None else "-")
    timed = [r for r in c.headline if r.trial is not None and r.time_per_token is not None]
    if timed:  # time per token (device + copies + CPU experts), with its source
        header.append("time ms / token")
        rows[0].append(_ms(ref.time_per_token))
        for row, r in zip(rows[1:], c.headline, strict=True):
            row.append(_ms(r.time_per_token))
        caption += f" Time per token: {timed[0].time_source or 'source not recorded'}."
    for row, r in zip(rows[1:], c.headline, strict=True):  # why a precision has no trial, in a column of its own
        row.extend([r.note] if r.trial is None else [])
    doc.add(Table(*note_column(header, rows), caption=caption))
    doc.add(Para(f"**Definitions.** *{FULL}-no-cache baseline*: no expert stays on the GPU between forwards; every "
                 f"routed expert a forward needs is copied for that forward, once per MoE layer, at {FULL} size - "
                 f"bytes = sum over forwards and MoE layers of (distinct experts routed) x (one expert's {FULL} "
                 f"bytes), divided by generated tokens; counted by replaying the {FULL} plan's routing trace with zero "
                 "slots. *Equal GPU memory*: every precision gets the same GPU memory (resident weights are identical, "
                 "so this is the same expert-cache byte budget); a smaller format fits more experts in it (INT8 about "
                 f"2x the {FULL} slots, INT4 about 3-4x, scales included). *Per token*: per generated token of the "
                 "study's trace workload. Accuracy reference: " + base_acc_why + "."))
    doc.add(Table(["precision", "GPU slots/layer", "expert cache", "policy", "H2D / token", "transfer cut"],
                  equal_memory_replay(c),
                  caption="The same question answered by trace replay at equal expert-cache memory (at most the "
                          f"{FULL} headline trial's cache bytes; each precision takes as many slots per layer as fit, "
                          "with the best policy of the study). Replay values, not stored trials: they fill gaps in what the "
                          "study sampled."))
    doc.add(Bullets(_answer_lines(c)))
    if c.answers:
        sizes = "; ".join(f"{a.label} = {memory_text(a.memory_bytes)}" for a in c.answers)
        doc.add(Table(*note_column([*BUDGET_HEADER, *_quality_columns(fidelity)], budget_rows(c)),
                      caption=budget_caption(c, sizes)))

    doc.add(Heading("Transfer vs GPU expert slots (trace replay)"))
    doc.add(Figure(c.figures["transfer_vs_slots"],
                   "H2D bytes (top row, counted) and transfer time (bottom row, " + sw.time_source + ") per "
                   "generated token vs GPU expert slots per MoE layer; one column per precision, one curve per "
                   "cache policy; black crosses, dotted: Belady's MIN (an upper bound on any policy's hits); grey "
                   f"dashed line: {FULL} with no cache."))
    doc.add(Figure(c.figures["transfer_vs_memory"],
                   "The same curves against GPU expert-cache memory: at equal memory, lower-precision experts "
                   "both fit more slots and move fewer bytes per miss."))
    doc.add(Table(
        ["precision", "policy", *[str(s) for s in sw.slot_grid]],
        [[f, p, *[_h2d(pt.bytes_per_token, c.h2d_unit) for pt in sw.curve(f, p)]] for f in sw.expert_bytes
         for p in [*sw.policies, "belady"]],
        caption="H2D per generated token by slots per layer (columns), by trace replay.",
    ))

    doc.add(Heading("Accuracy per precision plan"))
    fidelity_only = quality_metric(c.trials) == "fidelity_top1"  # a model without a tokenizer: no task is scored
    doc.add(Figure(c.figures["accuracy"], ("Task accuracy: not measured (the study's model has no tokenizer, so its "
                                           "plans are judged by fidelity alone); fidelity" if fidelity_only else
                                           "Task accuracy with 95% confidence interval (Wilson) and fidelity")
                   + " against the full-precision model (top-1 agreement, KL) per plan."))
    doc.add(Table(["plan", "trials", "accuracy", "95% CI", "n", "fidelity top-1", "fidelity KL", "source"],
                  [[r.plan, ", ".join(f"#{n}" for n in r.trials[:6]) + (" ..." if len(r.trials) > 6 else ""),
                    r.accuracy, f"[{r.ci_low:.3f}, {r.ci_high:.3f}]" if r.ci_low is not None else "-", r.n,
                    r.fidelity_top1, r.fidelity_kl, r.source] for r in accuracy_rows(c.trials)]))

    quality = quality_metric(c.trials)
    prefer = star_preference(d)
    timed = prefer == "latency"  # the figure's x axis and the stars' ranking: time per token in a study tuned for it
    lowest = "lowest time per token" if timed else "lowest transfer"
    if quality == "fidelity_top1":  # no task accuracy stored (no tokenizer): recommend applies no floor
        what, picks = "top-1 agreement", f"{lowest}; the study stores no task accuracy, so no accuracy floor applies"
        flag = ""
    else:
        what, picks = "accuracy", (f"{lowest}, accuracy at most {c.max_accuracy_drop:g} "
                                   f"({c.max_accuracy_drop * 100:g} points) below the study's full-precision plan; "
                                   "recommend's own defaults are 0.01 and, where every point fits, the most accurate")
        flag = f" --max-accuracy-drop {c.max_accuracy_drop:g}"
    doc.add(Heading(f"Pareto front: {'time' if timed else 'transfer'} vs {what} vs memory"))
    doc.add(Figure(c.figures["pareto"], "Every feasible trial; red: the stored Pareto front; stars: what "
                                        f"`advisor recommend --study {d.name} --budget B --prefer {prefer}{flag}` "
                                        f"picks at the budgets B shown ({picks})."))
    if c.recommended:
        doc.add(Table(["budget", "trial", *(["time ms / token"] if timed else []), "H2D / token", what,
                       "peak GPU memory"],
                      [[format_bytes(r["budget_bytes"]), f"#{r['trial']}",
                        *([_ms(r["values"].get("time_per_token"))] if timed else []),
                        _h2d(r["values"].get("h2d_bytes_per_token"), c.h2d_unit),
                        r["values"].get(quality), format_bytes(r["values"].get("peak_gpu_bytes", 0))]
                       for r in c.recommended]))

    _block_section(doc, c)
    _provenance(doc, c)
    return doc


BUDGET_HEADER = ["GPU budget", "strategy", "precision", "trial", "GPU slots/layer", "policy", "miss", "H2D / token",
                 "transfer cut", "time ms / token", "time cut"]
"""The several-budgets table's columns before its two quality columns (`_quality_columns`)."""
BEST = "best cache + miss policy"


def budget_rows(c: ReportContext) -> list[list[Any]]:
    """The rows of the several-budgets answer table (also what the README quotes): 16-bit without cache when
    stored, then per budget each precision at its best and each baseline strategy."""
    from advisor.baselines import no_cache_label

    ref = c.reference
    fidelity = _fidelity_study(c.trials)

    def _row(budget: str, r: HeadlineRow) -> list[Any]:
        return [budget, r.strategy or BEST, r.precision, f"#{r.trial}", _slots_text(r.slots_per_layer), r.policy,
                r.miss, _h2d(r.h2d_bytes_per_token, c.h2d_unit), _pct(r.reduction_vs_baseline), _ms(r.time_per_token),
                _pct(r.time_cut), *_quality(c.trials, r, fidelity, c.full)]

    rows = []
    if ref.trial is not None:
        rows.append(_row("any", trial_row(ref.trial, c.full, c.trials, ref, {}, no_cache_label(c.full))))
    elif (unfit := stored_reference([t for t in c.data.trials if t not in c.trials])) is not None:
        budget = c.data.setting("budget_bytes")  # its values are placeholders: what it needs, not a fake accuracy
        note = over_budget_note(unfit, "the study's budget", float(budget) if budget else None)
        rows.append(["any", no_cache_label(c.full), c.full, *["-"] * 10, f"{note}; cuts are against its trace replay"])
    for a in c.answers:
        for r in a.rows:
            if r.trial is None:
                rows.append([a.label, BEST, r.precision, *["-"] * 10, r.note])
                continue
            rows.append(_row(a.label, r))
        rows.extend(_row(a.label, r) if r.trial is not None else [a.label, r.strategy, r.precision, *["-"] * 10, r.note]
                    for r in a.baselines)
    return rows


def note_column(header: list[str], rows: list[list[Any]]) -> tuple[list[str], list[list[Any]]]:
    """`header` and `rows` with a last "note" column where a row carries one beyond the header (why a precision
    or strategy has no trial there), else as they are: the note sat in the accuracy-change column."""
    if all(len(row) <= len(header) for row in rows):
        return header, rows
    return [*header, "note"], [row + [""] * (len(header) + 1 - len(row)) for row in rows]


def _searches_misses(c: ReportContext) -> bool:
    """Whether the study's points differ in where misses compute: its space searches `cache.miss` (or fixes
    it to cpu/hybrid), or a trial computes them otherwise than by copying (a `--budgets` baseline)."""
    from advisor.tune.space import parse_space

    text = c.data.setting("space_toml")
    with contextlib.suppress(UserError):  # a space stored by another version: its trials tell
        if text and parse_space(str(text), "<stored space>").miss.choices != ("copy",):
            return True
    return any(miss_policy(t.config) != "copy" for t in c.trials)


def _ms(x: float | None) -> str:
    """A time in ms as the headline's time columns show it (transfer and total): 3 decimals, or '-'."""
    return "-" if x is None else f"{x:.3f}"


def budget_caption(c: ReportContext, sizes: str) -> str:
    from advisor.baselines import BASELINES

    timed = next((r.time_source for a in c.answers for r in a.rows if r.time_source), None)
    shown = {r.strategy for a in c.answers for r in a.baselines}
    strategies = "; ".join(f"{b.label}: {b.what}" for b in BASELINES if b.label in shown)
    return (f"The answer at several GPU budgets ({sizes}; a share means {c.answers[0].rule.split(' + ')[0]} + that "
            "share of the 16-bit expert bytes): per precision (other formats and mixed plans as in the headline), "
            "the stored trial with the least time per token that fits (its best cache and miss policy; ties: "
            "fewest H2D bytes), and the baseline strategies stored at that budget, at 16 bits with as much cache as "
            f"fits ({strategies or 'none stored'}). Cuts are against {c.full.upper()} without cache "
            f"({c.reference.source}). H2D bytes: counted. Time per token: {timed or 'not stored by this study'}.")


def equal_memory_replay(c: ReportContext) -> list[list[Any]]:
    """Per precision, the replay at the most slots whose cache fits the 16-bit headline trial's cache bytes. Where
    there is none, why: no 16-bit trial in the headline, or one that keeps no expert on the GPU (a no-cache
    baseline, the 16-bit format's best at a budget that holds no slot of it), whose 0 bytes hold no slot."""
    if not c.equal_memory:
        full = next((r for r in c.headline if r.precision == c.full and r.trial is not None), None)
        why = (f"no {c.full.upper()} trial in the headline" if full is None else
               f"the {c.full.upper()} headline trial #{full.trial} keeps no expert on the GPU")
        return [["-", "-", "-", "-", f"{why}: no reference cache size", "-"]]
    rows = []
    for fmt, best in c.equal_memory.items():
        if best is None:
            rows.append([fmt, "-", "-", "-", "not even one slot per layer fits", "-"])
            continue
        rows.append([fmt, best.slots, _bytes_cell(best.cache_bytes), best.policy, _h2d(best.bytes_per_token, c.h2d_unit),
                     _pct(1 - best.bytes_per_token / c.sweep.baseline_bytes_per_token)])
    return rows


def _fidelity_study(trials: list[TrialRecord]) -> bool:
    """Whether the study's quality is top-1 agreement (`fidelity_top1`): it stored no task accuracy (a model
    without a tokenizer)."""
    return quality_metric(trials) == "fidelity_top1"


def _quality_columns(fidelity: bool) -> list[str]:
    """A table's two quality columns: task accuracy's, or a fidelity study's (`_fidelity_study`) top-1 agreement's,
    where task accuracy's sat empty ('-')."""
    return ["top-1 agreement", "top-1 change"] if fidelity else ["accuracy [95% CI]", "accuracy change"]


FIDELITY_CAPTION = ("The study measured no task accuracy: top-1 agreement is the share of the fidelity prompts' "
                    "positions where the plan's most likely token is the full-precision model's (stored "
                    "fidelity_top1, measured), top-1 change against the 16-bit (else 32-bit) plan's. ")


def _quality(trials: list[TrialRecord], r: HeadlineRow, fidelity: bool, full: str) -> list[str]:
    """A row's two quality cells: task accuracy [95% CI] and its change, or in a fidelity study its top-1 agreement
    and that change against the full-precision plan's (`accuracy_reference` of fidelity_top1)."""
    if not fidelity:
        return [_acc_text(r.accuracy, r.accuracy_ci), _pp(r.accuracy_change)]
    ref, _ = accuracy_reference(trials, "fidelity_top1", full)
    top1 = ref.values["fidelity_top1"] if ref is not None else None
    return [_acc_text(r.fidelity_top1, None),
            _pp(r.fidelity_top1 - top1) if r.fidelity_top1 is not None and top1 is not None else "-"]


def _baseline_quality(trials: list[TrialRecord], fidelity: bool, full: str) -> list[str]:
    """The no-cache baseline row's quality cells: the full-precision plan's (what its changes are against)."""
    ref, _ = accuracy_reference(trials, "fidelity_top1" if fidelity else "accuracy", full)
    value = ref.values["fidelity_top1" if fidelity else "accuracy"] if ref is not None else None
    return [_acc_text(value, interval(ref) if ref is not None and not fidelity else None),
            "0 pt" if value is not None else "-"]


def _acc_text(acc: float | None, ci: tuple[float, float] | None) -> str:
    if acc is None:
        return "-"
    return f"{acc:.3f}" + (f" [{ci[0]:.3f}, {ci[1]:.3f}]" if ci else "")


def _slots_text(slots: list[int] | None) -> str:
    if not slots:
        return "-"
    return str(slots[0]) if len(set(slots)) == 1 else ",".join(map(str, slots))


def _answer_lines(c: ReportContext) -> list[str]:
    """The direct answer in words, generated from the headline rows (no number typed by hand)."""
    lines = []
    for r in c.headline:
        if r.trial is None:
            lines.append(f"{r.precision}: {r.note}.")
            continue
        # an accuracy with its sample size and interval, as recommend and report's summary say it: the change
        # beside it may be one problem of a few dozen
        measured = None if r.accuracy is None else \
            accuracy_text(r.accuracy, short_source(r.accuracy_source, "source not recorded"),
                          r.accuracy_source)
        acc = f"accuracy {measured}, {_pp(r.accuracy_change)} vs {c.full.upper()}" \
            if r.accuracy_change is not None else f"top-1 agreement {r.fidelity_top1:.3f} (fidelity: the study " \
            "measured no task accuracy)" if measured is None and r.fidelity_top1 is not None else \
            f"accuracy {measured}; {accuracy_reference(c.trials, full=c.full)[1]}" \
            if measured is not None else "accuracy not measured"
        slots = "slot" if r.slots_per_layer and set(r.slots_per_layer) == {1} else "slots"
        lines.append(f"{r.precision} experts with {_slots_text(r.slots_per_layer)} GPU {slots} per layer "
                     f"(trial #{r.trial}) cut H2D transfer by {_pct(r.reduction_vs_baseline)} vs {c.full.upper()} without a "
                     f"cache; {acc}.")
    return lines


# the panels as plots.block_reuse draws them: two on top, one per block length below
BLOCK_REUSE_CAPTION = ("Top left: distinct experts per MoE layer per forward, as a share of the layer's experts, "
                       "over the whole sequence (solid) and over the block's own tokens (hatched). Top right: "
                       "Jaccard overlap of the expert sets of consecutive denoising steps within a block, over "
                       "the whole sequence (solid) and over the block's tokens (dashed); the table gives the "
                       "overlap across a block boundary. Bottom: cache hit rate vs slots (share of a layer's "
                       "experts), one panel per block length.")


def _block_section(doc: Document, c: ReportContext) -> None:
    doc.add(Heading("Block diffusion: expert reuse across denoising steps"))
    if not c.blocks.get("rows"):
        doc.add(Para("Not measured: the study's model is autoregressive - one forward per generated token, with no "
                     "blocks or denoising steps to reuse experts across." if not c.wb.loaded.is_diffusion else
                     "Not measured: no block lengths were asked for."))
        return
    doc.add(Para(
        "A diffusion LLM denoises a block over several steps, each a full forward. One forward touches many more "
        "distinct experts per layer than one autoregressive token, but consecutive steps of one block route "
        "almost the same way: that reuse is what a GPU expert cache turns into hits. Traces of the study's model "
        "(full precision, the study's prompts, as many denoising steps per block as it has tokens: LLaDA-MoE "
        "unmasks one token per step, LLaDA2 at least one, DiffusionGemma denoises its whole canvas each step) at "
        "several block lengths" + (
            ". Each block also opens with an encoder forward (the prompt, then the canvas just committed, into the "
            "KV cache), which is no denoising step: it counts among the forwards and their distinct experts, the "
            "hit rates and the no-cache bytes, but not in the overlaps, which compare consecutive denoising steps "
            "(across a block boundary: one block's last step and the next block's first). The traces:"
            if any(r.get("forwards_off_step") for r in c.blocks["rows"]) else ":")))
    doc.add(Figure(c.figures["block_reuse"], BLOCK_REUSE_CAPTION))
    doc.add(Table(["model", "block length", "forwards", "distinct experts / layer / forward", "max",
                   "Jaccard within block", "Jaccard across blocks", "no-cache H2D / token"],
                  [[r["model"], r["block_length"], r["forwards"], r["distinct_mean"], r["distinct_max"],
                    jaccard_text(r, "within"), jaccard_text(r, "across"), format_bytes(r["no_cache_bytes_per_token"], 2)]
                   for r in c.blocks["rows"]],
                  caption="Jaccard: the mean over pairs of consecutive denoising steps, one pair per MoE layer "
                          "(counted); 'every expert' counts the pairs whose two steps both used all of the layer's "
                          "experts, whose overlap is 1 whatever the routing (a model with few experts)."))


def jaccard_text(row: dict[str, Any], side: str) -> str:
    """A block-reuse row's mean Jaccard `within` a block or `across` block boundaries, with the pairs it averages
    and how many of them held every expert on both sides: "1" from a tiny model's one boundary (2 pairs, both of
    all 8 experts) read as perfect reuse across blocks, above its 0.955 within them. No pair: n/a, and why."""
    value, pairs = row[f"jaccard_{side}_block{'s' if side == 'across' else ''}"], row[f"pairs_{side}"]
    if value is None or not pairs:
        return ("n/a (no block boundary: one block per prompt)" if side == "across"
                else "n/a (no two steps in one block)")
    full = row.get(f"saturated_{side}", 0)
    return f"{value:.4g} ({count(pairs, 'pair')}" + (f"; {full} with every expert on both sides)" if full else ")")


def _hybrid_check(origin: str | None, hybrid: bool) -> str:
    """What the headline check can promise of hybrid trials: their copies depend on the CPU expert times
    (`origin` as `_cpu_label` takes it)."""
    if not hybrid:
        return ""
    if origin is not None:
        whose = "stored with the study" if origin == "study" else "the study's hardware profile's"
        return (f" Hybrid trials split their misses by the CPU expert times they ran with ({whose}), "
                "so they replay to their stored bytes, as copy and cpu trials do.")
    return (" Hybrid trials split their misses by CPU expert times taken now (the study predates storing the ones "
            "it ran with), so their bytes can differ from the stored ones; copy and cpu trials replay to the "
            "stored bytes.")


def _cpu_label(origin: str | None, source: str, host: str | None = None) -> str:
    """Where the CPU expert times of this report's replays (cpu/hybrid misses, time per token) came from:
    `origin` "study" (stored with it), "profile" (its hardware profile's, which its trials ran with) or None;
    `host` the CPU that measured them, named when it is not this one."""
    from advisor.hardware.profiles import other_cpu

    where = other_cpu(host)
    if origin == "study":
        dates = sorted(set(re.findall(r"\d{4}-\d\d-\d\d", source)))  # two when a resume completed them
        return (f"CPU expert times (cpu and hybrid misses, time per token): the study's stored measurement"
                f"{' of ' + ' and '.join(dates) if dates else ''}, the one its trials were priced with "
                f"({source}){where}.")
    if origin == "profile":
        return (f"CPU expert times (cpu and hybrid misses, time per token): {source}, from the study's hardware "
                f"profile{where}, the one its trials were priced with (the study predates storing them).")
    return (f"CPU expert times (cpu and hybrid misses, time per token): {source}, taken by this report (the study "
            "predates storing the ones its trials were priced with).")


def _ran_text(ran: tuple[datetime, datetime] | None) -> str:
    """When the study's finished trials ran, for the provenance line: ", 2026-12-07 04:57-05:02 (...)" - when its
    bytes, times and fidelity were counted and measured; an accuracy reused from the evaluation cache (a plan
    another study of the model and task measured) can be older, which the line says."""
    if ran is None:
        return ""
    first, last = ran
    end = last.strftime("%H:%M" if last.date() == first.date() else "%Y-%m-%d %H:%M")
    return (f", {first:%Y-%m-%d %H:%M}-{end} (the tuning host's clock, as Optuna stored it; an accuracy reused "
            "from the evaluation cache may have been measured earlier)")


def _provenance(doc: Document, c: ReportContext) -> None:
    d, sw, wb = c.data, c.sweep, c.wb
    p = wb.profile
    ev = wb.settings
    trace_rows = [[k, v.forwards, v.layers, v.routed_pairs, v.lookups, v.tokens] for k, v in sw.traces.items()]
    # whose CPU expert times priced the trials: stored with the study, else its hardware profile's, else unknown
    cpu_origin = "study" if d.study_attrs.get("cpu_experts") else "profile" if p.cpu_experts else None
    devices = sorted({str(t.attrs.get("device", d.setting("device", default="?"))) for t in c.trials})
    sources: dict[str, set[str]] = {}
    for t in c.trials:
        for k, v in t.sources.items():
            sources.setdefault(k, set()).add(v)
    doc.add(Heading("How every number was obtained"))
    doc.add(Bullets([
        f"Study `{d.name}` in `{d.storage}`: {count(len(d.trials), 'finished trial')} "
        + (f"({len(c.trials)} within the memory budget)" if d.setting("budget_bytes") else "(no memory budget set)")
        + f", {d.n_failed} failed, {d.n_total} in all; sampler {d.setting('sampler', default='?')}; search "
        f"space `{d.setting('space', default='?')}`; objectives {', '.join(d.objectives) or '-'}.",
        f"Model `{d.setting('model')}`, fingerprint `{wb.loaded.fingerprint}` ({wb.model_check}); "
        f"family {wb.loaded.family}; {len(wb.loaded.moe)} MoE layers x {wb.loaded.moe[0].num_experts} experts, "
        f"top-{wb.loaded.moe[0].top_k}.",
        f"Trials ran on: {', '.join(devices)}{_ran_text(d.ran)}. This report's replays ran on: "
        f"{wb.backend.device}.",
        (f"Workload (accuracy): task {ev.task}, {_ran_count(d.trials, 'accuracy', ev.limit, _examples(wb), 'example')}"
         f", seed {ev.seed}. "
         if any(_measured_accuracy(t) for t in d.trials) else "Workload (accuracy): none, no trial measured it. ")
        + f"Workload (transfer): {_prompts_text(wb.loaded, wb.backend.prompts(ev.trace_prompts), ev)}, batch 1, the "
        f"family's decoding, {wb.backend.max_new_tokens} new tokens each; fidelity on "
        + (_ran_count(d.trials, "fidelity", ev.fidelity_prompts,
                      _examples(wb) if wb.loaded.tokenizer is not None else None, "prompt")
           if any(k in t.values for t in d.trials for k in ("fidelity_kl", "fidelity_top1")) else "none (no trial "
           "measured it)") + ".",
        "H2D bytes: counted exactly (each expert's payload plus its scales at its format) by replaying routing "
        "traces through the same cache-policy objects the offload runtime uses.",
        f"Transfer time: {sw.time_source} - modelled from hardware profile `{p.name}` (pinned "
        f"{p.h2d_gbps_pinned:g} GB/s, {p.copy_latency_us:g} us per copy; profile source: {p.source}) unless the "
        "trial sources below say measured.",
        "Stored metric sources: " + "; ".join(f"{k}: {', '.join(sorted(v))}" for k, v in sorted(sources.items())),
        "Headline check: each headline trial, replayed on a fresh trace here, moves "
        + ", ".join(f"{r.precision} #{r.trial}: {_h2d(r.replayed_bytes_per_token, c.h2d_unit)} (stored {_h2d(r.h2d_bytes_per_token, c.h2d_unit)})"
                    for r in c.headline if r.trial is not None) + "."
        + _hybrid_check(cpu_origin, any(r.miss == "hybrid" for r in c.headline if r.trial is not None)),
        _cpu_label(cpu_origin, wb.backend.cpu_profile().source, wb.backend.cpu_profile().host),
        "Limits: accuracy intervals are Wilson 95% intervals on the stated sample size; a small sample cannot "
        "separate plans whose intervals overlap. Transfer times are a bandwidth model unless measured on CUDA. "
        f"Routing under quantized experts is recorded per precision (it can differ from {c.full.upper()}).",
    ]))
    doc.add(Table(["trace (precision)", "forwards", "MoE layers", "routed (token, expert) pairs", "expert look-ups",
                   "generated tokens"], trace_rows, caption="Routing traces replayed for this report."))


def _measured_accuracy(t) -> bool:
    """Whether a trial measured task accuracy: an over-budget trial stores a placeholder (`not-run:...`)."""
    return "accuracy" in t.values and not str(t.sources.get("accuracy", "")).startswith("not-run")


def _prompts_text(loaded, prompts: list, ev) -> str:
    """Which prompts the traces decode: `prompts`, as `advisor.eval.run.workload_prompts` chose them for this
    report's replays (the tuner's), counted as decoded - the space's `trace_prompts` is capped to the task's."""
    n, seed = len(prompts), ev.seed
    if loaded.tokenizer is None:
        return f"{count(n, 'prompt')} of random token ids, seed {seed} (the model has no tokenizer)"
    capped = f" (all the task has that fit; the space asks for {ev.trace_prompts})" if n < ev.trace_prompts else ""
    return f"{n} of the task's prompts, chosen by seed {seed}{capped}"


def _examples(wb) -> int | None:
    """How many examples the study's task has (None: unknown)."""
    examples = getattr(wb.backend.task, "examples", None)
    return len(examples) if examples is not None else None


_STORED_N = {"accuracy": (("accuracy",), SAMPLE_SIZE),
             "fidelity": (("fidelity_top1", "fidelity_kl"), re.compile(r"\((?:\d+) positions,(\d+) prompts,"))}


def _ran_count(trials, kind: str, asked: int, available: int | None, noun: str) -> str:
    """How many examples (accuracy) or prompts (fidelity) the trials were measured on: the count stored with
    each trial (accuracy's `accuracy_detail`, else the number in its metric source), not the space's setting,
    which the task caps to what it has (`limit = 10**11` is all of it). A study that stored none: "up to" the
    setting, capped to the task's `available` examples where known."""
    metrics, pattern = _STORED_N[kind]
    seen: set[int] = set()
    for t in trials:
        n = (t.attrs.get("accuracy_detail") or {}).get("accuracy_n") if kind == "accuracy" else None
        if n is None:
            m = next((m for k in metrics if (m := pattern.search(t.sources.get(k, "")))), None)
            n = int(m.group(1)) if m else None
        if n is not None:
            seen.add(int(n))
    if len(seen) == 1:
        return count(seen.pop(), noun)
    if seen:
        return f"{min(seen)}-{max(seen)} {noun}s (per trial)"
    cap = asked if available is None else min(asked, available)
    return f"up to {count(cap, noun)}"
