"""What a new user met with `--gpu`: each test failed before its fix.

- `advisor simulate t.npz --gpu bogus` told them to "pass --budget", an option simulate does not have;
- `advisor recommend --gpu "RTX 4090" --prefer latency` ranked by time per token modelled for the study's GPU
  (the H200 for a study tuned without --gpu) and did not say so.
"""

from __future__ import annotations

from pathlib import Path

from typer.testing import CliRunner

EXAMPLE_DB = Path(__file__).resolve().parents[1] / "studies" / "example" / "advisor.db"


def test_unknown_gpu_hint_fits_the_command(tmp_path):
    from advisor.cli import app
    from advisor.errors import UserError
    from tests.offload_helpers import cli_trace

    runner = CliRunner()
    trace = tmp_path / "tr.npz"
    cli_trace(runner, trace)
    res = runner.invoke(app, ["simulate", str(trace), "--gpu", "bogus"])
    assert isinstance(res.exception, UserError), res.output
    msg = str(res.exception)
    assert msg.startswith("unknown GPU 'bogus'") and "`advisor profile --list`" in msg, msg
    assert "--budget" not in msg, msg  # simulate has no --budget
    for args in (["recommend", "--storage", str(EXAMPLE_DB)], ["tune", "--storage", str(tmp_path / "s.db")]):
        res = runner.invoke(app, [*args, "--gpu", "bogus"])
        assert isinstance(res.exception, UserError), res.output
        assert "`advisor profile --list`" in str(res.exception) and "--budget" in str(res.exception), res.exception
    assert not (tmp_path / "s.db").exists()


def _recommend(*args: str):
    from advisor.cli import app

    res = CliRunner().invoke(app, ["recommend", *args, "--prefer", "latency"])
    assert res.exit_code == 0, res.output
    return " ".join(res.output.split())  # on one line: recommend wraps at the terminal's width (80 here)


def _time_row(out: str) -> str:
    """The stored time per token and its source, from `_recommend`'s output."""
    return out.split(" time_per_token ")[1].split("]")[0]


def test_recommend_for_another_gpu_says_whose_time_per_token_ranks(tmp_path):
    import json
    import shutil
    import sqlite3

    from advisor.hardware.profiles import get_gpu

    out = _recommend("--storage", str(EXAMPLE_DB), "--gpu", "RTX 4090")
    note = ("the stored time per token ranks these points and was modelled for H200 141GB (no --gpu at tune time), "
            "not for the RTX 4090 24GB")
    assert note in out and "re-tune with --gpu 'RTX 4090 24GB' into a new --study" in out, out
    assert "modelled for H200 141GB (no --gpu at tune time)" in out.split(note)[0], out  # the reason line
    row = _time_row(out)
    assert "[for H200 141GB (no --gpu at tune time): modelled:gpu=" in row, row
    as_json = json.loads(_recommend("--storage", str(EXAMPLE_DB), "--gpu", "RTX 4090", "--json"))
    assert any(note in r for r in as_json["reasons"]), as_json["reasons"]
    assert as_json["chosen"]["time_per_token_modelled_for"] == "H200 141GB (no --gpu at tune time)"

    # no --gpu, or a study tuned for the GPU asked about: nothing to warn of, and the row says whose it is
    assert "re-tune" not in _recommend("--storage", str(EXAMPLE_DB))
    db = tmp_path / "advisor.db"
    shutil.copy(EXAMPLE_DB, db)
    with sqlite3.connect(db) as con:  # as `advisor tune --gpu "RTX 4090"` stores its profile with every point
        con.execute("UPDATE advisor_front SET hardware = ?", (json.dumps(get_gpu("RTX 4090").to_dict()),))
    out = _recommend("--storage", str(db), "--gpu", "RTX 4090")
    assert "re-tune" not in out, out
    assert "feasible point(s), modelled for RTX 4090 24GB" in out, out
    out = _recommend("--storage", str(db), "--gpu", "H200")
    assert "was modelled for RTX 4090 24GB, not for the H200 141GB" in out, out


