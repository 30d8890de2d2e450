"""`advisor tune`, `advisor studies`, `advisor pareto`.

`studies` and `pareto` are read-only and import neither torch nor optuna (they read the project's tables);
`studies --delete NAME` imports optuna (to delete the study's trials), never torch.
`tune` imports the model stack inside its body.
"""

from __future__ import annotations

import re
import threading  # TIMEOUT_MAX: the longest wait the heartbeat thread can make
from pathlib import Path
from typing import TYPE_CHECKING, Any

import typer

from advisor.commands import (
    OUTPUT,
    SAMPLER_SEED_RANGE,
    device_budget,
    device_option,
    int_range,
    output_option,
    oversubscribed_note,
    profiles_dir_option,
    seconds_option,
    storage_option,
    threads_option,
    user_path,
)
from advisor.errors import STORAGE_WHAT, UserError, choose, refuse_empty, refuse_without_cuda_driver
from advisor.models import canonical_spec, check_model_spec
from advisor.units import BUDGET_DIGITS, count, format_bytes, names_text

if TYPE_CHECKING:
    from advisor.models.load import BudgetOf
    from advisor.tune.config import ModelShape
    from advisor.tune.space import SearchSpace

PLOTS_DIR = "studies/plots"
"""Where `advisor pareto` writes its plots by default (made, with studies/, when missing)."""


def _existing_engine(storage: str, *, write: bool = False):
    """An engine on an existing database; a missing SQLite file is a UserError (never created by readers;
    `write`: the caller writes to it)."""
    from advisor.results.storage import require_database
    from advisor.results.store import engine_for
    from advisor.results.urls import normalize_url

    url = normalize_url(storage, create_dirs=False)
    require_database(url, write=write)
    return engine_for(url)


def _check_host_memory(loaded, space, host_bytes: int | None) -> None:
    """Before any plan is packed: the largest uniform plan of the space must fit the host memory, counted as the
    store's own check counts it (`advisor.offload.store.store_need`: a pinned store's power-of-two arenas on CUDA);
    if not, the error names the formats whose store would fit (a space of those is what the user can run)."""
    from advisor.offload.store import check_host_memory, packed_sizes, pins_stores, store_need
    from advisor.quant.spec import KINDS

    pin, moe = pins_stores(loaded.device), loaded.moe

    def need(fmt: str) -> tuple[int, str]:
        sizes = packed_sizes(fmt, [m.num_experts for m in moe], [m.hidden_size for m in moe],
                             [m.intermediate_size for m in moe])
        return store_need(sizes, fmt, pin=pin, why="the space's largest format")

    def store_bytes(fmt: str) -> int:
        return need(fmt)[0]

    def advice(limit: int) -> str:
        fit = [f for f in KINDS if store_bytes(f) <= limit]
        more = "raise --host-memory" if host_bytes is not None else "free host memory"
        return (f"formats whose store fits: {', '.join(fit)}; use a --space whose [precision] formats are among "
                f"them, or {more}" if fit else f"no format's store fits; {more}")

    worst = max(space.packed_formats(), key=lambda f: (store_bytes(f), f))
    check_host_memory(*need(worst), host_bytes, advice)


def _share_refusal(share: str) -> UserError:
    """tune's refusal of --budget SHARE: a share is a --budgets value, so its words, not "not a size"."""
    from advisor.tune.budget import memory_spec

    try:
        memory_spec(share, "--budgets")
    except UserError:  # 150%: --budgets refuses it too, so do not send the user there with it
        return UserError("--budget takes a size (e.g. 12GiB), not a share; --budgets takes shares between 0% and "
                         "100% of the FP16 expert bytes (beside the resident weights), e.g. --budgets 100%")
    # not "for 50% of the model": a share is of the FP16 expert bytes, beside the whole resident weights
    return UserError(f"--budget takes a size (e.g. 12GiB), not a share; give --budgets {share}: a budget of the "
                     f"resident weights + {share} of the FP16 expert bytes (without --budget, the largest "
                     "--budgets value is the study's budget)")


_STUDY_NAME = re.compile(r"[A-Za-z0-9][A-Za-z0-9_.:@+=-]{0,99}")


def check_study_name(name: str) -> None:
    """Study names appear in commands (`advisor pareto NAME`), file names and shell hints: keep them plain."""
    if not _STUDY_NAME.fullmatch(name):
        raise UserError(f"--study {name!r}: use 1-100 letters, digits and _.:@+=- (starting with a letter or "
                        "digit), e.g. --study bundled-int4")


def _get_task(space_obj, task: str | None, data: str | None):
    from advisor.eval.tasks import TASKS, get_task

    if task is None and space_obj.evaluation.task.strip().lower() not in TASKS:  # the file's, not --task's
        space_obj.refuse("evaluation.task", TASKS.unknown.format(name=space_obj.evaluation.task, names=", ".join(TASKS)))
    return get_task(task or space_obj.evaluation.task, seed=space_obj.evaluation.seed, path=data)


def _refuse_budgets_above(budgets: tuple[str, ...], budget_bytes: int, note: str,
                          shape: ModelShape | None = None) -> None:
    """A study keeps to its budget: at a --budgets value above it every seeded point would be cut to the study's
    budget, and every baseline stored over budget - an answer at that budget the study cannot give. Without
    the model's `shape` (before it loads) only the sizes are checked; its shares need the model."""
    from advisor.tune.budget import budget_memory, memory_spec
    from advisor.units import budget_text, format_bytes

    sizes = {b: (v if isinstance(v := memory_spec(b), int) else budget_memory(b, shape)[0] if shape else None)
             for b in budgets}
    over = [(b, m) for b, m in sizes.items() if m is not None and m > budget_bytes]
    if over:
        shown = ", ".join(f"{b} ({format_bytes(m, 2)})" for b, m in over)
        verb, it = ("exceeds", "it") if len(over) == 1 else ("exceed", "them")
        raise UserError(f"--budgets {shown} {verb} the study's budget of {budget_text(budget_bytes, note)}; "
                        f"drop {it} from --budgets" + (", or raise --budget" if note.startswith("--budget ") else ""))


def _load_budget(budget_bytes: int | None, budget_note: str, budgets: tuple[str, ...],
                 space_obj: SearchSpace | None) -> BudgetOf | None:
    """The study's budget as `load_model` decides with it whether to offload, known before the model loads: the
    largest of --budgets and a space's budget_fraction are shares of the model, so they are taken from the
    checkpoint. A --budgets share s is resident weights + s x the FP16 expert bytes once loaded, which is below
    the counted bytes exactly when s x the checkpoint's bytes at 16 bits is (for a checkpoint of one dtype:
    s < 100% at 16 bits, always at fp32), so it is compared as that; a budget_fraction is s x the counted bytes."""
    from advisor.tune.budget import memory_spec
    from advisor.units import format_bytes

    if budget_bytes is not None:
        return lambda counted, fp16: (budget_bytes, f"{budget_note} = {format_bytes(budget_bytes, 2)}")
    if budgets:
        def largest(counted: int, fp16: int) -> tuple[int, str]:
            limit, spec = max((v if isinstance(v := memory_spec(b), int) else int(v * fp16), b) for b in budgets)
            return limit, (f"--budgets {spec} (resident weights + {spec} of the FP16 expert bytes)"
                           if spec.endswith("%") else f"--budgets {format_bytes(limit, 2)}")
        return largest
    if space_obj is not None and space_obj.budget_fraction:
        frac = space_obj.budget_fraction

        def fraction(counted: int, fp16: int) -> tuple[int, str]:  # the bytes compared, then where they came from
            limit = int(frac * counted)
            return limit, f"{format_bytes(limit, 2)} ({frac:g} x them, {space_obj.name} space default)"
        return fraction
    return None


