"""A newcomer's session through the real CLI on the bundled model, piped and at 80 columns:
Ctrl-C mid-study (one line, nothing RUNNING), `--trials N` tops the study up to N finished trials,
`--more N` adds N, and `tune`, `studies` and `pareto` print every name and value whole."""

from __future__ import annotations

import os
import signal
import sqlite3
import subprocess
import sys
import time
from pathlib import Path

import pytest
from cli_helpers import advisor_in_process
from tune_helpers import few_problems_quick_space

from advisor.results.read import read_fronts
from advisor.tune.display import fmt_value

STUDY = "newcomer-flow"
SCREEN = {"COLUMNS": "80", "TERM": "dumb"}
ENV = {**os.environ, **SCREEN}


def _cmd(*args: str) -> list[str]:
    return [sys.executable, "-m", "advisor", *args]


def _states(db: Path) -> dict[str, int]:
    con = sqlite3.connect(db)
    try:
        return dict(con.execute("SELECT state, COUNT(*) FROM trials GROUP BY state").fetchall())
    except sqlite3.OperationalError:
        return {}
    finally:
        con.close()


def _command_line(line: str) -> bool:
    """Whether `line` is one whole `quoted command` (its comma after it), which is never broken: pasted, it runs
    whole; one longer than a line (a long --storage path) is left for the terminal to fold."""
    text = line.strip().removesuffix(",")
    return text.startswith("`") and text.endswith("`") and text.count("`") == 2


def _fits_80(lines: list[str]) -> bool:
    """No line over 80 columns but a whole quoted command (`_command_line`)."""
    return max(len(ln) for ln in lines if not _command_line(ln)) <= 80


def _whole(out: str, points: list) -> None:
    """No cell cut, no line over 80 columns (but a quoted command), every stored front value printed whole on one
    line."""
    lines = out.splitlines()
    assert "…" not in out, out
    assert _fits_80(lines), out
    assert points
    for p in points:
        for metric in ("h2d_bytes_per_token", "accuracy", "peak_gpu_bytes"):
            text = fmt_value(metric, p.values[metric])
            assert any(text in ln for ln in lines), (metric, text, out)


@pytest.fixture(scope="module")
def flow(tmp_path_factory):
    work = tmp_path_factory.mktemp("flow")
    db = work / "f.db"
    # the quick space, its trials scoring fewer problems (~2 s, not ~7): each interrupted run is still stopped
    # after its first trial, long before its last
    (work / "quick.toml").write_text(few_problems_quick_space())
    base = ("--space", "quick.toml", "--storage", str(db), "--study", STUDY)
    proc = subprocess.Popen(_cmd("tune", "--trials", "4", *base), cwd=work, env=ENV, stdout=subprocess.PIPE,
                            stderr=subprocess.PIPE, text=True,  # Ctrl-C as at a terminal (a runner may ignore it)
                            preexec_fn=lambda: signal.signal(signal.SIGINT, signal.SIG_DFL))
    deadline = time.monotonic() + 300
    while proc.poll() is None and _states(db).get("COMPLETE", 0) < 1 and time.monotonic() < deadline:
        time.sleep(0.1)
    proc.send_signal(signal.SIGINT)
    out, err = proc.communicate(timeout=300)
    interrupted = (proc.returncode, out, err, _states(db))
    # the two runs between the interrupted ones are not about the process: in this one (the CLI, CliRunner)
    top_up = advisor_in_process("tune", "--trials", "2", *base, cwd=work, env=SCREEN)
    after_top_up = _states(db), read_fronts(str(db), STUDY)
    more = advisor_in_process("tune", "--more", "1", *base, cwd=work, env=SCREEN)
    after_more = _states(db)
    proc = subprocess.Popen(_cmd("tune", "--more", "3", *base), cwd=work, env=ENV, stdout=subprocess.PIPE,
                            stderr=subprocess.PIPE, text=True, preexec_fn=lambda: signal.signal(signal.SIGINT, signal.SIG_DFL))
    while proc.poll() is None and _states(db).get("COMPLETE", 0) < 4 and time.monotonic() < deadline + 300:
        time.sleep(0.1)
    proc.send_signal(signal.SIGINT)
    more_cut = proc.communicate(timeout=300), _states(db)
    return {"work": work, "db": db, "interrupted": interrupted, "top_up": (top_up, after_top_up),
            "more": (more, after_more), "more_cut": more_cut}


def test_ctrl_c_is_one_line_and_leaves_nothing_running(flow):
    rc, out, err, states = flow["interrupted"]
    assert rc == 130, (out, err)
    assert "Traceback" not in out + err and "KeyboardInterrupt" not in out + err
    assert err.rstrip().splitlines()[-1].startswith("interrupted: "), err
    assert states.get("COMPLETE", 0) >= 1 and states.get("RUNNING", 0) == 0, states


def test_trials_tops_up_and_more_adds(flow):
    r, (states, _) = flow["top_up"]
    assert r.returncode == 0, r.stderr
    assert states["COMPLETE"] == 2 and states.get("RUNNING", 0) == 0, states  # topped up from 1 (`--trials 2`)
    r, states = flow["more"]
    assert r.returncode == 0, r.stderr
    assert states["COMPLETE"] == 3, states


def test_an_interrupted_more_run_says_how_many_it_had_left(flow):
    """`--more 3` stopped after its first trial: the same command would run 3 more, not the 2 it had left."""
    (_, err), states = flow["more_cut"]
    done = states["COMPLETE"] - 3  # the trials this run finished (the study had 3)
    assert 1 <= done < 3, (states, err)
    left = 3 - done
    assert f"`--more {left}` runs the {left} trial" in err.replace("\n", " "), err
    assert "run the same command to resume" not in err