def test_recommend_by_transfer_or_accuracy_for_another_gpu_says_the_front_depends_on_the_study_gpu(tmp_path):
    """A study minimizing time per token kept the points on its front by times modelled for its GPU: picking
    from that front for another GPU says so, whatever the ranking; a study without that objective, or tuned
    for the GPU asked about, says nothing. Also through the SQLAlchemy reader (any non-SQLite-file URL)."""
    import json
    import shutil
    import sqlite3

    from advisor.cli import app
    from advisor.hardware.profiles import get_gpu

    def run(db: Path | str, gpu: str, prefer: str, *more: str) -> str:
        res = CliRunner().invoke(app, ["recommend", "--storage", str(db), "--gpu", gpu, "--prefer", prefer, *more])
        assert res.exit_code == 0, res.output
        return " ".join(res.output.split())  # recommend wraps at the terminal's width

    note = ("the candidates come from the stored Pareto front, built with time per token (an objective) modelled "
            "for H200 141GB (no --gpu at tune time), not for the RTX 4090 24GB, so which configurations are on it "
            "depends on that GPU; for the front on the RTX 4090 24GB, re-tune with --gpu 'RTX 4090 24GB' into a "
            "new --study")
    db = tmp_path / "advisor.db"
    shutil.copy(EXAMPLE_DB, db)
    for prefer in ("transfer", "accuracy"):
        out = run(db, "RTX 4090", prefer)
        assert note in out and "the stored time per token ranks" not in out, out
        assert note in json.loads(run(db, "RTX 4090", prefer, "--json"))["reasons"]
        assert note in run(f"sqlite+pysqlite:///{db}", "RTX 4090", prefer)  # the SQLAlchemy read path
    assert note not in run(db, "RTX 4090", "latency")  # the latency note says it there
    with sqlite3.connect(db) as con:  # as `advisor tune --gpu "RTX 4090"` stores its profile with every point
        con.execute("UPDATE advisor_front SET hardware = ?", (json.dumps(get_gpu("RTX 4090").to_dict()),))
    assert "re-tune" not in run(db, "RTX 4090", "transfer")
    assert "modelled for RTX 4090 24GB, not for the H200 141GB, so which" in run(db, "H200", "accuracy")

    with sqlite3.connect(db) as con:  # the same front, stored by a study that did not minimize time per token
        con.execute("UPDATE advisor_study SET objectives = ?",
                    (json.dumps({"h2d_bytes_per_token": "minimize", "accuracy": "maximize"}),))
    for url in (db, f"sqlite+pysqlite:///{db}"):
        assert "re-tune" not in run(url, "H200", "transfer"), url


def test_recommend_does_not_call_a_live_trials_measured_time_modelled_for_a_gpu(tmp_path):
    """`advisor tune --mode live` on a CPU stores the wall clock of the whole forward on the CPU; `recommend`
    printed it as `[for H200 141GB (no --gpu at tune time): measured:wall-clock(cpu,...)]` and in the JSON as
    modelled for the H200, which no GPU model priced."""
    import json

    from tests.recommend_helpers import GiB, make_db, standard_front

    pts = standard_front()
    for n, p in enumerate(pts):
        p.values["time_per_token"] = 100.0 + n
        p.sources["time_per_token"] = "measured:wall-clock(cpu,whole forward)"
    url = make_db(tmp_path / "live.db", pts)
    out = _recommend("--storage", url, "--budget", f"{12 * GiB}B")
    row = _time_row(out) + "]"
    assert "[measured:wall-clock(cpu,whole forward)]" in row and "H200" not in row, row
    assert "feasible point(s), measured on cpu" in out and "modelled for" not in out, out
    out = _recommend("--storage", url, "--budget", f"{12 * GiB}B", "--gpu", "RTX 4090")
    assert "was measured on cpu, not for the RTX 4090 24GB" in out and "modelled for H200" not in out, out
    as_json = json.loads(_recommend("--storage", url, "--budget", f"{12 * GiB}B", "--json"))
    assert as_json["chosen"]["time_per_token_modelled_for"] is None, as_json["chosen"]