def _load_note(loaded: Any, budget_bytes: int | None) -> str:
    """How the model was loaded, naming the study's budget: a space's default share of the model is moved, once
    the model has loaded, to the same share of the way from the space's least configuration where the share cannot
    hold that (tiny:diffusion_gemma: 1.46 MiB, not 918.52 KiB), and the line said the model's bytes were over the
    918.52 KiB the load had been decided with, under a header whose budget was 1.46 MiB. The moved budget lies
    below the model's bytes as the share did, so the decision reads the same against it. A comparison that names
    no bytes (a --budgets share: resident weights + 25% of the FP16 expert bytes) or the study's own is kept."""
    limit = loaded.load_limit
    if limit is None or budget_bytes is None:
        return loaded.load_note
    shown = format_bytes(limit[0], 2)
    if not limit[1].startswith(shown) or shown == format_bytes(budget_bytes, 2):
        return loaded.load_note
    return loaded.load_note.replace(limit[1], f"the study's budget, {format_bytes(budget_bytes, 2)}")


def _before_load(spec: str, space_obj, task: str | None, data: str | None, study: str | None, storage: str,
                 profile, budget_bytes: int | None, budgets: tuple[str, ...], mode: str, device: str):
    """(space, task, study name) when known without the model, checked before it loads (minutes for a real one):
    the task data is read, so a bad --data file fails in a second, and a study of this name (--study, or the
    default name when the space is known) stored with other settings is refused - every setting a resume compares
    but the model's fingerprint (which needs its weights) and a budget the model's size sets."""
    from advisor.models import model_name
    from advisor.tune.space import default_space, load_space
    from advisor.tune.study import refuse_incompatible, resume_keys, study_name_for

    if space_obj is None and (name := default_space(spec)) is not None:
        space_obj = load_space(name)
    task_obj = _get_task(space_obj, task, data) if space_obj is not None else None
    if study is None and task_obj is not None:
        study = study_name_for(storage, model_name(spec), task_obj.name, space_obj.name)
    if study is not None:
        # without --budget/--gpu, --budgets or the space's budget_fraction size the budget from the model
        sized = budget_bytes is None and (budgets or space_obj is None or space_obj.budget_fraction)
        task_keys = {"task": task_obj.name, "data_sha256": task_obj.data_sha256} if task_obj is not None else {}

        def keys(space: SearchSpace | None) -> dict:
            return resume_keys(profile, **task_keys, space=space, budget_bytes=... if sized else budget_bytes,
                               mode=mode, device=device)

        # a shipped space's accuracy is tuned as fidelity_top1 once the model proves to have no tokenizer (not
        # known before it loads): a study stored with that space is compared with it
        fidelity = space_obj.without_tokenizer(model_name(spec)) if space_obj and space_obj.shipped else space_obj
        refuse_incompatible(storage, study, keys(space_obj), *([keys(fidelity)] if fidelity is not space_obj else []))
    return space_obj, task_obj, study


def _load_key(spec: str, device: str, offload: bool | None, budget_bytes: int | None, opts, space_obj, task_obj,
              mode: str, host_bytes: int | None) -> dict | None:
    """The key this run's load is stored under (`advisor.tune.shortcut.load_key`), or None."""
    from advisor.tune.shortcut import load_key

    return load_key(spec, device, offload=offload, budget_bytes=budget_bytes, budgets=opts.budgets, space=space_obj,
                    task=task_obj, mode=mode, host_bytes=host_bytes)


def _say_done(console, name: str, done, opts, storage: str, wide: bool, profile) -> None:
    """What a run with nothing to run prints without loading the model (`advisor.tune.shortcut.nothing_to_run`):
    its header from the stored values, then as the full path ends, but the lines of what the loaded model ran (its
    notes, the CPU times, the counters)."""
    from types import SimpleNamespace

    # the header's model, task, space, device, budget and objectives, from the stored values (no sampler: nothing
    # is drawn), so the answer says what it is of as the full path's does
    console.print(_header_text(done.model, done.space, opts, done.budget_bytes, done.budget_note, None, profile))
    if note := _cpu_profile_note(profile, done.budget_note, opts.budgets):
        console.print(note, markup=False)
    _say_nothing_to_run(console, name, done.n_complete, opts.total_trials)
    result = SimpleNamespace(storage_url=storage, study_name=name, n_waiting=done.n_waiting,
                             waiting_kinds=done.waiting_kinds, n_trials_run=0, n_complete=done.n_complete)
    if done.n_waiting and (note := _queued_note(result, opts)):
        console.print(note, markup=False)
    _say_front(console, name, done, wide)
    if done.allowance_note:
        console.print(done.allowance_note, markup=False)
    _print_stored_in(console, storage, name)


def _load(spec: str, device: str, threads: int, space_obj, task_obj, task: str | None, data: str | None, profile,
          *, offload: bool | None, budget: BudgetOf | None, host_bytes: int | None, mode: str):
    """(backend, space) for the model: loads it, picks the default space, checks the space against it."""
    import torch

    from advisor.tune.space import default_space, load_space

    # one intra-op thread by default: tiny per-expert matmuls gain nothing from more, and on a busy
    # machine spinning worker threads made generation two orders of magnitude slower (measured)
    torch.set_num_threads(threads)
    from advisor.models.load import load_model
    from advisor.tune.model_backend import ModelBackend

    loaded = load_model(spec, device=device, offload=offload, budget=budget)
    if space_obj is None:
        space_obj = load_space(default_space(spec, loaded.is_diffusion))
    if loaded.tokenizer is None:  # no task accuracy: a shipped space tunes fidelity_top1 instead, a file is refused
        space_obj = space_obj.without_tokenizer(loaded.name)
    task_obj = task_obj or _get_task(space_obj, task, data)
    if loaded.offloaded or (host_bytes is not None and mode == "live"):  # live packs a store of a whole model too:
        _check_host_memory(loaded, space_obj, host_bytes)  # checked here, not by the first trial, with its advice
    elif host_bytes is not None and mode == "replay":  # no host store is packed: the cap would limit nothing
        offload = ("use --mode live (a tiny:<family> model is built in memory and cannot be offloaded)"
                   if str(spec).strip().startswith("tiny:") else "add --offload")
        raise UserError(f"--host-memory caps the host stores of offloaded experts (and of --mode live), but "
                        f"{loaded.name} is loaded whole and replay packs no store; {offload}, or leave "
                        "--host-memory out")
    backend = ModelBackend(loaded, task_obj, space_obj.evaluation, profile=profile, host_memory=host_bytes,
                           refuse_past=True)
    space_obj.check_model(backend.shape.n_layers, backend.shape.min_experts)
    return backend, space_obj


