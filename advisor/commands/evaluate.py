"""CLI commands of the evaluation area: `advisor eval`. Heavy imports stay inside the command body."""

from __future__ import annotations

import json
import os

import typer

from advisor.errors import UserError
from advisor.eval.tasks import TASKS
from advisor.files import write_atomic


def register(app: typer.Typer) -> None:
    """Add this area's commands to the app."""

    @app.command("eval")
    def eval_command(
        model: str = typer.Argument("bundled", help="HF id, local directory, tiny:<family> or 'bundled'."),
        task: str = typer.Option("toy", "--task", "-t", help="toy (the bundled model's task), gsm8k or humaneval."),
        precision: str = typer.Option(
            None, "--precision", "-p",
            help="Expert precision plan: a format (int8, int4, int4:g64, ...), 'layers=0-1:int8,2-3:int4', or a "
            "JSON file. Default: the model's own weights.",
        ),
        limit: int = typer.Option(None, "--limit", "-n", help="Evaluate a deterministic subset of N examples."),
        seed: int = typer.Option(0, "--seed", help="Seed of the subset choice."),
        data: str = typer.Option(None, "--data", help="Local data file (GSM8K jsonl / HumanEval jsonl[.gz])."),
        style: str = typer.Option("few-shot", "--style", help="GSM8K prompt style: zero-shot, few-shot or cot."),
        device: str = typer.Option("cpu", "--device", help="cpu, cuda or cuda:N."),
        batch_size: int = typer.Option(None, "--batch-size", help="Prompts decoded together (default per task)."),
        fidelity_prompts: int = typer.Option(
            16, "--fidelity-prompts", help="Prompts for the logit fidelity proxy when --precision is set (0: skip)."
        ),
        json_out: str = typer.Option(None, "--json", help="Also write the result (and per-example records) here."),
        no_progress: bool = typer.Option(False, "--no-progress", help="No progress bar."),
    ) -> None:
        """Accuracy of MODEL on a task (exact match / sandboxed pass@1), optionally with quantized experts."""
        TASKS.get_or_raise(task.lower(), shown=task)  # before any model loads
        if limit is not None and limit <= 0:
            raise UserError(f"--limit must be positive, got {limit}")
        if batch_size is not None and batch_size <= 0:
            raise UserError(f"--batch-size must be positive, got {batch_size}")

        import torch
        from rich.console import Console

        from advisor.eval.run import evaluate
        from advisor.eval.tasks import get_task
        from advisor.models.load import load_model

        torch.set_num_threads(max(1, min(torch.get_num_threads(), os.cpu_count() or 1)))
        plan = None
        if precision:
            from advisor.quant.plan import PrecisionPlan

            plan = PrecisionPlan.parse(precision)  # malformed plans fail before the model loads
        the_task = get_task(task, limit=limit, seed=seed, path=data, style=style)
        loaded = load_model(model, device=device)
        console = Console(stderr=True)
        runtime, fid = None, None
        if plan is not None:
            from advisor.eval.fidelity import fidelity, task_reference
            from advisor.quant.apply import quantize_experts

            ref = task_reference(loaded, the_task, n=fidelity_prompts, seed=seed) if fidelity_prompts > 0 else None
            runtime = quantize_experts(loaded, plan, attach=False)
            fid = fidelity(loaded, ref, runtime) if ref is not None else None
        result = evaluate(
            loaded, the_task, runtime=runtime, progress=not no_progress, batch_size=batch_size,
        )
        out = Console()
        from rich.markup import escape
        label = plan.describe() if plan is not None else "model weights as loaded"
        out.print(f"[bold]{loaded.name}[/bold] on {the_task.description}")
        out.print(f"precision: {label}")
        metric = "pass@1" if result.task == "humaneval" else "accuracy"
        out.print(
            f"{metric}: {result.accuracy:.1%} ({result.correct}/{result.n}; 95% CI {result.ci_low:.1%}-"
            f"{result.ci_high:.1%}) " + escape(f"[{result.source}]")
        )
        out.print(
            f"time: {result.seconds:.1f} s, {result.seconds_per_example:.3f} s/example "
            + escape(f"[{result.seconds_source} ({result.device})]")
        )
        if fid is not None:
            out.print(
                f"fidelity vs full precision: KL {fid['fidelity_kl']:.3g}, top-1 agreement "
                f"{fid['fidelity_top1']:.1%} over {fid['fidelity_positions']} positions " + escape("[measured:logits]")
            )
        if json_out:
            payload = {
                "model": loaded.name, "fingerprint": loaded.fingerprint, "task": the_task.description,
                "precision": plan.spec if plan is not None else None, "limit": limit, "seed": seed,
                **result.summary(), "fidelity": fid, "per_example": result.per_example,
            }
            write_atomic(json_out, json.dumps(payload, indent=2), create_dirs=False)
            console.print(f"wrote {json_out}")
