"""`advisor report`: the answer to "how much do INT8/INT4 experts plus caching cut host-to-device transfer,
and what does accuracy lose?" for one tuned study, as Markdown + self-contained HTML with PNG plots.

Where each number comes from (the report repeats this for its reader):

* the **headline table** and the accuracy table are the study's stored trial values, read back unchanged
  from the Optuna storage (`report.json` keeps them with their trial numbers, so they can be checked);
* the **no-cache baseline** (16-bit experts, named as the study's model: `advisor.baselines.full_precision`) and the **transfer curves** are fresh replays of routing traces recorded on
  the study's own model, prompts and decoding (`advisor.tune.model_backend.ModelBackend`), through the
  same simulator the tuner used; every headline trial is replayed too and must reproduce its stored bytes;
* the **block-diffusion section** records extra traces at block lengths 8/16/32 on the same prompts.

Nothing is written until every number exists: the report is built in a temporary directory and renamed
into place at the end, so a failure never leaves half a report.
"""

from __future__ import annotations

import functools
import json
import time
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from advisor.errors import UserError
from advisor.files import OUTPUT, atomic_dir, check_folder, check_parent, check_replaceable
from advisor.recommend import check_accuracy_fraction
from advisor.report.data import DEFAULT_STORAGE, StudyData, load_study_data
from advisor.report.document import ReportContext, compose, json_default, report_json
from advisor.report.render import write_document
from advisor.report.select import (
    BASELINE_FORMATS,
    PRECISIONS,
    BudgetAnswer,
    HeadlineRow,
    Reference,
    accuracy_reference,
    accuracy_rows,
    baseline_rows,
    feasible_trials,
    headline_rows,
    recommended_points,
    reference_memory,
    stored_reference,
    timed,
    trial_policies,
)
from advisor.report.workbench import (
    Workbench,
    counted_shape,
    refuse_other_config,
    stored_shape,
    study_model,
    study_task,
)
from advisor.results.front import quality_metric
from advisor.tune.baseline_trials import NOT_QUEUED
from advisor.tune.budget import budget_memory, least_uniform_peak, memory_spec, smallest_cache
from advisor.tune.config import ModelShape
from advisor.units import count, h2d_unit, size_argument

DEFAULT_BLOCK_LENGTHS = (8, 16, 32)
REPORT_ENTRIES = ("report.md", "report.html", "report.json", "figures")
"""What a report directory holds: an earlier report there is replaced, any other file refuses the -o."""


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


def least_in_space(shape: ModelShape, data: StudyData) -> Callable[[str], tuple[int, str]]:
    """A format's least configuration in the study's own search space (stored with it as `space_toml`): its miss
    policies, prefetch settings and smallest cache (`least_uniform_peak`, `smallest_cache`), on `shape` as the
    study counted it (`counted_shape`). A study that stored no space (or one this version cannot read) is counted
    with misses on the CPU, no prefetch and one slot per MoE layer, the least any space holds."""
    from advisor.tune.space import parse_space

    text = data.setting("space_toml")
    try:
        space = parse_space(text, "the study's space") if text else None
    except UserError:
        space = None
    shape = counted_shape(shape, data)
    if space is None:
        return functools.partial(least_uniform_peak, shape)
    return functools.partial(least_uniform_peak, shape, misses=tuple(map(str, space.miss.values())),
                             prefetches=tuple(map(str, space.prefetch.values())), slots=smallest_cache(space, shape))


def default_out_dir(study: str) -> Path:
    safe = "".join(c if c.isalnum() or c in "-_." else "_" for c in study)
    return Path("reports") / safe


