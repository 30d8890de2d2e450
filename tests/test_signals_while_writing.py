"""Ctrl-C or SIGTERM at a chosen moment of a command's writing of its output (a real signal, sent by the process to
itself when the write reaches that step): one line, exit 130, and no file or temporary left behind."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
EXAMPLE = str(ROOT / "studies" / "example" / "advisor.db")
LINE = "error: interrupted; nothing is half-written - run the same command again"

# the signal, to this process, just after the first call of FUNC whose arguments name MATCH returns; then
# `python -m advisor ARGS`
_SIGNAL_AFTER_A_CALL = """
import os, runpy, sys, tempfile
sig, name, match = int(sys.argv[1]), sys.argv[2], sys.argv[3]
real = getattr(tempfile, name)

def signalled(*args, **kwargs):
    result = real(*args, **kwargs)
    if match in repr((args, kwargs)):
        setattr(tempfile, name, real)
        os.kill(os.getpid(), sig)
    return result

setattr(tempfile, name, signalled)
sys.argv = ["advisor", *sys.argv[4:]]
runpy.run_module("advisor", run_name="__main__", alter_sys=True)
"""


def signalled_after(tmp_path: Path, sig: int, name: str, match: str, *args: str) -> subprocess.CompletedProcess:
    """`advisor ARGS` in `tmp_path`, sent `sig` just after `tempfile.<name>` first made a file named as `match`."""
    return subprocess.run([sys.executable, "-c", _SIGNAL_AFTER_A_CALL, str(int(sig)), name, match, *args],
                          cwd=tmp_path, capture_output=True, text=True, timeout=300,
                          env={**os.environ, "PYTHONPATH": str(ROOT)},
                          preexec_fn=lambda: signal.signal(signal.SIGINT, signal.SIG_DFL))


def interrupted(r: subprocess.CompletedProcess) -> None:
    assert r.returncode == 130, (r.returncode, r.stderr)
    assert r.stderr.splitlines()[-1:] == [LINE], r.stderr  # after a report's progress lines
    assert "Traceback" not in r.stderr and "Exception ignored" not in r.stderr, r.stderr


@pytest.mark.parametrize("sig", [signal.SIGINT, signal.SIGTERM])
def test_a_signal_as_the_temporary_file_is_made_leaves_no_temporary(tmp_path, sig):
    """A signal just after `atomic_path` had made its temporary file (`.out.json.XXXXXXXX.tmp`), before the block
    that removes it on failure, left it behind, beside an unchanged earlier output."""
    (tmp_path / "out.json").write_text("earlier\n")
    r = signalled_after(tmp_path, sig, "mkstemp", ".out.json.",
                     "export", "--from-recommend", "--storage", EXAMPLE, "--to", "json", "-o", "out.json")
    interrupted(r)
    assert sorted(p.name for p in tmp_path.iterdir()) == ["out.json"]
    assert (tmp_path / "out.json").read_text() == "earlier\n"


@pytest.mark.parametrize("sig", [signal.SIGINT, signal.SIGTERM])
def test_a_signal_while_the_output_folder_is_probed_leaves_no_probe(tmp_path, sig):
    """`report -o` tries the folder it will create with an empty one (`.rep.probe-XXXXXXXX`, made and removed at
    once); a signal between the two left it behind for good: no later run removes a folder so named."""
    r = signalled_after(tmp_path, sig, "mkdtemp", ".rep.probe-",
                     "report", "bundled-example", "--storage", EXAMPLE, "-o", "rep")
    interrupted(r)
    assert list(tmp_path.iterdir()) == []


def test_a_signal_as_the_reports_temporary_folder_is_made_leaves_no_folder(tmp_path):
    """A signal just after `atomic_dir` had made the folder the report is written in (`.rep-XXXXXXXX`), before the
    block that removes it on failure, left it behind until the next report to the same -o."""
    r = signalled_after(tmp_path, signal.SIGTERM, "mkdtemp", ".rep-",
                     "report", "bundled-example", "--storage", EXAMPLE, "-o", "rep")
    interrupted(r)
    assert list(tmp_path.iterdir()) == []