def register(app: typer.Typer) -> None:
    """Add this area's commands to the app."""

    @app.command("tune")
    def tune(
        model: str = typer.Argument(None, help="HF id, local directory, tiny:<family>, or 'bundled' (default)."),
        task: str = typer.Option(None, "--task", help="toy (bundled arithmetic), gsm8k or humaneval; "
                                 "default: the space file's evaluation.task."),
        data: str = typer.Option(None, "--data", callback=user_path, help="Local task data (GSM8K-format jsonl with question/answer), "
                                 "instead of the hub."),
        budget: str = typer.Option(None, "--budget", help="GPU memory budget, e.g. 12GiB (a constraint)."),
        gpu: str = typer.Option(None, "--gpu", help="GPU name (its memory is the budget, its link models transfer time)."),
        profiles_dir: Path | None = profiles_dir_option(),
        space: str = typer.Option(None, "--space", callback=user_path, help="Search space: a TOML file or a shipped name "
                                  "(quick, default, dllm). Default: quick for the bundled model, dllm for dLLMs, else default."),
        trials: int = typer.Option(None, "--trials", **int_range(1, None, "a trial count"),
                                   help="The study ends with N finished trials (a resume tops up; workers share "
                                   "them). Default 20."),
        more: int = typer.Option(None, "--more", **int_range(1, None, "a trial count"),
                                 help="Run N more trials, however many the study has."),
        timeout: float = typer.Option(None, "--timeout", **seconds_option("--timeout"),
                                      help="Stop starting trials after this many seconds."),
        storage: str = storage_option(),
        study: str = typer.Option(None, "--study", help="Study name (resumed if it exists). Default: model-task-space."),
        sampler: str = typer.Option(None, "--sampler", help="tpe (default: best at tight budgets in "
                                    "benchmarks/search_efficiency.py) | nsga2 | gp | random."),
        seed: int = typer.Option(0, "--seed", **SAMPLER_SEED_RANGE, help="Sampler seed of a study's first run; its k-th run (a resume, "
                                 "another worker) draws with seed + k, so it adds new configurations."),
        device: str = device_option(),
        mode: str = typer.Option("replay", "--mode", help="replay: cache axes by routing-trace replay (modelled "
                                 "transfer time); live: every trial runs the offload runtime (measured)."),
        threads: int = threads_option(1, "torch CPU threads."),
        wide: bool = typer.Option(False, "--wide", help="Print the front as one wide table, whatever the width."),
        heartbeat: int = typer.Option(10, "--heartbeat", **int_range(1, int(threading.TIMEOUT_MAX), "a heartbeat "
                                      "interval", "seconds: the longest wait a thread can make"),
                                      help="Heartbeat interval (s); a silent worker's "
                                      "trial is failed and retried after 3 intervals."),
        offload: bool = typer.Option(None, "--offload/--resident", help="Keep routed experts in the checkpoint "
                                     "(streamed into the quantized host store) / load the whole model. Default: "
                                     "offload when the checkpoint's counted bytes exceed the budget (or free memory)."),
        budgets: str = typer.Option(None, "--budgets", help="GPU budgets the study answers at, e.g. 10%,25%,50% "
                                    "(of the FP16 expert bytes, beside the resident weights) or sizes: enqueue at "
                                    "each every format x cache policy x miss policy with the most cache that fits, "
                                    "and the Mixtral-offloading-, Fiddler-, TIDE- and llama.cpp-style strategies "
                                    "(plus FP16 without cache) as tagged trials. Without --budget/--gpu the "
                                    "largest is the study's budget (and, like --budget, offloads a model above it)."),
        host_memory: str = typer.Option(None, "--host-memory", help="Host RAM the expert stores may use, e.g. "
                                        "48GiB (default: what is available); stores of several plans are kept "
                                        "while they fit, otherwise re-packed from the checkpoint."),
    ) -> None:
        """Pareto front of time per token (or H2D transfer), accuracy and GPU memory for a model (real trials)."""

        from advisor.hardware.profiles import parse_budget
        from advisor.results.preflight import check_storage
        from advisor.tune.samplers import DEFAULT_SAMPLER, sampler_name
        from advisor.tune.space import load_space

        refuse_empty({"MODEL": model, "--task": task, "--data": data, "--space": space, "--sampler": sampler,
                      "--host-memory": host_memory}, "a value (see `advisor tune --help`)")
        refuse_empty({"--storage": storage}, STORAGE_WHAT)
        sampler = sampler or DEFAULT_SAMPLER
        sampler_name(sampler)  # an unknown name fails before the model loads
        mode = choose(mode, ("replay", "live"), "--mode")
        if trials is not None and more is not None:
            raise UserError("give --trials N (the study ends with N finished trials) or --more N, not both")
        budget_bytes, profile, budget_note = device_budget(budget, gpu, profiles_dir, _share_refusal)
        host_bytes = parse_budget(host_memory, "--host-memory ") if host_memory else None
        spec = canonical_spec(model or "bundled")  # 'Bundled', 'tiny:Mixtral': the names the study keeps
        space_obj = load_space(space) if space else None  # a bad file fails before the model loads
        if space_obj is not None:
            space_obj.check_mode(mode)
        if study is not None:
            check_study_name(study)
        check_model_spec(spec)  # a mistyped MODEL is answered before the storage opens (optuna, SQLAlchemy: ~1 s)
        refuse_without_cuda_driver(device)  # no CUDA at all: before the storage, the task's hub lookup and torch
        storage = check_storage(storage, write=True)  # a bad database fails now, not after the model loads

        from advisor.tune.budget import memory_specs, study_budget
        from advisor.tune.interrupt import InterruptOnSignal, import_runtime, stdout_console
        from advisor.tune.shortcut import load_record, nothing_to_run
        from advisor.tune.study import TuneOptions

        opts = TuneOptions(study_name=study, storage=storage, sampler=sampler, seed=seed, n_trials=more,
                           total_trials=None if more else (trials or 20), timeout=timeout,
                           heartbeat_interval=heartbeat, grace_period=3 * heartbeat, mode=mode,
                           budgets=memory_specs(budgets, "--budgets"))
        if budget_bytes is not None and opts.budgets:  # its sizes now, its shares once the model is known
            _refuse_budgets_above(opts.budgets, budget_bytes, budget_note)
        console = stdout_console()  # a reader gone (`| head -1`) stops the tune as Ctrl-C does
        ran = [0]  # the trials this run has run (`run_tune_cli`), for the line of an interrupt outside the study
        with InterruptOnSignal() as signals:  # loading and printing; the study installs its own handler
            received = signals.received
            try:
                space_obj, task_obj, name = _before_load(spec, space_obj, task, data, study, storage, profile,
                                                         budget_bytes, opts.budgets, mode, device)  # in a second
                key = _load_key(spec, device, offload, budget_bytes, opts, space_obj, task_obj, mode, host_bytes)
                if (done := nothing_to_run(key, name, space_obj, task_obj, opts, budget_bytes=budget_bytes,
                                           budget_note=budget_note, profile=profile)) is not None:
                    _say_done(console, name, done, opts, storage, wide, profile)  # the stored values, checked: not loaded
                    return
                asked_space = space_obj
                import_runtime()
                with console.status(f"loading {spec} on {device} ..."):
                    backend, space_obj = _load(spec, device, threads, space_obj, task_obj, task, data, profile,
                                               offload=offload, host_bytes=host_bytes, mode=mode,
                                               budget=_load_budget(budget_bytes, budget_note, opts.budgets,
                                                                   space_obj))
                if received:  # swallowed on the way (or turned into transformers' "does not recognize")
                    raise KeyboardInterrupt
                if key is not None and key == _load_key(spec, device, offload, budget_bytes, opts, asked_space,
                                                        task_obj, mode, host_bytes):  # no file changed meanwhile
                    opts.load_record = load_record(key, backend)
                if budget_bytes is not None and opts.budgets:
                    _refuse_budgets_above(opts.budgets, budget_bytes, budget_note, backend.shape)
                budget_bytes, budget_note = study_budget(budget_bytes, budget_note, opts.budgets, space_obj,
                                                         backend.shape)
                run_tune_cli(console, backend, space_obj, opts, budget_bytes=budget_bytes, budget_note=budget_note,
                             profile=profile, wide=wide, ran=ran)
            except (KeyboardInterrupt, UserError) as e:  # outside the study's own handling (loading, printing)
                if isinstance(e, UserError) and not received:
                    raise
                typer.echo(f"{_stopped(console)}; finished trials (if any) are kept - {_resume_hint(opts, ran[0])}",
                           err=True)
                raise typer.Exit(1 if console.closed else 130) from None

    @app.command("studies")
    def studies(
        storage: str = storage_option(),
        wide: bool = typer.Option(False, "--wide", help="One wide table, whatever the width."),
        delete: str | None = typer.Option(None, "--delete", metavar="NAME", help="Delete study NAME instead: its "
                                          "Optuna trials, stored Pareto front and study row (asks first; the eval "
                                          "cache, shared by studies, is kept)."),
        yes: bool = typer.Option(False, "--yes", "-y", help="With --delete: delete without asking."),
    ) -> None:
        """List the studies in a database: model, task, trials, Pareto-front size; --delete NAME deletes one."""
        refuse_empty({"--storage": storage}, STORAGE_WHAT)
        refuse_empty({"--delete": delete}, "the name of the study to delete (see `advisor studies`)")
        if yes and delete is None:
            raise UserError("--yes goes with --delete NAME (it deletes without asking); listing asks nothing")
        if delete is not None:
            _delete_study(storage, delete, yes)
            return
        from rich.console import Console
        from rich.table import Table
        from rich.text import Text

        from advisor.results.preflight import mask_url
        from advisor.results.registry import SILENT_AFTER_S, list_studies, study_task_text
        from advisor.results.storage import GRACE_PERIOD_S, MAX_RETRY
        from advisor.terminal import print_fitted, print_wrapped
        from advisor.tune.display import failed_text, human_bytes

        engine = _existing_engine(storage)
        rows = list_studies(engine)
        console = Console()
        shown = mask_url(storage)
        if not rows:
            console.print(f"no studies in {shown}; run `advisor tune` first", markup=False)
            return
        table = Table(title=f"studies in {shown}", title_justify="left", header_style="bold")
        counts = ("finished", "failed", "running", "waiting", "front")
        gpus = any(r.gpu for r in rows)  # the --gpu column where a study was tuned for one: no wider listing else
        for col in ("study", "model", "task", "space", "budget", "device", *(["gpu"] if gpus else []), *counts,
                    "updated (UTC)"):
            table.add_column(col, justify="right" if col in counts else "left")
        records = []
        for r in rows:
            budget = human_bytes(r.budget_bytes) if r.budget_bytes else "-"
            updated = r.updated_at.strftime("%Y-%m-%d %H:%M") if r.updated_at else "-"
            running = f"{r.n_running}" + (f" ({len(r.silent_s)} silent {_silence(r.silent_s)})" if r.silent_s else "")
            numbers = (str(r.n_complete), failed_text(r.n_failed, r.n_retried), running, str(r.n_waiting),
                       str(r.front_size))
            task = study_task_text(engine, r.name, r.task, r.objectives)
            gpu = [r.gpu or "-"] if gpus else []
            cells = (r.name, r.model, task, r.space, budget, r.device, *gpu, *numbers, updated)
            table.add_row(*map(Text, cells))  # plain text: a name such as 'rtx [home]' is no markup
            records.append((r.name, [("model", r.model), ("task", task), ("space", r.space), ("budget", budget),
                                     ("device", r.device), *(("gpu", g) for g in gpu), *zip(counts, numbers, strict=True),
                                     ("updated", updated + " UTC" if r.updated_at else updated)]))
        print_fitted(console, table, records, wide=wide)
        silent = [r.name for r in rows if r.silent_s]
        if silent:
            # plain text wrapped as every note (rich broke `advisor tune --study NAME` in two, lines ending in ' ')
            print_wrapped(console, f"silent: a running trial whose worker has sent no heartbeat for over "
                                   f"{SILENT_AFTER_S} s (3 x the {GRACE_PERIOD_S} s grace period of `advisor tune`'s "
                                   "default --heartbeat): that worker most likely died. The next `advisor tune --study "
                                   f"{silent[0] if len(silent) == 1 else 'NAME'}` on this storage fails it and queues "
                                   f"it again (a configuration is retried up to {MAX_RETRY} times).")

    @app.command("pareto")
    def pareto(
        study: str = typer.Argument(..., help="Study name (see `advisor studies`)."),
        storage: str = storage_option(),
        output: str = output_option(PLOTS_DIR, "Directory for the PNG and HTML plots."),
        plots: bool = typer.Option(True, "--plots/--no-plots", help="Write the plots."),
        wide: bool = typer.Option(False, "--wide", help="One wide table, whatever the width."),
    ) -> None:
        """Print a study's stored Pareto front and write it as PNG and interactive HTML plots."""
        import re

        refuse_empty({OUTPUT: output}, "a directory")  # '' (a str: Path('') is '.') wrote the plots here
        refuse_empty({"--storage": storage}, STORAGE_WHAT)
        safe = re.sub(r"[^A-Za-z0-9_.-]+", "_", study)  # the plots' file name
        plot_files = [Path(output) / f"{safe}.{ext}" for ext in ("png", "html")]
        if plots:
            from advisor.files import check_folder, check_parent, check_writable

            check_folder(output, OUTPUT, default=Path(output) == Path(PLOTS_DIR))
            if Path(output) != Path(PLOTS_DIR):  # the folder is made, a mistyped directory above it is not (the default's is)
                check_parent(output, OUTPUT)
            for path in plot_files:  # a directory or a named pipe there was refused once the PNG had been written
                check_writable(path, option=OUTPUT)

        from rich.console import Console

        from advisor.results.registry import known_studies, list_studies, study_task_text
        from advisor.results.store import load_fronts
        from advisor.tune.display import front_counts, human_bytes, print_front

        engine = _existing_engine(storage)
        points = load_fronts(engine, study)
        summary = next(iter(list_studies(engine, study)), None)  # this study's rows only
        if not points:
            if summary is None:  # the names alone, read undecoded: another study's damaged rows are not this answer
                names = known_studies(engine)
                raise UserError(f"no study named {study!r} in {storage} (studies there: {names_text(names, study)}); "
                                "see `advisor studies`")
            if not summary.tuned and summary.n_complete:  # "run more trials" of a study `tune` refuses to resume
                raise UserError(f"study {study!r} has {count(summary.n_complete, 'finished trial')} but no stored "
                                "front: it was not written by `advisor tune` (it has none of its settings)")
            raise UserError(f"study {study!r} has no stored front yet (no feasible finished trial); run more trials")
        console = Console()
        p0 = points[0]
        budget = f", budget {human_bytes(p0.budget_bytes)}" if p0.budget_bytes else ""
        counts = (front_counts(len(points), summary.n_complete, summary.n_infeasible, summary.n_failed,
                               summary.n_retried) if summary else count(len(points), "point"))
        task = study_task_text(engine, study, p0.task, p0.objectives or (summary.objectives if summary else None))
        gpu = f", gpu {p0.hardware['name']}" if p0.hardware.get("name") else ""  # the --gpu it was tuned for
        title = f"Pareto front of {study}: {p0.model} on {task}, space {p0.space}{budget}{gpu} ({counts})"
        written = ""
        if plots:  # before printing: a reader that stops early (`| head`) must not cost the plots
            from advisor.files import write_together
            from advisor.tune.plots import render_html, render_png

            png, html = plot_files  # both written, or (interrupted) neither: a new PNG beside an old or no HTML
            write_together({png: render_png(points, title), html: render_html(points, title)}, option=OUTPUT)
            written = f"plots: {png}  {html}"
        print_front(console, points, title, list(summary.objectives or {}) if summary else [],
                    wide=wide)  # `*` marks the study's objectives, as `tune` prints them
        if written:  # plain text (a path is no markup), the second file under the first where both do not fit
            from advisor.terminal import print_wrapped

            print_wrapped(console, written, len("plots: "))


