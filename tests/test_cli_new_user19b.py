"""What a new user met in pass 19b: each test failed before its fix."""

from __future__ import annotations

from typer.testing import CliRunner

from advisor.cli import app
from tests.tune_helpers import few_problems_quick_space


def test_tune_and_inspect_label_the_host_ram_they_measure_alike(tmp_path, monkeypatch):
    """`tune`'s header said host stores are kept while they total "<= X (available RAM)" where `inspect` said
    "host RAM available X (measured now)": the same figure (`host_available_bytes`), two wordings. Both now say
    "(available RAM, measured now)"."""
    import torch

    torch.set_num_threads(1)
    monkeypatch.chdir(tmp_path)
    run = CliRunner(env={"COLUMNS": "200"})
    shown = run.invoke(app, ["inspect", "bundled", "--budget", "3MiB"])
    assert shown.exit_code == 0, shown.output
    (tmp_path / "quick.toml").write_text(few_problems_quick_space())  # a trial in ~2 s: the header is the check
    tuned = run.invoke(app, ["tune", "bundled", "--offload", "--space", "quick.toml", "--trials", "1", "--storage",
                             "t.db"])
    assert tuned.exit_code == 0, tuned.output
    for out in (" ".join(shown.output.split()), " ".join(tuned.output.split())):
        assert " GiB (available RAM, measured now)" in out or " MiB (available RAM, measured now)" in out, out
    assert "(measured now)" not in shown.output and "(available RAM)" not in tuned.output


def test_inspect_names_the_budget_as_typed_beside_its_bytes(tmp_path, monkeypatch):
    """`inspect --budget '3 MB'` headed its table "budget 2.86 MiB:", bytes the user never typed (3 MB is SI:
    3,000,000 bytes), where `tune` and `recommend` name the option beside them (`budget_text`)."""
    import torch

    torch.set_num_threads(1)
    monkeypatch.chdir(tmp_path)
    r = CliRunner(env={"COLUMNS": "200"}).invoke(app, ["inspect", "bundled", "--budget", " 3 MB"])
    assert r.exit_code == 0, r.output
    assert "budget 2.86 MiB (--budget 3 MB): resident weights" in r.output, r.output


def test_a_wait_note_wraps_at_the_terminals_width_as_every_other_note(tmp_path):
    """`tune` waiting for the seeding turn of its SQLite file (held here by another process) said so in one line of
    hundreds of characters, past an 80-column terminal, where every other note wraps (`print_wrapped`). The wait
    notes (`say_note`: this one, PostgreSQL's silence, its locks' holders) now wrap too, under their own indent."""
    import os
    import subprocess
    import sys

    from filelock import FileLock

    from tests.cli_helpers import flat, read_note

    (tmp_path / "quick.toml").write_text(few_problems_quick_space())  # its one trial in ~2 s: the note is the check
    held = FileLock(str(tmp_path / "s.db.seed.lock"), thread_local=False)
    held.acquire()
    try:
        proc = subprocess.Popen([sys.executable, "-m", "advisor", "tune", "bundled", "--space", "quick.toml",
                                 "--trials", "1", "--storage", "s.db"],
                                cwd=tmp_path, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
                                env={**os.environ, "COLUMNS": "80", "ADVISOR_SQLITE_TIMEOUT_S": "1"})
        assert proc.stderr is not None
        note = read_note(proc.stderr)
    finally:
        held.release()
    out, err = proc.communicate(timeout=300)
    assert proc.returncode == 0, (out, note + err)
    assert flat(note) == ("note: waiting for the seeding turn of s.db (s.db.seed.lock), held by another process, for "
                          "0.5 s; still waiting for as long as it is held (its holder does not say that it works - an "
                          "advisor from before 2026-12-05, or one that cannot write s.db.seed.beat, on a full disk: if "
                          "it is stopped, end it) - Ctrl-C stops the command"), note
    lines = note.splitlines()
    assert len(lines) > 1 and all(len(line) <= 80 for line in lines), lines
    assert all(line.startswith("  ") for line in lines[1:]), lines


def test_profile_checks_where_it_saves_without_a_traceback(tmp_path):
    """`advisor profile` raised UnboundLocalError ('given') at its check of where it saves, before measuring
    anything: the option's name passed to `check_writable` was a variable assigned only further down. A
    directory where the profile's file belongs is now refused in one line naming --profiles-dir."""
    from tests.cli_helpers import advisor, one_error_line

    (tmp_path / "p" / "x.json").mkdir(parents=True)
    r = advisor("profile", "--profiles-dir", "p", "--name", "x", cwd=tmp_path, timeout=120)
    one_error_line(r, "cannot write p/x.json: it is a directory; give --profiles-dir another path")
