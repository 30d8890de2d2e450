"""Found by a new user trying today's features through the CLI (2026-12-06)."""

from __future__ import annotations

import re

import optuna


def test_tune_says_why_trials_were_recorded_over_budget(tmp_path, monkeypatch):
    """A tight budget on a hot/cold space: the front's title counted `1 over budget` and nothing said why - trials
    whose formats and cache knobs (drawn before the cache size) fit no cache size are recorded over budget without
    running. The run names them and shows one with its counted peak and the budget."""
    from typer.testing import CliRunner

    from advisor.cli import app
    from advisor.tune import study as study_mod

    monkeypatch.chdir(tmp_path)
    # the layer groups' formats drawn each over its domain, as a study begun before they were drawn in turn within
    # the budget goes on drawing them: int8 in both groups fits no cache size at 94 KiB
    monkeypatch.setattr(study_mod, "holds_blind_format_draws", lambda drawn: True)
    r = CliRunner(env={"COLUMNS": "250"}).invoke(app, [
        "tune", "tiny:qwen3_moe", "--space", "dllm", "--budget", "94KiB", "--trials", "8", "--storage", "t.db",
        "--study", "s"])
    assert r.exit_code == 0, r.output
    study = optuna.load_study(study_name="s", storage="sqlite:///t.db")
    over = [t.number for t in study.trials if t.user_attrs.get("feasible") is False]
    assert over and f"{len(over)} over budget" in r.output, r.output
    text = " ".join(r.output.split())
    start = text.index("note: trial")
    note = text[start:text.index("Pareto front", start)]
    which = f"trial{'s' if len(over) > 1 else ''} {', '.join(map(str, over))} of this run"
    assert note.startswith(f"note: {which}"), r.output
    assert re.search(r"precision \w+; GPU expert slots .*; misses \w+ counts [\d.]+ KiB at its smallest cache, over "
                     r"the 94\.00 KiB budget", note), note


def test_recommend_above_the_studys_budget_says_the_study_never_tried_that_memory(tmp_path):
    """`recommend --budget B` with B above the budget the study was tuned within answered with the study's best
    within its own budget (int8 with the 12 slots 150 KiB holds, asked about 400 KiB, where every bf16 expert
    fits) under 'every stored configuration fits 400.0 KiB', as if that memory had been searched. It says the
    study was tuned within less; at the study's own budget it says nothing of the kind."""
    import shutil
    from pathlib import Path

    from typer.testing import CliRunner

    from advisor.cli import app

    db = tmp_path / "advisor.db"
    shutil.copy(Path(__file__).parent.parent / "studies" / "example" / "advisor.db", db)
    run = CliRunner(env={"COLUMNS": "400"})
    above = run.invoke(app, ["recommend", "--storage", str(db), "--budget", "1GiB"])
    assert above.exit_code == 0, above.output
    text = " ".join(above.output.split())
    assert re.search(r"the study was tuned within [\d.]+ MiB, less than the 1\.00 GiB \(--budget 1GiB\) asked "
                     r"about: no configuration "
                     r"using more memory was tried", text), text
    within = run.invoke(app, ["recommend", "--storage", str(db), "--budget", "2MiB"])
    assert within.exit_code == 0, within.output
    assert "the study was tuned within" not in within.output, within.output
