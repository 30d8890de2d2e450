"""Showing a study to a person: the live progress of `advisor tune` and the Pareto front as a table.

Torch- and optuna-free (the front table is also what `advisor pareto` prints from the stored rows).
"""

from __future__ import annotations

import time
from collections.abc import Sequence
from typing import Any

from rich.console import Console
from rich.progress import (
    BarColumn,
    MofNCompleteColumn,
    Progress,
    TextColumn,
    TimeElapsedColumn,
    TimeRemainingColumn,
)
from rich.table import Table

from advisor.results.front import FrontPoint

_UNITS = {
    "h2d_bytes_per_token": ("H2D/token", "bytes"),
    "transfer_ms_per_token": ("transfer ms/tok", "ms"),
    "latency_ms_per_token": ("latency ms/tok", "ms"),
    "accuracy": ("accuracy", "frac"),
    "peak_gpu_bytes": ("peak GPU", "bytes"),
    "hit_rate": ("hit rate", "frac"),
    "fidelity_kl": ("KL", "num"),
    "fidelity_top1": ("top-1 agree", "frac"),
}
FRONT_COLUMNS = ("h2d_bytes_per_token", "accuracy", "peak_gpu_bytes", "hit_rate", "latency_ms_per_token",
                 "fidelity_top1")


def human_bytes(n: float) -> str:
    for unit, size in (("GiB", 2**30), ("MiB", 2**20), ("KiB", 2**10)):
        if abs(n) >= size:
            return f"{n / size:.2f} {unit}"
    return f"{n:.0f} B"


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


def short_source(src: str) -> str:
    """'measured:toy(n=32,cpu)' -> 'measured'; keeps the kind, drops the detail, for table footnotes."""
    return src.split(":", 1)[0] if src else "?"


def config_text(config: dict[str, Any]) -> tuple[str, str]:
    """(precision text, cache text) of a stored configuration."""
    prec = config.get("precision_description") or config.get("precision_spec") or "?"
    slots = config.get("slots_per_layer") or []
    if slots:
        s = f"{slots[0]}" if len(set(slots)) == 1 else f"{min(slots)}-{max(slots)}"
    else:
        s = "?"
    prefetch = config.get("prefetch", "none")
    cache = f"{s} slots/layer, {config.get('policy', '?')}" + ("" if prefetch == "none" else f", prefetch {prefetch}")
    return prec, cache


def front_table(points: Sequence[FrontPoint], title: str, objectives: Sequence[str] = ()) -> Table:
    """The front as a rich table, best H2D first, with each column's value source in the header."""
    cols = [m for m in FRONT_COLUMNS if any(m in p.values for p in points)]
    for m in objectives:
        if m not in cols:
            cols.insert(0, m)
    table = Table(title=title, title_justify="left", header_style="bold")
    table.add_column("trial", justify="right")
    table.add_column("expert precision")
    table.add_column("GPU cache")
    for m in cols:
        srcs = sorted({short_source(p.sources.get(m, "")) for p in points if m in p.values})
        mark = " *" if m in objectives else ""
        table.add_column(f"{_UNITS.get(m, (m,))[0]}{mark}\n[dim]{'/'.join(srcs)}[/dim]", justify="right")
    key = "h2d_bytes_per_token" if any("h2d_bytes_per_token" in p.values for p in points) else (cols[0] if cols else None)
    ordered = sorted(points, key=lambda p: (p.values.get(key, 0.0) if key else 0.0, -p.values.get("accuracy", 0.0)))
    # A sampler may run one configuration several times: show it once, naming every trial that ran it.
    rows: dict[tuple, list[str]] = {}
    for p in ordered:
        prec, cache = config_text(p.config)
        cells = (prec, cache, *(fmt_value(m, p.values.get(m)) for m in cols))
        rows.setdefault(cells, []).append(str(p.trial_number))
    for cells, trials in rows.items():
        table.add_row(", ".join(trials), *cells)
    return table


def sources_legend(points: Sequence[FrontPoint]) -> list[str]:
    """One line per metric: every distinct full source string (what `*` columns were measured with)."""
    lines = []
    metrics = sorted({m for p in points for m in p.sources})
    for m in metrics:
        srcs = sorted({p.sources[m] for p in points if m in p.sources})
        lines.append(f"{m}: {'; '.join(srcs)}")
    return lines


class LiveProgress:
    """`advisor tune`'s live line: trial n/N, front size, ETA, and what the running trial is doing."""

    def __init__(self, console: Console, n_trials: int | None, timeout: float | None):
        self.console = console
        self.n_trials, self.timeout = n_trials, timeout
        self.progress = Progress(
            TextColumn("[bold]tuning[/bold]"), BarColumn(), MofNCompleteColumn(),
            TextColumn("front {task.fields[front]}"), TextColumn("| {task.fields[info]}"),
            TimeElapsedColumn(), TextColumn("eta"), TimeRemainingColumn(),
            console=console, transient=False,
        )
        self.task = self.progress.add_task("tune", total=n_trials, front=0, info="starting")
        self.t0 = time.monotonic()
        self.done = 0

    def __enter__(self) -> LiveProgress:
        self.progress.__enter__()
        return self

    def __exit__(self, *exc: Any) -> None:
        self.progress.__exit__(*exc)

    def stage(self, stage: str, trial_number: int | None) -> None:
        what = {"fidelity": "fidelity proxy", "cache": "trace replay", "accuracy": "task accuracy"}.get(stage, stage)
        self.progress.update(self.task, info=f"trial {trial_number}: {what}")

    def trial_done(self, study: Any, trial: Any, objective: Any) -> None:
        self.done += 1
        state = trial.state.name.lower()
        stage = trial.user_attrs.get("stage", state)
        try:
            front = len(study.best_trials)
        except Exception:  # noqa: BLE001 - display only
            front = 0
        c = objective.counters
        info = (f"#{trial.number} {stage}; acc evals {c.get('accuracy_evaluations', 0)}, "
                f"cache hits {c.get('accuracy_cache_hits', 0)}, skipped {c.get('accuracy_skipped', 0)}, "
                f"infeasible {c.get('infeasible', 0)}")
        self.progress.update(self.task, advance=1, front=front, info=info)