def _delete_study(storage: str, name: str, yes: bool) -> None:
    """`advisor studies --delete NAME`: refuse an unknown name, a study a worker is tuning right now, or - without
    --yes - a stdin that is no terminal to ask on; else ask, then delete (`registry.delete_study`)."""
    import sys

    from rich.console import Console

    from advisor.results.preflight import mask_url, refuse_read_only
    from advisor.results.registry import (
        SILENT_AFTER_S,
        delete_study,
        known_studies,
        list_studies,
        live_trials,
    )
    from advisor.results.storage_errors import DamagedRows
    from advisor.results.urls import normalize_url, sqlite_options, sqlite_path, storage_flag
    from advisor.terminal import print_wrapped

    engine = _existing_engine(storage, write=True)
    shown, flag = mask_url(storage), storage_flag(storage)
    options = sqlite_options(storage)  # the ones --storage takes open the file read-only
    if options:
        raise UserError(f"--storage opens {shown} read-only ({', '.join(f'{k}={v}' for k, v in options.items())}), "
                        "and deleting a study writes; drop that option from the URL")
    if (path := sqlite_path(normalize_url(storage, create_dirs=False))) is not None:  # tune's up-front words
        refuse_read_only(path, "deleting a study writes", "; nothing deleted")
    names = known_studies(engine)
    if name not in names:
        raise UserError(f"no study named {name!r} in {shown} (studies there: {names_text(names, name)}); nothing "
                        f"deleted - `advisor studies{flag}` lists them")
    live = live_trials(engine, name)
    if live:
        raise UserError(f"study {name!r} has {count(live, 'running trial')} whose worker sent a heartbeat in the "
                        f"last {SILENT_AFTER_S} s: stop its workers (Ctrl-C) first, then delete it; nothing deleted")
    what = f"study {name!r}"
    try:  # trials of a state Optuna never writes counted as unreadable: they go with the study
        summary = next(iter(list_studies(engine, name, damaged=True)), None)
    except DamagedRows:  # its rows cannot be decoded: deleted all the same, none of them decoded (`delete_study`)
        summary = None
    if summary is not None:
        trials = [count(summary.n_complete, "finished trial")] + [
            f"{n} {state}" for n, state in ((summary.n_failed, "failed"), (summary.n_running, "running"),
                                            (summary.n_waiting, "waiting"), (summary.n_unreadable, "unreadable"))
            if n]
        of = f"{summary.model}, {summary.task}: " if summary.model != "?" else ""  # '?': Optuna's alone
        what += f" ({of}{', '.join(trials)}; {count(summary.front_size, 'front point')})"
    if not yes:
        if not sys.stdin.isatty():
            raise UserError(f"not deleting {what}: there is no terminal to ask on (stdin is not one); add --yes to "
                            "delete it without asking")
        # the long line wrapped at the terminal's width (`print_wrapped`), the short question left to answer on
        print_wrapped(Console(), f"about to delete {what} from {shown}; this cannot be undone")
        if not typer.confirm("delete it?", default=False):
            typer.echo("nothing deleted")
            raise typer.Exit(1)
    delete_study(engine, normalize_url(storage, create_dirs=False), name)
    engine.dispose()
    left = [n for n in names if n != name]
    print_wrapped(Console(), f"deleted {what} from {shown}; the eval cache (measurements per precision plan, shared "
                  f"by the studies of a model and task) is kept. Studies left: {names_text(left)}")


