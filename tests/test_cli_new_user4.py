"""What a fourth new-user pass met through the commands, tuning a LLaDA-MoE-layout checkpoint bigger than its
budget, on PostgreSQL too (each test failed before its fix):

- `advisor tune ... > log` (a worker under nohup, a CI job) printed its header and then nothing until the front:
  rich draws no live line where the output is not a terminal, so a 40-trial live study on a CPU was silent for
  20 minutes; it now prints the live line as plain text once a minute there;
- `advisor tune MODEL --budget 1MiB` (below the resident weights, found once the model loads) printed the live
  line's empty last state, `tuning 0/? front 0 starting 0:00:00`, above its one-line error;
- two workers sharing a study on PostgreSQL (`--trials 12` each) both ended on `tuning 6/12` above a front titled
  `12 finished trials`: the live line counted the worker's own trials, not the study's that `--trials` counts;
- `advisor studies` said a study 40 minutes into a run was `updated` when the run began;
- `advisor recommend --budget 5MiB` (no --prefer) on a study tuned for time per token picked the point with the
  fewest H2D bytes, every miss on the CPU and 2.96x the next point's time per token, without saying that it ranked
  by transfer by default or how to rank by time.
"""

from __future__ import annotations

import io
import re
import time
from types import SimpleNamespace

from rich.console import Console


def test_tune_piped_prints_its_progress_line_while_it_runs(monkeypatch):
    """`advisor tune`'s live display (advisor.tune.display.LiveProgress, what run_tune_cli wraps the run in)
    writing to a file, as `advisor tune > log` does; a whole CLI tune takes 5-20 s here, so the display alone."""
    import advisor.tune.display as display

    monkeypatch.setattr(display, "PLAIN_PROGRESS_EVERY_S", 0.05, raising=False)
    out = io.StringIO()
    console = Console(file=out, width=80)
    assert not console.is_terminal
    study = SimpleNamespace(get_trials=lambda deepcopy=False: [], best_trials=[])
    with display.LiveProgress(console, SimpleNamespace(total_trials=40, n_trials=None)) as live:
        live.start(study, None)
        live.stage("accuracy", 3)
        time.sleep(0.5)
    lines = re.findall(r"^tuning 0/40 front 0 #3 accuracy 0:00:00$", out.getvalue(), flags=re.M)
    assert lines, out.getvalue()  # before: only the bar's last state, at the end


def test_tune_refused_for_a_budget_nothing_fits_prints_one_line(tmp_path):
    """The budget is checked once the model has loaded, inside the live display: its last state,
    `tuning 0/? front 0 starting 0:00:00`, was printed above the error line (which the entry point prints from
    the UserError, exit code 2)."""
    from typer.testing import CliRunner

    from advisor.cli import app
    from advisor.errors import UserError

    res = CliRunner().invoke(app, ["tune", "tiny:qwen3_moe", "--budget", "1KiB", "--trials", "1", "--storage",
                                   f"sqlite:///{tmp_path}/s.db"])
    assert isinstance(res.exception, UserError), res.output
    assert str(res.exception).startswith("a budget of 1.00 KiB cannot hold"), res.exception
    assert res.output == "", res.output


def test_the_live_line_of_a_worker_counts_the_studys_finished_trials():
    """Two workers on PostgreSQL, `--trials 12` each: both ended on `tuning 6/12` (each counted its own trials)
    above a front titled `12 finished trials`; `--trials N` counts the study's, as its title does."""
    import advisor.tune.display as display

    def trial(n: int, state: str = "COMPLETE"):
        return SimpleNamespace(number=n, state=SimpleNamespace(name=state), user_attrs={"stage": "measured"})

    trials: list = []
    study = SimpleNamespace(get_trials=lambda deepcopy=False: list(trials), best_trials=[])
    console = Console(file=io.StringIO(), width=80)
    with display.LiveProgress(console, SimpleNamespace(total_trials=12, n_trials=None)) as live:
        live.start(study, None)
        trials.extend(trial(n) for n in range(11))  # the other worker finished 10 meanwhile, this one trial 10
        live.trial_done(study, trials[-1], None)
        assert live.plain_line().startswith("tuning 11/12 front 0 #10 measured"), live.plain_line()
    with display.LiveProgress(console, SimpleNamespace(total_trials=None, n_trials=3)) as live:  # --more 3
        live.start(study, None)
        trials.append(trial(11))
        live.trial_done(study, trials[-1], None)
        assert live.plain_line().startswith("tuning 12/14 front 0 #11 measured"), live.plain_line()


def test_studies_says_a_running_study_was_updated_when_its_last_trial_finished(tmp_path):
    """`advisor studies` showed `updated 16:52 UTC` for a 40-trial study whose trials had been finishing for 40
    minutes: the registry row was written when a run started and ended only."""
    import datetime as dt

    from tune_helpers import FakeBackend, small_space

    from advisor.results.registry import list_studies
    from advisor.results.store import engine_for
    from advisor.tune.study import TuneOptions, run_tune

    url = f"sqlite:///{tmp_path}/t.db"
    seen: dict[str, dt.datetime] = {}

    def on_stage(stage: str, number: int | None) -> None:
        if number == 2:
            seen.setdefault("trial 2 began", dt.datetime.now(dt.UTC).replace(tzinfo=None))

    def on_trial(study, trial, objective) -> None:
        if trial.number == 2:
            seen["updated"] = list_studies(engine_for(url), "s")[0].updated_at

    run_tune(FakeBackend(), small_space(), TuneOptions(study_name="s", storage=url, n_trials=3, heartbeat_interval=None),
             budget_bytes=None, on_stage=on_stage, on_trial=on_trial)
    assert seen["updated"] > seen["trial 2 began"], seen


def test_recommend_ranks_a_study_tuned_for_time_per_token_by_it_and_says_so():
    """Without --prefer, where not every point fits, a study tuned for time per token is ranked by it, and the
    reasons say so (the README: "both defaults are said in the reasons"): ranked by the fewest H2D bytes, a pick
    with every miss on the CPU, 2.96x slower than the next, read as the best answer."""
    from pathlib import Path

    from typer.testing import CliRunner

    from advisor.cli import app

    db = Path(__file__).resolve().parents[1] / "studies" / "example" / "advisor.db"
    res = CliRunner().invoke(app, ["recommend", "--storage", str(db), "--budget", "1.7MiB"], terminal_width=400)
    assert res.exit_code == 0, res.output
    assert "- no --prefer given: the lowest time per token wins, an objective of this study" in " ".join(
        res.output.split()), res.output  # recommend wraps at $COLUMNS (80 here), not click's terminal_width
    faster = CliRunner().invoke(app, ["recommend", "--storage", str(db), "--budget", "1.7MiB", "--prefer", "latency"],
                                terminal_width=400)
    assert "no --prefer given" not in faster.output, faster.output
    pick = [ln for ln in res.output.splitlines() if ln.startswith("Recommended:")]
    assert pick == [ln for ln in faster.output.splitlines() if ln.startswith("Recommended:")], (res.output, faster.output)
    by_bytes = CliRunner().invoke(app, ["recommend", "--storage", str(db), "--budget", "1.7MiB", "--prefer",
                                        "transfer"], terminal_width=400)
    assert [ln for ln in by_bytes.output.splitlines() if ln.startswith("Recommended:")] != pick, by_bytes.output
