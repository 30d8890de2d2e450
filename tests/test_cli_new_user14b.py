"""What a new user met in pass 14 (second half): each test failed before its fix."""

from __future__ import annotations

import os
import subprocess
import sys

import pytest

from tests.cli_helpers import advisor, advisor_in_process, flat, one_error_line
from tests.recommend_helpers import make_db, standard_front
from tests.tune_helpers import few_problems_quick_space


@pytest.mark.parametrize("given", [["--mode", "Replay"], ["--space", "Quick"], ["--device", "CPU"]],
                         ids=lambda a: a[0])
def test_a_fixed_name_in_another_case_is_read_as_the_name(tmp_path, given):
    """`--sampler TPE`, `--task GSM8K` and `--to HF` were read in any case, but `--mode Replay`, `--space Quick` and
    `--device CPU` were refused. Each is now read as its name: the run goes on to the next check (a bad --study)."""
    r = advisor("tune", *given, "--study", "bad name!", "--storage", "s.db", cwd=tmp_path, timeout=120)
    one_error_line(r, "--study 'bad name!': use 1-100 letters")


def test_prefer_and_a_simulated_policy_are_read_in_any_case(tmp_path):
    """`recommend --prefer Latency` was "unknown preference 'Latency'" and `simulate --policy LRU` "unknown cache
    policy 'LRU'" (also --prefetch, --token-scope, --miss); both now answer as for the lower-case name."""
    db = make_db(tmp_path / "f.db", standard_front())
    shown = {}
    for prefer in ("latency", "Latency"):
        r = advisor("recommend", "--storage", db, "--budget", "10GiB", "--prefer", prefer, cwd=tmp_path, timeout=120)
        assert r.returncode == 0, r.stderr
        shown[prefer] = r.stdout
    assert shown["Latency"] == shown["latency"]
    r = advisor("simulate", "missing.npz", "--policy", "LRU,Tide", "--prefetch", "None", "--token-scope", "Block",
                "--miss", "CPU", cwd=tmp_path, timeout=120)
    one_error_line(r, "missing.npz")  # past every name: the trace file is what is wrong


def test_an_export_option_is_read_in_any_case_as_its_target_is(tmp_path):
    """`export --to HF` was read as hf, but `--opt EMIT=Tensor-Types` was "unknown option" and `--opt
    method=TORCHAO` "must be one of: ... torchao": an option's key and its listed values are fixed names too."""
    from pathlib import Path

    from tests.cli_helpers import advisor_in_process

    db = str(Path(__file__).resolve().parents[1] / "studies" / "example" / "advisor.db")
    out = {}
    for opt in ("emit=tensor-types", "EMIT=Tensor-Types"):
        r = advisor_in_process("export", "bundled-example", "129", "--to", "LLAMA.CPP", "--opt", opt, "--storage", db,
                               cwd=tmp_path)
        assert r.returncode == 0, r.stdout + r.stderr
        out[opt] = r.stdout
    assert out["EMIT=Tensor-Types"] == out["emit=tensor-types"] and "#!" not in out["emit=tensor-types"], out


def test_the_line_of_a_deleted_study_wraps_at_the_terminal_width(tmp_path):
    """`studies --delete NAME`'s closing line ("deleted study ... Studies left: ...", ~200 characters) was one line
    at any width, where every other long line wraps at the terminal's width (`terminal.print_wrapped`)."""
    name = "a_study_with_a_rather_long_name"
    make_db(tmp_path / "f.db", standard_front(name) + standard_front("b"))
    r = advisor("studies", "--delete", name, "--yes", "--storage", "f.db", cwd=tmp_path, timeout=120,
                env={**os.environ, "COLUMNS": "60"})
    assert r.returncode == 0, r.stderr
    lines = r.stdout.splitlines()
    assert len(lines) > 1 and max(map(len, lines)) <= 60, r.stdout
    assert flat(r.stdout).startswith(f"deleted study '{name}' from f.db; the eval cache") and flat(r.stdout).endswith("Studies left: b")


def test_a_tune_whose_reader_goes_away_stops_as_for_ctrl_c_and_resumes(tmp_path):
    """`advisor tune | head -1`: the reader gone, rich's print raised SystemExit(1) - from the main thread exit 1
    without a word, from the piped progress thread (a line every PLAIN_PROGRESS_EVERY_S) it only ended that thread
    and the tune ran on. It now stops as for Ctrl-C: the trial in flight queued again, finished ones kept, one line
    on stderr saying why and how to resume, exit 1 (Python's pattern for a closed pipe); the same command resumes."""
    code = ("import sys\nfrom advisor.tune import display\ndisplay.PLAIN_PROGRESS_EVERY_S = 0.5\n"
            "from advisor.cli import run\nsys.argv = ['advisor', *sys.argv[1:]]\nrun()\n")
    (tmp_path / "quick.toml").write_text(few_problems_quick_space())  # quick's trials on fewer problems: ~2 s
    args = ["tune", "--space", "quick.toml", "--trials", "1", "--storage", "s.db"]  # one trial: stopped in it,
    # resumed to it
    p = subprocess.Popen([sys.executable, "-c", code, *args], cwd=tmp_path, stdout=subprocess.PIPE,
                         stderr=subprocess.PIPE, text=True)
    try:
        for line in p.stdout:  # the header, then the progress line once trials run: close it mid-study
            if line.startswith("tuning "):
                break
        p.stdout.close()
        _, err = p.communicate(timeout=300)
    finally:
        p.kill()
    assert p.returncode == 1 and "Traceback" not in err, err
    last = err.strip().splitlines()[-1]
    assert last.startswith("stopped: stdout was closed (its reader went away), so the tune stopped as for Ctrl-C: "), err
    # closed before or after the first trial finished
    assert "are saved in study bundled-toy-quick" in last or "no trial has finished in study bundled-toy-quick" \
        in last, last
    listed = advisor_in_process("studies", "--storage", "s.db", cwd=tmp_path)
    assert "running 0" in listed.stdout, listed.stdout  # nothing left RUNNING
    r = advisor_in_process(*args, cwd=tmp_path)  # the resume is not about the pipe: no second torch import
    assert r.returncode == 0 and "1 finished trial" in flat(r.stdout), r.stdout + r.stderr


def test_a_budget_in_si_units_is_named_as_typed_beside_its_bytes(tmp_path):
    """`--budget 150KB` (SI: 150,000 bytes) was echoed as "146.48 KiB (--budget)" and "> --budget 146.48 KiB": right,
    but read as if 146.48 KiB had been typed. Where a budget's source is named it is now named as typed: the tune
    header "146.48 KiB (--budget 150KB)", the loading note "--budget 150KB = 146.48 KiB"."""
    r = advisor_in_process("tune", "tiny:olmoe", "--budget", "150KB", "--trials", "1", "--storage", "s.db",
                           cwd=tmp_path)  # in this process: as a subprocess it paid ~5 s of CPU importing torch
    assert r.returncode == 0, r.stdout + r.stderr
    out = flat(r.stdout)
    assert "budget: 146.48 KiB (--budget 150KB)" in out and "of parameters > --budget 150KB = 146.48 KiB)" in out, out
