"""New user 19's findings, through the CLI as a user runs it."""

from __future__ import annotations

import re

from tests.cli_helpers import advisor_in_process


def _cells(help_text: str) -> str:
    """`--help`'s text without its box drawing and whitespace: a word folded over lines reads whole again."""
    return re.sub(r"[\s│╭╮╰╯─]", "", help_text)


def test_help_folds_a_long_word_at_80_columns_rather_than_cutting_it(tmp_path):
    """At 80 columns rich cut a help word longer than its column: `tune --help` showed `[default:
    sqlite:///studies/adv…` (the default database, its bracket lost) and `benchmarks/search_eff…`, `eval --help`
    `'layers=0-1:int8,2…`; at 60 the option names themselves (`--profiles-…`, `--max-new-t…`). Such a word is
    folded over lines now, as typer's type column already was: nothing is cut, nothing passes the width."""
    for width, command, whole in [("80", "tune", "[default:sqlite:///studies/advisor.db]"),
                                  ("80", "tune", "benchmarks/search_efficiency.py)"),
                                  ("80", "eval", "'layers=0-1:int8,2-3:int4'"), ("60", "tune", None)]:
        r = advisor_in_process(command, "--help", cwd=tmp_path, env={"COLUMNS": width})
        assert r.returncode == 0, r.stdout + r.stderr
        assert "…" not in r.stdout, (width, command, r.stdout)
        assert max(map(len, r.stdout.splitlines())) <= int(width), r.stdout
        if whole:
            assert whole in _cells(r.stdout), (whole, r.stdout)
        else:  # an option's name whole, or folded in its own column: '--profiles-d' over 'ir'
            lines = r.stdout.splitlines()
            at = next(i for i, ln in enumerate(lines) if "--profiles" in ln)
            column = lines[at].index("--profiles")
            name = lines[at][column:].split()[0]
            if name != "--profiles-dir":  # (whole where the names' column is wide enough for it)
                name += lines[at + 1][column:].split()[0]
            assert name == "--profiles-dir", r.stdout



def test_folding_advisors_help_leaves_another_typer_apps_help_as_it_was(tmp_path):
    """The folding of long help words patched typer's renderer for the rest of the process: after `advisor tune
    --help`, another typer app's help there (a library user's, a later test's CliRunner) folded its words too, and
    `typer.rich_utils.highlighter` was a function, no longer typer's highlighter. The patch holds only while
    advisor's help is shown; advisor's own help still folds (the test above)."""
    import typer
    from typer import rich_utils
    from typer.testing import CliRunner

    other = typer.Typer()

    @other.command()
    def hello(path: str = typer.Option("sqlite:///a/default/path/longer/than/its/column.db", help="x" * 90)) -> None:
        """Another app."""

    def other_help() -> str:
        return CliRunner(env={"COLUMNS": "60"}).invoke(other, ["--help"]).stdout

    before, highlighters = other_help(), (rich_utils.highlighter, rich_utils.negative_highlighter)
    r = advisor_in_process("tune", "--help", cwd=tmp_path, env={"COLUMNS": "60"})
    assert r.returncode == 0 and "…" not in r.stdout, r.stdout
    assert (rich_utils.highlighter, rich_utils.negative_highlighter) == highlighters
    assert other_help() == before and "…" in before, before

def test_profile_refusing_its_store_names_the_option_that_moves_it(tmp_path):
    """`advisor profile --cpu` where its store takes no files (a read-only working directory, /proc) said '...;
    give another path' - given where? Every other output's refusal names its option (`give -o/--output another
    path`). It now names the one that sets the store: --profiles-dir, or $ADVISOR_PROFILES_DIR when that set it."""
    import os

    from tests.cli_helpers import advisor_entry, one_error_line

    r = advisor_entry("profile", "--cpu", "--profiles-dir", "/proc/advisor-profiles", cwd=tmp_path)
    assert one_error_line(r, "/proc does not take files").endswith("; give --profiles-dir another path"), r.stderr
    r = advisor_entry("profile", "--cpu", cwd=tmp_path, env={**os.environ, "ADVISOR_PROFILES_DIR": "/proc/p"})
    assert one_error_line(r, "/proc does not take files").endswith("; give $ADVISOR_PROFILES_DIR another path")
    assert list(tmp_path.iterdir()) == []


