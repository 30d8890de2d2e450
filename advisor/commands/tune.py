"""`advisor tune`, `advisor studies`, `advisor pareto`.

`studies` and `pareto` are read-only and import neither torch nor optuna (they read the project's tables).
`tune` imports the model stack inside its body.
"""

from __future__ import annotations

from pathlib import Path

import typer

from advisor.errors import UserError
from advisor.results.storage import DEFAULT_STORAGE


def _existing_engine(storage: str):
    """An engine on an existing database; a missing SQLite file is a UserError (never created by readers)."""
    from advisor.results.storage import normalize_url, require_database
    from advisor.results.store import engine_for

    url = normalize_url(storage, create_dirs=False)
    require_database(url)
    return engine_for(url)


def _resolve_budget(budget: str | None, gpu: str | None):
    """(budget bytes or None, hardware profile or None) from --budget / --gpu, checked before any model loads."""
    from advisor.hardware.profiles import get_gpu, parse_budget

    profile = get_gpu(gpu) if gpu else None
    nbytes = parse_budget(budget) if budget else None
    if nbytes is None and profile is not None and profile.memory_bytes > 0:
        nbytes = int(profile.memory_bytes)
    return nbytes, profile


def register(app: typer.Typer) -> None:
    """Add this area's commands to the app."""

    @app.command("tune")
    def tune(
        model: str = typer.Argument(None, help="HF id, local directory, tiny:<family>, or 'bundled' (default)."),
        task: str = typer.Option(None, "--task", help="toy (bundled arithmetic), gsm8k or humaneval; "
                                 "default: the space file's evaluation.task."),
        data: str = typer.Option(None, "--data", help="Local task data (GSM8K-format jsonl with question/answer), "
                                 "instead of the hub."),
        budget: str = typer.Option(None, "--budget", help="GPU memory budget, e.g. 12GiB (a constraint)."),
        gpu: str = typer.Option(None, "--gpu", help="GPU name (its memory is the budget, its link models transfer time)."),
        space: str = typer.Option(None, "--space", help="Search space: a TOML file or a shipped name "
                                  "(quick, default, dllm). Default: quick for the bundled model, dllm for dLLMs, else default."),
        trials: int = typer.Option(20, "--trials", min=1, help="Trials this process runs (each worker runs N)."),
        timeout: float = typer.Option(None, "--timeout", help="Stop starting trials after S seconds."),
        storage: str = typer.Option(DEFAULT_STORAGE, "--storage", help="SQLAlchemy URL (sqlite:///..., postgresql://...)."),
        study: str = typer.Option(None, "--study", help="Study name (resumed if it exists). Default: model-task-space."),
        sampler: str = typer.Option("nsga2", "--sampler", help="nsga2 | tpe | gp | random."),
        seed: int = typer.Option(0, "--seed", help="Sampler seed."),
        device: str = typer.Option("cpu", "--device", help="cpu or cuda[:N]."),
        mode: str = typer.Option("replay", "--mode", help="replay: cache axes by routing-trace replay (modelled "
                                 "transfer time); live: every trial runs the offload runtime (measured)."),
        threads: int = typer.Option(1, "--threads", min=1, help="torch CPU threads."),
        heartbeat: int = typer.Option(10, "--heartbeat", min=1, help="Heartbeat interval (s); a silent worker's "
                                      "trial is failed and retried after 3 intervals."),
    ) -> None:
        """Find the Pareto front of H2D transfer, accuracy and GPU memory for a model (runs real trials)."""
        from rich.console import Console

        from advisor.results.storage import SAMPLERS, normalize_url
        from advisor.tune.space import load_space

        if sampler.lower() not in SAMPLERS and sampler.lower() not in ("nsgaii", "nsga-ii"):
            raise UserError(f"unknown sampler {sampler!r}; choose one of: {', '.join(SAMPLERS)}")
        if mode not in ("replay", "live"):
            raise UserError(f"unknown mode {mode!r}; choose replay or live")
        if timeout is not None and timeout <= 0:
            raise UserError(f"--timeout {timeout} must be positive (seconds)")
        budget_bytes, profile = _resolve_budget(budget, gpu)
        spec = model or "bundled"
        space_obj = load_space(space) if space else None  # a bad file fails before the model loads
        normalize_url(storage, create_dirs=False)  # validate now; the directory is made when the study opens

        console = Console(stderr=False)
        with console.status(f"loading {spec} on {device} ..."):
            import torch

            # one intra-op thread by default: tiny per-expert matmuls gain nothing from more, and on a busy
            # machine spinning worker threads made generation two orders of magnitude slower (measured)
            torch.set_num_threads(threads)
            from advisor.eval.tasks import get_task
            from advisor.models.load import load_model
            from advisor.tune.model_backend import ModelBackend

            loaded = load_model(spec, device=device)
            if space_obj is None:
                space_obj = load_space("quick" if spec == "bundled" else "dllm" if loaded.is_diffusion else "default")
            if loaded.tokenizer is None and "accuracy" in space_obj.objectives:
                raise UserError(f"{loaded.name} has no tokenizer, so task accuracy cannot be measured; use a space "
                                "whose [objectives] use fidelity_top1 instead of accuracy, or a model with a tokenizer")
            task_name = task or space_obj.evaluation.task
            task_obj = get_task(task_name, seed=space_obj.evaluation.seed, path=data)
            backend = ModelBackend(loaded, task_obj, space_obj.evaluation, profile=profile)
        if budget_bytes is None and space_obj.budget_fraction:
            budget_bytes = int(space_obj.budget_fraction * backend.shape.full_bytes())
            budget_note = f"{space_obj.budget_fraction:g} x the model's counted bytes ({space_obj.name} space default)"
        else:
            budget_note = "--budget" if budget else (f"--gpu {gpu}" if gpu else "none")
        from advisor.tune.study import TuneOptions

        opts = TuneOptions(study_name=study, storage=storage, sampler=sampler, seed=seed, n_trials=trials,
                           timeout=timeout, heartbeat_interval=heartbeat, grace_period=3 * heartbeat, mode=mode)
        run_tune_cli(console, backend, space_obj, opts, budget_bytes=budget_bytes, budget_note=budget_note,
                     profile=profile)

    @app.command("studies")
    def studies(
        storage: str = typer.Option(DEFAULT_STORAGE, "--storage", help="SQLAlchemy URL of the study database."),
    ) -> None:
        """List the studies in a database: model, task, trials, Pareto-front size."""
        from rich.console import Console
        from rich.table import Table

        from advisor.results.registry import list_studies
        from advisor.tune.display import human_bytes

        rows = list_studies(_existing_engine(storage))
        console = Console()
        if not rows:
            console.print(f"no studies in {storage}; run `advisor tune` first")
            return
        table = Table(title=f"studies in {storage}", title_justify="left", header_style="bold")
        for col in ("study", "model", "task", "space", "budget", "device", "trials", "failed", "running", "front",
                    "updated (UTC)"):
            table.add_column(col, justify="right" if col in ("trials", "failed", "running", "front") else "left")
        for r in rows:
            table.add_row(r.name, r.model, r.task, r.space, human_bytes(r.budget_bytes) if r.budget_bytes else "-",
                          r.device, str(r.n_complete), str(r.n_failed), str(r.n_running), str(r.front_size),
                          r.updated_at.strftime("%Y-%m-%d %H:%M") if r.updated_at else "-")
        console.print(table)

    @app.command("pareto")
    def pareto(
        study: str = typer.Argument(..., help="Study name (see `advisor studies`)."),
        storage: str = typer.Option(DEFAULT_STORAGE, "--storage", help="SQLAlchemy URL of the study database."),
        out: Path = typer.Option(Path("studies/plots"), "--out", help="Directory for the PNG and HTML plots."),
        plots: bool = typer.Option(True, "--plots/--no-plots", help="Write the plots."),
    ) -> None:
        """Print a study's stored Pareto front and write it as PNG and interactive HTML plots."""
        import re

        from rich.console import Console

        from advisor.results.registry import list_studies
        from advisor.results.store import load_fronts
        from advisor.tune.display import front_table, human_bytes, sources_legend

        engine = _existing_engine(storage)
        points = load_fronts(engine, study)
        if not points:
            names = [s.name for s in list_studies(engine)]
            if study not in names:
                raise UserError(f"no study named {study!r} in {storage} (studies there: {', '.join(names) or 'none'}); "
                                "see `advisor studies`")
            raise UserError(f"study {study!r} has no stored front yet (no feasible finished trial); run more trials")
        console = Console()
        p0 = points[0]
        budget = f", budget {human_bytes(p0.budget_bytes)}" if p0.budget_bytes else ""
        title = f"Pareto front of {study}: {p0.model} on {p0.task}, space {p0.space}{budget} ({len(points)} points)"
        console.print(front_table(points, title))
        for line in sources_legend(points):
            console.print(f"  [dim]{line}[/dim]")
        if plots:
            from advisor.tune.plots import write_html, write_png

            safe = re.sub(r"[^A-Za-z0-9_.-]+", "_", study)
            png = write_png(points, out / f"{safe}.png", title)
            html = write_html(points, out / f"{safe}.html", title)
            console.print(f"plots: {png}  {html}")


