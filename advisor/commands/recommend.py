"""`advisor recommend` (read-only, no torch) and `advisor profile` (measures the host link; imports torch inside)."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import typer

from advisor.commands import (
    accuracy_option,
    gpu_profile,
    oversubscribed_note,
    profiles_dir_option,
    storage_option,
    threads_option,
    user_path,
)
from advisor.errors import STORAGE_WHAT, UserError, choose, refuse_empty
from advisor.hardware.measure import MAX_REPEATS, check_repeats
from advisor.models import check_model_spec
from advisor.parsing import loads_json
from advisor.units import count


def build_query(
    budget: str | None,
    gpu: str | None,
    min_accuracy: float | None,
    max_accuracy_drop: float | None,
    prefer: str | None,
    model: str | None,
    task: str | None,
    study: str | None,
    profiles_dir: Path | None,
):
    """The recommend query from command-line options (shared with `advisor export --from-recommend`)."""
    from advisor.hardware.profiles import check_budget_fits, is_share, parse_budget

    # '' matched every front (or none, "for any study")
    refuse_empty({"--model": model, "--task": task, "--study": study}, "a name (see `advisor studies`)")
    from advisor.recommend import PREFERENCES, Query

    profile = gpu_profile(gpu, profiles_dir, has_budget=True)
    # "budget '50%' is not a size" did not say what does; 0% is "must be positive", as 0B is
    if is_share(budget):
        raise UserError(f"--budget takes a size (e.g. 24GiB), not a share: recommend compares stored configurations "
                        f"by their counted peak GPU bytes, of whatever model; for a share of one study's model, "
                        f"`advisor report STUDY --memory {budget.strip()}`")
    budget_bytes = parse_budget(budget, "--budget ") if budget is not None else None
    check_budget_fits(profile, budget_bytes, budget)
    return Query(
        budget_bytes=budget_bytes,
        gpu=profile,
        min_accuracy=min_accuracy,
        max_accuracy_drop=max_accuracy_drop,
        prefer=None if prefer is None else choose(prefer, PREFERENCES, "--prefer"),
        model=model,
        task=task,
        study=study,
        budget_given=None if budget is None else f"--budget {budget.strip()}",
    )


def register(app: typer.Typer) -> None:
    """Add `recommend` and `profile`."""

    @app.command("recommend")
    def recommend_cmd(
        storage: str = storage_option(),
        budget: str | None = typer.Option(None, "--budget", help="GPU memory budget, e.g. 12GiB, 24GB, 8000MiB."),
        gpu: str | None = typer.Option(None, "--gpu", help="A GPU by name (catalogue or measured profile), e.g. 'RTX 4090'."),
        min_accuracy: float | None = typer.Option(None, "--min-accuracy", **accuracy_option(), help="Absolute accuracy floor (0..1, or a percentage: 95%)."),
        max_accuracy_drop: float | None = typer.Option(
            None, "--max-accuracy-drop", **accuracy_option(), help="Largest accuracy loss vs the study's full-precision point, else its highest-precision point "
            "(e.g. 0.02; without it or --min-accuracy: 0.01)."),
        prefer: str | None = typer.Option(None, "--prefer", help="transfer | latency | accuracy. Default: latency for "
                                          "a study tuned for time per token, else transfer; accuracy when every "
                                          "stored configuration fits the budget."),
        model: str | None = typer.Option(None, "--model", help="Only fronts of this model: the name `tune` printed "
                                         "(or part of it), or the directory given to tune (./ckpt)."),
        task: str | None = typer.Option(None, "--task", help="Only fronts measured on this task."),
        study: str | None = typer.Option(None, "--study", help="Only this study."),
        profiles_dir: Path | None = profiles_dir_option(),
        as_json: bool = typer.Option(False, "--json", help="Print the answer as JSON."),
    ) -> None:
        """The best stored configuration under a memory budget and an accuracy floor, and why."""
        from advisor.recommend import load_points, load_trials, recommend, render_lines

        refuse_empty({"--storage": storage}, STORAGE_WHAT)
        q = build_query(budget, gpu, min_accuracy, max_accuracy_drop, prefer, model, task, study, profiles_dir)
        rec = recommend(load_points(storage, study), q, trials=load_trials(storage))
        tasks = _task_texts(storage, rec)
        if as_json:
            typer.echo(json.dumps(rec.to_dict(tasks), indent=2, default=str))
        else:
            from rich.console import Console

            from advisor.export.base import targets_for
            from advisor.terminal import print_wrapped

            label = tasks.get(rec.chosen.point.study_name) if rec.chosen else None
            given = [(flag, value) for flag, value in (
                ("--budget", budget), ("--gpu", gpu), ("--profiles-dir", profiles_dir), ("--min-accuracy", min_accuracy),
                ("--max-accuracy-drop", max_accuracy_drop), ("--prefer", prefer), ("--model", model), ("--task", task),
                ("--study", study)) if value is not None]
            console = Console()  # its width: the terminal's, $COLUMNS, else 80
            for line, indent in render_lines(rec, targets_for(rec.chosen.point) if rec.chosen else None, storage,
                                             label, [str(x) for pair in given for x in pair]):
                print_wrapped(console, line, indent)
        if rec.chosen is None:
            raise typer.Exit(1)

    @app.command("profile")
    def profile_cmd(
        cpu: bool = typer.Option(False, "--cpu", help="Without CUDA: record a host memcpy profile for modelled times."),
        profiles_dir_text: str | None = typer.Option(None, "--profiles-dir", callback=user_path, help="Where to store it, and where "
                                                     "--list reads (default $ADVISOR_PROFILES_DIR, else "
                                                     "studies/profiles)."),
        name: str | None = typer.Option(None, "--name", help="Store under this name instead of the device's."),
        list_known: bool = typer.Option(False, "--list", help="List measured profiles and the GPU catalogue; measure nothing."),
        repeats: int = typer.Option(5, "--repeats", help="Timed repeats per transfer size (median taken), 1 to "
                                    f"{MAX_REPEATS}."),
        expert_shape: list[str] = typer.Option(None, "--expert-shape", help="Also measure CPU expert time at this "
                                               "expert shape, HIDDENxFFN (repeatable), e.g. 2048x1024."),
        model: str | None = typer.Option(None, "--model", help="Also measure CPU expert time on this model's "
                                         "expert shapes (HF id, directory, tiny:<family>, bundled); config.json alone will do."),
        threads: int = threads_option(1, "torch CPU threads for the CPU expert times (default 1, as `advisor "
                                      "tune` runs; give the threads your runtime uses)."),
    ) -> None:
        """Measure and store host-to-device bandwidth, memory and (--model, --expert-shape) CPU expert times.

        Pinned and pageable host-to-device bandwidth, per-copy latency and free memory (a host memcpy with --cpu);
        with --model or --expert-shape also this host's CPU expert time per format and tokens per expert."""
        from advisor.hardware import profiles as hw
        from advisor.hardware.profiles import save_profile

        # '' stored the profile under the device's name, replacing it
        refuse_empty({"--name": name}, "the name to store the profile under (without it: the device's name)")
        refuse_empty({"--profiles-dir": profiles_dir_text}, "a directory")  # '' (Path('') is '.') stored it here
        # '' measured no CPU expert times and replaced the stored profile, without a word
        refuse_empty({"--model": model}, "a model whose expert shapes to measure")
        profiles_dir = Path(profiles_dir_text) if profiles_dir_text is not None else None
        if list_known:  # one entry per profile, wrapped between its figures at the terminal's width (80 piped)
            from rich.console import Console

            from advisor.terminal import print_parts, print_wrapped

            console = Console()
            measured, broken = hw.read_profiles(profiles_dir)  # a broken file is named below, not the whole list's end
            skipped = f" ({len(broken)} broken, named at the end)" if broken else ""
            print_wrapped(console, f"{len(measured)} measured profile(s) in {hw.profiles_dir(profiles_dir)}{skipped} "
                                   "(`advisor profile` measures this machine's), then the catalogue; a copy takes "
                                   "bytes / pinned bandwidth + the per-copy latency")
            for p in measured + hw.CATALOGUE:
                print_parts(console, f"{p.name}: ", _profile_figures(p), 4)
                if note := hw.misnamed_cpu_profile(p, profiles_dir):  # not what --gpu of its name uses
                    print_wrapped(console, f"    note: {note}", 6)
                if p.cpu_experts:  # which CPU expert times a `tune --gpu` with this profile is priced with
                    c = p.cpu_experts
                    print_wrapped(console, f"    CPU expert times for {', '.join(c['table'])} on "
                                           f"{c.get('host', 'an unrecorded CPU')}, {count(c['threads'], 'thread')} "
                                           f"[{c['source']}]", 6)
            err = Console(stderr=True)
            for _path, _name, why in broken:  # each says what is wrong with it and what to do
                print_wrapped(err, f"note: not listed: {why}", 6)
            return
        # where it is saved, checked before the measuring (a minute with expert shapes), not after
        directory = hw.profiles_dir(profiles_dir)
        from advisor.files import check_folder, check_parent, check_writable

        # named as the user gave it: the option, the variable, or neither (the default store, said as such)
        store_option, default = hw.profiles_dir_source(profiles_dir)
        check_folder(directory, store_option, default=default)

        if directory != hw.DEFAULT_PROFILES_DIR:  # the store is made, a mistyped directory above it is not
            check_parent(directory, store_option)

        # a name too long for a file name, a directory under a file, or a place that takes no files; without
        # --name the profile is named after the device, known once measured: its directory is checked the same way
        check_writable(hw.profile_path(name or "", profiles_dir), option=store_option)
        if name:  # another profile's file, said before the imports and the measuring
            hw.check_name_free(name, profiles_dir)
        check_repeats(repeats)  # 99999999 measured for days; before the imports and the busy-host note
        given = _parse_shapes(expert_shape or [])  # a mistyped shape before torch imports, as a mistyped --model
        if model is not None:
            # a mistyped --model before torch imports (after the options' own checks); its expert shapes are
            # config.json's, so a directory (or hub snapshot) of config.json alone is measured as `inspect` counts it
            model = check_model_spec(model, weightless=True)
        from advisor.tune.interrupt import import_runtime

        import_runtime(models=model is not None)
        from advisor.hardware import measure as hardware_measure

        cuda = hardware_measure.cuda_available()
        if not cuda and not cpu:  # said before a model loads (a real checkpoint's resident weights take a while)
            raise UserError("no CUDA device here; run `advisor profile` on the GPU machine, or pass --cpu to record "
                            "a host memcpy profile for modelled times")
        if name and not cuda:  # a host copy under a catalogue GPU's name would shadow its row for `--gpu`
            hw.check_cpu_profile_name(name)
        if not name:  # the device's name, known before the model loads and the measuring (minutes with --model)
            hw.check_name_free(hardware_measure.profile_name(cuda), profiles_dir)
        shapes = _expert_shapes(given, model)  # a shape too big for this host or a bad model fails before measuring
        if cuda:
            prof = hardware_measure.measure_profile(repeats=repeats)
        else:
            prof = hardware_measure.measure_cpu_profile(repeats=repeats)
        import dataclasses

        contention = None
        if shapes:
            import torch

            from advisor.offload.cpu_profile import measure_cpu_experts

            torch.set_num_threads(threads)  # torch's default (every core) on a busy host measured preemption

            prof = dataclasses.replace(prof, cpu_experts=measure_cpu_experts(shapes).to_dict())  # with its host
            from advisor.offload.cpu_profile import thread_contention
            from advisor.offload.timing import CpuProfile

            contention = thread_contention(CpuProfile.from_dict(prof.cpu_experts), shapes)
        if name:  # the device's own name is kept: it finds the GPU's nominal figures (`nominal_device`)
            prof = dataclasses.replace(prof, name=name, device=prof.name)
        prof, kept = _keep_earlier_cpu_times(prof, profiles_dir, threads)
        path = save_profile(prof, profiles_dir)
        from rich.console import Console

        from advisor.terminal import print_parts, print_wrapped

        console = Console()  # the entry `--list` prints (its free memory beside), wrapped at the terminal's width
        print_parts(console, f"{prof.name}: ", _profile_figures(prof), 4)
        if prof.cpu_experts:
            from advisor.offload.timing import CpuProfile

            cp = CpuProfile.from_dict(prof.cpu_experts)
            for key, row in cp.table.items():
                cells = ", ".join(f"{f} {r[0][1]:.3g}/{r[-1][1]:.3g}" for f, r in row.items())
                print_wrapped(console, f"CPU expert {key}: ms at 1/{row['bf16'][-1][0]} tokens: {cells} [{cp.source}]", 4)
            print_wrapped(console, f"CPU: {prof.cpu_experts.get('host', 'not recorded')}", 4)
        if kept:  # what became of the profile's earlier CPU expert times: a paragraph, wrapped as the lines above
            print_wrapped(console, kept, 4)
        if note := oversubscribed_note(threads) if shapes else "":  # the cause, where the contention note guessed
            print_wrapped(Console(stderr=True), f"note: {note}", 2)  # "other work holds these cores"
        elif contention:
            print_wrapped(Console(stderr=True), f"note: {contention}", 2)
        typer.echo(f"saved {path}")