def test_blocks_print_in_an_ascii_locale(tmp_path):
    """With an ASCII stdout (a C locale with PYTHONUTF8=0) the blocks of `studies`, `pareto` and `tune`'s front
    were a UnicodeEncodeError traceback at their first ' · ' (tune's after every trial had run); rich's own tables
    fall back to ASCII there. Their items are separated by ' | ' where the dot cannot be written."""
    import os
    from pathlib import Path

    from tests.cli_helpers import advisor

    db = str(Path(__file__).resolve().parents[1] / "studies/example/advisor.db")
    env = {**os.environ, "PYTHONIOENCODING": "ascii", "COLUMNS": "80"}
    r = advisor("studies", "--storage", db, cwd=tmp_path, env=env, timeout=120)  # pareto's and tune's blocks alike
    assert r.returncode == 0 and "Traceback" not in r.stderr, r.stderr
    assert " | " in r.stdout and r.stdout.isascii(), r.stdout
    r = advisor("studies", "--storage", db, cwd=tmp_path, env={**env, "PYTHONIOENCODING": "utf-8"}, timeout=120)
    assert " · " in r.stdout and " | " not in r.stdout, r.stdout  # where the dot can be written, it is


def test_tune_with_a_cpu_profile_says_what_budget_to_give(tmp_path):
    """`tune --gpu HOST` with a `profile --cpu` profile ended its note mid-phrase: '... so the budget is not it; give
    --budget for the GPU's' (the GPU's what?). It now says '... give --budget with the GPU's memory'."""
    from tests.cli_helpers import flat

    pp = tmp_path / "pp"
    r = advisor_in_process("profile", "--cpu", "--repeats", "1", "--profiles-dir", str(pp), "--name", "myhost",
                           cwd=tmp_path)
    assert r.returncode == 0, r.stdout + r.stderr
    r = advisor_in_process("tune", "tiny:qwen3_moe", "--space", "quick", "--trials", "1", "--gpu", "myhost",
                           "--storage", "s.db", cwd=tmp_path, env={"ADVISOR_PROFILES_DIR": str(pp)})
    assert r.returncode == 0, r.stdout + r.stderr
    assert "is this host's RAM, not GPU memory, so the budget is not it; give --budget with the GPU's memory" \
        in flat(r.stdout), r.stdout
    assert [ln for ln in r.stdout.splitlines() if "GPU's" in ln][-1].endswith("GPU's memory"), r.stdout  # its end


def test_simulate_prints_blocks_where_its_table_does_not_fit(tmp_path):
    """`advisor simulate` printed its table whatever the width, and rich cropped it at the terminal's edge: at 60
    columns the `CPU tokens` and `vs Belady` columns were gone and headers read `tran…`, `mis…`, without a word (at
    80, a trace's counts of millions of look-ups would do the same). Where the table does not fit, each policy is
    now a block of its values, as `studies`, `pareto` and `quant-report` print theirs."""
    r = advisor_in_process("trace", "tiny:llada_moe", "--limit", "1", "--threads", "1", "-o", "t.npz", cwd=tmp_path)
    assert r.returncode == 0, r.stdout + r.stderr
    r = advisor_in_process("simulate", "t.npz", "--policy", "lru,tide", cwd=tmp_path, env={"COLUMNS": "60"})
    assert r.returncode == 0, r.stdout + r.stderr
    lines = r.stdout.splitlines()
    assert "…" not in r.stdout and max(map(len, lines)) <= 60, r.stdout
    for policy in ("lru", "tide (tau 4)", "belady (bound)"):
        block = " ".join(lines[lines.index(policy) + 1:lines.index(policy) + 4])
        for label in ("hits", "misses", "hit rate", "H2D per token", "transfer ms/token", "CPU tokens", "vs Belady"):
            assert f"{label} " in block, (label, r.stdout)
    wide = advisor_in_process("simulate", "t.npz", "--policy", "lru,tide", cwd=tmp_path, env={"COLUMNS": "80"})
    assert wide.returncode == 0 and "┃ hits ┃" in wide.stdout, wide.stdout  # where it fits: the table, as before