def run_tune_cli(console, backend, space, opts, *, budget_bytes: int | None, budget_note: str, profile) -> None:
    """The run itself, with the live display; Ctrl-C/SIGTERM stop after saving finished trials and the front."""
    import signal

    from advisor.tune.display import LiveProgress, front_table, human_bytes, sources_legend
    from advisor.tune.study import run_tune

    def on_term(signum, frame):  # SIGTERM behaves like Ctrl-C: finished trials kept, front saved
        raise KeyboardInterrupt

    old = signal.signal(signal.SIGTERM, on_term)
    shape = backend.shape
    console.print(
        f"[bold]advisor tune[/bold] {backend.model_name} ({shape.n_layers} MoE layers x {max(shape.num_experts)} experts, "
        f"{human_bytes(shape.full_bytes())} counted) | task {backend.task_name} | space {space.name} "
        f"({space.size(shape.n_layers, shape.min_experts)} configurations) | device {backend.device}\n"
        f"budget: {human_bytes(budget_bytes) + ' (' + budget_note + ')' if budget_bytes else 'none'} | "
        f"objectives: {', '.join(f'{m} ({d[:3]})' for m, d in space.objectives.items())} | sampler {opts.sampler} "
        f"(seed {opts.seed}) | mode {opts.mode}"
    )
    try:
        with LiveProgress(console, opts.n_trials, opts.timeout) as live:
            result = run_tune(backend, space, opts, budget_bytes=budget_bytes, profile=profile,
                              on_trial=live.trial_done, on_stage=live.stage)
    finally:
        signal.signal(signal.SIGTERM, old)
    title = (f"Pareto front of study {result.study_name} ({len(result.front)} points; "
             f"{result.n_complete} finished trials, {result.n_infeasible} over budget, {result.n_failed} failed)")
    if result.front:
        console.print(front_table(result.front, title, result.metrics))
        for line in sources_legend(result.front):
            console.print(f"  [dim]{line}[/dim]")
    else:
        console.print(f"{title}: no feasible trial finished yet")
    c = result.counters
    evals = c.get("accuracy_evaluations", 0)
    console.print(
        f"accuracy evaluations this run: {evals} for {result.distinct_plans} distinct precision plans in the study "
        f"({c.get('accuracy_cache_hits', 0)} reused from the cache, {c.get('accuracy_skipped', 0)} skipped by the "
        f"fidelity/dominance stage); routing traces recorded: {c.get('traces_recorded', 0)}; "
        f"cache configs by replay: {c.get('replays', 0)}; {result.elapsed_s:.0f} s"
    )
    console.print(f"stored in {result.storage_url} as study [bold]{result.study_name}[/bold] - next: "
                  f"`advisor pareto {result.study_name}`, `advisor recommend --budget ...`")
    if result.interrupted:
        console.print("[yellow]interrupted[/yellow]: finished trials and the front are saved; "
                      "run the same command again to resume")
        raise typer.Exit(130)
