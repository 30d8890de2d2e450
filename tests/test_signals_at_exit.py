"""Ctrl-C or SIGTERM once a command has finished - its output written, its exit status chosen - while Python shuts
down (a second or two with torch loaded: atexit, threads, module and C++ teardown) leaves that status as it is. It
ended the process by the signal (exit -2 or -15 to its parent, no line) or printed a KeyboardInterrupt traceback."""

from __future__ import annotations

import signal
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
EXAMPLE = str(ROOT / "studies" / "example" / "advisor.db")

# a real signal to the process at one moment of its exit, after `advisor` (its entry point, as `python -m advisor`
# runs it) has returned
_SIGNAL_AT_EXIT = """
import atexit, os, runpy, signal, sys, threading
sig, where = int(sys.argv[1]), sys.argv[2]

def send():
    os.kill(os.getpid(), sig)

class SendWhenCollected:  # held by a module: collected as Python tears its modules down, after it has put the
    def __del__(self):    # signals' default actions back (the window where torch's teardown runs)
        send()

if where == "teardown":
    holder = type(sys)("advisor_test_holder")
    holder.obj = SendWhenCollected()
    sys.modules[holder.__name__] = holder
elif where == "atexit":
    atexit.register(send)  # registered first: runs last
sys.argv = ["advisor", *sys.argv[3:]]
try:
    runpy.run_module("advisor", run_name="__main__", alter_sys=True)
finally:
    if where == "returned":  # the entry point has returned: its exit status is on its way out
        send()
    elif where == "thread":  # a thread Python joins at exit sends it
        threading.Thread(target=send).start()
"""


@pytest.mark.parametrize(("sig", "where", "args", "code"), [
    (signal.SIGINT, "returned", ["studies", "--storage", EXAMPLE], 0),
    (signal.SIGTERM, "returned", ["studies", "--storage", EXAMPLE], 0),
    (signal.SIGINT, "thread", ["studies", "--storage", EXAMPLE], 0),
    (signal.SIGINT, "atexit", ["studies", "--storage", EXAMPLE], 0),
    (signal.SIGTERM, "atexit", ["studies", "--storage", EXAMPLE], 0),
    (signal.SIGINT, "teardown", ["studies", "--storage", EXAMPLE], 0),
    (signal.SIGTERM, "teardown", ["pareto", "no-such-study", "--storage", EXAMPLE], 2),  # a refusal keeps its 2
])
def test_a_signal_once_the_command_has_finished_leaves_its_exit_status(tmp_path, sig, where, args, code):
    r = subprocess.run([sys.executable, "-c", _SIGNAL_AT_EXIT, str(int(sig)), where, *args], cwd=tmp_path,
                       capture_output=True, text=True, timeout=120,
                       preexec_fn=lambda: signal.signal(signal.SIGINT, signal.SIG_DFL))
    assert r.returncode == code, (r.returncode, r.stderr)
    assert "Traceback" not in r.stderr and "KeyboardInterrupt" not in r.stderr and "interrupted" not in r.stderr, \
        r.stderr
    if code == 0:
        assert "bundled-example" in r.stdout, r.stdout
    else:
        assert r.stderr.startswith("error: ") and len(r.stderr.splitlines()) == 1, r.stderr
