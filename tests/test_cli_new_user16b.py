"""New user 16's findings, through the CLI as a user runs it."""

from __future__ import annotations

from tests.cli_helpers import advisor_in_process, flat


def test_tune_of_a_fidelity_study_counts_fidelity_not_accuracy(tmp_path):
    """A model without a tokenizer tunes fidelity_top1 in place of accuracy, yet tune's summary said `accuracy
    evaluations this run: 0 for 3 distinct precision plans in the study (0 reused from the cache, 0 skipped ...)`:
    numbers that added up to nothing. It now says no task accuracy is measured and counts the fidelity runs."""
    args = ("tune", "tiny:qwen3_moe", "--space", "quick", "--trials", "2", "--storage", "s.db", "--study", "f")
    r = advisor_in_process(*args, cwd=tmp_path)
    assert r.returncode == 0, r.stdout + r.stderr
    text = flat(r.stdout)
    assert "accuracy evaluations this run" not in text, text
    assert "no task accuracy in this study's objectives; fidelity evaluations this run: 2 for 2 distinct " \
           "precision plans in the study (0 reused from the cache)" in text, text
    r = advisor_in_process(*args[:4], "--more", "1", *args[6:], cwd=tmp_path)  # a resume: earlier plans are reused
    assert r.returncode == 0, r.stdout + r.stderr
    assert "fidelity evaluations this run: " in flat(r.stdout), r.stdout