def _profile_figures(p: Any) -> list[str]:
    """A hardware profile's figures as `profile --list` shows it and `profile` prints what it measured: memory (a
    `--cpu` profile's is this host's RAM, which `--gpu` of it budgets nothing; free memory where measured), the
    link, the device figures it is priced with, and its source."""
    from advisor.hardware.profiles import format_bytes, nominal_device
    from advisor.units import BUDGET_DIGITS

    dev = nominal_device(p)
    device = (f"device {dev.mem_gbps:g} GB/s {dev.tflops:g} TFLOP/s {dev.dtype}" if dev
              else "device not in the catalogue (priced as the H200)")
    memory = f"{format_bytes(p.memory_bytes, BUDGET_DIGITS)}{' host RAM' if p.host_only else ''}"
    free = [f"free {format_bytes(p.free_bytes, BUDGET_DIGITS)}"] if p.free_bytes is not None else []
    return [memory if p.memory_bytes else "memory ?", *free,
            f"pinned {p.h2d_gbps_pinned:.1f} GB/s", f"pageable {p.h2d_gbps_pageable:.1f} GB/s",
            f"{p.copy_latency_us:.1f} us/copy", *([p.link] if p.link else []), f"{device} [{p.source}]"]


def _task_texts(storage: str, rec: Any) -> dict[str, str]:
    """The task of each study that recommendation `rec` names (its choice and the alternatives `--json` lists) as
    the read-only commands head it (`advisor.results.read.read_task_text`): a study that measured no task
    accuracy says so beside its task."""
    from advisor.results.read import read_task_text

    points = [c.point for c in ([rec.chosen] if rec.chosen else []) + rec.ranked[1:4]]
    out: dict[str, str] = {}
    for p in points:
        if p.study_name not in out:
            out[p.study_name] = read_task_text(storage, p.study_name, p.task, p.objectives)
    return out


