"""`advisor tune` run again on a finished study still refuses what it must (a checkpoint re-saved with other
weights, another memory budget) rather than saying 'nothing to run' (the short path of `advisor.tune.shortcut` is
not taken: another signature, another budget); `pareto` of an unknown name beside a damaged study (review42)."""

from __future__ import annotations

from tune_helpers import MIXED_CPU_MISS_SPACE

from tests.cli_helpers import advisor_entry, advisor_in_process, one_error_line


def test_a_checkpoint_saved_again_in_place_is_refused_as_another_model_not_said_to_have_nothing_to_run(tmp_path,
                                                                                                        monkeypatch):
    """A checkpoint directory keeps its name (the study's model) when its weights change: `tune ./ck --trials 1`
    again after ./ck was saved anew must refuse the study as another model's (its fingerprint), not say 'already has
    1 finished trial; nothing to run' - as a shortcut that skipped loading the model did (fd959bd, reverted). The
    study's stored load record (`advisor.tune.shortcut`) is of the files as first saved: the new ones load."""
    import torch

    from advisor.models import signature
    from advisor.models.tiny import build_tiny
    from advisor.results.registry import study_user_attrs
    from advisor.results.store import engine_for

    monkeypatch.setattr(signature, "RACY_NS", 0)  # files saved a moment ago are signed (no 2 s wait)
    build_tiny("qwen3_moe", dtype=torch.bfloat16).save_pretrained(tmp_path / "ck")
    args = ("tune", "./ck", "--space", "quick", "--trials", "1", "--budget", "1MiB", "--storage", "t.db",
            "--study", "s")
    first = advisor_in_process(*args, cwd=tmp_path, env={"COLUMNS": "200"})
    assert first.returncode == 0, first.stdout + first.stderr
    record = study_user_attrs(engine_for(f"sqlite:///{tmp_path / 't.db'}"), "s")["load_record"]
    assert record["key"]["signature"]["model"]["path"] == str((tmp_path / "ck").resolve()), record["key"]
    build_tiny("qwen3_moe", seed=1, dtype=torch.bfloat16).save_pretrained(tmp_path / "ck")  # other weights
    r = advisor_entry(*args, cwd=tmp_path, env={"COLUMNS": "200"})
    one_error_line(r, "study 's' was run with another model")
    assert "nothing to run" not in r.stdout, r.stdout




def test_a_budget_the_spaces_fraction_sizes_is_compared_with_the_studys_not_said_to_have_nothing_to_run(tmp_path):
    """A space's fraction_of_model sizes the budget from the model once it loads, so a study tuned at --budget 4MiB
    and tuned again without it (at 0.6 x the model) must be refused as another memory budget, not be said to have
    nothing to run - as a shortcut that skipped loading the model did (fd959bd, reverted)."""
    (tmp_path / "mx.toml").write_text(MIXED_CPU_MISS_SPACE)
    args = ("tune", "bundled", "--space", "mx.toml", "--trials", "1", "--storage", "t.db", "--study", "s")
    first = advisor_in_process(*args, "--budget", "4MiB", cwd=tmp_path, env={"COLUMNS": "200"})
    assert first.returncode == 0, first.stdout + first.stderr
    r = advisor_entry(*args, cwd=tmp_path, env={"COLUMNS": "200"})
    one_error_line(r, "study 's' was run with another memory budget (4.00 MiB; this run's: ")
    assert "nothing to run" not in r.stdout, r.stdout


def test_pareto_of_an_unknown_study_names_the_studies_there_when_another_is_damaged(tmp_path):
    """`advisor pareto NOSUCH` listed the studies there by decoding every study's rows (list_studies), so where
    another study holds a trial of a state Optuna never writes (refused as damaged since e1a6855) the answer to a
    mistyped name was that study's damaged-rows line. The names are read undecoded now (known_studies)."""
    import shutil
    import sqlite3
    from pathlib import Path

    db = tmp_path / "garbled.db"
    shutil.copy(Path(__file__).resolve().parents[1] / "studies" / "example" / "advisor.db", db)
    with sqlite3.connect(db) as con:
        con.execute("UPDATE trials SET state = 'BOGUS' WHERE trial_id = (SELECT MIN(trial_id) FROM trials)")
    con.close()
    r = advisor_entry("pareto", "bundled-exampel", "--no-plots", "--storage", "garbled.db", cwd=tmp_path)
    one_error_line(r, "no study named 'bundled-exampel'", "bundled-example")
