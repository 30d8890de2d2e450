"""optuna-dashboard reads a tuned study: over-budget trials come back through its own HTTP API as infeasible."""

from __future__ import annotations

import io
import json

import optuna
import pytest
from tune_helpers import FakeBackend, small_space

from advisor.tune.objective import CONSTRAINT
from advisor.tune.study import TuneOptions, run_tune


def _get(app, path: str) -> dict:
    """One GET request through the dashboard's WSGI app (what its web page calls)."""
    status: list[str] = []
    environ = {"REQUEST_METHOD": "GET", "PATH_INFO": path, "QUERY_STRING": "", "SERVER_NAME": "t", "SERVER_PORT": "80",
               "wsgi.input": io.BytesIO(), "wsgi.url_scheme": "http", "wsgi.errors": io.StringIO()}
    body = b"".join(app(environ, lambda s, h, *a: status.append(s)))
    assert status[0].startswith("200"), status
    return json.loads(body)


def test_dashboard_api_marks_over_budget_trials_infeasible(tmp_path):
    dashboard = pytest.importorskip("optuna_dashboard")
    backend = FakeBackend()
    budget = 40_000 + 2 * 4 * backend.shape.expert_bytes(0, "int8")
    opts = TuneOptions(study_name="b", storage=f"sqlite:///{tmp_path}/t.db", sampler="random", seed=1, n_trials=16,
                       heartbeat_interval=None)
    res = run_tune(backend, small_space(), opts, budget_bytes=budget)
    study = optuna.load_study(study_name="b", storage=res.storage_url)
    over = {t.number for t in study.trials if t.user_attrs["feasible"] is False}
    assert over and len(over) < len(study.trials)
    app = dashboard.wsgi(res.storage_url)
    sid = next(s["study_id"] for s in _get(app, "/api/studies")["study_summaries"] if s["study_name"] == "b")
    trials = _get(app, f"/api/studies/{sid}")["trials"]
    # the dashboard's page calls a trial feasible when every entry of "constraints" is <= 0
    shown_infeasible = {t["number"] for t in trials if not all(c <= 0 for c in t["constraints"])}
    assert shown_infeasible == over
    assert all(t["constraints"] for t in trials)
    assert all(study.trials[n].constraints[CONSTRAINT] > 0 for n in over)  # Optuna's own key is kept too