def _parse_shapes(specs: list[str]) -> dict[str, tuple[int, int]]:
    """Each --expert-shape value (HIDDENxFFN) and its (hidden, expert FFN) pair, without torch."""
    shapes: dict[str, tuple[int, int]] = {}
    for spec in specs:
        try:
            h, i = (int(x) for x in spec.lower().split("x"))
        except ValueError as e:
            raise UserError(f"bad --expert-shape '{spec}'; give HIDDENxFFN, e.g. 2048x1024") from e
        if h <= 0 or i <= 0:
            raise UserError(f"bad --expert-shape '{spec}': both sizes must be positive, e.g. 2048x1024")
        shapes[spec] = (h, i)
    return shapes


def _expert_shapes(given: dict[str, tuple[int, int]], model: str | None) -> list[tuple[int, int]]:
    """(hidden, expert FFN) pairs from the parsed --expert-shape values and a model's MoE layers, deduplicated."""
    shapes: list[tuple[int, int]] = []
    for spec, (h, i) in given.items():
        _check_measurable(spec, h, i)
        shapes.append((h, i))
    if model:
        from advisor.models.load import load_model

        # the shapes only: a checkpoint loads offloaded (its experts stay in the files), not whole into host RAM;
        # config.json alone will do (no weights fetched for a hub id whose weights are not cached)
        loaded = load_model(model, offload=None if model.startswith("tiny:") else True, weightless=True)
        shapes += [(int(m.hidden_size), int(m.intermediate_size)) for m in loaded.moe]
    return list(dict.fromkeys(shapes))