def _silence(seconds: tuple[float, ...]) -> str:
    """How long silent trials have been silent: "12 min", or "95 s to 3.0 h" for several."""
    def one(s: float) -> str:
        return f"{s:.0f} s" if s < 120 else f"{s / 60:.0f} min" if s < 7200 else f"{s / 3600:.1f} h"

    lo, hi = one(min(seconds)), one(max(seconds))
    return lo if lo == hi else f"{lo} to {hi}"


def _cpu_threads_note(backend, space, mode: str) -> str:
    """Live trials compute CPU experts with this run's torch threads, and `hybrid` splits misses by the CPU
    expert times of the profile --gpu names: say so when that profile was measured with other threads."""
    import torch

    stored = getattr(getattr(backend, "profile", None), "cpu_experts", None)
    threads = torch.get_num_threads()
    if mode != "live" or not stored or stored.get("threads") in (None, threads) or "hybrid" not in (space.miss.choices or ()):
        return ""
    return (f"note: the CPU expert times of profile {backend.profile.name!r} were measured with {stored['threads']} "
            f"threads, but this run computes CPU experts with {threads} (--threads): misses then run slower or "
            f"faster on the CPU than `hybrid` assumes; pass --threads {stored['threads']}, or re-run `advisor "
            f"profile --threads {threads}`")


def _oversubscribed() -> str:
    """`oversubscribed_note` of the torch threads `_load` set from --threads."""
    import torch

    return oversubscribed_note(torch.get_num_threads())


def _stopped(console) -> str:
    """How an interrupted tune's line starts: a Ctrl-C/SIGTERM, or stdout's reader gone (`stdout_console`; exit 1,
    as Python's documented pattern for a closed pipe, not the interrupt's 130)."""
    if getattr(console, "closed", False):
        return "stopped: stdout was closed (its reader went away), so the tune stopped as for Ctrl-C"
    return "interrupted"


def _resume_hint(opts, ran: int) -> str:
    """What to run after an interrupted `tune` that had run `ran` trials: with --trials N the same command (it
    tops the study up to N); with --more N that command would run N more, so the `--more M` that runs the M
    trials this run had left - or, where it had run all N, that they are done."""
    if opts.n_trials is None:
        return "run the same command to resume"
    left = opts.n_trials - ran
    if left <= 0:  # interrupted once its trials had run (storing the front, printing it)
        return (f"this run had already run its {count(opts.n_trials, 'trial')} (--more {opts.n_trials}), so no "
                f"rerun is needed (the same command would run {opts.n_trials} more)")
    if left == opts.n_trials:  # none had run (loading the model): the same command is what was left
        return "run the same command to resume"
    return f"`--more {left}` runs the {count(left, 'trial')} this run had left (the same command runs {opts.n_trials})"


def _counting(ran: list[int], on_trial):
    """on_trial, counting in `ran[0]` the trials the run has run: not one a stop interrupted (failed, queued
    again), as `TuneResult.n_trials_run` counts, for an interrupt that ends the run before it returns one (Ctrl-C
    in a wait for a failing database). A trial whose own front failed to store is not counted (on_trial comes
    after that), so there the `--more M` said may run one trial more than was left."""
    def call(study, trial, objective) -> None:
        ran[0] += not (trial.state.name == "FAIL" and objective.stop_requested())
        on_trial(study, trial, objective)
    return call


