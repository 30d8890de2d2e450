"""`advisor export`: a stored configuration in the form another runtime takes (read-only, no torch)."""

from __future__ import annotations

import json
from pathlib import Path

import typer

from advisor.commands import (
    OUTPUT,
    accuracy_option,
    int_range,
    output_option,
    profiles_dir_option,
    storage_option,
)
from advisor.commands.recommend import build_query
from advisor.errors import STORAGE_WHAT, NothingMeets, UserError, refuse_empty
from advisor.export.base import targets_help
from advisor.results.front import FrontPoint


def register(app: typer.Typer) -> None:
    """Add `export`."""

    @app.command("export")
    def export_cmd(
        study: str | None = typer.Argument(None, help="Study name (or use --from-recommend)."),
        trial: int | None = typer.Argument(None, **int_range(0, 2**63 - 1, "a trial number",  # beyond SQLite's
                                                             "as SQLite stores them",  # INTEGER: an OverflowError
                                                             "`advisor pareto STUDY` lists the trials to export"),
                                           help="Trial number: a front point, or any complete trial."),
        to: str = typer.Option(..., "--to", help=targets_help()),
        output: str | None = output_option(None, "Write here (atomically) instead of stdout."),
        option: list[str] = typer.Option([], "--opt", help="Target option KEY=VALUE (repeatable; a bad one lists them)."),
        as_json: bool = typer.Option(False, "--json", help="Print the export's structured form as JSON."),
        check: bool = typer.Option(False, "--check", help="Validate the export with the target's own code where "
                                   "installed (gguf, transformers, vLLM, SGLang); says what it could not check."),
        storage: str = storage_option(),
        from_recommend: bool = typer.Option(False, "--from-recommend", help="Export what `advisor recommend` picks."),
        budget: str | None = typer.Option(None, "--budget", help="(--from-recommend) GPU memory budget, e.g. 12GiB."),
        gpu: str | None = typer.Option(None, "--gpu", help="(--from-recommend) GPU by name."),
        min_accuracy: float | None = typer.Option(None, "--min-accuracy", **accuracy_option(), help="(--from-recommend) absolute floor."),
        max_accuracy_drop: float | None = typer.Option(None, "--max-accuracy-drop", **accuracy_option(), help="(--from-recommend) vs the study's "
                                                            "full-precision point, else its highest-precision point (default 0.01)."),
        prefer: str | None = typer.Option(None, "--prefer", help="(--from-recommend) transfer | latency | accuracy."),
        model: str | None = typer.Option(None, "--model", help="(--from-recommend) model filter, as `advisor "
                                         "recommend --model`: a name, part of one, or the directory given to tune."),
        task: str | None = typer.Option(None, "--task", help="(--from-recommend) task filter."),
        study_opt: str | None = typer.Option(None, "--study", help="(--from-recommend) only this study, as "
                                             "`advisor recommend --study` (or give it as STUDY)."),
        profiles_dir: Path | None = profiles_dir_option("(--from-recommend) where --gpu's measured hardware profiles are"),
    ) -> None:
        """Export a trial (STUDY TRIAL, or --from-recommend) to llama.cpp, HF, vLLM, KTransformers or JSON."""
        from advisor.export.base import export_point, parse_options, resolve_target
        from advisor.files import write_atomic
        from advisor.recommend import NoFront, load_points, load_trials, recommend

        refuse_empty({"--storage": storage}, STORAGE_WHAT)
        refuse_empty({OUTPUT: output}, "a file path (without it: stdout)")  # '' (a str: Path('') is '.') was refused
        # only once the export was built, as "cannot write .: it is a directory", a path the user never gave
        refuse_empty({"STUDY": study}, "a study name (see `advisor studies`)")  # '' read every study's front, and
        target = resolve_target(to)  # said none had one
        parse_options(target, option)  # bad options fail before the database is read
        off_note: str | None = None
        fit_to: tuple[float, str] | None = None  # the budget the export fits: the one recommend was asked for
        if from_recommend:
            if trial is not None:
                raise UserError("give either STUDY TRIAL or --from-recommend, not both")
            if study_opt is not None and study is not None and study_opt != study:
                raise UserError(f"two studies: STUDY {study!r} and --study {study_opt!r}; give one")
            study = study if study is not None else study_opt
            q = build_query(budget, gpu, min_accuracy, max_accuracy_drop, prefer, model, task, study, profiles_dir)
            rec = recommend(load_points(storage, study), q, trials=load_trials(storage))
            if rec.chosen is None:
                why = [r for r in rec.reasons if r not in rec.defaults]  # the cause first: "nothing to export: no
                raise NothingMeets("nothing to export: " + "; ".join(why + rec.defaults))  # floor given" read as one
            point = rec.chosen.point
            if q.budget is not None:  # not the study's own: a point tuned under 150 KiB, picked for 125 KiB,
                # was served by vLLM quantized with every expert on the GPU at 144 KiB, "within the study's budget"
                fit_to = (q.budget, "the --budget" if q.budget_bytes is not None else f"the memory of --gpu {q.gpu.name}")
        else:
            ignored = [flag for flag, value in (("--budget", budget), ("--gpu", gpu), ("--min-accuracy", min_accuracy),
                                                ("--max-accuracy-drop", max_accuracy_drop), ("--prefer", prefer),
                                                ("--model", model), ("--task", task), ("--study", study_opt),
                                                ("--profiles-dir", profiles_dir)) if value is not None]
            if ignored:  # they choose what --from-recommend exports; with STUDY TRIAL they changed nothing, unsaid
                raise UserError(f"{', '.join(ignored)} only choose{'s' if len(ignored) == 1 else ''} what "
                                "--from-recommend exports; add --from-recommend, or drop "
                                f"{'it' if len(ignored) == 1 else 'them'} to export STUDY TRIAL as stored")
            if study is None or trial is None:
                raise UserError("say what to export: STUDY TRIAL (see `advisor pareto STUDY`), or --from-recommend --budget ...")
            try:
                points = load_points(storage, study)
            except NoFront as e:  # a queued, running or failed trial says so, not "no front"; a database that
                _refuse_unfinished(storage, study, trial, e)  # cannot be read is not read a second time
                raise
            match = [p for p in points if p.trial_number == trial]
            point, off_note = (match[0], None) if match else _off_front(storage, study, trial, points)
        from advisor.results.read import read_task_text

        # a study that measured no task accuracy says so beside its task, as pareto, studies and recommend head it
        task = read_task_text(storage, point.study_name, point.task, point.objectives)
        result = export_point(_with_study_cpu(storage, point) if target == "hf" else point, target, option, task,
                              fit_to, [off_note] if off_note else None)
        from rich.console import Console

        from advisor.terminal import print_wrapped

        err = Console(stderr=True)  # notes of hundreds of characters wrap at the terminal's width, under their text
        text = json.dumps(result.data, indent=2, default=str) + "\n" if as_json else result.text
        if output is not None:  # written before the note: an -o that cannot be written (a directory) followed it
            write_atomic(output, text, create_dirs=False, executable=text.startswith("#!"), option=OUTPUT)
        if off_note:  # said once the export succeeded: before, a refused export still said "exported as stored"
            print_wrapped(err, f"note: {off_note}", 6)
        if output is not None:
            typer.echo(f"wrote {output} ({target}, study {point.study_name!r} trial #{point.trial_number})", err=True)
        else:
            typer.echo(text, nl=False)
        for note in result.notes:
            print_wrapped(err, f"note: {note}", 6)
        if check:
            from advisor.export.check import check as run_checks
            from advisor.results.config_view import export_config

            lines = run_checks(result, export_config(point.config, point.model))
            for c in lines:
                print_wrapped(err, c.line(), 6)
            if any(c.status == "FAILED" for c in lines):
                raise typer.Exit(1)


