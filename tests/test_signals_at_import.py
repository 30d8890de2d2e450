"""Ctrl-C or SIGTERM while a command imports torch and transformers (seconds) is held until they have
imported, then the one line, exit 130: the commands go through `advisor.tune.interrupt.import_runtime`, as
`tune` does. A KeyboardInterrupt inside those imports turned, about 1 run in 5 (a sweep of real SIGINTs over
`inspect`'s first 3.5 s), into an ImportError traceback ("cannot load module more than once per process"),
a pybind11 abort, or an exit by SIGINT (-2) after the line."""

from __future__ import annotations

import signal
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
LINE = "error: interrupted; nothing is half-written - run the same command again"

_SIGNAL_AT_TORCH = """
import builtins, os, runpy, sys
sig, real = int(sys.argv[1]), builtins.__import__

def signal_at_torch(name, *args, **kwargs):  # a real signal, the moment the command starts importing torch
    if name == "torch":
        builtins.__import__ = real
        os.kill(os.getpid(), sig)
    return real(name, *args, **kwargs)

def exit_saying(code, real_exit=os._exit):  # the entry point leaves an interrupted command with os._exit
    print("runtime imported:", "transformers.modeling_utils" in sys.modules, flush=True)
    real_exit(code)

os._exit = exit_saying
sys.argv = ["advisor", *sys.argv[2:]]
builtins.__import__ = signal_at_torch
runpy.run_module("advisor", run_name="__main__")
"""

EXAMPLE = str(ROOT / "studies" / "example" / "advisor.db")


@pytest.mark.parametrize(("sig", "args"), [
    (signal.SIGINT, ["inspect", "bundled"]),
    (signal.SIGTERM, ["eval", "bundled", "--task", "toy", "--limit", "2"]),
    (signal.SIGINT, ["trace", "bundled", "-o", "t.npz"]),
    (signal.SIGTERM, ["report", "bundled-example", "--storage", EXAMPLE, "-o", "rep"]),
    (signal.SIGINT, ["quant-report", "bundled"]),
    (signal.SIGTERM, ["profile", "--cpu", "--model", "bundled", "--profiles-dir", "pp"]),
])
def test_a_signal_while_a_command_imports_torch_waits_for_the_import_then_is_one_line(tmp_path, sig, args):
    r = subprocess.run([sys.executable, "-c", _SIGNAL_AT_TORCH, str(int(sig)), *args], cwd=tmp_path,
                       capture_output=True, text=True, timeout=300,
                       preexec_fn=lambda: signal.signal(signal.SIGINT, signal.SIG_DFL))
    assert r.returncode == 130 and "Traceback" not in r.stderr, r.stderr
    assert r.stderr.rstrip().splitlines()[-1] == LINE, r.stderr
    assert r.stdout.splitlines() == ["runtime imported: True"], r.stdout  # the signal did not land inside it
    assert list(tmp_path.iterdir()) == []