def build_report(
    study: str,
    storage: str = DEFAULT_STORAGE,
    out_dir: str | Path | None = None,
    *,
    memory: Sequence[str] = (),
    block_lengths: Sequence[int] | None = None,
    max_accuracy_drop: float = 0.05,
    progress: Callable[[str], None] | None = None,
    task_data: str | None = None,
    model: str | None = None,
    warn: Callable[[str], None] | None = None,
) -> ReportResult:
    """Build the report of `study` into `out_dir` (replaced as a whole, only once everything succeeded).

    `memory`: GPU budgets (sizes or shares, see `advisor.tune.budget.budget_memory`); the first is the headline's
    reference,
    and with two or more the answer is also tabled at each. None: the study's own budget. `task_data`: the task's
    data file, for a study that did not store the one it was tuned on (`advisor tune --data`). `model`: where the
    study's model is now, when its directory moved (`advisor report --model`). `warn`: told, once the model has
    loaded, what could not be checked of it (a study that stored no fingerprint); the report says it too.
    `block_lengths`: the block-diffusion section's (None: `DEFAULT_BLOCK_LENGTHS` for a diffusion model; given
    for an autoregressive model's study, which has no denoising blocks, they are refused)."""
    say = progress or (lambda msg: None)
    t0 = time.perf_counter()
    for m in memory:
        memory_spec(m)  # a bad value fails here, before the model loads
    check_accuracy_fraction("--max-accuracy-drop", max_accuracy_drop)  # as recommend does, before minutes of work
    data = load_study_data(study, storage)
    trials = feasible_trials(data)
    if not trials:
        raise UserError(f"study {study!r} has no trial that fits its memory budget ({len(data.trials)} finished, "
                        "all over budget); raise the budget or tune again")
    # sizes, and shares of the model's bytes the study stored (`stored_shape`): checked before the model loads
    shape = stored_shape(data) if any(not isinstance(memory_spec(m), int) for m in memory) else None
    if memory and (shape is not None or all(isinstance(memory_spec(m), int) for m in memory)):
        refuse_memory_that_holds_no_trial([(m.strip(), budget_memory(m, shape)[0]) for m in memory], trials)
    out = Path(out_dir) if out_dir is not None else default_out_dir(study)
    check_folder(out, OUTPUT, default=out_dir is None)  # a file there: in pareto's words and the path as typed, not check_replaceable's
    if out != default_out_dir(study):  # reports/ is made for the default reports/<study>; another -o's folder is not
        check_parent(out, OUTPUT)
    check_replaceable(out, REPORT_ENTRIES)  # before the minutes of work, not after
    task = study_task(data, task_data)  # the task's data too
    spec = model or study_model(data)  # a study's directory that moved: one line now, not after torch's import
    refuse_other_config(data, spec, f"--model {model}" if model else f"model {spec}",
                        "point --model at that checkpoint" if model else
                        "pass --model with where the study's checkpoint is (its fingerprint is checked)")
    block_lengths = refuse_blocks_past_positions(data, spec, block_lengths)
    from advisor.tune.interrupt import import_runtime

    import_runtime()  # only now: a bad --memory, study name or storage is one line without torch's import time
    import torch

    from advisor.report import blocks as report_blocks
    from advisor.report import plots as report_plots
    from advisor.report.replay import equal_memory, replays, sweep

    # one intra-op thread, as `advisor tune` runs by default: the same float summation order, so a fresh trace
    # routes as the stored one did; and tiny expert matmuls on a busy host only slow down with more threads
    torch.set_num_threads(1)

    full = baseline_format(data, trials)
    precisions = (full, *PRECISIONS[1:])
    say("loading the study's model")
    wb = Workbench.open(data, task, model, warn or (lambda _: None))
    budgets = [budget_memory(m, wb.backend.shape) for m in memory]  # shares need the model's resident bytes
    if wb.loaded.is_diffusion and block_lengths:  # before the traces: a block length past the positions ran for minutes
        report_blocks.check_block_lengths(wb.loaded, wb.backend.prompts(wb.settings.trace_prompts), block_lengths,
                                          f"--block-lengths {','.join(map(str, block_lengths))}")
    refuse_memory_that_holds_no_trial([(m.strip(), mem) for m, (mem, _) in zip(memory, budgets, strict=True)], trials)
    say(f"recording one routing trace per precision ({', '.join(precisions)})")
    runs = {fmt: wb.trace(fmt) for fmt in precisions}
    policies = trial_policies(data)
    say(f"replaying traces over slot counts with policies {', '.join(policies)} and Belady's MIN")
    replayed = replays({f: r.trace for f, r in runs.items()}, wb.profile)  # access sequences built once
    sw = sweep(replayed, policies=policies, baseline_format=full)
    ref_memory, memory_why = reference_memory(data, trials, int(budgets[0][0]) if budgets else None)
    if budgets:
        memory_why = budgets[0][1]
    memory_notes = above_budget_notes(data, [(m.strip(), mem) for m, (mem, _) in zip(memory, budgets, strict=True)])
    reference = _reference(trials, sw, full)
    # a format that cannot fit says so, counted as its least configuration in the study's own space
    least = least_in_space(wb.backend.shape, data)
    rows = headline_rows(trials, ref_memory, reference, sw.expert_bytes, precisions, least)
    over = [t for t in data.trials if t not in trials]  # over the study's budget: placeholder values
    answers = [BudgetAnswer(spec.strip(), mem, why, headline_rows(trials, mem, reference, sw.expert_bytes, precisions,
                                                                  least),
                            baseline_rows(trials, spec.strip(), reference, sw.expert_bytes, mem, over,
                                          data.study_attrs.get(NOT_QUEUED)))
               for spec, (mem, why) in zip(memory, budgets, strict=True)] if len(budgets) > 1 else []
    shown = {r.trial: next(t for t in trials if t.number == r.trial) for r in rows if r.trial is not None}
    replay_on = headline_traces(wb, shown.values(), runs, say)
    for r in rows:
        if r.trial is not None:
            r.replayed_bytes_per_token = wb.replay_stored(replay_on[r.trial], shown[r.trial])
    ref_cache = next((r.expert_cache_bytes for r in rows if r.precision in BASELINE_FORMATS and r.expert_cache_bytes),
                     None)
    equal = {} if ref_cache is None else equal_memory(replayed, ref_cache, policies=policies)
    recs = recommended_points(data, max_accuracy_drop, full)

    blocks: dict[str, Any] = {"rows": [], "curves": []}
    if wb.loaded.is_diffusion and block_lengths:
        say(f"recording block-diffusion traces at block lengths {', '.join(map(str, block_lengths))}")
        prompts = wb.backend.prompts(wb.settings.trace_prompts)
        blocks = report_blocks.block_length_study(wb.loaded, prompts, block_lengths, label=str(data.setting("model")),
                                                  seed=wb.settings.seed, profile=wb.profile)

    with atomic_dir(out, replaces=REPORT_ENTRIES) as tmp:
        figs = tmp / "figures"
        figs.mkdir()
        say("drawing figures")
        figures = {
            "transfer_vs_slots": report_plots.transfer_vs_slots(sw, figs / "transfer_vs_slots.png"),
            "transfer_vs_memory": report_plots.transfer_vs_slots(sw, figs / "transfer_vs_memory.png", x="memory"),
            "accuracy": report_plots.accuracy_by_plan(accuracy_rows(trials), figs / "accuracy.png"),
            "pareto": report_plots.pareto(trials, {p.trial_number for p in data.front},
                                          [_RecMark(r, quality_metric(trials)) for r in recs], figs / "pareto.png",
                                          "time_per_token" if timed(data) else "h2d_bytes_per_token",
                                          y=quality_metric(trials), h2d=h2d_unit(sw.baseline_bytes_per_token)),
        }
        if blocks["rows"]:
            figures["block_reuse"] = report_plots.block_reuse(blocks["rows"], blocks["curves"],
                                                              figs / "block_reuse.png")
        ctx = ReportContext(data, trials, wb, runs, sw, rows, ref_memory, memory_why, recs, blocks, figures,
                            policies, max_accuracy_drop, reference, answers, equal, memory_notes)
        doc = compose(ctx)
        md, page = write_document(doc, tmp)
        payload = report_json(ctx)
        (tmp / "report.json").write_text(json.dumps(payload, indent=2, default=json_default) + "\n")
    fig_paths = [out / "figures" / p.name for p in figures.values()]
    return ReportResult(out, out / md.name, out / page.name, out / "report.json", fig_paths, rows,
                        time.perf_counter() - t0, {"recommended": recs, "answers": answers,
                                                   "memory": (ref_memory, memory_why), "baseline_format": full,
                                                   "reference": reference,
                                                   "accuracy_why": accuracy_reference(trials, full=full)[1],
                                                   "memory_notes": memory_notes,
                                                   "timed": timed(data)})


