"""Leftovers of new user 16's pass, through the CLI as a user runs it: each test failed before its fix."""

from __future__ import annotations

import subprocess
import sys

HEAVY = ("import sys\nfrom advisor.cli import run\nsys.argv = ['advisor', *sys.argv[1:]]\ntry:\n    run()\n"
         "except SystemExit as e:\n"
         "    print('HEAVY', sorted(m for m in ('torch', 'optuna', 'transformers', 'sqlalchemy') if m in sys.modules), 'exit', e.code)\n")


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
        assert said in p.stderr and "HEAVY [] exit 2" in p.stdout, p.stdout + p.stderr
        assert not (tmp_path / "advisor.db").exists() and not list(tmp_path.iterdir()), list(tmp_path.iterdir())


def test_a_dense_model_directory_is_refused_in_one_line_before_transformers(tmp_path):
    """A model directory of a dense model (config.json model_type bert) printed transformers' `If you want to use
    BertLMHeadModel as a standalone ...` warning before the one-line error, after 8 s of loading it. Its config
    names no experts: it is refused as no MoE model, in one line, before torch or transformers import."""
    from transformers import BertConfig, BertModel

    config = BertConfig(hidden_size=16, num_hidden_layers=1, num_attention_heads=2, intermediate_size=32, vocab_size=64)
    BertModel(config).save_pretrained(tmp_path / "m")
    for args in (("inspect", "m"), ("tune", "m", "--trials", "1")):
        p = _heavy(*args, cwd=tmp_path)
        assert p.stderr.splitlines() == [p.stderr.strip()] and p.stderr.startswith(
            "error: m: model type 'bert' is no MoE model (its config.json names no experts); supported: "), p.stderr
        assert "HEAVY [] exit 2" in p.stdout, p.stdout
