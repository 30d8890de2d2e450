"""Showing a study to a person: the live progress of `advisor tune` and the Pareto front as a table.

Torch- and optuna-free (the front table is also what `advisor pareto` prints from the stored rows).
"""

from __future__ import annotations

import threading
from collections.abc import Sequence
from typing import Any

from rich.console import Console
from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn
from rich.table import Table

from advisor.results.config_view import NO_SLOTS, miss_text, policy_text
from advisor.results.front import FrontPoint, source_kinds
from advisor.units import BUDGET_DIGITS, format_bytes

_UNITS = {
    "time_per_token": ("time ms/tok", "ms"),  # distinct from transfer's and latency's ms per token
    "h2d_bytes_per_token": ("H2D/token", "bytes"),
    "transfer_ms_per_token": ("transfer ms/tok", "ms"),
    "latency_ms_per_token": ("latency ms/tok", "ms"),
    "accuracy": ("accuracy", "frac"),
    "peak_gpu_bytes": ("peak GPU", "bytes"),
    "hit_rate": ("hit rate", "frac"),
    "fidelity_kl": ("KL", "num"),
    "fidelity_top1": ("top-1 agree", "frac"),
}
FRONT_COLUMNS = ("time_per_token", "h2d_bytes_per_token", "accuracy", "peak_gpu_bytes", "hit_rate", "latency_ms_per_token",
                 "fidelity_top1")


def human_bytes(n: float) -> str:
    """A size as the tables, titles and budgets print it: `format_bytes` at `BUDGET_DIGITS` decimals (a loop of its
    own stopped at GiB: pareto titled a 2 TiB study's budget "2048.00 GiB" where recommend said "2.00 TiB")."""
    return format_bytes(n, BUDGET_DIGITS)


def failed_text(failed: int, retried: int, noun: str = "") -> str:
    """A failed-trial count that says how many were queued to run again (an interrupted trial, a dead worker's),
    `noun` after the count ("1 failed (1 queued again)"): "retried" read as run again, where the copy may still be
    waiting (`studies` right after a Ctrl-C said "finished 0 · failed 1 (1 retried)" beside "waiting 11")."""
    return f"{failed}{f' {noun}' if noun else ''}" + (f" ({retried} queued again)" if retried else "")


def front_counts(points: int, complete: int, over_budget: int, failed: int, retried: int) -> str:
    """What a front's title counts, "5 points; 6 finished trials, 1 over budget, 0 failed": one text for
    `advisor tune`'s and `advisor pareto`'s titles, which counted different things (pareto left out the trials
    stored over budget, which finish but are on no front)."""
    from advisor.units import count

    return (f"{count(points, 'point')}; {count(complete, 'finished trial')}, {over_budget} over budget, "
            f"{failed_text(failed, retried, 'failed')}")


def fmt_value(metric: str, v: float | None) -> str:
    if v is None:
        return "-"
    kind = _UNITS.get(metric, ("", "num"))[1]
    if kind == "bytes":
        return human_bytes(v)
    if kind == "frac":
        return f"{v:.3f}"
    if kind == "ms":
        return f"{v:.3f}"
    return f"{v:.4g}"


def config_text(config: dict[str, Any]) -> tuple[str, str]:
    """(precision text, cache text) of a stored configuration."""
    prec = config.get("precision_description") or config.get("precision_spec") or "?"
    slots = config.get("slots_per_layer") or []
    if slots:
        s = f"{slots[0]}" if len(set(slots)) == 1 else f"{min(slots)}-{max(slots)}"
    else:
        s = "?"
    prefetch = config.get("prefetch", "none")
    extra = [f"prefetch {prefetch}"] if prefetch != "none" else []
    extra += [m] if (m := miss_text(config)) else []
    policy = policy_text(config)
    cache = "0 slots/layer (no cache)" if policy == NO_SLOTS else f"{s} slot{'' if s == '1' else 's'}/layer, {policy}"
    return prec, ", ".join([cache, *extra])


def _front_rows(points: Sequence[FrontPoint], objectives: Sequence[str]) -> tuple[list[str], dict[tuple, list[str]]]:
    """(metric columns, {(precision, cache, *values): [trial numbers]}), best H2D first."""
    cols = [m for m in FRONT_COLUMNS if any(m in p.values for p in points)]
    for m in objectives:
        if m not in cols:
            cols.insert(0, m)
    key = "h2d_bytes_per_token" if any("h2d_bytes_per_token" in p.values for p in points) else (cols[0] if cols else None)
    ordered = sorted(points, key=lambda p: (p.values.get(key, 0.0) if key else 0.0, -p.values.get("accuracy", 0.0)))
    # A sampler may run one configuration several times: show it once, naming every trial that ran it.
    rows: dict[tuple, list[str]] = {}
    for p in ordered:
        prec, cache = config_text(p.config)
        cells = (prec, cache, *(fmt_value(m, p.values.get(m)) for m in cols))
        rows.setdefault(cells, []).append(str(p.trial_number))
    return cols, rows


