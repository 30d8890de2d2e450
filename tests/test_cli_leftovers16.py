"""Leftovers of new user 16's pass, through the CLI as a user runs it: each test failed before its fix."""

from __future__ import annotations

import subprocess
import sys

HEAVY = ("import sys\nfrom advisor.cli import run\nsys.argv = ['advisor', *sys.argv[1:]]\ntry:\n    run()\n"
         "except SystemExit as e:\n"
         "    print('HEAVY', sorted(m for m in ('torch', 'optuna', 'transformers', 'sqlalchemy') if m in sys.modules))\n")


def _heavy(*args: str, cwd) -> subprocess.CompletedProcess:
    """`advisor ARGS` through the entry point in a fresh process, printing which heavy modules it imported."""
    return subprocess.run([sys.executable, "-c", HEAVY, *args], capture_output=True, text=True, cwd=cwd,
                          env={"PATH": "/usr/bin:/bin", "PYTHONPATH": ":".join(sys.path)})


def test_tune_of_a_mistyped_model_is_refused_before_the_storage_opens(tmp_path):
    """`advisor tune bundeld` / `tune tiny:llada` took 1.3-2.1 s to say the MODEL was wrong: the storage was
    checked first (optuna and SQLAlchemy imported). The spec is now checked first, importing neither."""
    for args, said in ((("tune", "bundeld"), "did you mean 'bundled'"),
                       (("tune", "tiny:llada"), "unknown tiny family 'llada'")):
        p = _heavy(*args, cwd=tmp_path)
        assert said in p.stderr and "HEAVY []" in p.stdout, p.stdout + p.stderr
        assert not (tmp_path / "advisor.db").exists() and not list(tmp_path.iterdir()), list(tmp_path.iterdir())
