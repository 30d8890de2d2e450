"""Running the CLI as a user does (`python -m advisor` in a directory of their own) and reading its one-line
refusals, for the tests that go through it."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path
from typing import Any


def advisor(*args: str, cwd: Path, timeout: float = 600,
            env: dict[str, str] | None = None) -> subprocess.CompletedProcess:
    """`advisor ARGS` run in `cwd`, its output captured (whatever its exit code)."""
    return subprocess.run([sys.executable, "-m", "advisor", *args], cwd=cwd, capture_output=True, text=True,
                          timeout=timeout, env=env)


def advisors_at_once(commands: list[list[str]], cwd: Path, timeout: float = 600) -> list[subprocess.CompletedProcess]:
    """`advisor ARGS` for each of `commands`, each its own process, all started at once: for commands that mostly
    wait (a connect timeout), so a test waits for them once, not once per command."""
    procs = [subprocess.Popen([sys.executable, "-m", "advisor", *args], cwd=cwd, stdout=subprocess.PIPE,
                              stderr=subprocess.PIPE, text=True) for args in commands]
    done = []
    for args, p in zip(commands, procs, strict=True):
        try:
            out, err = p.communicate(timeout=timeout)
        except subprocess.TimeoutExpired:
            for q in procs:
                q.kill()
            raise
        done.append(subprocess.CompletedProcess([sys.executable, "-m", "advisor", *args], p.returncode, out, err))
    return done


def advisor_in_process(*args: str, cwd: Path, env: dict[str, str] | None = None) -> subprocess.CompletedProcess:
    """`advisor ARGS` through the same CLI in this process (typer's CliRunner, in `cwd`), as `advisor` returns it:
    for a test's steps that must succeed (a study tuned or resumed, a report) and are not about the process. As a
    subprocess each paid ~5 s of CPU importing torch and transformers again. Not for refusals: the one-line
    `error:` and exit code 2 come from the console entry point (`advisor.cli.run`), which CliRunner skips."""
    import contextlib

    from typer.testing import CliRunner

    from advisor.cli import app

    with contextlib.chdir(cwd):
        r = CliRunner(env=env).invoke(app, list(args))
    err = r.stderr + ("" if r.exception is None or isinstance(r.exception, SystemExit) else repr(r.exception))
    return subprocess.CompletedProcess(["advisor", *args], r.exit_code, r.stdout, err)


def advisor_entry(*args: str, cwd: Path, env: dict[str, str] | None = None) -> subprocess.CompletedProcess:
    """`advisor ARGS` through the console entry point itself (`advisor.cli.run`, which turns bad input into the
    one `error:` line and exit code 2) in this process, as `advisor` returns it: for a refusal that is not
    about the process (signals, imports, stdout closing and exit statuses past the entry point stay `advisor`).
    A refusal after the model loads paid ~4-5 s of CPU importing torch and transformers again as a subprocess.
    An exception the entry point lets through is shown as Python would, so a test's "no Traceback" still holds."""
    import contextlib
    import traceback

    from typer.testing import CliRunner

    from advisor.cli import run

    code: int | str | None = 0
    with contextlib.chdir(cwd), CliRunner().isolation(env=env) as (out, err, _):
        argv, sys.argv = sys.argv, ["advisor", *args]
        try:
            run()
        except SystemExit as e:
            code = e.code
        except BaseException:  # what the process would die of, on stderr as Python prints it
            traceback.print_exc()
            code = 1
        finally:
            sys.argv = argv
            sys.stdout.flush()
            sys.stderr.flush()
        stdout, stderr = out.getvalue().decode(), err.getvalue().decode()
    if not isinstance(code, int):  # sys.exit("message"): Python prints it and exits 1
        stderr, code = stderr + f"{code}\n" if code is not None else stderr, 1 if code is not None else 0
    return subprocess.CompletedProcess(["advisor", *args], code, stdout, stderr)


def one_error_line(r: subprocess.CompletedProcess, *needles: str) -> str:
    """The single `error:` line (the last line on stderr), holding each of `needles`, after checking exit code 2
    and no traceback or rich error box."""
    everything = r.stdout + r.stderr
    assert r.returncode == 2, everything
    assert "Traceback" not in everything and "╭" not in everything, everything
    errors = [ln for ln in r.stderr.splitlines() if ln.startswith("error:")]
    assert len(errors) == 1 and r.stderr.rstrip().splitlines()[-1] == errors[0], r.stderr
    for n in needles:
        assert n in errors[0], errors[0]
    return errors[0]


def flat(text: str) -> str:
    """`text` on one line, each run of whitespace one space: recommend, pareto, report and export wrap their long
    lines at the terminal's width (80 columns in a test), under their own indent, so a phrase is looked for in
    this (`phrase in flat(r.stderr)`), never in the raw output, where a wrap may fall inside it."""
    return " ".join(text.split())


def said_lines(text: str) -> list[str]:
    """`text`'s lines as printed before wrapping: each line with the indented continuation lines a wrap put under it
    joined on (`flat`), so a test can still take an output's `note:` or `check` lines one by one."""
    out: list[str] = []
    for line in text.splitlines():
        if out and line[:1].isspace() and line.strip():
            out[-1] = flat(f"{out[-1]} {line}")
        else:
            out.append(flat(line) if line.strip() else line)
    return out


def read_note(stream: Any) -> str:
    """A waiting process's wait `note:` from its `stream` (stderr), every line a wrap gave it: read line by line up
    to the words each such note ends with ("Ctrl-C stops the command", PostgreSQL's "..., nothing finished is
    lost"), as the process goes on waiting (reading on would block); "" where the stream ends first. Read here to
    its end: `communicate` later reads the pipe itself, past the lines `readline` holds."""
    text = ""
    while not flat(text).endswith(WAIT_NOTE_ENDS):
        line = stream.readline()
        if not line:
            return ""
        text += line
    return text


WAIT_NOTE_ENDS = ("Ctrl-C stops the command", "Ctrl-C stops the command, nothing finished is lost")
"""How each wait note (`advisor.results.reconnect.say_note`) ends."""
