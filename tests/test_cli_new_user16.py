"""What a new user met in pass 16: each test failed before its fix."""

from __future__ import annotations

from pathlib import Path

import pytest

from tests.cli_helpers import advisor_entry, one_error_line

EXAMPLE_DB = str(Path(__file__).resolve().parents[1] / "studies" / "example" / "advisor.db")

WRITERS = {  # each command that writes a file or folder, up to its output option
    "report": ["report", "bundled-example", "--storage", EXAMPLE_DB],
    "pareto": ["pareto", "bundled-example", "--storage", EXAMPLE_DB],
    "export": ["export", "bundled-example", "8", "--storage", EXAMPLE_DB, "--to", "json"],
    "trace": ["trace", "tiny:llada_moe"],
}


@pytest.mark.parametrize("command", WRITERS)
@pytest.mark.parametrize("spelling", ["-o", "--output", "--out"])
def test_every_writer_takes_o_output_and_out(tmp_path, command, spelling):
    """`-o` was `--out` for `report` and `pareto` but `--output` for `export` and `trace`: `export --out x.json`
    and `pareto --output DIR` were "No such option". Each takes all three, and names the option as its help
    shows it (`-o/--output`) whichever was typed."""
    r = advisor_entry(*WRITERS[command], spelling, "", cwd=tmp_path)
    line = one_error_line(r, "-o/--output is empty; give ")
    assert "--out " not in line and "--out is" not in line, line


def test_export_and_pareto_write_where_the_other_spelling_says(tmp_path):
    """The spelling of one command works in the other, and writes there."""
    r = advisor_entry(*WRITERS["export"], "--out", "a.json", cwd=tmp_path)
    assert r.returncode == 0 and (tmp_path / "a.json").is_file(), r.stdout + r.stderr
    r = advisor_entry(*WRITERS["pareto"], "--output", "plots", cwd=tmp_path)
    assert r.returncode == 0 and (tmp_path / "plots" / "bundled-example.png").is_file(), r.stdout + r.stderr
    said = one_error_line(advisor_entry(*WRITERS["export"], "-o", "a.json", "--out", "b.json", cwd=tmp_path))
    assert said.startswith("error: -o/--output is given 2 times"), said


BUDGETS = {"tune": ["tune", "--storage", "s.db"], "recommend": ["recommend", "--storage", EXAMPLE_DB],
           "inspect": ["inspect", "bundled"],
           "export": ["export", "--from-recommend", "--to", "json", "--storage", EXAMPLE_DB]}


@pytest.mark.parametrize("command", BUDGETS)
@pytest.mark.parametrize("zero", ["0", "0.0", "0%", "0B"])
def test_a_zero_budget_in_any_unit_or_none_must_be_positive(tmp_path, command, zero):
    """`--budget 0B` said "must be positive", but `--budget 0` and `0.0` "is not a size; use e.g. 12GiB", and
    `0%` was answered as a share (`recommend` sent the user to `report --memory 0%`, refused there). A zero is
    refused in the same words in any unit, or none, before anything loads or is written."""
    r = advisor_entry(*BUDGETS[command], "--budget", zero, cwd=tmp_path)
    assert one_error_line(r) == f"error: --budget '{zero}' must be positive"
    assert list(tmp_path.iterdir()) == []


@pytest.mark.parametrize(("typed", "loaded"), [("tiny:Mixtral", "tiny:mixtral  family=mixtral"),
                                               ("TINY:mixtral", "tiny:mixtral  family=mixtral"),
                                               ("Bundled", "bundled  family=llada_moe")])
def test_built_in_model_names_are_read_in_any_case(tmp_path, typed, loaded):
    """`tiny:Mixtral`, `TINY:mixtral` and `Bundled` were refused ("unknown tiny family 'Mixtral'", "did you mean
    'bundled'?") where `--sampler TPE` and `--task GSM8K` are read in any case. The built-in names are now; the
    model loads under its own name."""
    r = advisor_entry("inspect", typed, cwd=tmp_path)
    assert r.returncode == 0 and r.stdout.startswith(loaded), r.stdout + r.stderr