def test_the_header_names_the_seed_the_sampler_draws_with(flow):
    """A study's k-th run draws with --seed + k (a resume must not repeat earlier draws), but its header printed
    --seed itself: "seed 0" on every resume."""
    _, out, _, _ = flow["interrupted"]
    assert "(default, seed 0) | mode replay" in " ".join(out.split()), out
    r, _ = flow["top_up"]
    assert "(default, seed 1: --seed 0 + 1 earlier run) | mode replay" in " ".join(r.stdout.split()), r.stdout
    r, _ = flow["more"]
    assert "(default, seed 2: --seed 0 + 2 earlier runs) | mode replay" in " ".join(r.stdout.split()), r.stdout


def test_tune_output_fits_80_columns(flow):
    r, (_, front) = flow["top_up"]
    _whole(r.stdout, front)
    assert f"`advisor pareto {STUDY}" in r.stdout.replace("\n", " ")


def test_studies_and_pareto_fit_80_columns(flow):
    work, db = flow["work"], flow["db"]
    r = subprocess.run(_cmd("studies", "--storage", str(db)), cwd=work, env=ENV, capture_output=True, text=True)
    assert r.returncode == 0, r.stderr
    assert "…" not in r.stdout and max(map(len, r.stdout.splitlines())) <= 80, r.stdout
    assert STUDY in r.stdout.split()  # grep-able: the whole name as one word
    finished = flow["more_cut"][1]["COMPLETE"]  # after the interrupted --more run, the last the flow ran
    assert f"finished {finished}" in r.stdout and "running 0" in r.stdout and "waiting" in r.stdout
    r = subprocess.run(_cmd("pareto", STUDY, "--storage", str(db), "--no-plots"), cwd=work, env=ENV,
                       capture_output=True, text=True)
    assert r.returncode == 0, r.stderr
    _whole(r.stdout, read_fronts(str(db), STUDY))
    wide = subprocess.run(_cmd("pareto", STUDY, "--storage", str(db), "--no-plots", "--wide"), cwd=work, env=ENV,
                          capture_output=True, text=True)
    assert "…" not in wide.stdout and "┃ trial" in wide.stdout and max(map(len, wide.stdout.splitlines())) > 80


@pytest.mark.parametrize("groups", [1, 2])
def test_a_format_left_out_by_the_budget_is_named_in_the_users_words(tmp_path, groups):
    """fp16 cannot fit one expert per layer in 2.2 MiB beside the bundled model's resident weights and activation
    allowance (int8 and int4 can): the note says "expert precision", not the internal knob name ("fmt_g0: fp16 left
    out ..."); with two layer groups, of which group and beside what (the other group at its cheapest format)."""
    space = tmp_path / "s.toml"
    # (its one trial scores 2 problems on 1 fidelity prompt, not the default 32 on 4: the note comes before it; the
    # traced prompts, whose longest sizes the activation allowance, are the default's)
    space.write_text(f'name = "s"\n[precision]\nformats = ["fp16", "int8", "int4"]\ngroups = {groups}\n'
                     '[cache]\nslots_per_layer = { low = 1, high = "all" }\n'
                     '[evaluation]\nlimit = 2\nfidelity_prompts = 1\n')
    r = advisor_in_process("tune", "--space", str(space), "--budget", "2.2MiB", "--trials", "1", "--storage",
                           str(tmp_path / "s.db"), cwd=tmp_path, env=SCREEN)
    assert r.returncode == 0, r.stdout + r.stderr
    out = " ".join(r.stdout.split())
    if groups == 1:
        assert "note: expert precision: fp16 left out - cannot fit one expert per layer in the budget" in out, out
        assert "beside the other groups" not in out
    for g in range(groups if groups > 1 else 0):
        assert (f"note: expert precision of layer group {g}: fp16 left out - cannot fit one expert per layer in the "
                "budget beside the other groups at their cheapest format") in out, out
    assert "fmt_g" not in r.stdout


def test_tunes_header_and_summary_lines_end_without_a_space_at_80_columns(tmp_path, monkeypatch):
    """Piped at 80 columns, rich broke tune's header (and its closing lines) after a space it kept: lines ended
    in "| " or "fits ", which a diff or an editor shows as trailing whitespace, and the README quoted them so.
    They break where they did, without it."""
    from tune_helpers import FakeBackend, small_space
    from typer.testing import CliRunner

    import advisor.tune.interrupt as interrupt
    from advisor.cli import app
    from advisor.commands import tune as tune_cmd

    monkeypatch.setattr(tune_cmd, "_before_load", lambda *a, **k: (None, None, None))
    monkeypatch.setattr(interrupt, "import_runtime", lambda **k: None)
    monkeypatch.setattr(tune_cmd, "_load", lambda *a, **k: (FakeBackend(), small_space()))
    monkeypatch.chdir(tmp_path)  # a relative --storage: pytest-xdist's tmp paths make a URL longer than a line,
    # which stays whole (a word is never broken), so no width could be checked
    res = CliRunner().invoke(app, ["tune", "--trials", "1", "--sampler", "random", "--storage", "s.db",
                                   "--study", "s"], env=SCREEN)
    assert res.exit_code == 0, (res.output, res.exception)
    lines = res.stdout.splitlines()
    assert lines[0].startswith("advisor tune fake-moe") and any(ln.startswith("stored in") for ln in lines), lines
    assert len(lines[0]) > 70 and _fits_80(lines), lines  # the header is wrapped, at 80 columns
    assert [ln for ln in lines if ln.endswith(" ")] == [], res.stdout
