"""`eval --style` is a fixed name read in any case, as `--task GSM8K` is (`advisor.errors.choose`)."""

from __future__ import annotations

from pathlib import Path

from tests.cli_helpers import advisor_in_process, flat

SAMPLE = Path(__file__).parent / "data" / "gsm8k_sample.jsonl"


def test_style_in_capitals_is_read_as_its_name(tmp_path):
    from tests.eval_helpers import tiny_toy_model_dir

    model_dir = tiny_toy_model_dir(tmp_path)
    r = advisor_in_process("eval", str(model_dir), "--task", "GSM8K", "--data", str(SAMPLE), "--style", "COT",
                           "--limit", "1", "--max-new-tokens", "2", "--no-progress", cwd=tmp_path)
    assert r.returncode == 0, r.stdout + r.stderr
    assert "cot prompt" in flat(r.stdout), r.stdout
