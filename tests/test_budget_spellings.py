"""Budgets are matched by the budget they name, not by how they were typed (`advisor.tune.budget.budget_key`):
`tune --budgets '90.5KiB,90.5 KiB'` was two budgets, a resume with `--budgets 1.0%` queued the 1% baselines
again, and `report --memory` had to repeat the tune's exact spelling or the budget's baseline and "not queued"
rows were gone. Each test failed before the fix."""

from __future__ import annotations

import shutil

import pytest
from typer.testing import CliRunner


def invoke(*args: str):
    from advisor.cli import app

    return CliRunner().invoke(app, list(args))


@pytest.fixture(scope="module")
def study(tmp_path_factory):
    """(database path, tune output) of a tiny Qwen3-MoE study tuned with one budget spelled twice."""
    import torch

    torch.set_num_threads(1)
    db = tmp_path_factory.mktemp("spellings") / "s.db"
    r = invoke("tune", "tiny:qwen3_moe", "--space", "quick", "--budgets", "1%,90.5KiB,90.5 KiB,50%", "--trials", "1",
               "--storage", f"sqlite:///{db}", "--study", "b")
    assert r.exit_code == 0, r.output
    return db, r.output


def baseline_budgets(url: str) -> list[str]:
    import optuna

    from advisor.baselines import baseline_keys

    trials = optuna.load_study(study_name="b", storage=url).get_trials(deepcopy=False)
    return sorted(k[1] for t in trials for k in baseline_keys(t.user_attrs))


def test_tune_takes_one_budget_spelled_twice_once(study):
    text = " ".join(study[1].split())
    assert text.count("no configuration of the space fits") == 2, text  # at 1% and at 90.5KiB, not twice there
    assert "90.5 KiB (" not in text, text
    assert ("not queued where they cannot fit at all, their counted peak GPU memory with no expert on the GPU over "
            "the budget: at 90.5KiB (90.50 KiB): Mixtral-offloading-style, Fiddler-style, TIDE-style and "
            "llama.cpp-style count 90.75 KiB note:") in text, text


def test_a_resume_with_another_spelling_queues_no_baseline_again(study, tmp_path):
    db = tmp_path / "s.db"
    shutil.copy(study[0], db)
    url = f"sqlite:///{db}"
    before = baseline_budgets(url)
    assert "1%" in before, before
    r = invoke("tune", "tiny:qwen3_moe", "--space", "quick", "--budgets", "1.0%,50.0%", "--trials", "1",
               "--storage", url, "--study", "b")
    assert r.exit_code == 0, r.output
    assert baseline_budgets(url) == before


def test_report_finds_the_budgets_rows_under_another_spelling(study, tmp_path):
    r = invoke("report", "b", "--storage", f"sqlite:///{study[0]}", "--memory", "90.50KiB,50%", "--block-lengths",
               "", "-o", str(tmp_path / "r"))
    assert r.exit_code == 0, r.output
    rows = [ln for ln in (tmp_path / "r" / "report.md").read_text().splitlines()
            if ln.startswith("| 90.50KiB |") and "-style" in ln]
    assert [ln.split(" | ")[1] for ln in rows] == ["Mixtral-offloading-style", "Fiddler-style", "TIDE-style",
                                                   "llama.cpp-style"], rows
    assert all(ln.endswith("| over budget: not queued, counts 90.75 KiB > 90.50KiB (90.50 KiB); with no expert on the "
                           "GPU it cannot fit there at all |") for ln in rows), rows


def test_a_resume_without_the_budgets_is_told_to_give_them(study, tmp_path):
    """A study tuned with `--budgets` and resumed with `--more 1` alone (the space's default budget) was refused
    with "another memory budget (114.75 KiB; this run's: 112.05 KiB)", not saying that --budgets had set it. The study
    now stores the --budgets that set its budget, and the refusal names them (and the --budget in bytes)."""
    db = tmp_path / "s.db"
    shutil.copy(study[0], db)
    r = invoke("tune", "tiny:qwen3_moe", "--space", "quick", "--more", "1", "--storage", f"sqlite:///{db}",
               "--study", "b")
    from advisor.errors import UserError

    assert isinstance(r.exception, UserError), r.output  # the CLI's one error line, exit 2
    line = str(r.exception)
    assert "was run with another memory budget (" in line, line
    assert ("it was tuned with --budgets 1%,90.5KiB,50%, whose largest is its budget; resume it with --budgets "
            "1%,90.5KiB,50% (or --budget ") in line, line


def test_a_resume_is_told_budgets_it_takes_where_the_study_stored_a_lowercase_b(study, tmp_path):
    """A study tuned with `--budgets 1%,90.5Kb,50%` before a lowercase-b unit was refused as bits (1902241) stored
    that spelling; its resume without them was told "resume it with --budgets 1%,90.5Kb,50%", which is refused
    ("'90.5Kb': Kb is kilobits"). The refusal names the stored budgets as they are read (90.5KB)."""
    import optuna

    db = tmp_path / "s.db"
    shutil.copy(study[0], db)
    url = f"sqlite:///{db}"
    optuna.load_study(study_name="b", storage=url).set_user_attr("budgets_given", "1%,90.5Kb,50%")
    r = invoke("tune", "tiny:qwen3_moe", "--space", "quick", "--more", "1", "--storage", url, "--study", "b")
    line = str(r.exception)
    assert "resume it with --budgets 1%,90.5KB,50% (or --budget " in line, line
