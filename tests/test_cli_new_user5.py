"""What a new user following the README's big-model and PostgreSQL sections met: each test failed before its fix."""

from __future__ import annotations

import io

from rich.console import Console
from tune_helpers import FakeBackend, over_budget_study, small_space, tiny_fidelity_study

from advisor.tune.display import LiveProgress
from advisor.tune.study import TuneOptions, run_tune


def test_the_live_line_of_a_live_study_does_not_say_replay(tmp_path):
    """`advisor tune ... --mode live` printed `tuning 1/6 front 1 #1 replay 0:01:00` while each trial ran through
    the offload runtime, where the README promises measured, not replayed, trials. The live line says `live run`
    there (and `replay` in --mode replay)."""
    for mode, said, not_said in (("live", "live run", "replay"), ("replay", "replay", "live run")):
        opts = TuneOptions(study_name=f"line-{mode}", storage=f"sqlite:///{tmp_path}/{mode}.db", sampler="random",
                           seed=0, n_trials=2, heartbeat_interval=None, mode=mode)
        line = LiveProgress(Console(file=io.StringIO(), width=80), opts)
        seen: list[str] = []

        def on_stage(stage, number, line=line, seen=seen):
            line.stage(stage, number)
            seen.append(line.plain_line())

        run_tune(FakeBackend(), small_space(), opts, budget_bytes=None, on_stage=on_stage)
        assert any(said in s for s in seen) and not any(not_said in s for s in seen), (mode, seen)


def test_a_report_says_no_accuracy_workload_when_only_over_budget_trials_hold_a_placeholder(tmp_path, monkeypatch):
    """A study of a model without a tokenizer measures no task accuracy, yet its report said `Workload (accuracy):
    task toy, 64 examples, seed 0`: the over-budget trials' placeholder accuracy (`not-run:...`) was taken for a
    measurement."""
    from advisor.cli import app

    run, r = over_budget_study(tmp_path, monkeypatch)
    assert "over budget" in r.output and "0 over budget" not in r.output, r.output  # placeholders stored
    rep = run.invoke(app, ["report", "s", "--storage", "t.db", "-o", "rep", "--block-lengths", ""])
    assert rep.exit_code == 0, rep.output
    md = (tmp_path / "rep" / "report.md").read_text()
    assert "Workload (accuracy): none, no trial measured it." in md and "64 examples" not in md
    task = "toy (not run: no tokenizer; fidelity on random token ids)"  # the title and the opening, as pareto heads it
    assert f"on {task} (study s)" in md and f"on the task **{task}**" in md


def test_recommend_of_a_fidelity_study_says_no_accuracy_floor_applies(tmp_path, monkeypatch):
    """The README: without --max-accuracy-drop/--min-accuracy the floor is 1 accuracy point below the study's
    highest-precision point, and "both defaults are said in the reasons". A study of a model without a tokenizer
    applies no floor at all, and recommend said nothing of it: its pick agreed with full precision on 47% of
    positions (a tuned 50 MiB LLaDA-MoE checkpoint) where other points agreed on 100%, under reasons that read as
    the README's defaults. It says that no floor applies, unless it ranks by top-1 agreement anyway."""
    from advisor.cli import app

    run = tiny_fidelity_study(tmp_path, monkeypatch)
    said = "no accuracy floor applies (not the default 1 point below the full-precision point"
    base = ["recommend", "--study", "s", "--storage", "t.db", "--budget", "1MiB"]
    rec = run.invoke(app, [*base, "--prefer", "transfer"])
    assert rec.exit_code == 0 and said in " ".join(rec.output.split()), rec.output
    rec = run.invoke(app, [*base, "--prefer", "accuracy"])  # ranked by top-1 agreement: nothing to warn of
    assert rec.exit_code == 0 and said not in " ".join(rec.output.split()), rec.output


def test_eval_of_a_checkpoint_without_a_tokenizer_points_to_a_tune_that_runs_as_is():
    """`advisor eval DIR` of a checkpoint without tokenizer files sent the user to "`advisor tune` with
    fidelity_top1 in the space's [objectives]" - a space file to write - where `advisor tune DIR` with a shipped
    space already tunes fidelity_top1 in place of accuracy (README, "Models")."""
    from typer.testing import CliRunner

    from advisor.cli import app

    res = CliRunner().invoke(app, ["eval", "tiny:qwen3_moe", "--limit", "1", "--threads", "1"])
    msg = str(res.exception)
    assert msg.startswith("tiny:qwen3_moe has no tokenizer"), res.output
    assert "`advisor tune tiny:qwen3_moe` (a shipped --space tunes top-1 agreement" in msg, msg
    assert "in the space's [objectives]" not in msg, msg


def test_a_mistyped_study_name_lists_its_neighbours_not_every_study_of_a_shared_database(tmp_path):
    """On the shared PostgreSQL database of the README's many-workers section, `advisor pareto nu5-shard` (for
    nu5-shared) printed one line of 580 study names, 9,000 characters, and `recommend`/`export` one of 6,900. The
    names most like the one typed come first, ten at most, and how many more there are (`pareto` and `report`
    list through the same function)."""
    from recommend_helpers import make_db, point
    from typer.testing import CliRunner

    from advisor.cli import app

    names = [f"run-{i:02d}" for i in range(30)] + ["nu5-shared"]
    url = make_db(tmp_path / "a.db", [point(n, 1, "int8", 8, acc=0.9, h2d=1e6, peak_gib=1) for n in names])
    run = CliRunner(env={"COLUMNS": "200"})
    for args in (["recommend", "--study", "nu5-shard"], ["export", "nu5-shard", "1", "--to", "json"]):
        res = run.invoke(app, [*args, "--storage", url])
        msg = str(res.exception)
        assert res.exit_code != 0 and "nu5-shard" in msg, (args, res.output)
        listed = msg.split("there: ", 1)[1].split(")", 1)[0]
        assert listed.startswith("nu5-shared, ") and listed.endswith(" ... and 21 more"), (args, msg)
