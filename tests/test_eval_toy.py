"""The bundled task: deterministic, disjoint splits, GSM8K answer format, character tokenizer."""

from __future__ import annotations

import itertools

from advisor.eval import gsm8k, toy
from advisor.eval.chartok import build_tokenizer


def test_generation_is_deterministic_and_answers_are_right():
    a = list(itertools.islice(toy.generate("train", seed=3), 50))
    b = list(itertools.islice(toy.generate("train", seed=3), 50))
    assert a == b
    for ex in a:
        start, first, _second, op1, _op2 = ex.key  # the default task has one step
        result = start + first if op1 == "+" else start - first
        assert ex.result == result >= 0
        assert gsm8k.gold_answer(ex.answer) == str(result)
        assert ex.answer == f"{start}{op1}{first}\n#### {result}"  # the result is written exactly once
        assert ex.question.endswith(f"{first:>2}. How many?")  # operands at fixed distances from the answer


def test_two_step_problems_show_each_step():
    diff = toy.Difficulty(start=(10, 99), first=(2, 19), second=(1, 9))
    for ex in itertools.islice(toy.generate("train", seed=1, diff=diff), 50):
        start, first, second, op1, op2 = ex.key
        mid = start + first if op1 == "+" else start - first
        assert ex.result == (mid + second if op2 == "+" else mid - second) >= 0
        assert f"{start}{op1}{first}={mid}. {mid}{op2}{second}={ex.result}." in ex.answer


def test_splits_are_disjoint_by_arithmetic():
    test_keys = {ex.key for ex in toy.test_set()}
    val_keys = {ex.key for ex in toy.validation_set()}
    train_keys = {ex.key for ex in itertools.islice(toy.generate("train", seed=0), 20000)}
    assert len(test_keys) == toy.TEST_SIZE
    assert not test_keys & train_keys and not val_keys & train_keys and not test_keys & val_keys


def test_test_set_is_fixed():
    first = toy.test_set()[:3]
    assert first == toy.test_set(3)
    assert len({ex.question for ex in toy.test_set()}) > 400  # varied wording, not one template


def test_answers_fit_the_canvas_and_tokenize_back_exactly():
    tok = build_tokenizer()
    for ex in toy.test_set():
        text = toy.prompt(ex.question) + ex.answer
        ids = tok(text, add_special_tokens=False)["input_ids"]
        assert tok.decode(ids) == text
        assert len(tok(ex.answer, add_special_tokens=False)["input_ids"]) <= toy.CANVAS
    assert tok.mask_token_id is not None and tok.eos_token_id is not None
    assert tok.unk_token_id not in tok("Q: Ann has 12 pens?\n#### 3", add_special_tokens=False)["input_ids"]


def test_tokenizer_loads_offline_with_autotokenizer(tmp_path):
    from transformers import AutoTokenizer

    build_tokenizer().save_pretrained(tmp_path)
    tok = AutoTokenizer.from_pretrained(tmp_path, local_files_only=True)
    assert tok.decode(tok("12+7=19.\n#### 19")["input_ids"]) == "12+7=19.\n#### 19"
    assert tok.mask_token == "<|mask|>"


def test_toy_task_scores_strictly():
    from advisor.eval.tasks import get_task

    task = get_task("toy", limit=5, seed=0)
    ex = task.examples[0]
    assert task.score(ex, ex["answer"])
    assert not task.score(ex, ex["answer"].replace("####", "answer:"))  # strict '#### N'
    assert not task.score(ex, ex["answer"].rsplit("#### ", 1)[0] + f"#### {ex['result'] + 1}")
