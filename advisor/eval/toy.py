"""The bundled task: synthetic arithmetic word problems in GSM8K answer format.

Why this task: it must run on a laptop CPU with no downloads, and the bundled model must score between
80% and 97% at full precision so that harsher expert formats have room to show what they cost. What was
tried (see the bundled TRAINING.md): two-step problems with the operands spread through the sentence and the
result written twice ("a-b=r. r+c=s. #### s") stayed under 12% within the CPU budget - the model must find
operands far from the answer, and it learns to copy a result from its later mention instead of computing it.
The shipped task keeps GSM8K's shape (a word problem; an answer that shows the working and ends in
``#### N``) but is built to be learnable in minutes: a 2-digit start, one gain or loss of 2-49, numbers
right-aligned at fixed distances from the answer, and the working ("58-18") written without the result, so
the result appears exactly once.

Train, validation and test are disjoint by construction: every problem is keyed by its arithmetic (start,
the changes, the operations); a fixed hash of that key puts one tenth of all keys in the held-out
test split and another tenth in a validation split (used to monitor training and to choose the recipe), so
no test problem's arithmetic is ever seen in training or used for a choice, whatever its wording.
"""

from __future__ import annotations

import hashlib
import random
from collections.abc import Iterator
from dataclasses import dataclass

TEST_SEED = 1_234_567
"""Seed of the held-out test set (fixed forever: changing it changes every reported number)."""
TEST_SIZE = 500
VAL_SEED = 7_654_321
CANVAS = 16
"""Answer tokens generated per problem (answer characters, then EOS fill)."""
BLOCK_LENGTH = 8
DECODE_STEPS = 16
"""Decoding of the bundled model: LLaDA low-confidence remasking, blocks of 8, one token per step."""
_BUCKETS = 10  # key hash bucket 0 -> test, 1 -> validation, 2..9 -> train

# Short words on purpose: every prompt character costs training compute on a laptop CPU.
NAMES = ("Ann", "Ben", "Cara", "Dan", "Eva", "Finn", "Gia", "Hugo", "Ivy", "Jack", "Kim", "Leo", "Mia", "Noah")
ITEMS = ("pens", "eggs", "cards", "coins", "books", "cups", "hats", "toys", "shells", "stamps")
# Four-letter verbs and right-aligned numbers: every number sits at a fixed distance from the answer, so a
# small model spends its few minutes of training on arithmetic, not on finding the operands in the text.
_GAIN = ("buys {n:>2}", "gets {n:>2}", "wins {n:>2}", "adds {n:>2}")
_LOSS = ("uses {n:>2}", "eats {n:>2}", "pays {n:>2}", "gave {n:>2}")


@dataclass(frozen=True)
class ToyExample:
    """One problem: question text, GSM8K-style answer (worked steps + ``#### N``) and the integer result."""

    question: str
    answer: str
    result: int
    key: tuple[int, int, int, str, str]


@dataclass(frozen=True)
class Difficulty:
    """Operand ranges (inclusive) of the start value and of the first and (optional) second change."""

    start: tuple[int, int] = (10, 99)
    first: tuple[int, int] = (2, 49)
    second: tuple[int, int] | None = None


DEFAULT_DIFFICULTY = Difficulty()


def split_of(key: tuple) -> str:
    """The split a problem's arithmetic belongs to (a fixed hash, not Python's salted one)."""
    bucket = hashlib.sha256(repr(key).encode()).digest()[0] % _BUCKETS
    return "test" if bucket == 0 else "val" if bucket == 1 else "train"


def _apply(value: int, op: str, n: int) -> int:
    return value + n if op == "+" else value - n


def _draw(rng: random.Random, diff: Difficulty) -> ToyExample:
    while True:
        a = rng.randint(*diff.start)
        b = rng.randint(*diff.first)
        c = rng.randint(*diff.second) if diff.second else 0
        op1, op2 = rng.choice("+-"), rng.choice("+-")
        mid = _apply(a, op1, b)
        result = _apply(mid, op2, c) if diff.second else mid
        if mid >= 0 and result >= 0:
            break
    name, item = rng.choice(NAMES), rng.choice(ITEMS)
    step1 = rng.choice(_GAIN if op1 == "+" else _LOSS).format(n=b)
    if diff.second:
        step2 = rng.choice(_GAIN if op2 == "+" else _LOSS).format(n=c)
        question = f"{name}'s {item}: has {a:>2}, {step1}, then {step2}. How many?"
        answer = f"{a}{op1}{b}={mid}. {mid}{op2}{c}={result}.\n#### {result}"
        key: tuple = (a, b, c, op1, op2)
    else:
        question = f"{name}'s {item}: has {a:>2}, {step1}. How many?"
        # The result appears once: with "a+b=r. #### r" a masked-diffusion model learns to copy r from its
        # other mention instead of computing it, and left-to-right block decoding then fails.
        answer = f"{a}{op1}{b}\n#### {result}"
        key = (a, b, 0, op1, "")
    return ToyExample(question=question, answer=answer, result=result, key=key)


def generate(split: str, *, seed: int, diff: Difficulty = DEFAULT_DIFFICULTY) -> Iterator[ToyExample]:
    """An endless deterministic stream of problems of one split ("train", "val" or "test")."""
    if split not in ("train", "val", "test"):
        raise ValueError(f"split must be 'train', 'val' or 'test', not {split!r}")
    rng = random.Random(seed)
    while True:
        ex = _draw(rng, diff)
        if split_of(ex.key) == split:
            yield ex


def test_set(n: int = TEST_SIZE, diff: Difficulty = DEFAULT_DIFFICULTY) -> list[ToyExample]:
    """The held-out test set: the first `n` distinct test-split problems of the fixed test seed."""
    return _distinct("test", TEST_SEED, n, diff)


def validation_set(n: int = 256, diff: Difficulty = DEFAULT_DIFFICULTY) -> list[ToyExample]:
    """Validation problems (monitoring and recipe choice), disjoint from train and test."""
    return _distinct("val", VAL_SEED, n, diff)


def _distinct(split: str, seed: int, n: int, diff: Difficulty) -> list[ToyExample]:
    seen: set[tuple] = set()
    out: list[ToyExample] = []
    misses = 0
    for ex in generate(split, seed=seed, diff=diff):
        if ex.key in seen:
            misses += 1
            if misses > 50 * n:  # the split holds fewer than n distinct problems: say so, do not spin
                raise ValueError(f"the {split} split of {diff} has only about {len(out)} distinct problems, "
                                 f"{n} were asked for; widen the ranges or ask for fewer")
            continue
        misses = 0
        seen.add(ex.key)
        out.append(ex)
        if len(out) == n:
            return out
    raise AssertionError("unreachable: the generator is endless")


def prompt(question: str) -> str:
    """The prompt the bundled model was trained with (and is evaluated with)."""
    return f"Q: {question}\nA: "
