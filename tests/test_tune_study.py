"""Study logic on a closed-form backend: constraint before running, staged and cached accuracy, persisted
front equal to Optuna's best trials, resume checks, and the read-only `studies` / `pareto` commands."""

from __future__ import annotations

import json
import os
import re
import signal
import sqlite3
import subprocess
import sys
from pathlib import Path

import optuna
import pytest
from cli_helpers import advisor_entry
from tune_helpers import FakeBackend, small_space

from advisor.errors import UserError
from advisor.results.evalcache import EvalCache
from advisor.results.store import engine_for, load_fronts
from advisor.tune.objective import CONSTRAINT, Objective, dominates
from advisor.tune.study import TuneOptions, run_tune

HERE = Path(__file__).parent


@pytest.fixture
def tmp_path(shm_tmp_path):
    """Study databases in shared memory (conftest.shm_tmp_path)."""
    return shm_tmp_path


def _opts(tmp_path: Path, name: str = "s", n: int = 16, sampler: str = "nsga2", seed: int = 3) -> TuneOptions:
    return TuneOptions(study_name=name, storage=f"sqlite:///{tmp_path}/t.db", sampler=sampler, seed=seed,
                       n_trials=n, heartbeat_interval=None)


def test_front_saved_equals_optuna_best_trials(tmp_path):
    res = run_tune(FakeBackend(), small_space(), _opts(tmp_path), budget_bytes=None)
    study = optuna.load_study(study_name="s", storage=res.storage_url)
    best = {t.number: t for t in study.best_trials}
    stored = load_fronts(engine_for(res.storage_url), "s")
    assert res.n_complete == 16 and best
    assert sorted(p.trial_number for p in stored) == sorted(best)
    for p in stored:
        t = best[p.trial_number]
        for metric, v in zip(study.metric_names, t.values, strict=True):
            assert p.values[metric] == pytest.approx(v)
        assert p.sources["accuracy"].startswith("measured") and p.sources["peak_gpu_bytes"].startswith("counted")
        assert p.config["plan_fingerprint"] == t.user_attrs["plan_fingerprint"]
        assert p.config["model_meta"]["family"] == "llada_moe" and p.model == "fake-moe"
    # every trial records values and their sources as user attributes
    for t in study.trials:
        assert set(t.user_attrs["values"]) >= set(study.metric_names)
        assert set(t.user_attrs["sources"]) >= set(study.metric_names)


def test_accuracy_measured_at_most_once_per_plan_across_studies(tmp_path):
    backend = FakeBackend()
    res = run_tune(backend, small_space(), _opts(tmp_path, "a", 16, "random", 0), budget_bytes=None)
    plans = set(backend.accuracy_plans)
    assert len(backend.accuracy_plans) == len(plans) <= res.distinct_plans
    assert backend.calls["trace"] <= res.distinct_plans  # one routing trace per plan, replays for the rest
    assert backend.calls["replay"] == 16
    # a second study of the same model and task reuses the stored measurements: no model run for known plans
    again = FakeBackend()
    run_tune(again, small_space(), _opts(tmp_path, "b", 16, "random", 0), budget_bytes=None)
    assert again.calls["accuracy"] == 0 and again.calls["fidelity"] == 0
    # another model (fingerprint) does not see them
    other = FakeBackend(fingerprint="another-model")
    run_tune(other, small_space(), _opts(tmp_path, "c", 4, "random", 0), budget_bytes=None)
    assert other.calls["accuracy"] >= 1


def test_over_budget_configs_are_not_run_and_never_on_the_front(tmp_path, monkeypatch):
    from advisor.tune import study as study_mod

    backend = FakeBackend()
    # one slot per layer, int8 in one layer group and int4 in the other: int8 is offered in each group (it fits
    # beside the other's int4), but int8 in both cannot fit even the smallest cache. A study that draws each
    # group's format over its domain (one begun before they were drawn in turn within the budget: tests/
    # test_tune_budget.py) draws that pair; it is recorded over budget, never run
    budget = 40_000 + backend.shape.expert_bytes(0, "int8") + backend.shape.expert_bytes(1, "int4")
    monkeypatch.setattr(study_mod, "holds_blind_format_draws", lambda drawn: True)
    res = run_tune(backend, small_space(), _opts(tmp_path, "b", 24, "random", 1), budget_bytes=budget)
    study = optuna.load_study(study_name="b", storage=res.storage_url)
    infeasible = [t for t in study.trials if t.user_attrs["feasible"] is False]
    feasible = [t for t in study.trials if t.user_attrs["feasible"] is True]
    assert infeasible and feasible and res.n_infeasible == len(infeasible)
    for t in infeasible:
        assert t.constraints[CONSTRAINT] > 0 and t.user_attrs["stage"] == "infeasible"
        assert t.user_attrs["values"]["peak_gpu_bytes"] > budget
        assert t.user_attrs["sources"]["accuracy"].startswith("not-run")
    for t in feasible:
        assert t.constraints[CONSTRAINT] <= 0
    # nothing was measured for infeasible trials
    assert backend.calls["replay"] == len(feasible)
    assert {p.trial_number for p in res.front} <= {t.number for t in feasible}
    assert all(p.values["peak_gpu_bytes"] <= budget for p in res.front)