def run_tune_cli(console, backend, space, opts, *, budget_bytes: int | None, budget_note: str, profile,
                 wide: bool = False, ran: list[int] | None = None) -> None:
    """The run itself, with the live display; Ctrl-C/SIGTERM stop it in one line, finished trials and the
    front saved. `ran`: `[n]`, set to the trials the run has run, as it runs them and once it has returned."""
    import shlex

    from advisor.tune.display import LiveProgress
    from advisor.tune.samplers import DEFAULT_SAMPLER
    from advisor.tune.study import run_tune

    def header(seed: int | None) -> None:
        """Printed once the study has given this run its number, which the sampler's seed depends on."""
        shape = backend.shape
        within = ["the layer groups' formats in turn"] * (space.formats.fixed is None and  # (`BudgetFit.fills`)
                                                          space.n_groups(shape.n_layers) > 1)
        within += ["the hot fraction"] * (space.hot_fraction.fixed is None) + ["the cache size"]
        drawn_within = (", ".join(within[:-1]) + " and " if len(within) > 1 else "") + within[-1] + \
            (" are" if len(within) > 1 else " is") + " drawn within what fits beside " + \
            ("the knobs drawn before them" if "formats" in within[0] else "each precision plan")
        drawn = f"seed {seed}" if seed is None or seed == opts.seed else (
            f"seed {seed}: --seed {opts.seed} + {count(seed - opts.seed, 'earlier run')}")
        sampler = f"{opts.sampler} ({'default, ' if opts.sampler == DEFAULT_SAMPLER else ''}{drawn})"
        console.print(_header_text(backend, space, opts, budget_bytes, budget_note, sampler, profile)
                      + (f"\nbudget-aware: {drawn_within}; warm start: "
                         "per plan, the most cache that fits" if budget_bytes else ""))
        if note := _cpu_profile_note(profile, budget_note, opts.budgets):
            console.print(note, markup=False)
        if getattr(backend, "offloaded", False):
            console.print(f"loading: {_load_note(backend.loaded, budget_bytes)}\n{backend.store_note()}", markup=False)
        elif (tiny := getattr(backend, "loaded", None)) is not None and tiny.name.startswith("tiny:") and (
                note := _load_note(tiny, budget_bytes)):  # a tiny model over its budget, loaded whole (`load_model`)
            console.print(f"note: {note}", markup=False)
        if note := space.groups_note(shape.n_layers):  # a shipped space's groups cut to a small model's layers
            console.print(f"note: {note}", markup=False)
        if note := getattr(backend, "decoding_note", ""):  # LLaDA-MoE's whole blocks of equal steps, as eval says it
            console.print(f"note: {note}", markup=False)
        loaded = getattr(backend, "loaded", None)
        if loaded is not None and loaded.tokenizer is None:  # the header's task is not what it decodes: as trace says
            console.print(f"note: {backend.model_name} has no tokenizer: its traces, fidelity and live trials "
                          f"decode seeded random token ids (seed {backend.settings.seed}), not the "
                          f"{backend.task_name} task's prompts", markup=False)
        if note := space.fidelity_note(backend.model_name):  # after the note on the random ids it names
            console.print(f"note: {note}", markup=False)
        if loaded is not None and (note := space.autoregressive_note(backend.model_name, loaded.family,
                                                                     loaded.is_diffusion)):
            console.print(f"note: {note}", markup=False)
        if note := _cpu_threads_note(backend, space, opts.mode):
            console.print(note, markup=False)
        if note := _oversubscribed():  # the CPU expert times this run measures, and live trials' CPU experts
            console.print(f"note: {note}", markup=False)

    from advisor.tune.budget import BudgetTooSmall

    ran = ran if ran is not None else [0]
    with LiveProgress(console, opts) as live:
        try:
            result = run_tune(backend, space, opts, budget_bytes=budget_bytes, profile=profile, on_seeded=header,
                              on_start=_also(live.start, _left_out_note(console),
                                             _unfit_budgets_note(console, opts.budgets),
                                             _not_queued_note(console, opts.budgets),
                                             _cpu_baselines_note(console, opts.budgets)),
                              on_trial=_counting(ran, live.trial_done), on_stage=live.stage)
            live.finish(result.n_complete, len(result.front))  # peers may have finished trials after its last one
        except BudgetTooSmall as e:  # refused before the header: say where a budget not given as --budget came from
            if budget_note.startswith("--budget "):
                raise
            raise e.named(budget_note) from None
    ran[0] = result.n_trials_run
    name = shlex.quote(result.study_name)
    if result.interrupted:  # --more N: the same command would run N more, not what this run had left
        saved = (f"{count(result.n_complete, 'finished trial')} and the front ({count(len(result.front), 'point')}) "
                 f"are saved in study {name}" if result.n_complete else f"no trial has finished in study {name} yet")
        typer.echo(f"{_stopped(console)}: {saved}; {_resume_hint(opts, ran[0])}", err=True)
        raise typer.Exit(1 if getattr(console, "closed", False) else 130)
    for n in result.finished_elsewhere:
        console.print(f"note: trial {n} was finished by another worker while this one ran it (its heartbeat judged "
                      "stale); that worker's result is kept, this one's dropped", markup=False)
    if result.dead_workers:
        console.print(f"note: trial {', '.join(map(str, result.dead_workers))} was left running by a worker that "
                      f"stopped (no heartbeat for {opts.grace_period} s): failed and queued again", markup=False)
    if result.n_trials_run == 0 and opts.total_trials is not None and result.n_complete >= opts.total_trials:
        _say_nothing_to_run(console, result.study_name, result.n_complete, opts.total_trials)
    if result.n_waiting and (note := _queued_note(result, opts)):  # e.g. --budgets enqueues more points than
        console.print(note, markup=False)  # --trials runs: say so, not silently skip
    if note := _timeout_note(result, opts):
        console.print(note, markup=False)
    if over := result.counters.get("over_budget_measured", 0):
        console.print(f"note: {over} trial(s) of this run fit the budget as counted, but the CUDA allocator measured "
                      "more: stored over budget, with both peaks (peak_gpu_bytes measured, counted_peak_bytes)",
                      markup=False)
    if unrun := result.unrun_over_budget:
        console.print(_unrun_note(unrun), markup=False)
    _say_front(console, result.study_name, result, wide)
    if result.cpu_note:
        console.print(result.cpu_note, markup=False)
    if result.allowance_note:
        console.print(result.allowance_note, markup=False)
    c = result.counters
    plans = count(result.distinct_plans, 'distinct precision plan')
    if "accuracy" in result.metrics:
        measured = (f"accuracy evaluations this run: {c.get('accuracy_evaluations', 0)} for {plans} in the study "
                    f"({c.get('accuracy_cache_hits', 0)} reused from the cache, {c.get('accuracy_skipped', 0)} "
                    "skipped by the fidelity/dominance stage)")
    else:  # a fidelity study measures no task accuracy: "0 evaluations, 0 reused, 0 skipped" added up to nothing
        measured = (f"no task accuracy in this study's objectives; fidelity evaluations this run: "
                    f"{c.get('fidelity_evaluations', 0)} for {plans} in the study "
                    f"({c.get('fidelity_cache_hits', 0)} reused from the cache)")
    ran_how = f"cache configs by replay: {c.get('replays', 0)}"
    if c.get("live_runs"):  # --mode live: 'by replay: 0' alone hid what every trial ran
        ran_how = (f"cache configs run live (offload runtime): {c['live_runs']}"
                   + (f", by replay: {c['replays']}" if c.get("replays") else ""))
    console.print(f"{measured}; routing traces recorded: {c.get('traces_recorded', 0)}; {ran_how}; "
                  f"{result.elapsed_s:.0f} s")
    _print_stored_in(console, result.storage_url, result.study_name)