def refuse_blocks_past_positions(data: StudyData, spec: str, block_lengths: Sequence[int] | None) -> tuple[int, ...]:
    """Before the model loads: the block lengths the report records block-diffusion traces at (None: the default
    ones for a diffusion model, none for an autoregressive one). Refused: lengths given for an autoregressive
    model (it has no denoising blocks: `report --block-lengths 8,16` on a Qwen3-MoE study was ignored without a
    word), and block lengths whose blocks alone exceed the positions of the model `spec` names (its config.json,
    `config_positions`); the prompts beside them are checked once it has loaded (`check_block_lengths`)."""
    from advisor.models import DIFFUSION_FAMILIES, config_family, config_positions, model_name, spec_config
    from advisor.report.blocks import refuse_block_lengths

    if block_lengths is not None and not block_lengths:
        return ()
    config, meta = spec_config(spec), data.setting("model_meta") or {}
    meta = meta if isinstance(meta, dict) else {}
    family = meta.get("family") or config_family(config)
    diffusion = (meta["is_diffusion"] if "is_diffusion" in meta
                 else None if family is None else family in DIFFUSION_FAMILIES)  # None: known once it loads
    if diffusion is False:
        if block_lengths is not None:
            raise UserError(f"--block-lengths {','.join(map(str, block_lengths))}: {model_name(spec)}"
                            f"{f' ({family})' if family else ''} decodes autoregressively, one token per forward, "
                            "with no denoising blocks; drop it (its report has no block-diffusion section)")
        return ()
    lengths = tuple(DEFAULT_BLOCK_LENGTHS if block_lengths is None else block_lengths)
    if diffusion:
        refuse_block_lengths(lengths, f"--block-lengths {','.join(map(str, lengths))}", config_positions(config),
                             model_name(spec))
    return lengths