def _label(metric: str, objectives: Sequence[str]) -> str:
    """A metric's column name; `*` marks the study's objectives."""
    return _UNITS.get(metric, (metric,))[0] + (" *" if metric in objectives else "")


def front_table(points: Sequence[FrontPoint], title: str, objectives: Sequence[str] = (),
                front_rows: tuple[list[str], dict[tuple, list[str]]] | None = None) -> Table:
    """The front as a rich table, best H2D first, with each column's value source in the header
    (`front_rows`: `_front_rows` of the same points, when already computed)."""
    cols, rows = front_rows or _front_rows(points, objectives)
    table = Table(title=title, title_justify="left", header_style="bold")
    table.add_column("trial", justify="right")
    table.add_column("expert precision")
    table.add_column("GPU cache")
    for m in cols:
        srcs = source_kinds(p.sources.get(m, "") for p in points if m in p.values)
        table.add_column(f"{_label(m, objectives)}\n[dim]{srcs}[/dim]", justify="right")
    for cells, trials in rows.items():
        table.add_row(", ".join(trials), *cells)
    return table


def print_front(console: Console, points: Sequence[FrontPoint], title: str, objectives: Sequence[str] = (), *,
                wide: bool = False) -> None:
    """The front table when it fits the width (or `wide`), else one block per point; then the sources."""
    from advisor.terminal import print_fitted, print_wrapped

    cols, rows = front_rows = _front_rows(points, objectives)
    records = [(f"trial {', '.join(trials)}: {cells[0]}; {cells[1]}",
                [(_label(m, objectives), v) for m, v in zip(cols, cells[2:], strict=True)])
               for cells, trials in rows.items()]
    print_fitted(console, front_table(points, title, objectives, front_rows), records, wide=wide)
    for line in sources_legend(points, cols):
        print_wrapped(console, f"  {line}", 4, style="dim")


def sources_legend(points: Sequence[FrontPoint], columns: Sequence[str] = ()) -> list[str]:
    """One line per metric: every distinct full source string (what `*` columns were measured with), a metric
    shown as one of `columns` named with its column's header (`time_per_token [time ms/tok]`): three metrics are
    milliseconds per token, and the legend lists them all."""
    lines = []
    metrics = sorted({m for p in points for m in p.sources})
    for m in metrics:
        srcs = sorted({p.sources[m] for p in points if m in p.sources})
        label = _UNITS.get(m, (m,))[0]
        shown = f" [{label}]" if m in columns and label != m else ""
        lines.append(f"{m}{shown}: {'; '.join(srcs)}" + (_intervals(points) if m == "accuracy" else ""))
    return lines


def _intervals(points: Sequence[FrontPoint]) -> str:
    """The Wilson 95% interval of each accuracy shown, where its source gives the sample size
    (`advisor.eval.stats.stored_interval`): on the few examples a tune measures, two accuracies a few points apart
    are often not told apart, which the front's bare values did not say."""
    from advisor.eval.stats import stored_interval

    seen: dict[str, str] = {}
    for p in sorted((p for p in points if "accuracy" in p.values), key=lambda p: p.values["accuracy"]):
        ci = stored_interval(p.values["accuracy"], p.sources.get("accuracy"))
        if ci is not None:
            seen.setdefault(fmt_value("accuracy", p.values["accuracy"]), f"{ci[1]:.3f}-{ci[2]:.3f}")
    return ("; 95% intervals (Wilson): " + ", ".join(f"{v} is {ci}" for v, ci in seen.items())) if seen else ""


PLAIN_PROGRESS_EVERY_S = 60.0  # output that is not a terminal (a log file, a pipe): one progress line this often