def _say_front(console, study: str, result, wide: bool) -> None:
    """The study's front with its counts in the title (`result`: a `TuneResult`, or a `NothingToRun`)."""
    from advisor.tune.display import front_counts, print_front

    title = (f"Pareto front of study {study} ("
             f"{front_counts(len(result.front), result.n_complete, result.n_infeasible, result.n_failed, result.n_retried)})")
    if result.front:
        print_front(console, result.front, title, result.metrics, wide=wide)
    else:
        console.print(f"{title}: no feasible trial finished yet")


def _header_text(model, space, opts, budget_bytes: int | None, budget_note: str, sampler: str | None,
                 profile) -> str:
    """The run's header (rich markup): the model (`ModelBackend`, or the short path's `StoredModel`: its name, shape,
    task and device), task, space, device, budget, the --gpu `profile` (None: none given), objectives, `sampler`
    (None: a run that draws nothing) and mode."""
    from rich.markup import escape

    from advisor.results.front import task_text
    from advisor.tune.display import human_bytes
    from advisor.units import budget_text

    shape = model.shape
    # the --gpu profile prices the link and the device side of time per token: named even where --budget (not it)
    # set the budget, which left it to the legend under the front, after the run
    gpu = (f" | gpu {profile.name} ({profile.source})"
           if profile is not None and budget_note != f"--gpu {profile.name}" else "")
    # the card's memory as budget: said how it was obtained, as recommend's "fits 24.00 GiB (--gpu RTX 4090 24GB,
    # catalogue (nominal))" says it; "24.00 GiB (--gpu RTX 4090 24GB)" gave no source for the one number
    if profile is not None and not gpu:
        budget_note = f"{budget_note}, {profile.source}"
    return (f"[bold]advisor tune[/bold] {escape(model.model_name)} ({shape.n_layers} MoE layers x "
            f"{max(shape.num_experts)} experts, {human_bytes(shape.full_bytes())} of parameters counted) | task "
            f"{escape(task_text(model.task_name, space.objectives, space.text))} | space {escape(space.name)} "
            f"({space.size(shape.n_layers, shape.min_experts)} configurations) | device {model.device}\n"
            f"budget: {escape(budget_text(budget_bytes, budget_note)) if budget_bytes else 'none'}{escape(gpu)} | "
            f"objectives: {', '.join(f'{m} ({d[:3]})' for m, d in space.objectives.items())} | "
            + (f"sampler {sampler} | " if sampler else "") + f"mode {opts.mode}")


def _cpu_profile_note(profile, budget_note: str, budgets: tuple[str, ...]) -> str | None:
    """The note under the header where --gpu names a CPU profile and neither --budget nor --budgets is given: its
    memory is the host's RAM, which is no GPU budget (the space's default budget is kept). Where --budgets set the
    budget the RAM was never it, and 'give --budget' would ask for what they give."""
    if profile is None or not profile.host_only or budget_note.startswith("--budget ") or budgets:
        return None
    return (f"note: --gpu {profile.name} is a CPU profile (`advisor profile --cpu`: a host memcpy, no GPU): its link "
            f"and CPU expert times price the study, but its {format_bytes(profile.memory_bytes, BUDGET_DIGITS)} is "
            "this host's RAM, not GPU memory, so the budget is not it; give --budget with the GPU's memory")


def _say_nothing_to_run(console, study: str, n_complete: int, total: int) -> None:
    """The line of a run whose study already has its --trials N finished, ending in the command to run more: wrapped
    between words, `--more N` kept whole and no N outside it (rich broke "- `--more N` adds N" to leave "N" or
    "adds N" alone on the last line)."""
    from advisor.terminal import print_wrapped

    print_wrapped(console, f"study {study} already has {count(n_complete, 'finished trial')} (--trials {total}); "
                  "nothing to run - add trials with `--more N`")


def _print_stored_in(console, storage_url: str, study: str) -> None:
    """Where the study is stored, and the commands that read it."""
    import shlex

    from advisor.results.preflight import mask_url
    from advisor.results.urls import storage_flag
    from advisor.terminal import print_wrapped

    name = shlex.quote(study)
    where = storage_flag(storage_url)
    # plain text wrapped between words, never inside a `command` (rich broke `... --storage` | `postgresql://...`
    # across lines, which pasted as two commands)
    print_wrapped(console, f"stored in {mask_url(storage_url)} as study {study} - next: `advisor pareto {name}{where}`, "
                           f"`advisor recommend --study {name}{where} --budget ...`")


def _unrun_note(unrun: list) -> str:
    """Why trials of this run were recorded over budget without running: their formats and cache knobs (drawn
    before the cache size) fit no cache size; the first one as an example. The front's title only counted them."""
    from advisor.recommend import describe_config
    from advisor.units import format_bytes

    numbers = [str(n) for n, *_ in unrun if n is not None]
    n, config, peak, budget = unrun[0]
    many = len(unrun) > 1
    which = f"trial{'s' if len(numbers) > 1 else ''} {', '.join(numbers)}" if numbers else count(len(unrun), "trial")
    what = describe_config(config)
    what += "" if "misses" in what else "; misses copy"  # copy is the default describe_config leaves unsaid
    example = f"trial {n}: " if many and n is not None else ""
    return (f"note: {which} of this run {'were' if many else 'was'} recorded over budget without running (never "
            f"on the front): {'their' if many else 'its'} precision formats and cache knobs (miss policy, prefetch, "
            f"hot set), drawn before the cache size, fit no cache size within the budget - {example}{what} counts "
            f"{format_bytes(peak, 2)} at its smallest cache, over the {format_bytes(budget, 2)} budget "
            f"(`advisor inspect MODEL --budget ...` shows what fits per format and miss policy)")


def _short_of(result, opts) -> int:
    """The trials this run (--more N) or the study (--trials N) has short of the N asked for (0: none)."""
    if opts.n_trials:
        return max(0, opts.n_trials - result.n_trials_run)
    return max(0, opts.total_trials - result.n_complete) if opts.total_trials is not None else 0


def _timeout_note(result, opts) -> str:
    """What a --timeout that ended the run short of its trials left, and how to go on: the run ended at 11 of
    --trials 100 without a word, the front printed as if the study were done."""
    left = _short_of(result, opts) if opts.timeout else 0
    if not left:
        return ""
    done = f"--timeout {opts.timeout:g} s stopped this run after {count(result.n_trials_run, 'trial')}"
    if opts.n_trials:
        return f"note: {done}, {left} short of --more {opts.n_trials}; `--more {left}` runs the rest"
    return (f"note: {done}, {count(left, 'finished trial')} short of --trials {opts.total_trials}; the same command "
            f"goes on where this one stopped (it tops the study up to {opts.total_trials})")