def _with_study_cpu(storage: str, point: FrontPoint) -> FrontPoint:
    """`point` with the CPU expert times its study priced CPU misses with (stored with the study, before its
    hardware profile's) in its hardware profile: the `hf` recipe of a `hybrid` point rebuilds the study's time
    model from them (the other targets export the profile as stored)."""
    import dataclasses

    from advisor.results.trials import study_attr

    stored = study_attr(storage, point.study_name, "cpu_experts")
    return dataclasses.replace(point, hardware={**point.hardware, "cpu_experts": stored}) if stored else point


def _trials_text(numbers: list[int]) -> str:
    return ", ".join(map(str, numbers[:20])) + (f", ... ({len(numbers)} in all)" if len(numbers) > 20 else "")


def _not_complete(study: str, trial: int, state: str) -> str:
    """What a trial that did not complete is, in the words of a refusal to export it."""
    word = {"FAIL": "failed", "WAITING": "is queued", "PRUNED": "was pruned"}.get(state, f"is {state.lower()}")
    return f"trial {trial} of study {study!r} {word}, not complete: it has no measured configuration to export"


def _refuse_unfinished(storage: str, study: str, trial: int, no_front: UserError) -> None:
    """`UserError` naming trial `trial`'s state when it did not complete, in a study without a stored front
    (`no_front`, what `load_points` said): "no stored Pareto front" hid that it is queued, running or failed, and
    what to do about it. Returns where the trial or study cannot be read, or the trial completed."""
    from advisor.results.trials import read_trial

    try:
        t = read_trial(storage, study, trial)
    except UserError:  # no such study or trial: the front's refusal (with the studies that have one) says it
        return
    if t is None or t.point is not None:
        return
    todo = {"WAITING": "the next `advisor tune` of the study (--study {s}) runs it",
            "RUNNING": "an `advisor tune` of the study is running it, or was stopped while it ran (running the "
                       "same command again resumes the study)",
            }.get(t.state, "tune more trials of the study (`advisor tune ... --study {s}`)")
    raise UserError(f"{_not_complete(study, trial, t.state)}, and the study has no stored Pareto front yet: "
                    f"{todo.format(s=study)}; then `advisor pareto {study}` lists the trials to export") from no_front


def _off_front(storage: str, study: str, trial: int, front: list[FrontPoint]) -> tuple[FrontPoint, str]:
    """A complete trial off the stored front, with the note that says so (and why); any other trial is refused."""
    from advisor.results.trials import dominated_by, read_trial

    t = read_trial(storage, study, trial)
    front_text = _trials_text([p.trial_number for p in front])
    if t is None:
        raise UserError(f"trial {trial} is not on the stored front of study {study!r}, and this database keeps no "
                        f"other trials; front trials: {front_text} (`advisor pareto {study}` shows them)")
    if t.point is None:
        raise UserError(f"{_not_complete(study, trial, t.state)}; front trials: {front_text} "
                        f"(any complete trial can be exported)")
    if not t.feasible:
        why = f"infeasible: {t.infeasible_reason or 'it breaks the study constraints'}"
    else:
        by = dominated_by(t, front)
        why = (f"dominated by front trial{'s' if len(by) > 1 else ''} {_trials_text(by)} on "
               f"{', '.join(t.objectives)}" if by else "not among the study's best trials when the front was stored")
    return t.point, f"trial {trial} is not on the stored front of study {study!r} ({why}); exported as stored"