def _check_measurable(spec: str, hidden: int, inter: int) -> None:
    """Refuse, before anything is allocated, an expert shape whose measurement cannot fit this host: its fp32
    weights and one quantized copy (what `measure_cpu_experts` holds at once)."""
    from advisor.hardware.profiles import format_bytes
    from advisor.models.load import host_available_bytes

    need = 3 * hidden * inter * (4 + 4)
    have = host_available_bytes()
    if need > have:
        raise UserError(f"bad --expert-shape '{spec}': measuring it needs {format_bytes(need)} of host memory, "
                        f"{format_bytes(have)} is available; give the real expert shape, e.g. 2048x1024")


def _keep_earlier_cpu_times(prof: Any, directory: Path | None, threads: int) -> tuple[Any, str]:
    """`prof` with the CPU expert times of the profile it replaces for the shapes this run did not measure, when
    they were measured on this CPU (at the same threads, where this run measured too): re-measuring the link, or
    another model's shapes, no longer drops them. Also the line that says what was kept or dropped ('' if
    nothing was there). A damaged earlier profile is simply replaced."""
    import dataclasses

    from advisor.hardware import profiles as hw
    from advisor.offload.timing import CpuProfile

    path = hw.profile_path(prof.name, directory)
    try:
        old = hw.HardwareProfile.from_dict(loads_json(path.read_text())).cpu_experts if path.is_file() else None
    except (UserError, ValueError, OSError):
        return prof, ""
    if not old:
        return prof, ""
    earlier, new = CpuProfile.from_dict(old), prof.cpu_experts
    here = hw.host_cpu()
    if old.get("host") != here or (new is not None and earlier.threads != threads):
        return prof, (f"note: the CPU expert times of the profile this replaces ({', '.join(earlier.table)}) were "
                      f"not kept: measured on {old.get('host') or 'an unrecorded CPU'} with "
                      f"{count(earlier.threads, 'thread')}; this run: {here}"
                      + (f", {count(threads, 'thread')}" if new is not None else ""))
    if new is None:
        return dataclasses.replace(prof, cpu_experts=old), (
            f"kept the CPU expert times of the profile this replaces ({', '.join(earlier.table)}: {earlier.source})")
    added = [k for k in earlier.table if k not in new["table"]]
    if not added:
        return prof, ""
    merged = CpuProfile.from_dict(new).filled([earlier], "")  # stored: "(this run)" misled whoever read it later
    return dataclasses.replace(prof, cpu_experts=merged.to_dict()), (
        f"kept the CPU expert times of the profile this replaces for {', '.join(added)} ({earlier.source})")