def test_staging_skips_accuracy_of_a_dominated_candidate(tmp_path):
    backend = FakeBackend()
    obj = Objective(backend, small_space(), budget_bytes=None, eval_cache=EvalCache(engine_for(f"sqlite:///{tmp_path}/c.db")),
                    study_name="x")
    base = {"fmt_g0": "int8", "fmt_g1": "int8", "hot_fraction": 0.0, "hot_format": "bf16", "policy": "lru",
            "prefetch": "none"}
    first = obj.evaluate({**base, "slots": 4}, completed=[])
    assert first.stage == "measured" and backend.calls["accuracy"] == 1
    # a better point on every objective exists (made-up vector): an int4 candidate cannot reach the front
    vec = [first.values[m] for m in obj.metrics]
    better = [v * (0.5 if d == "minimize" else 1.5) for v, d in zip(vec, obj.directions, strict=True)]
    skipped = obj.evaluate({**base, "fmt_g0": "int4", "fmt_g1": "int4", "slots": 4}, completed=[better])
    assert skipped.stage == "proxy" and backend.calls["accuracy"] == 1
    assert skipped.sources["accuracy"].startswith("modelled:fidelity-proxy")
    assert dominates(better, [skipped.values[m] for m in obj.metrics], obj.directions)
    # not dominated -> measured
    kept = obj.evaluate({**base, "fmt_g0": "int4", "fmt_g1": "int4", "slots": 2}, completed=[vec])
    assert kept.stage == "measured" and backend.calls["accuracy"] == 2
    # same plan again: cached, whatever the cache knobs
    again = obj.evaluate({**base, "fmt_g0": "int4", "fmt_g1": "int4", "slots": 7, "policy": "lfu"}, completed=[better])
    assert again.stage == "cached" and backend.calls["accuracy"] == 2 and backend.calls["trace"] == 2


def test_plans_below_the_fidelity_floor_never_reach_the_front_with_an_estimated_accuracy(tmp_path):
    """A plan whose top-1 agreement is below `fidelity_floor` gets an estimated accuracy, not a measured one: it
    must stay off the front (recommend would otherwise apply an accuracy floor to an estimate)."""
    from tune_helpers import SMALL_SPACE

    space = small_space(SMALL_SPACE + "fidelity_floor = 0.9\n")
    res = run_tune(FakeBackend(), space, _opts(tmp_path, "floor", 30, "random", 0), budget_bytes=None)
    trials = optuna.load_study(study_name="floor", storage=f"sqlite:///{tmp_path}/t.db").trials
    below = [t for t in trials if t.user_attrs.get("stage") == "proxy"
             and t.user_attrs["values"]["fidelity_top1"] < 0.9]
    assert below and all(t.constraints.get("fidelity_floor", 0) > 0 for t in below)
    assert res.front and all(p.sources["accuracy"].startswith("measured") for p in res.front)


def test_resume_refuses_other_model_or_space(tmp_path):
    run_tune(FakeBackend(), small_space(), _opts(tmp_path, "r", 3, "random"), budget_bytes=None)
    res = run_tune(FakeBackend(), small_space(), _opts(tmp_path, "r", 2, "random"), budget_bytes=None)
    assert res.n_complete == 5  # resumed by name
    with pytest.raises(UserError, match="another model"):
        run_tune(FakeBackend(fingerprint="zzz"), small_space(), _opts(tmp_path, "r", 1), budget_bytes=None)
    other = small_space(small_space().text.replace('"lfu"]', '"fifo"]'))
    with pytest.raises(UserError, match="another search space"):
        run_tune(FakeBackend(), other, _opts(tmp_path, "r", 1), budget_bytes=None)
    with pytest.raises(UserError, match="another memory budget"):
        run_tune(FakeBackend(), small_space(), _opts(tmp_path, "r", 1), budget_bytes=10**9)