def refuse_memory_that_holds_no_trial(memories: list[tuple[str, float]], trials: Sequence[Any]) -> None:
    """`UserError` when no `--memory` value holds any stored trial: every row of the report would say "no trial
    fits" (`--memory 1KiB` wrote such a report after a minute of tracing), so say what the least one needs."""
    from advisor.results.front import short_source
    from advisor.units import BUDGET_DIGITS, format_bytes

    stored = [t for t in trials if "peak_gpu_bytes" in t.values]
    if not memories or not stored:
        return
    trial = min(stored, key=lambda t: (t.values["peak_gpu_bytes"], t.number))
    peak, number = trial.values["peak_gpu_bytes"], trial.number
    if any(mem >= peak for _, mem in memories):
        return
    # labelled as the stored peak is wherever else it is shown: counted (or an offloaded live trial's measured)
    kind = short_source((getattr(trial, "sources", None) or {}).get("peak_gpu_bytes"), "source not recorded")
    given = ", ".join(f"{label} ({format_bytes(mem, BUDGET_DIGITS)})" for label, mem in memories)
    raise UserError(f"--memory {given}: no stored trial fits {'it' if len(memories) == 1 else 'any of them'}; the "
                    f"least peak GPU memory among the study's trials is {format_bytes(peak, 2)} ({kind}, trial "
                    f"#{number}): give "
                    f"--memory {size_argument(peak)} or more, or tune the study at a smaller budget")


