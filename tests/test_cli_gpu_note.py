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
