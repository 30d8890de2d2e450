"""What a new user met in pass 6: each test failed before its fix."""

from __future__ import annotations

import subprocess
import sys


def test_a_fidelity_study_says_its_task_was_not_run(tmp_path, monkeypatch):
    """A study of a model without a tokenizer measures no task accuracy - its quality objective is fidelity_top1 on
    random token ids - yet `advisor pareto`, `studies` and `recommend` headed it `task toy` (or `on toy`), as if the
    toy task had been scored. They say it was not run and why, as the report's Workload lines do; recommend still
    imports neither torch nor SQLAlchemy to say it."""
    from typer.testing import CliRunner

    from advisor.cli import app

    monkeypatch.chdir(tmp_path)
    run = CliRunner(env={"COLUMNS": "250"})
    r = run.invoke(app, ["tune", "tiny:qwen3_moe", "--space", "quick", "--trials", "2", "--storage", "t.db",
                         "--study", "s"])
    assert r.exit_code == 0, r.output
    said = "toy (not run: no tokenizer; fidelity on random token ids)"
    for args in (["pareto", "s", "--storage", "t.db", "--no-plots"], ["studies", "--storage", "t.db"],
                 ["recommend", "--study", "s", "--storage", "t.db", "--budget", "1MiB"]):
        out = run.invoke(app, args)
        assert out.exit_code == 0 and said in " ".join(out.output.split()), (args, out.output)
    code = ("import sys\nfrom advisor.cli import app\n"
            "try:\n    app(['recommend', '--study', 's', '--storage', 't.db', '--budget', '1MiB'])\n"
            "except SystemExit:\n    pass\n"
            "print('HEAVY', sorted(m for m in ('torch', 'optuna', 'transformers', 'sqlalchemy') if m in sys.modules))")
    p = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, cwd=tmp_path,
                       env={"COLUMNS": "250", "PATH": "/usr/bin:/bin", "PYTHONPATH": ":".join(sys.path)})
    assert said in " ".join(p.stdout.split()) and "HEAVY []" in p.stdout, p.stdout + p.stderr