@pytest.mark.parametrize("sampler", ["random", "tpe"])
def test_a_resumed_study_draws_new_configurations_reproducibly(tmp_path, sampler):
    """Run k of a study (a resume, or another worker) seeds its sampler with seed + k: the same seed on every run
    repeated the first run's draws, so a resume added no new configuration. A fresh study run the same way draws
    the same again."""
    def params(db: str) -> list[tuple]:
        for _ in range(2):
            opts = TuneOptions(study_name="s", storage=f"sqlite:///{tmp_path}/{db}", sampler=sampler, seed=0,
                               n_trials=6, warm_start=False, heartbeat_interval=None)
            run_tune(FakeBackend(), small_space(), opts, budget_bytes=None)
        trials = optuna.load_study(study_name="s", storage=f"sqlite:///{tmp_path}/{db}").get_trials()
        return [tuple(sorted(t.params.items())) for t in trials]

    first = params("a.db")
    assert len(first) == 12 and len(set(first)) > 6
    assert first[6] != first[0] and first[7] != first[1]  # run 2 does not start with run 1's draws
    assert params("b.db") == first


@pytest.mark.parametrize("sampler", ["tpe", "gp"])
def test_other_samplers_run_with_constraints(tmp_path, sampler):
    backend = FakeBackend()
    budget = 40_000 + 2 * 5 * backend.shape.expert_bytes(0, "int8")
    res = run_tune(backend, small_space(), _opts(tmp_path, sampler, 9, sampler, 0), budget_bytes=budget)
    assert res.n_complete == 9 and res.front
    assert all(p.values["peak_gpu_bytes"] <= budget for p in res.front)


def test_the_gp_sampler_runs_a_study_whose_fidelity_floor_rules_a_plan_out(tmp_path):
    """Only the trial below the floor carried the 'fidelity_floor' constraint (and without a budget no trial
    carried 'memory_budget'): Optuna's GPSampler, once past its 8 start-up trials, stopped the study with a
    traceback, "The constraint names must be the same for all trials". On the bundled model int2 agrees with
    full precision on 99.4% of 334 positions (32 prompts), below a floor of 1."""
    (tmp_path / "fl.toml").write_text('name = "fl"\n[precision]\nformats = ["int8", "int4", "int3", "int2"]\n'
                                      '[cache]\nslots_per_layer = [8]\n[objectives]\nh2d_bytes_per_token = "minimize"\n'
                                      'accuracy = "maximize"\n[evaluation]\nlimit = 2\ntrace_prompts = 1\n'
                                      'fidelity_prompts = 32\nfidelity_floor = 1.0\n')
    db = tmp_path / "fl.db"
    # through the entry point in this process (a traceback would still be printed on stderr): as a subprocess it
    # paid ~5 s of CPU importing torch and transformers again
    r = advisor_entry("tune", "--space", "fl.toml", "--sampler", "gp", "--trials", "10", "--storage", str(db),
                      cwd=tmp_path)
    assert r.returncode == 0 and "Traceback" not in r.stderr, r.stdout + r.stderr
    trials = optuna.load_study(study_name="bundled-toy-fl", storage=f"sqlite:///{db}").trials
    assert len(trials) == 10 and any(t.constraints["fidelity_floor"] > 0 for t in trials)
    assert all(t.constraints.keys() == trials[0].constraints.keys() for t in trials)


def test_the_gp_sampler_refuses_in_one_line_a_study_stored_with_mixed_constraint_names(tmp_path):
    """A study stored before every trial recorded the same constraints (here: the first trial's memory budget
    deleted, as one stored without it reads) stopped `--sampler gp` with Optuna's traceback once past its
    start-up trials; it is refused before anything runs, and another sampler resumes it."""
    backend = FakeBackend()
    budget = 40_000 + 2 * 5 * backend.shape.expert_bytes(0, "int8")
    run_tune(backend, small_space(), _opts(tmp_path, "old", 9, "tpe", 0), budget_bytes=budget)
    with sqlite3.connect(tmp_path / "t.db") as c:
        c.execute("DELETE FROM trial_system_attributes WHERE key = 'constraints:memory_budget' AND trial_id = "
                  "(SELECT MIN(trial_id) FROM trials)")
    with pytest.raises(UserError, match=r"^study 'old' holds trials stored with different constraints \(memory_budget "
                       r"and none; stored by an earlier version\), which the gp sampler cannot read; resume it with "
                       r"--sampler tpe, nsga2 or random, or start a new --study name$"):
        run_tune(backend, small_space(), _opts(tmp_path, "old", 1, "GP", 1), budget_bytes=budget)
    assert len(optuna.load_study(study_name="old", storage=f"sqlite:///{tmp_path}/t.db").trials) == 9
    res = run_tune(backend, small_space(), _opts(tmp_path, "old", 1, "tpe", 1), budget_bytes=budget)
    assert res.n_complete == 10


