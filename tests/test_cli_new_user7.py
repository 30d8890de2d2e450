"""What a new user met in pass 8: each test failed before its fix."""

from __future__ import annotations

import json
from pathlib import Path

from typer.testing import CliRunner

EXAMPLE_DB = Path(__file__).resolve().parents[1] / "studies" / "example" / "advisor.db"


def test_recommend_json_shows_tau_only_where_the_policy_has_one():
    """`recommend --json` showed `params.tau: 1` beside `tau: 0` for an lru/flru point: the tau a trial drew beside a
    policy without a refresh interval. Such a point shows neither; a tide point shows both, and they agree."""
    from advisor.cli import app

    seen = set()
    for budget in ("2MiB", "8MiB"):
        res = CliRunner().invoke(app, ["recommend", "--storage", str(EXAMPLE_DB), "--budget", budget, "--json"])
        assert res.exit_code == 0, res.output
        doc = json.loads(res.output)
        for p in [doc["chosen"], *doc["alternatives"]]:
            cfg = p["config"]
            seen.add(cfg["policy"])
            if cfg["policy"] == "tide":
                assert cfg["tau"] == cfg["params"]["tau"] > 0, cfg
            else:
                assert "tau" not in cfg and "tau" not in cfg["params"], cfg
    assert {"lru", "flru", "tide"} <= seen, seen


def test_export_json_shows_tau_only_where_the_policy_has_one(tmp_path):
    """`export STUDY N --to json` kept `params.tau: 1` beside `tau: 0` in its config for an lru point, where
    `recommend --json` drops it (the policy has no refresh interval): the json agrees with recommend; a tide point
    keeps both, and they agree."""
    from advisor.cli import app

    for trial, policy in ((1, "lru"), (31, "tide")):
        out = tmp_path / f"{trial}.json"
        res = CliRunner().invoke(app, ["export", "bundled-example", str(trial), "--to", "json", "--storage",
                                       str(EXAMPLE_DB), "-o", str(out)])
        assert res.exit_code == 0, res.output
        cfg = json.loads(out.read_text())["config"]
        assert cfg["policy"] == policy, cfg
        if policy == "tide":
            assert cfg["tau"] == cfg["params"]["tau"] == 2, cfg
        else:
            assert "tau" not in cfg and "tau" not in cfg["params"], cfg


def test_an_unknown_task_in_a_space_file_gives_its_file_and_line(tmp_path):
    """A bad `evaluation.task` was refused as `unknown task 'bogus'; ...` without the file:line every other malformed
    space-file value gives; it gives them now, before a model loads or a database is made."""
    from advisor.cli import app

    text = (EXAMPLE_DB.parent / "space.toml").read_text()
    line = 1 + text.splitlines().index('task = "toy"')
    space = tmp_path / "space.toml"
    space.write_text(text.replace('task = "toy"', 'task = "bogus"'))
    res = CliRunner().invoke(app, ["tune", "--space", str(space), "--storage", str(tmp_path / "s.db"), "--trials", "1"])
    assert res.exit_code != 0, res.output
    assert str(res.exception) == (f"{space}:{line}: evaluation.task: unknown task 'bogus'; choose one of: toy, gsm8k, "
                                  "humaneval"), res.exception
    assert not (tmp_path / "s.db").exists()


def test_storage_errors_show_the_url_as_the_user_gave_it(tmp_path):
    """A --storage error named `postgresql+psycopg2://...` for a URL typed as `postgresql://...` (or `postgres://`):
    the driver is advisor's choice, not what the user wrote. The lines show the URL as given, password masked."""
    import socket
    import subprocess
    import sys

    with socket.socket() as s:  # a port nothing listens on
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    space = EXAMPLE_DB.parent / "space.toml"
    for scheme in ("postgresql", "postgres"):
        url = f"{scheme}://bob:s3cret@127.0.0.1:{port}/db"
        for args in (["studies"], ["recommend", "--budget", "1GiB"], ["tune", "--space", str(space), "--trials", "1"]):
            p = subprocess.run([sys.executable, "-m", "advisor", *args, "--storage", url], capture_output=True,
                               text=True, cwd=tmp_path, timeout=60)
            assert p.returncode == 2, (args, p.stdout, p.stderr)
            assert f"{scheme}://bob:***@127.0.0.1:{port}/db" in p.stderr, (args, p.stderr)
            assert "psycopg2://" not in p.stderr and "s3cret" not in p.stderr, (args, p.stderr)