def _queued_note(result, opts) -> str:
    """The note on queued trials this run left, as the study stands now: another worker on the study may have
    taken some since the run ended (its count was read then), and one still running trials may take the rest."""
    from advisor.results.registry import list_studies
    from advisor.results.store import engine_for
    from advisor.results.urls import storage_flag

    try:
        engine = engine_for(result.storage_url)
        try:
            now = next(iter(list_studies(engine, result.study_name)), None)
        finally:
            engine.dispose()
    except UserError:  # the storage did not answer now: the count read when the run ended, said as such
        now = None
    stopped = opts.timeout and _short_of(result, opts)

    def why(n: int) -> tuple[str, str]:
        """Why n queued trials did not run, and the pronoun for them ("it" of one)."""
        them = "it" if n == 1 else "them"
        return (f"--timeout {opts.timeout:g} s stopped this run before {them}" if stopped
                else "the run reached its trial count first"), them

    # what they are (as the run ended: another worker may have taken some since), e.g. "warm start, retries"
    kinds = f" ({', '.join(result.waiting_kinds)})" if result.waiting_kinds else ""
    if now is None:
        said, them = why(result.n_waiting)
        return (f"note: {count(result.n_waiting, 'queued trial')}{kinds} had not run when this run ended: {said}; "
                f"`--more {result.n_waiting}` runs {them}")
    waiting, running = now.n_waiting, now.n_running
    if not waiting:
        return ""
    what = f"note: {count(waiting, 'queued trial')}{kinds}"
    said, them = why(waiting)
    if not running:  # this run's trials are all finished: a running one is another worker's
        return f"{what} did not run: {said}; `--more {waiting}` runs {them}"
    return (f"{what} {'has' if waiting == 1 else 'have'} not run yet ({said}); {count(running, 'trial')} of the study "
            f"{'are' if running > 1 else 'is'} running in another worker, which may take {them} - `advisor "
            f"studies{storage_flag(result.storage_url)}` counts those still waiting, `--more N` runs N here")


def _left_out_note(console):
    """on_start: name the formats that cannot fit the budget in any configuration (not offered to the sampler), and
    say so when a study begun before the formats or the hot fraction were drawn within the budget goes on drawing
    them blind."""
    def note(study, objective) -> None:
        if objective.fit.draws_formats_blind:
            console.print(f"note: study {study.study_name} was begun before the layer groups' formats were drawn in "
                          "turn within the budget: it goes on drawing each of fmt_g* over its whole domain, as its "
                          "trials did, so some pairs may be recorded over budget; a new --study draws them within the "
                          "budget (as fmt_fill_g*)", markup=False)
        if objective.fit.draws_hot_blind:
            console.print(f"note: study {study.study_name} was begun before the hot fraction was drawn within the "
                          "budget: it goes on drawing hot_fraction over its whole range, as its trials did, so some "
                          "may be recorded over budget; a new --study draws it within the budget (as hot_fill)",
                          markup=False)
        groups = sum(k.startswith("fmt_g") for k in objective.fit.knobs)
        for knob, formats in objective.fit.left_out.items():
            what = "expert precision" if groups == 1 else f"expert precision of layer group {knob[len('fmt_g'):]}"
            beside = " beside the other groups at their cheapest format" if groups > 1 else ""
            console.print(f"note: {what}: {', '.join(formats)} left out - cannot fit one expert per layer in the "
                          f"budget{beside}", markup=False)
    return note


def _unfit_budgets_note(console, budgets: tuple[str, ...]):
    """on_start: name each --budgets value at which no configuration of the space fits - nothing of the space is
    queued there, so only the baselines answer at it (`advisor report --memory` says "cannot fit" in every row) -
    and what the least configuration counts, in `advisor report`'s words (`least_uniform_peak`)."""
    def note(study, objective) -> None:
        from advisor.tune.baseline_trials import unfit_budgets
        from advisor.units import format_bytes

        for u in unfit_budgets(objective.fit, budgets):
            then = "only the baseline strategies run there" if u.baselines_fit else \
                "nor does any baseline strategy, so none is queued there"
            console.print(f"note: at --budgets {u.budget} ({format_bytes(u.budget_bytes, 2)}) no configuration of "
                          f"the space fits: even its least ({u.least_counts}) needs {format_bytes(u.least_bytes, 2)} "
                          f"(counted); {then}", markup=False)
    return note


def _not_queued_note(console, budgets: tuple[str, ...]):
    """on_start: one line naming the --budgets baselines not queued because they cannot fit a budget at all
    (`unfit_baselines`: their counted peak with no expert on the GPU is over it), with those bytes: they were
    queued and recorded over budget without running (or measured for nothing), without a word."""
    def note(study, objective) -> None:
        from advisor.baselines import BASELINES
        from advisor.tune.baseline_trials import unfit_baselines
        from advisor.units import format_bytes

        unfit = unfit_baselines(objective.fit.space, objective.fit.shape, budgets) if budgets else []
        if not unfit:
            return
        label = {b.name: b.label for b in BASELINES}
        parts = []
        for spec in dict.fromkeys(u.budget for u in unfit):
            at = [u for u in unfit if u.budget == spec]
            peaks = dict.fromkeys(u.peak_bytes for u in at)
            groups = []
            for p in peaks:
                names = [label[u.baseline] for u in at if u.peak_bytes == p]
                named = names[0] if len(names) == 1 else f"{', '.join(names[:-1])} and {names[-1]}"
                groups.append(f"{named} count{'s' if len(names) == 1 else ''} {format_bytes(p, 2)}")
            parts.append(f"at {spec} ({format_bytes(at[0].budget_bytes, 2)}): {'; '.join(groups)}")
        console.print("note: --budgets baselines not queued where they cannot fit at all, their counted peak GPU "
                      f"memory with no expert on the GPU over the budget: {'; '.join(parts)}", markup=False)
    return note


def _cpu_baselines_note(console, budgets: tuple[str, ...]):
    """on_start: misses computed on the CPU move (almost) no bytes, so in a space that minimises H2D bytes and not
    time per token they dominate its front: the baselines `--budgets` adds (Fiddler-, TIDE-, llama.cpp-style) in
    `quick`, where `recommend` picked "bf16, 0 slots, every miss on the CPU" at 10.5 ms per token beside an int4 point
    at 0.16 ms that the front no longer held; and a space's own `miss = ["cpu", ...]`, whose front held only an int8
    point with its misses on the CPU at 2.7 ms per token (a hybrid trial of the study: 1.0 ms). Say so before the
    run."""
    def note(study, objective) -> None:
        space = objective.space
        goals = set(space.objectives)
        if "h2d_bytes_per_token" not in goals or "time_per_token" in goals:
            return
        own = [m for m in ("cpu", "hybrid") if m in set(space.miss.choices or ())]
        if own:  # the space computes misses on the CPU itself
            console.print(f"note: the {space.name} space computes misses on the CPU (miss {' and '.join(own)}), "
                          "which copies fewer of their bytes" + (" (cpu: almost none)" if "cpu" in own else "")
                          + (", as do the baselines --budgets adds" if budgets else "")
                          + "; it minimises H2D bytes and not time per token, so such points can crowd its front "
                          "and `advisor recommend` can pick one however slow (`advisor report` ranks by time per "
                          "token); add time_per_token to its objectives to weigh them", markup=False)
        elif budgets:
            console.print(f"note: --budgets adds baselines whose misses compute on the CPU (Fiddler-, TIDE-, "
                          f"llama.cpp-style), which moves almost no bytes; the {space.name} space minimises H2D "
                          "bytes and not time per token, so they can crowd its front and `advisor recommend` can "
                          "pick one however slow (`advisor report` ranks by time per token); a space with "
                          "time_per_token among its objectives (--space default or dllm) weighs them", markup=False)
    return note


def _also(*callbacks):
    """One on_start callback that calls each of `callbacks` in turn."""
    def call(*args) -> None:
        for cb in callbacks:
            cb(*args)
    return call