def above_budget_notes(data: Any, memories: list[tuple[str, float]]) -> list[str]:
    """What to say of each `--memory` value above the study's budget: no trial was tuned with that much memory
    (a study keeps to its budget: `tune --budgets` refuses such a value), so its answer is the study's best within
    its own budget - `--memory 80%` of a study tuned at 50% showed bf16 with the 8 slots 50% holds as the answer
    at 80%, without a word."""
    from advisor.units import BUDGET_DIGITS, format_bytes

    budget = data.setting("budget_bytes")
    if not budget:
        return []
    # at a budget's 2 decimals, as the report's reference memory and every other command name them (it said the
    # study's budget of 4.3 MiB, which `studies` and `tune` call 4.34 MiB, beside a reference memory of 93.13 GiB)
    over = [f"{label} ({format_bytes(mem, BUDGET_DIGITS)})" for label, mem in memories if mem > float(budget) + 0.5]
    if not over:
        return []
    return [f"--memory {', '.join(over)} {'is' if len(over) == 1 else 'are'} above the study's budget of "
            f"{format_bytes(float(budget), BUDGET_DIGITS)}: no trial was tuned with more memory, so the answer there is the study's "
            "best within its budget, not what that memory would hold; tune a study at it (`advisor tune --budget`, "
            "`--budgets`) to answer it"]


def baseline_format(data: Any, trials: list[Any]) -> str:
    """The study's 16-bit format, as the report names its baseline and traces its 16-bit plan
    (`advisor.results.reference.full_format`: its stored no-cache trial's, else the one its uniform 16-bit trials
    ran at - a bf16 space on an fp32 model: bf16, not the fp16 the dtype rule gives - else its model's dtype)."""
    from advisor.results.reference import full_format

    stored = stored_reference(trials)
    meta = data.setting("model_meta") or {}
    return full_format(meta.get("dtype") if isinstance(meta, dict) else None, (t.uniform_format for t in trials),
                       stored.uniform_format if stored is not None else None)


def _reference(trials: list[Any], sw: Any, full: str) -> Reference:
    """No cache: the study's stored trial when it has one (`advisor tune --budgets`), else the report's own
    zero-slot replay of the 16-bit trace (bytes only); at 16-bit format `full` (`baseline_format`)."""
    t = stored_reference(trials)
    if t is not None:
        return Reference(t.values["h2d_bytes_per_token"], t.values.get("time_per_token"), t,
                         f"stored trial #{t.number}", full)
    return Reference(sw.baseline_bytes_per_token, None, None, "counted:trace-replay(0 slots)", full)


def headline_traces(wb: Any, trials: Iterable[Any], runs: dict[str, Any],
                    say: Callable[[str], None] = lambda _: None) -> dict[int, Any]:
    """Trial number -> the run (`Workbench.trace`) each headline trial is replayed on, to check its stored bytes:
    the report's trace of its own uniform format (`runs`, by format name), else a trace of its own plan
    (`Workbench.trace_of`: int4:g64, int2, fp8, the other 16-bit format, a mixed plan) - routing differs between
    group sizes too, so an int4:g64 trial replayed on the int4 (g128) trace moved other bytes than it stored."""
    trials = list(trials)
    own = [t for t in trials if t.uniform_format not in runs]
    if own:
        say(f"recording the routing trace of {count(len(own), 'more headline plan')} "
            f"({', '.join(t.plan_label for t in own)})")
    traced = {t.number: wb.trace_of(t) for t in own}
    return {t.number: traced[t.number] if t.number in traced else runs[t.uniform_format] for t in trials}


class _RecMark:
    """A recommended point as the Pareto plot draws it."""

    def __init__(self, r: dict[str, Any], quality: str = "accuracy"):
        from advisor.hardware.profiles import format_bytes

        self.values = r["values"]
        self.accuracy = r["values"].get(quality, float("nan"))  # the plot's y: top-1 agreement in a fidelity study
        self.label = f"#{r['trial']} @ {format_bytes(r['budget_bytes'])}"