def test_eval_notes_on_long_prompts_wrap_at_80_columns(tmp_path, monkeypatch):
    """`advisor eval bundled --task gsm8k --data FILE` said 'note: gsm8k: 1 of 1 prompts with their new tokens still
    exceed bundled's 256 positions (256 new tokens); the model runs past the length it was trained for on them' on
    one line of 150 columns (and the few-shot note beside it 116), where the busy-host note above them wraps. The
    once-per-run notes wrap at the terminal's width now, under a 2-column indent."""
    from advisor.eval import notes
    from tests.cli_helpers import flat

    monkeypatch.setattr(notes, "_said", set())  # in this process as in a fresh one: another test may have said it
    (tmp_path / "g.jsonl").write_text('{"question": "What is 2+3?", "answer": "2+3=5\\n#### 5"}\n')
    r = advisor_in_process("eval", "bundled", "--task", "gsm8k", "--data", "g.jsonl", "--limit", "1", "--threads",
                           "1", cwd=tmp_path, env={"COLUMNS": "80"})
    assert r.returncode == 0, r.stdout + r.stderr
    assert "still exceed bundled's 256 positions (256 new tokens); the model runs past" in flat(r.stderr), r.stderr
    assert max(map(len, r.stderr.splitlines())) <= 80, r.stderr
    # the few-shot note and this one each said "bundled's 256 positions (256 new tokens)", the first that exemplars
    # were dropped "to fit" them, which they did not: one note now says both; the decoding note named the steps
    # "not 16" without whose 16 they were (bundled's default: eval has no --steps)
    said = flat(r.stderr)
    assert ("note: gsm8k: dropped few-shot exemplars from 1 of 1 prompts (fewest kept 0 of 4), yet 1 of 1 prompts "
            "with their new tokens still exceed bundled's 256 positions (256 new tokens)") in said, said
    assert said.count("256 positions") == 1 and "to fit" not in said, said
    assert "bundled decodes as llada_moe: 32 denoising steps, not 16 (its default): every block" in said, said
    assert not [ln for ln in r.stderr.splitlines() if ln.endswith(" ")], r.stderr


def test_profile_line_on_the_cpu_times_it_kept_wraps_at_80_columns(tmp_path):
    """`advisor profile --cpu` over a profile with CPU expert times said 'kept the CPU expert times of the profile
    this replaces (8x8: measured:wall-clock(...))' on one line of 220 columns, under figures that wrap at the
    terminal's width. It wraps as they do now."""
    from tests.cli_helpers import flat

    base = ("profile", "--cpu", "--repeats", "1", "--profiles-dir", "p", "--name", "h")
    assert advisor_in_process(*base, "--expert-shape", "8x8", cwd=tmp_path).returncode == 0
    r = advisor_in_process(*base, cwd=tmp_path, env={"COLUMNS": "80"})
    assert r.returncode == 0, r.stdout + r.stderr
    assert "kept the CPU expert times of the profile this replaces (8x8: measured:wall-clock(" in flat(r.stdout)
    assert max(map(len, r.stdout.splitlines())) <= 80, r.stdout


def test_the_note_on_a_skipped_broken_profile_wraps_at_80_columns(tmp_path):
    """`advisor recommend --gpu H100` beside a broken file in the profiles folder said 'note: skipped broken
    hardware profile(s) ... (not 'H100'; `advisor profile --list` says what is wrong)' on one line of 127 columns
    (more with a longer folder), where recommend's other lines wrap at the terminal's width; it wraps now."""
    from pathlib import Path

    from tests.cli_helpers import advisor_entry, flat

    (tmp_path / "profiles").mkdir()
    (tmp_path / "profiles" / "broken.json").write_text('{"name": 3}')
    db = str(Path(__file__).resolve().parents[1] / "studies/example/advisor.db")
    r = advisor_entry("recommend", "--storage", db, "--gpu", "H100", "--profiles-dir", "profiles", cwd=tmp_path,
                      env={"COLUMNS": "80"})
    assert r.returncode == 0, r.stdout + r.stderr
    assert "note: skipped broken hardware profile(s) profiles/broken.json (not 'H100'; `advisor profile --list " \
           "--profiles-dir profiles` says what is wrong)" in flat(r.stderr), r.stderr
    assert max(map(len, r.stderr.splitlines())) <= 80, r.stderr


def test_pareto_of_a_study_advisor_did_not_write_says_so(tmp_path):
    """`advisor pareto NAME` of a study Optuna alone made (3 finished trials, in the same database) said 'has no
    stored front yet (no feasible finished trial); run more trials' - but it has finished trials, and `advisor
    tune` refuses to run more of it. It now says the study was not written by `advisor tune`, as `report` does."""
    import optuna

    from tests.cli_helpers import advisor_entry, one_error_line

    optuna.logging.set_verbosity(optuna.logging.WARNING)
    study = optuna.create_study(study_name="plain", storage=f"sqlite:///{tmp_path / 'o.db'}",
                                directions=["minimize", "maximize"])
    study.optimize(lambda t: (t.suggest_float("x", 0, 1), t.suggest_float("y", 0, 1)), n_trials=3)
    r = advisor_entry("pareto", "plain", "--storage", "o.db", "-o", "plots", cwd=tmp_path)
    line = one_error_line(r, "study 'plain' has 3 finished trials but no stored front: it was not written by "
                             "`advisor tune`")
    assert "run more trials" not in line, line
