"""CLI commands of this area (registered by advisor.cli). Import heavy libraries inside command bodies."""

from __future__ import annotations

import time
from pathlib import Path
from typing import Any

import typer

from advisor.commands import OUTPUT, accuracy_option, output_option, storage_option, user_path
from advisor.models import check_model_spec
from advisor.units import MAX_LENGTH

LABEL_ROOM = 56
"""Columns the report's summary keeps for its figures beside its right-aligned plan labels: a label that leaves
fewer (a long mixed plan's at 80 columns) heads its row on a line of its own."""


def register(app: typer.Typer) -> None:
    """Add this area's commands to the app."""

    @app.command("report")
    def report(
        study: str = typer.Argument(..., help="Study name (see `advisor studies`)."),
        storage: str = storage_option(),
        output: str | None = output_option(None, "Output directory (default reports/<study>)."),
        memory: str | None = typer.Option(
            None, "--memory", help="GPU memory for the equal-memory headline: a size (1.5MiB) or a share of the "
            "FP16 expert bytes on top of the resident weights (25%); several, comma-separated (10%,25%,50%), "
            "answer at each (default: the study's budget).",
        ),
        block_lengths: str | None = typer.Option(
            None, "--block-lengths", help="Block lengths for the block-diffusion section of a diffusion model's "
            "study (default 8,16,32; '' to skip); an autoregressive model has no denoising blocks.",
        ),
        data: str | None = typer.Option(
            None, "--data", callback=user_path, help="The task's data file, as given to `advisor tune --data` (default: the file the "
            "study stored; studies tuned before 2026-12-05 stored none)."),
        model: str | None = typer.Option(
            None, "--model", help="Where the study's model is now, when its directory moved or the report runs on "
            "another machine (default: where the study loaded it; its fingerprint is checked)."),
        max_accuracy_drop: float = typer.Option(
            0.05, "--max-accuracy-drop", **accuracy_option(), help="Accuracy floor of the recommended points: at most this "
            "much below full precision (absolute: 0.05 = 5 accuracy points)."
        ),
    ) -> None:
        """Markdown + HTML report: transfer and time saved by INT8/INT4 experts + caching, and accuracy lost.

        From a tuned study: plots, the headline table at equal GPU memory, and how every number was obtained."""
        from advisor.errors import STORAGE_WHAT, UserError, refuse_empty
        from advisor.report.study import build_report
        from advisor.results.preflight import check_storage
        from advisor.tune.budget import memory_specs

        refuse_empty({"--model": model}, "a model directory or hub id")
        refuse_empty({"--data": data}, "the data file")  # '' read the study's stored file, without a word
        refuse_empty({"--storage": storage}, STORAGE_WHAT)
        refuse_empty({OUTPUT: output}, "a directory (without it: reports/<study>)")  # '' (Path('') is '.') wrote here
        try:
            lengths = None if block_lengths is None else tuple(int(x) for x in block_lengths.split(",") if x.strip())
        except ValueError as e:
            raise UserError(f"--block-lengths {block_lengths!r} must be comma-separated integers, e.g. 8,16,32") from e
        if any(n <= 0 for n in lengths or ()):
            raise UserError(f"--block-lengths {block_lengths!r}: block lengths must be positive")
        if any(n > MAX_LENGTH for n in lengths or ()):  # torch's size arithmetic would overflow: a traceback
            raise UserError(f"--block-lengths {block_lengths!r}: a block length is at most {MAX_LENGTH} tokens")
        mem = list(memory_specs(memory, "--memory"))
        check_storage(storage, write=False)  # a corrupt or unreachable database: one line, before any work
        if model is not None:
            model = check_model_spec(model)  # a mistyped --model before torch imports (after the options' own checks)
        from rich.console import Console

        from advisor.terminal import print_parts, print_wrapped

        err = Console(stderr=True)  # its lines wrap at the terminal's width, under their own text
        t0 = time.monotonic()
        steps = iter(range(1, 100))

        def progress(message: str) -> None:  # a report takes minutes: say which step runs, and since when
            line = f"[{next(steps)}] {time.monotonic() - t0:5.0f} s  "
            print_wrapped(err, f"{line}{message} ...", len(line))

        res = build_report(study, storage, None if output is None else Path(output), memory=mem, block_lengths=lengths,
                           max_accuracy_drop=max_accuracy_drop, progress=progress, task_data=data, model=model,
                           warn=lambda message: print_wrapped(err, f"warning: {message}", 9))
        for note in res.extra["memory_notes"]:
            print_wrapped(err, f"note: {note}", 6)
        typer.echo(f"report: {res.markdown}")
        typer.echo(f"        {res.html} (self-contained)")
        typer.echo(f"        {res.data} (every number, with trial numbers)")
        from advisor.baselines import no_cache_label
        from advisor.eval.stats import accuracy_text
        from advisor.report.select import memory_text
        from advisor.results.front import format_metric, source_kinds

        ref = res.extra["reference"]  # what every cut is against: its sources label a cut with the row's
        ref_sources = ref.trial.sources if ref.trial is not None else {"h2d_bytes_per_token": ref.source}

        def kind(*sources: str | None) -> str:
            """A number's short label, measured / counted / modelled, as `pareto` and `recommend` give it."""
            return source_kinds(sources, missing="source not recorded")

        timed = res.extra["timed"]  # a study tuned for time per token: its rows are its fastest trials

        def cuts(r: Any) -> list[str]:
            """What a row is ranked by first - time per token in a time study, shown as such (a cut against a
            16-bit no-cache trial only where the study stored one) - then the transfer cut, each with how its
            numbers were obtained."""
            cut = "-" if r.reduction_vs_baseline is None else f"{100 * r.reduction_vs_baseline:.1f}%"
            out = [f"transfer cut {cut} ({kind(r.h2d_source, ref_sources.get('h2d_bytes_per_token'))})"]
            time_cut = ([f"time cut {100 * r.time_cut:.1f}% ({kind(r.time_source, ref_sources.get('time_per_token'))})"]
                        if r.time_cut is not None else [])
            if not timed:
                return out + time_cut
            time = "-" if r.time_per_token is None else format_metric("time_per_token", r.time_per_token)
            return [f"time per token {time} ({kind(r.time_source)})", *time_cut, *out]

        full = res.extra["baseline_format"]
        memory, why = res.extra["memory"]  # what "fits" means in the lines below, as the report's headline says
        console = Console()  # the terminal's width ($COLUMNS, else 80), as every wrapped line of the tool
        print_parts(console, "  ", [f"at {memory_text(memory)} of GPU memory ({why})", f"against {no_cache_label(full)}"],
                    2, ":")
        # labels right-aligned, the figures in one column beside them (int4:g64 among fp16/int8/int4); a label
        # that would leave that column under LABEL_ROOM (a mixed plan's, 42 characters: a 30-column strip at 80)
        # takes a line of its own, its figures below it in the same column
        width = max((len(r.precision) for r in res.headline if console.width - len(r.precision) - 4 >= LABEL_ROOM),
                    default=0)

        def head(label: str) -> tuple[str, int]:
            if len(label) > width:
                print_wrapped(console, f"  {label}:", 4)
                return " " * (width + 4), width + 4
            return f"  {label:>{width}}: ", width + 4

        def quality(r: Any) -> str:
            """What a row's plan loses: its accuracy change, with the accuracy it changed to, its sample size and
            Wilson interval, as recommend gives one (a change of one problem in 32 is no loss); a study with no
            full-precision plan its accuracy, and why it has no change; a fidelity study (no task accuracy) its
            top-1 agreement, not "accuracy change -"."""
            acc = (None if r.accuracy is None else
                   accuracy_text(r.accuracy, kind(r.accuracy_source), r.accuracy_source))
            return (f"accuracy change {100 * r.accuracy_change:+.1f} pt, to {acc}"
                    if r.accuracy_change is not None else
                    f"accuracy {acc}; {res.extra['accuracy_why']}"
                    if acc is not None else
                    f"top-1 agreement {r.fidelity_top1:.3f} ({kind(r.fidelity_source)})"
                    if r.fidelity_top1 is not None else "accuracy not measured")

        for r in res.headline:
            first, indent = head(r.precision)
            if r.trial is None:  # why none: a note of up to ~200 characters, wrapped under itself
                print_wrapped(console, f"{first}{r.note}", indent)
                continue
            print_parts(console, first, [f"trial #{r.trial}", *cuts(r), quality(r)], indent)
        for a in res.extra["answers"]:
            best = [r for r in a.rows if r.trial is not None]
            if not best:
                typer.echo(f"  at {a.label} ({memory_text(a.memory_bytes)}): no stored trial fits")
                continue
            ranked = ", fastest per precision" if timed else ""  # not the biggest cut: a slower row may cut more
            typer.echo(f"  at {a.label} ({memory_text(a.memory_bytes)}){ranked}, against {no_cache_label(full)}:")
            for r in best:  # each with what its plan loses: where the headline's budget fits nothing, nothing else says
                print_parts(console, f"    {r.precision} #{r.trial}: ", [*cuts(r), quality(r)], 6)
