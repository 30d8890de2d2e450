"""`eval --limit` above the task's size says it evaluates all of it; `eval --seed` that would choose nothing (no
--limit, no --precision, or --completions) is refused like the other options that would change nothing."""

from __future__ import annotations

from pathlib import Path

import pytest
from typer.testing import CliRunner

from advisor.errors import UserError
from tests.cli_helpers import advisor_in_process, flat

SAMPLE = Path(__file__).parent / "data" / "gsm8k_sample.jsonl"  # 8 problems


def test_a_limit_above_the_tasks_size_says_all_are_evaluated(tmp_path):
    from tests.eval_helpers import tiny_toy_model_dir

    model_dir = tiny_toy_model_dir(tmp_path)
    r = advisor_in_process("eval", str(model_dir), "--task", "gsm8k", "--data", str(SAMPLE), "--limit", "20",
                           "--max-new-tokens", "1", "--no-progress", cwd=tmp_path)
    assert r.returncode == 0, r.stdout + r.stderr
    assert "note: --limit 20 is more than the gsm8k task's 8 problems: evaluating all of them" in flat(r.stderr)
    assert "/8;" in r.stdout, r.stdout  # all 8 evaluated


@pytest.mark.parametrize(("args", "said"), [
    (["bundled", "--seed", "3"],
     "--seed would change nothing: --seed chooses the --limit subset and the --precision fidelity prompts; drop it"),
    (["bundled", "--seed", "0", "--fidelity-prompts", "2"],
     "--fidelity-prompts, --seed would change nothing: the fidelity proxy compares a --precision plan with full "
     "precision; --seed chooses the --limit subset and the --precision fidelity prompts; drop them"),
    (["bundled", "--precision", "int8", "--fidelity-prompts", "0", "--seed", "3"],  # no prompts to pick
     "--seed would change nothing: --seed chooses the --limit subset and the --precision fidelity prompts; drop it"),
    (["--task", "humaneval", "--completions", "c.jsonl", "--seed", "1"],
     "--seed would change nothing: --completions scores the file without a model; drop it")])
def test_a_seed_that_chooses_nothing_is_refused(tmp_path, args, said):
    from advisor.cli import app

    r = CliRunner().invoke(app, ["eval", *args])
    assert isinstance(r.exception, UserError), (r.exit_code, r.output)
    assert str(r.exception) == said


def test_eval_without_seed_reaches_its_own_checks():
    """--seed left out is None (its default, so a given one is told apart): the range callback passed it to a
    comparison, and every `advisor eval` without --seed was a TypeError traceback while its options were read."""
    from advisor.cli import app

    r = CliRunner().invoke(app, ["eval", "bundled", "--fidelity-prompts", "2"])
    assert isinstance(r.exception, UserError), (r.exit_code, r.output, r.exception)
    assert str(r.exception).startswith("--fidelity-prompts would change nothing")