def test_a_directory_named_like_a_built_in_stays_the_directory(tmp_path):
    """Only the built-in names are case-folded, never a path: a directory `Bundled` here is that directory (here
    one without a model in it, refused as such), and an unknown family keeps its spelling in the refusal."""
    (tmp_path / "Bundled").mkdir()
    said = one_error_line(advisor_entry("inspect", "Bundled", cwd=tmp_path))
    assert said.startswith("error: Bundled has no config.json"), said
    said = one_error_line(advisor_entry("inspect", "TINY:Foo", cwd=tmp_path))
    assert said.startswith("error: unknown tiny family 'Foo'"), said


@pytest.mark.parametrize(("args", "said"), [
    (["eval", "--task", "gsm8k", "--style", "CAT"], "error: --style 'CAT' is not one of: zero-shot, few-shot, cot"),
    (["eval", "--style", "cot"], "error: --style cot: the toy task has one prompt form; --style applies to --task gsm8k"),
])
def test_eval_refuses_a_style_before_torch_imports(tmp_path, args, said):
    """`eval --task gsm8k --style CAT` was refused in one line, but only once torch and transformers had imported
    (~9 s on the 2-core host), where `--precision int9` beside it is answered at once: the style is read by the
    task's own check (`advisor.eval.tasks.prompt_style`) with the other options."""
    from tests.test_cli_new_user14 import _refused_light

    assert _refused_light(tmp_path, *args) == said


def test_tune_seed_help_shows_no_range_and_a_seed_outside_is_one_line(tmp_path):
    """`tune --help` showed `--seed INTEGER RANGE [0<=x<=2147483647]` (where eval's --seed reads cleanly); the range
    is checked by a callback now, one line, exit 2, naming it and why it ends there, before anything is written."""
    from typer.testing import CliRunner

    from advisor.cli import app

    shown = CliRunner(env={"COLUMNS": "200"}).invoke(app, ["tune", "--help"])
    (seed,) = [ln for ln in shown.output.splitlines() if "--seed" in ln]
    assert "<=x<=" not in seed and "2147483647" not in shown.output, seed
    for bad in ("-1", str(2**31)):
        said = one_error_line(advisor_entry("tune", "--storage", "s.db", f"--seed={bad}", cwd=tmp_path))
        assert said.startswith(f"error: Invalid value for '--seed': {bad} is not a sampler seed: give one from 0 "
                               "to 2147483647 (2**31 - 1: a study's k-th run draws with seed + k) (see `"), said
    assert list(tmp_path.iterdir()) == []


def test_a_share_given_to_tune_budget_says_what_the_share_is_of(tmp_path):
    """`tune --budget 50%` said "for 50% of the model give --budgets 50%", but a --budgets share is the resident
    weights plus that share of the FP16 expert bytes, not half the model: the line says that, in one line."""
    said = one_error_line(advisor_entry("tune", "--budget", "50%", "--storage", "s.db", cwd=tmp_path))
    assert said == ("error: --budget takes a size (e.g. 12GiB), not a share; give --budgets 50%: a budget of the "
                    "resident weights + 50% of the FP16 expert bytes (without --budget, the largest --budgets value "
                    "is the study's budget)"), said
    assert "of the model" not in said and list(tmp_path.iterdir()) == []


def test_the_offloaded_loading_line_gives_the_default_budget_in_bytes(tmp_path):
    """With the space's default budget the loading line read "counted 93.38 KiB of weights > 0.6 x them (quick
    space default)": a comparison with no second number. It gives the bytes compared, then where they came from."""
    import torch

    from advisor.models.tiny import build_tiny
    from tests.cli_helpers import advisor_in_process, flat

    build_tiny("qwen3_moe", dtype=torch.bfloat16).save_pretrained(tmp_path / "ck")
    r = advisor_in_process("tune", "./ck", "--space", "quick", "--trials", "1", "--storage", "s.db", cwd=tmp_path)
    assert r.returncode == 0, r.stdout + r.stderr
    assert ("loading: offloaded: routed experts stream from the checkpoint (counted 93.38 KiB of checkpoint tensors > "
            "the study's budget, 81.80 KiB)") in flat(r.stdout), r.stdout  # the share moved: test_cli_new_user17
