"""Run a task on a loaded model: batched generation through `advisor.models.generate`, then scoring.

Accuracy is exact match (GSM8K, toy) or pass@1 (HumanEval) with a 95% Wilson interval; the time is
wall-clock on the model's device. A `runtime` (quantized or offloaded experts) is attached for the run
and the model's previous expert session restored afterwards.
"""

from __future__ import annotations

import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from typing import Any

from advisor.eval.stats import wilson_interval
from advisor.eval.tasks import Task


@dataclass
class EvalResult:
    """Accuracy of one model (under one runtime) on one task, with where each number came from."""

    task: str
    accuracy: float
    n: int
    correct: int
    ci_low: float
    ci_high: float
    seconds: float
    per_example: list[dict] = field(default_factory=list)
    source: str = ""
    device: str = "cpu"
    seconds_source: str = "measured:wall-clock"

    @property
    def seconds_per_example(self) -> float:
        return self.seconds / self.n if self.n else 0.0

    def summary(self) -> dict[str, Any]:
        """JSON-able numbers (without the per-example records)."""
        return {
            "task": self.task, "accuracy": self.accuracy, "n": self.n, "correct": self.correct,
            "ci_low": self.ci_low, "ci_high": self.ci_high, "seconds": round(self.seconds, 3),
            "seconds_per_example": round(self.seconds_per_example, 4), "source": self.source,
            "seconds_source": f"{self.seconds_source} ({self.device})", "device": self.device,
        }


def default_batch_size(task: Task) -> int:
    return 64 if task.pad_ok else 8


def evaluate(
    loaded,
    task: Task,
    *,
    limit: int | None = None,
    seed: int = 0,
    runtime=None,
    progress: bool = False,
    batch_size: int | None = None,
    on_forward: Callable | None = None,
    **gen_overrides: Any,
) -> EvalResult:
    """Generate a completion for every (selected) example of `task` and score it.

    `limit`/`seed` pick a deterministic subset; `runtime` (an ExpertRuntime) computes the experts;
    `gen_overrides` (steps, block_length, ...) override the task's decoding.
    """
    import torch

    from advisor.errors import UserError

    if loaded.tokenizer is None:
        raise UserError(f"{loaded.name} has no tokenizer, so it cannot be evaluated on a text task")
    task = task.subset(limit, seed)
    if not task.examples:
        raise UserError(f"task {task.name} has no examples to evaluate")
    batches = _batches(loaded.tokenizer, task, batch_size or default_batch_size(task))
    gen_kwargs = {**task.gen_kwargs, **gen_overrides}
    texts: dict[int, str] = {}
    start = time.perf_counter()
    with attached(loaded, runtime), _progress(progress, task) as advance:
        for idx, ids in batches:
            new = _generate(loaded, ids, task.max_new_tokens, on_forward, gen_kwargs)
            for i, row in zip(idx, new.tolist(), strict=True):
                texts[i] = _decode(loaded.tokenizer, row)
            advance(len(idx))
    if loaded.device.type == "cuda":
        torch.cuda.synchronize(loaded.device)
    order = sorted(texts)
    examples = [task.examples[i] for i in order]
    completions = [texts[i] for i in order]
    verdicts = task.score_many(examples, completions)
    seconds = time.perf_counter() - start
    correct = sum(verdicts)
    low, high = wilson_interval(correct, len(verdicts))
    per_example = [
        {"index": i, "prompt": task.prompt(ex)[-200:], "completion": c, "correct": bool(v)}
        for i, ex, c, v in zip(order, examples, completions, verdicts, strict=True)
    ]
    metric = "pass@1" if task.name == "humaneval" else "exact-match"
    return EvalResult(
        task=task.name, accuracy=correct / len(verdicts), n=len(verdicts), correct=correct, ci_low=low,
        ci_high=high, seconds=seconds, per_example=per_example, source=f"measured:{metric}",
        device=str(loaded.device),
    )


def encode_prompt(tokenizer, text: str) -> list[int]:
    """Token ids of a prompt (with the tokenizer's own special tokens, as `generate_text` does)."""
    return list(tokenizer(text, add_special_tokens=True)["input_ids"])


def _batches(tokenizer, task: Task, batch_size: int) -> list[tuple[list[int], Any]]:
    """(example indices, input ids [B, L]) batches. Prompts of unequal length share a batch only when the
    task allows left padding; otherwise batches group prompts of identical length."""
    import torch

    encoded = [encode_prompt(tokenizer, task.prompt(ex)) for ex in task.examples]
    pad = tokenizer.eos_token_id if tokenizer.eos_token_id is not None else tokenizer.pad_token_id
    if task.pad_ok:
        order = sorted(range(len(encoded)), key=lambda i: len(encoded[i]))
        groups = [order[i : i + batch_size] for i in range(0, len(order), batch_size)]
    else:
        by_len: dict[int, list[int]] = {}
        for i, ids in enumerate(encoded):
            by_len.setdefault(len(ids), []).append(i)
        groups = [g[i : i + batch_size] for g in by_len.values() for i in range(0, len(g), batch_size)]
    out = []
    for group in groups:
        width = max(len(encoded[i]) for i in group)
        rows = [[pad] * (width - len(encoded[i])) + encoded[i] for i in group]
        out.append((group, torch.tensor(rows, dtype=torch.long)))
    return out


def _generate(loaded, ids, max_new_tokens: int, on_forward, gen_kwargs: dict):
    from advisor.models.generate import generate

    return generate(loaded, ids, max_new_tokens=max_new_tokens, on_forward=on_forward, **gen_kwargs)


def _decode(tokenizer, row: list[int]) -> str:
    eos = tokenizer.eos_token_id
    if eos is not None and eos in row:
        row = row[: row.index(eos)]
    return tokenizer.decode(row, skip_special_tokens=True)


@contextmanager
def attached(loaded, runtime) -> Iterator[None]:
    """Attach `runtime` for the evaluation; afterwards restore whatever session was attached before."""
    if runtime is None:
        yield
        return
    from advisor.models.view import attach_runtime, detach_runtime
    from advisor.quant.apply import fast_runtime

    runtime = fast_runtime(loaded, runtime)

    previous = getattr(loaded.moe[0].experts_module, "_advisor", None)
    attach_runtime(loaded.model, runtime, layers=loaded.moe)
    try:
        yield
    finally:
        detach_runtime(loaded.model)
        if previous is not None:
            attach_runtime(loaded.model, previous.session.runtime, previous.session.observers, layers=loaded.moe)


@contextmanager
def _progress(enabled: bool, task: Task) -> Iterator[Callable[[int], None]]:
    if not enabled:
        yield lambda _n: None
        return
    from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn

    with Progress(
        TextColumn(f"[bold]{task.name}"), BarColumn(), MofNCompleteColumn(), TimeElapsedColumn(), transient=False
    ) as bar:
        handle = bar.add_task(task.name, total=len(task.examples))
        yield lambda n: bar.advance(handle, n)
