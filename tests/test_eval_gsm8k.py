"""GSM8K answer extraction, data loading and prompt styles."""

from __future__ import annotations

import json
import time
from pathlib import Path

import pytest

from advisor.errors import UserError
from advisor.eval import gsm8k
from advisor.eval.stats import wilson_interval

DATA = Path(__file__).parent / "data" / "gsm8k_sample.jsonl"


@pytest.mark.parametrize(
    ("text", "strict", "flexible"),
    [
        ("so 3 + 4 = 7.\n#### 7", "7", "7"),
        ("#### 1,234", "1234", "1234"),
        ("#### $1,234.", "1234", "1234"),
        ("####-5", "-5", "-5"),
        ("#### 18.00", "18", "18"),
        ("#### 37.50 dollars", "37.5", "37.5"),
        ("She pays $45.", None, "45"),
        ("The answer is 1,000,000.", None, "1000000"),
        ("The answer is $12. Then 3 more steps give 99", None, "12"),
        ("first 12, then 7 apples, finally 30.\n", None, "30"),
        ("no digits here", None, None),
        ("#### 12\n#### 13", "12", "12"),
        ("3 + 4 = 7 and #### 8", "8", "8"),
        ("the sizes are 1,2,3", None, "3"),  # a comma-joined list is not the number 123
        ("#### 1,2,3", "1", "1"),
        ("it costs 1,234 dollars", None, "1234"),
        ("ids 4,56 and 7", None, "7"),
        ("so 12,0000", None, "0"),
    ],
)
def test_extraction_on_tricky_strings(text, strict, flexible):
    assert gsm8k.extract_strict(text) == strict
    assert gsm8k.extract_flexible(text) == flexible


def test_normalize_number():
    assert gsm8k.normalize_number("$1,234.00.") == "1234"
    assert gsm8k.normalize_number("0.50") == "0.5"
    assert gsm8k.normalize_number("abc") is None


def test_is_correct_strict_vs_flexible():
    gold = "work\n#### 1,200"
    assert gsm8k.is_correct("... #### 1200", gold, mode="strict")
    assert not gsm8k.is_correct("The answer is 1200.", gold, mode="strict")
    assert gsm8k.is_correct("The answer is 1,200.", gold, mode="flexible")
    assert not gsm8k.is_correct("The answer is 1201.", gold, mode="flexible")


def test_every_gold_answer_of_the_sample_file_parses():
    records = gsm8k.read_jsonl(DATA)
    assert len(records) == 8
    golds = [gsm8k.gold_answer(r["answer"]) for r in records]
    assert golds == ["288", "30000", "0", "-5", "2000", "2", "2000", "37.5"]
    for r in records:  # a completion equal to the reference solution is scored correct
        assert gsm8k.is_correct(r["answer"], r["answer"])


def test_malformed_files_are_user_errors(tmp_path):
    bad_json = tmp_path / "a.jsonl"
    bad_json.write_text('{"question": "q", "answer": "#### 1"}\nnot json\n')
    with pytest.raises(UserError, match=":2: not valid JSON"):
        gsm8k.read_jsonl(bad_json)
    no_marker = tmp_path / "b.jsonl"
    no_marker.write_text(json.dumps({"question": "q", "answer": "just 4"}) + "\n")
    with pytest.raises(UserError, match="####"):
        gsm8k.read_jsonl(no_marker)
    with pytest.raises(UserError, match=r"b\.jsonl:1: the answer has no '#### N' line"):
        gsm8k.read_jsonl(no_marker)
    with pytest.raises(UserError, match="does not exist"):
        gsm8k.read_jsonl(tmp_path / "missing.jsonl")
    latin1 = tmp_path / "c.jsonl"
    latin1.write_bytes(b'{"question": "q", "answer": "#### 1"}\n{"question": "caf\xe9", "answer": "#### 2"}\n')
    with pytest.raises(UserError, match=r"c\.jsonl:2: not UTF-8 \(byte 0xe9 at column 18\)"):
        gsm8k.read_jsonl(latin1)


def test_prompt_styles():
    q = "How many?"
    assert gsm8k.build_prompt(q, "zero-shot") == "Question: How many?\nAnswer:"
    few = gsm8k.build_prompt(q, "few-shot", shots=2)
    assert few.count("#### ") == 2 and few.endswith("Question: How many?\nAnswer:")
    cot = gsm8k.build_prompt(q, "cot", shots=3)
    assert cot.count("The answer is") == 3 and "####" not in cot
    with pytest.raises(UserError):
        gsm8k.build_prompt(q, "tree-of-thought")


def test_truncate_completion_at_the_next_question():
    assert gsm8k.truncate_completion(" 3+4=7\n#### 7\n\nQuestion: next") == " 3+4=7\n#### 7"


def test_hub_unavailable_offline_fails_fast_with_a_user_error(monkeypatch):
    monkeypatch.setenv("HF_DATASETS_OFFLINE", "1")
    monkeypatch.setattr(gsm8k, "hub_reachable", lambda *a: False)
    monkeypatch.setenv("HF_DATASETS_CACHE", "/nonexistent-advisor-cache")
    start = time.perf_counter()
    with pytest.raises(UserError, match="--data"):
        gsm8k.load_hub()
    assert time.perf_counter() - start < 30


def test_gsm8k_task_from_local_file_and_deterministic_subsets():
    from advisor.eval.tasks import get_task

    full = get_task("gsm8k", path=str(DATA))
    assert len(full.examples) == 8
    a = get_task("gsm8k", path=str(DATA), limit=3, seed=1).examples
    b = get_task("gsm8k", path=str(DATA), limit=3, seed=1).examples
    c = get_task("gsm8k", path=str(DATA), limit=3, seed=2).examples
    assert a == b and len(a) == 3 and a != c
    ex = full.examples[0]
    assert full.score(ex, " 12 * 24 = 288.\n#### 288\n\nQuestion: blah 5") is True
    assert full.score(ex, " I think 289") is False


def test_wilson_interval():
    low, high = wilson_interval(8, 10)
    assert 0.49 < low < 0.5 and 0.94 < high < 0.95
    assert wilson_interval(0, 10)[0] == 0.0 and wilson_interval(10, 10)[1] == 1.0
    with pytest.raises(ValueError):
        wilson_interval(11, 10)


def test_a_minus_sign_apart_from_its_number_is_not_a_sign():
    """`72 - 50` ends in 50, a bullet `- 288` is 288: only a '-' touching the digits (or a '-$') makes a
    negative number. The number pattern once let spaces and newlines sit between the sign and the digits."""
    from advisor.eval.tasks import get_task

    task = get_task("gsm8k", path=str(DATA))
    pencils, money, _empty, cold = task.examples[:4]  # gold 288, 30000, 0, -5
    assert task.score(pencils, " Pencils in all:\n- 288")
    assert task.score(money, " 24 * 1250 = 30,000 dollars saved\n- 30,000")
    assert not task.score(cold, " The drop is 10 - 5")  # the last number is 5, not -5
    assert task.score(cold, " 4 - 9 = -5 degrees")
    assert task.score(cold, " It is -$5 colder, no: -5")
    assert task.score(money, " The answer is $ 30,000.")