def test_file_options_refuse_a_missing_directory_as_export_does(tmp_path):
    """`advisor trace -o /missing/dir/t.npz` created the missing directories (so did `simulate --json` and
    `quant-report --json`), while `export -o` and `eval --json` refuse a missing directory: a typo made a tree
    of directories. Each refuses it in one line (exit 2: a UserError), before the model loads, and writes nothing."""
    from advisor.cli import app
    from advisor.errors import UserError

    trace = tmp_path / "t.npz"
    trace.write_bytes(b"")  # never read: the output is checked first
    missing = tmp_path / "nonexistent" / "dir"
    for args, out, option in ((["trace", "bundled", "-o"], "x.npz", "-o/--output"),
                              (["simulate", str(trace), "--slots", "2", "--json"], "x.json", "--json"),
                              (["quant-report", "bundled", "--json"], "x.json", "--json"),
                              (["export", "--from-recommend", "--budget", "8MiB", "--to", "json", "--storage",
                                str(EXAMPLE_DB), "-o"], "x.json", "-o/--output")):
        res = CliRunner().invoke(app, [*args, str(missing / out)])
        assert isinstance(res.exception, UserError) and res.exception.exit_code == 2, (args, res.output, res.exception)
        assert str(res.exception) == (f"cannot create {missing / out}: directory {missing} does not exist; create it "
                                      f"(mkdir -p {missing}) or give {option} another path"), \
            (args, res.exception)
        assert not missing.parent.exists(), args


def test_the_pareto_blocks_say_which_ms_per_token_each_value_is(tmp_path):
    """At 80 columns the blocks showed `ms/token` while the legend listed two milliseconds-per-token metrics
    (time_per_token, transfer_ms_per_token) and a third was `latency ms/tok`: which was the column took the README.
    Each is its own short header now, and the legend names the column of each metric it shows."""
    import os
    import re
    import shutil
    import subprocess
    import sys

    shutil.copy(EXAMPLE_DB, tmp_path / "ex.db")
    out = subprocess.run([sys.executable, "-m", "advisor", "pareto", "bundled-example", "--storage", "ex.db",
                          "--no-plots"], cwd=tmp_path, capture_output=True, text=True, timeout=60,
                         env={**os.environ, "COLUMNS": "80"}).stdout
    block = out.split("\ntrial 11: ")[1].split("\ntrial ")[0]
    shown = re.findall(r"([a-zA-Z][\w/ -]*?) \*? ?[\d.]+(?: [KMG]iB)?(?: · |\n|$)", block)
    assert "time ms/tok" in shown and "latency ms/tok" in shown and "ms/token" not in block, block
    legend = " ".join(out.split("\n  accuracy")[1].split())  # unwrapped
    assert "time_per_token [time ms/tok]: modelled:" in legend and "latency_ms_per_token [latency ms/tok]:" in legend
    assert "transfer_ms_per_token: modelled:" in legend, legend  # in the legend, no column
    for label in shown:  # every column the block shows is named in the legend
        assert f"[{label}]" in legend or label == "accuracy", (label, legend)


def test_a_workers_last_line_counts_the_trials_its_peers_finished_after_its_own(tmp_path, monkeypatch):
    """A worker of a shared study (`--trials 6`) whose peers finished trials after its own last one ended on
    `tuning 5/6` above a front of the study's 7 finished trials: the line was counted at its last trial. It ends on
    what the study holds when the run stops (here `--trials 3`: 2 of this worker's, then 2 of its peers')."""
    import re

    import optuna
    from tune_helpers import FakeBackend, small_space

    import advisor.commands.tune as tune_cmd
    import advisor.tune.study as study_mod
    from advisor.cli import app

    real = study_mod.run_tune

    def with_peers(*a, on_trial, **k):
        def then_a_peer_finishes_two(study, trial, objective):
            on_trial(study, trial, objective)
            done = study.get_trials(deepcopy=False, states=(optuna.trial.TrialState.COMPLETE,))
            if len(done) == 2:  # this worker's last: two peers finish theirs (copies of it) meanwhile
                for _ in range(2):
                    study.add_trial(optuna.trial.create_trial(
                        params=trial.params, distributions=trial.distributions, values=trial.values,
                        user_attrs=trial.user_attrs))
        return real(*a, on_trial=then_a_peer_finishes_two, **k)

    monkeypatch.setattr(study_mod, "run_tune", with_peers)
    monkeypatch.setattr(tune_cmd, "_load", lambda *a, **k: (FakeBackend(), small_space()))
    res = CliRunner(env={"COLUMNS": "80"}).invoke(app, ["tune", "--trials", "3", "--storage", str(tmp_path / "s.db"),
                                                        "--study", "s"])
    assert res.exit_code == 0, (res.output, res.exception)
    line = next(ln for ln in res.output.splitlines() if ln.startswith("tuning "))
    front = re.search(r"Pareto front of study s \((\d+) points?; 4 finished trials", res.output)
    assert front and re.match(rf"tuning \S* ?4/3 front {front[1]} ", line), res.output  # (\S*: the bar)