def _read_only_cli(args: list[str], cwd: Path) -> subprocess.CompletedProcess:
    code = ("import sys\nfrom advisor.cli import app\n"
            "try:\n    app(sys.argv[1:], standalone_mode=False)\n"
            "finally:\n    print('HEAVY', sorted(m for m in ('torch', 'optuna', 'transformers') if m in sys.modules))\n")
    return subprocess.run([sys.executable, "-c", code, *args], cwd=cwd, capture_output=True, text=True, timeout=120,
                          env={**os.environ, "COLUMNS": "220"})


def test_studies_and_pareto_read_the_store_without_torch_or_optuna(tmp_path):
    res = run_tune(FakeBackend(), small_space(), _opts(tmp_path, "plots", 10, "random"), budget_bytes=None)
    r = _read_only_cli(["studies", "--storage", res.storage_url], tmp_path)
    assert r.returncode == 0, r.stderr
    assert "HEAVY []" in r.stdout
    row = next(ln for ln in r.stdout.splitlines() if "plots" in ln and "fake-moe" in ln)
    assert " 10 " in row and f" {len(res.front)} " in row
    r = _read_only_cli(["pareto", "plots", "--storage", res.storage_url, "--out", str(tmp_path / "p")], tmp_path)
    assert r.returncode == 0, r.stderr
    assert "HEAVY []" in r.stdout
    shown = {int(m.group(1)) for m in re.finditer(r"^│\s+(\d+) │", r.stdout, re.M)}
    assert shown == {p.trial_number for p in res.front}, r.stdout
    png, html = tmp_path / "p" / "plots.png", tmp_path / "p" / "plots.html"
    assert png.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n" and "plotly" in html.read_text()[:200000].lower()


def test_pareto_reads_only_the_named_studys_rows(tmp_path):
    """Two studies in one database: `pareto a` counts a's trials only, and every query it sends that touches
    trials, fronts or study rows is bound to a's name (the other study's rows are never read)."""
    from sqlalchemy import event
    from sqlalchemy.engine import Engine
    from typer.testing import CliRunner

    from advisor.cli import app

    url = run_tune(FakeBackend(), small_space(), _opts(tmp_path, "a", 3, "random"), budget_bytes=None).storage_url
    run_tune(FakeBackend(), small_space(), _opts(tmp_path, "b", 7, "random"), budget_bytes=None)
    sent: list[tuple[str, tuple]] = []

    def record(conn, cursor, statement, parameters, context, executemany) -> None:
        sent.append((statement, tuple(parameters or ())))

    event.listen(Engine, "before_cursor_execute", record)
    try:
        r = CliRunner().invoke(app, ["pareto", "a", "--storage", url, "--no-plots", "--wide"])
    finally:
        event.remove(Engine, "before_cursor_execute", record)
    assert r.exit_code == 0, r.output
    reads = [(q, args) for q, args in sent
             if q.lstrip().upper().startswith("SELECT") and re.search(r"\b(trials|advisor_front|advisor_study)\b", q)]
    assert len(reads) >= 3 and all("a" in args and "b" not in args for _, args in reads), reads
    assert "3 finished trials, 0 over budget, 0 failed)" in r.output and "10 finished" not in r.output, r.output
    shown = {int(m.group(1)) for m in re.finditer(r"^│\s+(\d+) │", r.output, re.M)}
    assert shown == {p.trial_number for p in load_fronts(engine_for(url), "a")}, r.output
    other = CliRunner().invoke(app, ["pareto", "b", "--storage", url, "--no-plots", "--wide"])
    assert "7 finished trials, 0 over budget, 0 failed)" in other.output, other.output


