"""GSM8K: loading (hub or local jsonl), prompt styles and answer extraction.

Scoring is exact match on the extracted number. Two extractions, as commonly reported: *strict* reads the
number after ``####`` (the dataset's own answer format), *flexible* falls back to "The answer is N" and then
to the last number in the completion. Numbers are normalised (commas, ``$``, trailing period, ``18.00``)
before comparison.
"""

from __future__ import annotations

import contextlib
import os
import re
from collections.abc import Iterator
from decimal import Decimal, InvalidOperation

from advisor.errors import UserError
from advisor.eval import jsonl
from advisor.hub import PROBE_S, hub_reachable

PROMPT_STYLES = ("zero-shot", "few-shot", "cot")

# Thousands separators only in groups of three: "1,234" is one number, "1,2,3" is a list of three. A sign
# touches its digits ("-5", "-$5"): in "72 - 50" or a bullet "- 50" the number is 50.
_NUM = r"(?:-?\$ *|-)?(?:\d{1,3}(?:,\d{3})+(?!\d)|\d+)(?:\.\d+)?"
_STRICT_RE = re.compile(r"####\s*(" + _NUM + ")")
_ANSWER_IS_RE = re.compile(r"[Tt]he (?:final )?answer is[:\s]*(" + _NUM + ")")
_ANY_NUM_RE = re.compile(_NUM)

# Original exemplars (written for this project) in GSM8K answer format; the last line of each is the
# GSM8K-style answer, the CoT variant ends with "The answer is N." instead.
_EXEMPLARS = (
    (
        "A baker fills 6 trays with 12 rolls each and sells 50 rolls. How many rolls are left?",
        "The trays hold 6 * 12 = 72 rolls. After selling 50, 72 - 50 = 22 rolls are left.",
        "22",
    ),
    (
        "Maya reads 15 pages a day for 4 days, then 20 pages on the fifth day. How many pages did she read?",
        "In four days she reads 4 * 15 = 60 pages. With the fifth day, 60 + 20 = 80 pages.",
        "80",
    ),
    (
        "A ticket costs $8 and a drink costs $3. How much do 5 tickets and 2 drinks cost?",
        "Tickets cost 5 * 8 = 40 dollars and drinks 2 * 3 = 6 dollars, so 40 + 6 = 46 dollars.",
        "46",
    ),
    (
        "A farm has 3 times as many hens as cows. There are 9 cows. How many animals are there in all?",
        "There are 3 * 9 = 27 hens. Together with the cows, 27 + 9 = 36 animals.",
        "36",
    ),
)


def normalize_number(text: str) -> str | None:
    """Canonical string of a number as written in an answer ("$1,234.00." -> "1234"), or None."""
    cleaned = text.strip().replace(",", "").replace("$", "").replace(" ", "").rstrip(".")
    if not cleaned:
        return None
    try:
        value = Decimal(cleaned)
    except InvalidOperation:
        return None
    if value == value.to_integral_value():
        return str(int(value))
    return format(value.normalize(), "f")


def extract_strict(completion: str) -> str | None:
    """The number after the first ``####`` (GSM8K's answer marker), normalised; None if absent."""
    m = _STRICT_RE.search(completion)
    return normalize_number(m.group(1)) if m else None


def extract_flexible(completion: str) -> str | None:
    """``####`` if present, else "The answer is N", else the last number in the text; normalised."""
    strict = extract_strict(completion)
    if strict is not None:
        return strict
    m = _ANSWER_IS_RE.search(completion)
    if m:
        return normalize_number(m.group(1))
    nums = _ANY_NUM_RE.findall(completion)
    for raw in reversed(nums):
        value = normalize_number(raw)
        if value is not None:
            return value
    return None


def gold_answer(answer: str) -> str:
    """The reference number of a GSM8K answer field (text after ``####``); UserError if it has none."""
    value = extract_strict(answer)
    if value is None:
        raise UserError(f"GSM8K answer has no '#### N' line: {answer[-80:]!r}; check the data file")
    return value


