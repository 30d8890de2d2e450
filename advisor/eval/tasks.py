"""Evaluation tasks behind one interface: the bundled toy task, GSM8K and HumanEval.

A `Task` knows its examples, how to prompt, how to clean and score a completion, how many tokens to
generate and (for the bundled model) the decoding it was trained for. Subsets are deterministic:
``limit`` examples drawn with ``random.Random(seed)``, kept in dataset order.
"""

from __future__ import annotations

import random
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any, ClassVar

from advisor.errors import UserError, choose
from advisor.registry import Registry
from advisor.units import count


@dataclass
class Task:
    """One evaluation task. `score` is exact match / unit-test pass on a *raw* completion."""

    name: str
    examples: list[dict]
    max_new_tokens: int
    prompt_fn: Callable[[dict], str]
    score_fn: Callable[[dict, str], bool]
    clean_fn: Callable[[dict, str], str] = lambda _ex, text: text
    gen_kwargs: dict[str, Any] = field(default_factory=dict)
    pad_ok: bool = False
    """Whether prompts of different lengths may share a batch (left-padded with EOS, no attention mask):
    true only for the bundled model, which was trained that way; others decode equal-length prompts."""
    score_records_fn: Callable[[list[dict], list[str]], list[dict]] | None = None
    """Scores a batch with what the scoring says of each: {"correct": bool, ...} (HumanEval: the sandbox's
    status and detail, `advisor.eval.humaneval.outcome`; its programs run concurrently); where set,
    `score_records` reads it."""
    description: str = ""
    max_shots: int = 0
    """Few-shot exemplars in a prompt; `prompt_fn` uses ``ex["shots"]`` when set, so exemplars can be
    dropped for a model with few positions (`advisor.eval.run.fit_to_positions`)."""
    data: str | None = None
    """The local file the examples were read from (`--data`, absolute), None for bundled / hub data: stored with
    a study, so `advisor report` rebuilds the same prompts."""
    data_sha256: str | None = None
    """SHA-256 of that file's bytes: two --data files of one task give other accuracies, so a study and the
    accuracy cache tell them apart by content (a path can be moved or rewritten)."""

    def examples_sha256(self) -> str | None:
        """SHA-256 of the examples this task holds (as JSON, keys sorted), None where one is not plain data: what a
        load's stored record is keyed by (`advisor.tune.shortcut.load_key`), for hub-read tasks too, whose
        `data_sha256` is None - a new dataset revision in the cache gives other prompts, so other lengths."""
        import hashlib
        import json

        try:
            text = json.dumps(self.examples, sort_keys=True, ensure_ascii=False)
        except (TypeError, ValueError):
            return None
        return hashlib.sha256(text.encode("utf-8", "surrogatepass")).hexdigest()

    def prompt(self, ex: dict) -> str:
        return self.prompt_fn(ex)

    def clean(self, ex: dict, completion: str) -> str:
        return self.clean_fn(ex, completion)

    def score(self, ex: dict, completion: str) -> bool:
        return self.score_fn(ex, self.clean(ex, completion))

    def score_records(self, examples: list[dict], completions: list[str]) -> list[dict]:
        """Score a batch: {"correct": bool} per completion, with what the scoring says of it where it says more
        (`score_records_fn`: HumanEval's sandbox status and detail, as `eval --completions` records them)."""
        cleaned = [self.clean(ex, c) for ex, c in zip(examples, completions, strict=True)]
        if self.score_records_fn is not None:
            return self.score_records_fn(examples, cleaned)
        return [{"correct": self.score_fn(ex, c)} for ex, c in zip(examples, cleaned, strict=True)]

    def subset(self, limit: int | None, seed: int = 0) -> Task:
        """The same task on a deterministic subset of `limit` examples."""
        return _replace_examples(self, select(self.examples, limit, seed))


def select(examples: list, limit: int | None, seed: int = 0) -> list:
    """`limit` examples chosen by `seed` (dataset order kept); all when limit is None or too large."""
    if limit is None or limit >= len(examples):
        return list(examples)
    if limit <= 0:
        raise UserError(f"--limit must be positive, got {limit}")
    chosen = sorted(random.Random(seed).sample(range(len(examples)), limit))
    return [examples[i] for i in chosen]


def _replace_examples(task: Task, examples: list[dict]) -> Task:
    import dataclasses

    return dataclasses.replace(task, examples=examples)


