"""optuna-dashboard reads a tuned study: over-budget trials come back through its own HTTP API as infeasible."""

from __future__ import annotations

import io
import json

import optuna
import pytest

from advisor.tune.objective import CONSTRAINT, record_constraint


def _get(app, path: str) -> dict:
    """One GET request through the dashboard's WSGI app (what its web page calls)."""
    status: list[str] = []
    environ = {"REQUEST_METHOD": "GET", "PATH_INFO": path, "QUERY_STRING": "", "SERVER_NAME": "t", "SERVER_PORT": "80",
               "wsgi.input": io.BytesIO(), "wsgi.url_scheme": "http", "wsgi.errors": io.StringIO()}
    body = b"".join(app(environ, lambda s, h, *a: status.append(s)))
    assert status[0].startswith("200"), status
    return json.loads(body)


def test_dashboard_api_marks_over_budget_trials_infeasible(tmp_path):
    """Trials constrained the way the objective records the budget (`record_constraint`): the dashboard's API
    reports the over-budget ones as infeasible. (Budget-aware search rarely produces such trials; a plan that
    cannot fit its smallest cache does.)"""
    dashboard = pytest.importorskip("optuna_dashboard")
    url = f"sqlite:///{tmp_path}/t.db"
    study = optuna.create_study(study_name="b", storage=url, directions=["maximize", "minimize"])
    violations = [-0.5, 0.25, -0.1, 1.5, 0.0]
    for v in violations:
        trial = study.ask()
        record_constraint(trial, v)
        study.tell(trial, [0.0 if v > 0 else 0.9, 1.0])
    over = {n for n, v in enumerate(violations) if v > 0}
    app = dashboard.wsgi(url)
    sid = next(s["study_id"] for s in _get(app, "/api/studies")["study_summaries"] if s["study_name"] == "b")
    trials = _get(app, f"/api/studies/{sid}")["trials"]
    # the dashboard's page calls a trial feasible when every entry of "constraints" is <= 0
    shown_infeasible = {t["number"] for t in trials if not all(c <= 0 for c in t["constraints"])}
    assert shown_infeasible == over
    assert all(study.trials[n].constraints[CONSTRAINT] > 0 for n in over)  # Optuna's own key is kept too


def test_out_of_memory_trial_is_infeasible_where_the_dashboard_reads_it(tmp_path):
    """A trial that fits the counted budget but runs out of device memory: its constraint turns positive in
    Optuna's key and in the dashboard's list (recorded feasible before the trial ran)."""
    from tune_helpers import FakeBackend, small_space

    from advisor.tune.backend import TrialOutOfMemory
    from advisor.tune.objective import DASHBOARD_CONSTRAINTS
    from advisor.tune.study import TuneOptions, run_tune

    class OutOfMemoryOnce(FakeBackend):
        def replay(self, run, config):
            if not self.calls["replay"]:
                self.calls["replay"] += 1
                raise TrialOutOfMemory(2**20, "CUDA out of memory (injected)")
            return super().replay(run, config)

    backend = OutOfMemoryOnce()
    opts = TuneOptions(study_name="oom", storage=f"sqlite:///{tmp_path}/o.db", sampler="random", seed=0, n_trials=3,
                       heartbeat_interval=None)
    run_tune(backend, small_space(), opts, budget_bytes=10**6)
    trials = optuna.load_study(study_name="oom", storage=opts.storage).trials
    oom = [t for t in trials if "out of memory" in str(t.user_attrs.get("infeasible_reason"))]
    assert len(oom) == 1 and oom[0].user_attrs["feasible"] is False
    assert oom[0].constraints[CONSTRAINT] > 0 and oom[0].system_attrs[DASHBOARD_CONSTRAINTS][0] > 0
    feasible = [t for t in trials if t.user_attrs.get("feasible")]
    assert feasible and all(t.system_attrs[DASHBOARD_CONSTRAINTS][0] <= 0 for t in feasible)


def test_live_trial_whose_measured_peak_passes_the_budget_is_infeasible(tmp_path):
    """A live trial of an offloaded model on CUDA: the allocator's peak is the trial's peak (the counted one is
    kept beside it), and one over the budget is infeasible though its counted peak fits. The CUDA allocator's
    number is injected (no GPU here); the study, objective and storage are the real ones."""
    from tune_helpers import FakeBackend, small_space

    from advisor.tune.backend import Measured
    from advisor.tune.study import TuneOptions, run_tune

    budget = 10**6

    class OffloadedOnCuda(FakeBackend):
        offloaded = True

        def live(self, config):
            self.calls["live"] += 1
            peak = 2 * budget if self.calls["live"] == 1 else budget // 2
            return Measured({"h2d_bytes_per_token": 1.0, "hit_rate": 0.5, "transfer_ms_per_token": 0.1,
                             "latency_ms_per_token": 1.0, "time_per_token": 1.0, "allocator_peak_bytes": float(peak)},
                            {"allocator_peak_bytes": "measured:cuda-allocator(injected)",
                             "time_per_token": "measured:wall-clock(injected)"})

    opts = TuneOptions(study_name="live-peak", storage=f"sqlite:///{tmp_path}/p.db", sampler="random", seed=0,
                       n_trials=3, heartbeat_interval=None, mode="live")
    run_tune(OffloadedOnCuda(), small_space(), opts, budget_bytes=budget)
    trials = sorted(optuna.load_study(study_name="live-peak", storage=opts.storage).trials, key=lambda t: t.number)
    ran = [t for t in trials if "allocator_peak_bytes" in t.user_attrs.get("values", {})]
    assert len(ran) == 3
    first, rest = ran[0], ran[1:]
    assert first.user_attrs["feasible"] is False and first.constraints[CONSTRAINT] > 0
    assert "measured peak 2000000 bytes (CUDA allocator) > budget 1000000" in first.user_attrs["infeasible_reason"]
    assert first.user_attrs["sources"]["accuracy"] == "not-run:measured-over-budget(placeholder)"  # not measured
    for t in rest:
        assert t.user_attrs["feasible"] is True and t.constraints[CONSTRAINT] <= 0
        values = t.user_attrs["values"]
        assert values["peak_gpu_bytes"] == budget // 2 and values["counted_peak_bytes"] > 0
