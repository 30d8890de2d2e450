"""Ctrl-C or SIGTERM at a chosen moment of a command's writing of its output (a real signal, sent by the process to
itself when the write reaches that step): one line, exit 130, and no file or temporary left behind."""

from __future__ import annotations

import signal
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
EXAMPLE = str(ROOT / "studies" / "example" / "advisor.db")
LINE = "error: interrupted; nothing is half-written - run the same command again"

# the signal, to this process, just after (or before) the N-th call of FUNC, then `python -m advisor ARGS`
_SIGNAL_AT_A_CALL = """
import os, runpy, shutil, sys, tempfile
sig, owner, name, when, n = int(sys.argv[1]), sys.argv[2], sys.argv[3], sys.argv[4], int(sys.argv[5])
owner = {"tempfile": tempfile, "os": os, "shutil": shutil}[owner]
real, calls = getattr(owner, name), []

def signalled(*args, **kwargs):
    calls.append(1)
    if len(calls) == n and when == "before":
        os.kill(os.getpid(), sig)
    result = real(*args, **kwargs)
    if len(calls) == n and when == "after":
        os.kill(os.getpid(), sig)
    return result

setattr(owner, name, signalled)
sys.argv = ["advisor", *sys.argv[6:]]
runpy.run_module("advisor", run_name="__main__", alter_sys=True)
"""


def signalled_at(tmp_path: Path, sig: int, call: str, when: str, n: int, *args: str) -> subprocess.CompletedProcess:
    owner, name = call.split(".")
    return subprocess.run([sys.executable, "-c", _SIGNAL_AT_A_CALL, str(int(sig)), owner, name, when, str(n), *args],
                          cwd=tmp_path, capture_output=True, text=True, timeout=120,
                          env={"PYTHONPATH": str(ROOT), "PATH": "/usr/bin:/bin", "HOME": str(tmp_path)},
                          preexec_fn=lambda: signal.signal(signal.SIGINT, signal.SIG_DFL))


def interrupted(r: subprocess.CompletedProcess) -> None:
    assert r.returncode == 130, (r.returncode, r.stderr)
    assert r.stderr.splitlines() == [LINE], r.stderr


@pytest.mark.parametrize("sig", [signal.SIGINT, signal.SIGTERM])
def test_a_signal_as_the_temporary_file_is_made_leaves_no_temporary(tmp_path, sig):
    """A signal just after `atomic_path` had made its temporary file (`.out.json.XXXXXXXX.tmp`), before the block
    that removes it on failure, left it behind, beside an unchanged earlier output."""
    (tmp_path / "out.json").write_text("earlier\n")
    r = signalled_at(tmp_path, sig, "tempfile.mkstemp", "after", 1,
                     "export", "--from-recommend", "--storage", EXAMPLE, "--to", "json", "-o", "out.json")
    interrupted(r)
    assert sorted(p.name for p in tmp_path.iterdir()) == ["out.json"]
    assert (tmp_path / "out.json").read_text() == "earlier\n"


@pytest.mark.parametrize("sig", [signal.SIGINT, signal.SIGTERM])
def test_a_signal_while_the_output_folder_is_probed_leaves_no_probe(tmp_path, sig):
    """`report -o` tries the folder it will create with an empty one (`.rep.probe-XXXXXXXX`, made and removed at
    once); a signal between the two left it behind for good: no later run removes a folder so named."""
    r = signalled_at(tmp_path, sig, "tempfile.mkdtemp", "after", 1,
                     "report", "bundled-example", "--storage", EXAMPLE, "-o", "rep")
    interrupted(r)
    assert list(tmp_path.iterdir()) == []