def get_task(
    name: str, *, limit: int | None = None, seed: int = 0, path: str | None = None, style: str | None = None
) -> Task:
    """The task `name` ("toy", "gsm8k", "humaneval"), optionally on a deterministic subset.

    `path` reads GSM8K / HumanEval from a local file instead of the hub / package; `style` picks the
    GSM8K prompt style (zero-shot, few-shot, cot)."""
    task = TASKS.get_or_raise(name.strip().lower(), shown=name)(path, style)
    if path:
        import dataclasses
        import hashlib
        from pathlib import Path

        task = dataclasses.replace(task, data=str(Path(path).resolve()),
                                   data_sha256=hashlib.sha256(Path(path).read_bytes()).hexdigest())
    return task.subset(limit, seed)


def prompt_style(task: str, style: str | None) -> str | None:
    """The prompt style `style` (--style) names for the built-in `task`: GSM8K's in any case (`COT` is cot; default
    few-shot), None for the tasks of one prompt form, which refuse one (it would be left unread without a word).
    One check, torch-free: the task builders read it, and `advisor eval` before torch imports (`--style CAT` was
    refused ~9 s later). A task registered under another name reads its style itself."""
    if task == "gsm8k":
        from advisor.eval.gsm8k import PROMPT_STYLES

        return choose(style, PROMPT_STYLES, "--style") if style is not None else "few-shot"
    if task not in ("toy", "humaneval"):
        return style
    if style is not None:
        raise UserError(f"--style {style}: the {task} task has one prompt form; --style applies to --task gsm8k")
    return None


def _toy(path: str | None, style: str | None) -> Task:
    from advisor.eval import gsm8k, toy

    prompt_style("toy", style)
    if path:  # its problems are bundled: a --data file would be silently left unread
        raise UserError(f"--data {path}: the toy task reads no data file (its problems are bundled); "
                        "use --task gsm8k --data FILE for your own question/answer jsonl")

    examples = [{"question": e.question, "answer": e.answer, "result": e.result} for e in toy.test_set()]
    return Task(
        name="toy",
        examples=examples,
        max_new_tokens=toy.CANVAS,
        prompt_fn=lambda ex: toy.prompt(ex["question"]),
        score_fn=lambda ex, text: gsm8k.is_correct(text, ex["answer"], mode="strict"),
        gen_kwargs={"steps": toy.DECODE_STEPS, "block_length": toy.BLOCK_LENGTH},
        pad_ok=True,
        description=f"bundled two-step arithmetic, held-out test set ({count(len(examples), 'problem')}), strict '#### N'",
    )


def _gsm8k(path: str | None, style: str | None) -> Task:
    from advisor.eval import gsm8k

    style = prompt_style("gsm8k", style)
    examples = gsm8k.load(path)
    return Task(
        name="gsm8k",
        examples=examples,
        max_new_tokens=256,
        prompt_fn=lambda ex: gsm8k.build_prompt(ex["question"], style, ex.get("shots", gsm8k.MAX_SHOTS)),
        score_fn=lambda ex, text: gsm8k.is_correct(text, ex["answer"], mode="flexible"),
        clean_fn=lambda _ex, text: gsm8k.truncate_completion(text),
        max_shots=0 if style == "zero-shot" else gsm8k.MAX_SHOTS,
        description=f"GSM8K ({count(len(examples), 'problem')}), {style} prompt, flexible extraction",
    )


def _humaneval(path: str | None, style: str | None) -> Task:
    from advisor.eval import humaneval

    prompt_style("humaneval", style)
    problems = humaneval.load_problems(path)

    def score_records(examples: list[dict], completions: list[str]) -> list[dict]:
        return [humaneval.outcome(r) for r in humaneval.check_many(examples, completions)]

    return Task(
        name="humaneval",
        examples=problems,
        max_new_tokens=256,
        prompt_fn=lambda ex: ex["prompt"],
        score_fn=lambda ex, text: humaneval.check_completion(ex, text).passed,
        clean_fn=lambda ex, text: humaneval.clean_completion(text, ex),
        score_records_fn=score_records,
        description=f"HumanEval ({count(len(problems), 'problem')}), sandboxed pass@1",
    )


class TaskInterface(Registry):
    """Evaluation tasks by name -> a builder `(path, style) -> Task` (`TaskInterface.register` adds one)."""

    _global_mapping: ClassVar[dict[str, Callable[[str | None, str | None], Task]]] = {
        "toy": _toy,
        "gsm8k": _gsm8k,
        "humaneval": _humaneval,
    }
    unknown = "unknown task '{name}'; choose one of: {names}"


TASKS = TaskInterface()
