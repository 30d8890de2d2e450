"""`advisor tune` run again on a finished study still compares what the full path compares (the model's weights,
a budget a space's fraction sizes) before saying 'nothing to run'; `pareto` of an unknown name beside a damaged
study (review42)."""

from __future__ import annotations

from tests.cli_helpers import advisor_entry, advisor_in_process, one_error_line


def test_a_checkpoint_saved_again_in_place_is_refused_as_another_model_not_said_to_have_nothing_to_run(tmp_path):
    """A checkpoint directory keeps its name (the study's model) when its weights change: `tune ./ck --trials 1`
    again after ./ck was saved anew said 'already has 1 finished trial; nothing to run' before loading it, where the
    full path refuses the study as another model's (its fingerprint). The checkpoint is loaded and compared now."""
    import torch

    from advisor.models.tiny import build_tiny

    build_tiny("qwen3_moe", dtype=torch.bfloat16).save_pretrained(tmp_path / "ck")
    args = ("tune", "./ck", "--space", "quick", "--trials", "1", "--budget", "1MiB", "--storage", "t.db",
            "--study", "s")
    first = advisor_in_process(*args, cwd=tmp_path, env={"COLUMNS": "200"})
    assert first.returncode == 0, first.stdout + first.stderr
    build_tiny("qwen3_moe", seed=1, dtype=torch.bfloat16).save_pretrained(tmp_path / "ck")  # other weights
    r = advisor_entry(*args, cwd=tmp_path, env={"COLUMNS": "200"})
    one_error_line(r, "study 's' was run with another model")
    assert "nothing to run" not in r.stdout, r.stdout


SPACE = """name = "mx"
[precision]
formats = ["int4:g64"]
[cache]
slots_per_layer = { low = 1, high = "all" }
policies = ["lru"]
miss = ["cpu"]
[objectives]
h2d_bytes_per_token = "minimize"
accuracy = "maximize"
peak_gpu_bytes = "minimize"
[evaluation]
limit = 1
trace_prompts = 1
fidelity_prompts = 1
[budget]
fraction_of_model = 0.6
"""


def test_a_budget_the_spaces_fraction_sizes_is_compared_with_the_studys_not_said_to_have_nothing_to_run(tmp_path):
    """A space's fraction_of_model sizes the budget from the model once it loads, so a study tuned at --budget 4MiB
    and tuned again without it (at 0.6 x the model) is refused by the full path as another memory budget; the
    short path, which cannot size it, said 'nothing to run'. It now takes the full path."""
    (tmp_path / "mx.toml").write_text(SPACE)
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