class LiveProgress:
    """`advisor tune`'s live line: finished trials n/N, front size, what the running trial does, time.

    Short enough for 80 columns; the counters it used to carry are in the summary line after the run. Where the
    output is not a terminal (`advisor tune ... > log`, a worker under nohup) rich draws no live line, only its
    last state at the end, so a run of minutes or hours said nothing between its header and its front: there the
    same line is printed every PLAIN_PROGRESS_EVERY_S seconds instead."""

    def __init__(self, console: Console, opts: Any):
        self.console = console
        self.opts = opts
        self.progress = Progress(
            TextColumn("[bold]tuning[/bold]"), BarColumn(bar_width=12), MofNCompleteColumn(),
            TextColumn("front {task.fields[front]}"), TextColumn("{task.fields[info]}"),
            TimeElapsedColumn(), console=console, transient=False,
        )
        self.task = self.progress.add_task("tune", total=None, front=0, info="starting")
        self._stop = threading.Event()
        self._ticker: threading.Thread | None = None
        self._started = False  # the study began (start() ran): until then the line has nothing to say

    def __enter__(self) -> LiveProgress:
        self.progress.__enter__()
        if not self.console.is_terminal:
            self._ticker = threading.Thread(target=self._tick, name="advisor-progress", daemon=True)
            self._ticker.start()
        return self

    def __exit__(self, *exc: Any) -> None:
        self._stop.set()
        if self._ticker is not None:
            self._ticker.join()
        if self._started:
            self.progress.__exit__(*exc)
        else:  # refused before the study began (a budget nothing fits, a storage error, Ctrl-C): the one-line
            self.progress.live.transient = True  # error, without `tuning 0/? front 0 starting` (or, piped, a
            self.progress.live.stop()  # blank line: Progress.stop's) above it

    def _tick(self) -> None:
        while not self._stop.wait(PLAIN_PROGRESS_EVERY_S):
            if self._started:
                self.console.print(self.plain_line(), markup=False, highlight=False)

    def plain_line(self) -> str:
        """The live line as plain text, e.g. `tuning 12/40 front 5 #13 accuracy 0:05:00`."""
        task = self.progress.tasks[0]
        total = "?" if task.total is None else f"{task.total:.0f}"
        elapsed = int(task.elapsed or 0)
        return (f"tuning {task.completed:.0f}/{total} front {task.fields['front']} {task.fields['info']} "
                f"{elapsed // 3600}:{elapsed // 60 % 60:02d}:{elapsed % 60:02d}")

    def start(self, study: Any, objective: Any) -> None:
        """Count what the study already holds: `--trials N` tops it up to N, `--more N` adds N."""
        self._started = True
        done = sum(t.state.name == "COMPLETE" for t in study.get_trials(deepcopy=False))
        total = self.opts.total_trials if self.opts.total_trials is not None else (
            done + self.opts.n_trials if self.opts.n_trials is not None else None)
        self.progress.update(self.task, total=total, completed=done, front=_front_size(study))

    def stage(self, stage: str, trial_number: int | None) -> None:
        what = {"fidelity": "fidelity", "cache": "replay", "live": "live run", "accuracy": "accuracy"}.get(stage, stage)
        self.progress.update(self.task, info=f"#{trial_number} {what}")

    def trial_done(self, study: Any, trial: Any, objective: Any) -> None:
        stage = trial.user_attrs.get("stage", trial.state.name.lower())
        if self.opts.total_trials is not None:  # --trials N counts the study's finished trials, whoever ran them
            # (workers sharing a study: each line counted its own, `6/12` in both when the study had its 12)
            done = sum(t.state.name == "COMPLETE" for t in study.get_trials(deepcopy=False))
            self.progress.update(self.task, completed=done)
        else:  # --more N counts this run's
            self.progress.update(self.task, advance=int(trial.state.name == "COMPLETE"))
        self.progress.update(self.task, front=_front_size(study), info=f"#{trial.number} {stage}")

    def finish(self, n_complete: int, front_size: int) -> None:
        """The study as it ended: its front and, with `--trials N`, its finished trials when this run stopped -
        a peer sharing the study may have finished trials after this worker's last one, and the line (counted at
        that trial) said `5/6` of a study that ended with 7; `--more N` keeps this run's count. A run that began
        no trial (the study already had its N) says so, not `starting`, which it was left at."""
        self.progress.update(self.task, front=front_size)
        if self.progress.tasks[0].fields["info"] == "starting":
            self.progress.update(self.task, info="no trial run")
        if self.opts.total_trials is not None:
            self.progress.update(self.task, completed=n_complete)


def _front_size(study: Any) -> int:
    """The study's current front size for the live line (a resumed study starts from its stored front)."""
    try:
        return len(study.best_trials)
    except Exception:  # noqa: BLE001 - display only
        return 0