def is_correct(completion: str, answer: str, *, mode: str = "flexible") -> bool:
    """Exact match of the extracted number against the gold answer."""
    if mode not in ("strict", "flexible"):
        raise ValueError(f"mode must be 'strict' or 'flexible', not {mode!r}")
    extract = extract_strict if mode == "strict" else extract_flexible
    got = extract(completion)
    return got is not None and got == gold_answer(answer)


MAX_SHOTS = 4


def build_prompt(question: str, style: str = "few-shot", shots: int = MAX_SHOTS) -> str:
    """A prompt in one of PROMPT_STYLES. Few-shot exemplars use GSM8K's format; CoT ends each with
    "The answer is N." as in chain-of-thought prompting."""
    if style not in PROMPT_STYLES:
        raise UserError(f"unknown prompt style {style!r}; use one of {', '.join(PROMPT_STYLES)}")
    if style == "zero-shot":
        return f"Question: {question}\nAnswer:"
    parts = []
    for q, reasoning, ans in _EXEMPLARS[: max(0, shots)]:
        if style == "cot":
            parts.append(f"Question: {q}\nAnswer: {reasoning} The answer is {ans}.\n\n")
        else:
            parts.append(f"Question: {q}\nAnswer: {reasoning}\n#### {ans}\n\n")
    return "".join(parts) + f"Question: {question}\nAnswer:"


STOP_SEQUENCES = ("\n\nQuestion:", "\nQuestion:", "</s>", "<|endoftext|>")


def truncate_completion(text: str) -> str:
    """Cut a completion where a model starts a new few-shot question."""
    cut = len(text)
    for stop in STOP_SEQUENCES:
        i = text.find(stop)
        if i != -1:
            cut = min(cut, i)
    return text[:cut]


def read_jsonl(path: str | os.PathLike) -> list[dict]:
    """GSM8K-format records from a local jsonl file (one object per line with question and answer)."""
    out = []
    for where, obj in jsonl.records(path, "GSM8K (question/answer)"):
        if not isinstance(obj.get("question"), str) or not isinstance(obj.get("answer"), str):
            raise UserError(f"{where}: needs string fields 'question' and 'answer'")
        if extract_strict(obj["answer"]) is None:  # fail early, with the line, on answers without '#### N'
            raise UserError(f"{where}: the answer has no '#### N' line: {obj['answer'][-60:]!r}")
        out.append({"question": obj["question"], "answer": obj["answer"]})
    if not out:
        raise UserError(f"{path} holds no GSM8K records")
    return out


@contextlib.contextmanager
def _offline_mode() -> Iterator[None]:
    """Tell datasets / huggingface_hub to use the local cache only, for the duration of one load."""
    import datasets.config as dconf
    import huggingface_hub.constants as hconst

    saved = (dconf.HF_HUB_OFFLINE, hconst.HF_HUB_OFFLINE)
    dconf.HF_HUB_OFFLINE = hconst.HF_HUB_OFFLINE = True
    try:
        yield
    finally:
        dconf.HF_HUB_OFFLINE, hconst.HF_HUB_OFFLINE = saved


def load_hub(split: str = "test") -> list[dict]:
    """`openai/gsm8k` (config `main`) through `datasets`: from the cache when the hub is unreachable."""
    from advisor.hub import check_import

    check_import("datasets")  # the variables its import (huggingface_hub's too) reads: one line for a bad one
    import datasets

    def load() -> list[dict]:
        ds = datasets.load_dataset("openai/gsm8k", "main", split=split)
        return [{"question": r["question"], "answer": r["answer"]} for r in ds]

    # outside the try: a proxy variable it cannot read is its own one-line refusal, not "not available offline
    # (UserError)"
    online = hub_reachable(PROBE_S, "HF_DATASETS_OFFLINE")
    try:
        if online:
            return load()
        with _offline_mode():
            return load()
    except Exception as e:  # datasets raises many types (ConnectionError, FileNotFoundError, ...)
        raise UserError(
            f"GSM8K is not available offline ({type(e).__name__}); pass --data path/to/gsm8k.jsonl"
        ) from None


def load(path: str | os.PathLike | None = None, split: str = "test") -> list[dict]:
    """GSM8K records from `path` (jsonl) if given, else from the hub / local datasets cache."""
    return read_jsonl(path) if path is not None else load_hub(split)