def test_read_only_commands_on_missing_or_foreign_database(tmp_path):
    for args in (["studies", "--storage", str(tmp_path / "none.db")], ["pareto", "x", "--storage", str(tmp_path / "none.db")]):
        r = subprocess.run([sys.executable, "-c", "from advisor.cli import run; run()", *args], cwd=tmp_path,
                           capture_output=True, text=True, timeout=60)
        assert r.returncode == 2 and r.stderr.count("\n") == 1 and "no advisor database" in r.stderr
        assert not (tmp_path / "none.db").exists()
    junk = tmp_path / "junk.db"
    junk.write_bytes(b"this is not sqlite" * 100)
    r = subprocess.run([sys.executable, "-c", "from advisor.cli import run; run()", "studies", "--storage", str(junk)],
                       cwd=tmp_path, capture_output=True, text=True, timeout=60)
    assert r.returncode == 2 and r.stderr.count("\n") == 1 and "Traceback" not in r.stderr, r.stderr


def test_ctrl_c_keeps_finished_trials_saves_front_and_requeues(tmp_path):
    url = f"sqlite:///{tmp_path}/i.db"
    proc = subprocess.Popen([sys.executable, str(HERE / "tune_helpers.py"), "--storage", url, "--study", "i",
                             "--trials", "50", "--delay", "0.4", "--no-staging"],
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,  # Ctrl-C as at a terminal
                            preexec_fn=lambda: signal.signal(signal.SIGINT, signal.SIG_DFL))  # (a runner may ignore it)
    accuracy_stages = 0
    for line in proc.stdout:  # wait until the 3rd accuracy measurement is running, then Ctrl-C
        if line.startswith("STAGE accuracy"):
            accuracy_stages += 1
            if accuracy_stages == 3:
                proc.send_signal(2)
                break
    out, err = proc.communicate(timeout=60)
    assert proc.returncode == 130, err
    result = json.loads(next(ln for ln in out.splitlines() if ln.startswith("RESULT "))[7:])
    assert result["interrupted"] and result["n_complete"] >= 2
    study = optuna.load_study(study_name="i", storage=url)
    states = [t.state.name for t in study.trials]
    assert states.count("COMPLETE") == result["n_complete"] and states.count("FAIL") == 1
    failed = next(t for t in study.trials if t.state.name == "FAIL")
    waiting = [t for t in study.trials if t.state.name == "WAITING" and "retry_of" in t.user_attrs]
    assert len(waiting) == 1 and waiting[0].user_attrs["retry_of"] == failed.number
    assert waiting[0].system_attrs["fixed_params"] == failed.params  # enqueued: runs again on resume
    assert sorted(p.trial_number for p in load_fronts(engine_for(url), "i")) == sorted(result["front"])


def test_sampler_names_one_list_for_the_cli_and_the_study():
    from advisor.tune.samplers import SAMPLERS, sampler_name

    assert [sampler_name(s.upper()) for s in SAMPLERS] == list(SAMPLERS)
    assert sampler_name("NSGA-II") == sampler_name("nsgaii") == "nsga2"
    with pytest.raises(UserError, match="unknown sampler 'cmaes'; choose one of: nsga2, tpe, gp, random"):
        sampler_name("cmaes")


def test_a_trial_kept_off_the_front_by_the_fidelity_floor_reads_back_infeasible(tmp_path):
    """The tuner records the fidelity floor with Optuna 5's `set_constraint` only ('constraints:fidelity_floor'),
    which `read_trial` (behind `export STUDY N` of a trial off the front) did not read: such a trial, whose
    accuracy is an estimate, was exported as a feasible one 'not among the best trials'."""
    import optuna

    from advisor.results.storage import open_storage
    from advisor.results.trials import read_trial

    url = f"sqlite:///{tmp_path}/f.db"
    study = optuna.create_study(study_name="f", storage=open_storage(url, heartbeat_interval=None),
                                directions=["minimize", "maximize"])
    study.set_metric_names(["h2d_bytes_per_token", "accuracy"])
    for violation in (0.2, 0.0):
        trial = study.ask()
        trial.set_user_attr("feasible", True)
        trial.set_constraint("fidelity_floor", violation)
        study.tell(trial, [1.0, 0.5])
    for reader in (url, url.replace("sqlite:", "sqlite+pysqlite:")):  # stdlib sqlite3, then SQLAlchemy
        below, above = read_trial(reader, "f", 0), read_trial(reader, "f", 1)
        assert not below.feasible and "fidelity_floor" in below.infeasible_reason
        assert above.feasible and above.infeasible_reason == ""
