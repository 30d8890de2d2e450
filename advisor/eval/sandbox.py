"""Execute untrusted generated code in a contained child process (used by the HumanEval evaluator).

The child (`_sandbox_child.py`) gets a fresh temporary directory, runs with time, memory, file-size,
open-file and process limits, in new network and PID namespaces where the kernel allows, as an
unprivileged user when started as root, and with sockets / process creation / file removal refused in
the interpreter. The parent enforces a wall-clock limit and kills the whole process group on expiry.
Every outcome other than "the tests ran to the end" is a failure.
"""

from __future__ import annotations

import json
import os
import secrets
import signal
import subprocess
import sys
import tempfile
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from pathlib import Path

CHILD = Path(__file__).with_name("_sandbox_child.py")
NOBODY = 65534


@dataclass(frozen=True)
class Limits:
    """Resource limits of one run. Defaults fit HumanEval (tests run in milliseconds)."""

    timeout_s: float = 10.0
    memory_bytes: int = 1 << 30
    cpu_seconds: int = 10
    file_bytes: int = 1 << 20
    max_processes: int = 64


@dataclass(frozen=True)
class ExecResult:
    """Outcome of one program: status is "passed", "failed", "timeout" or "error" (sandbox trouble)."""

    status: str
    detail: str = ""
    isolation: str = ""

    @property
    def passed(self) -> bool:
        return self.status == "passed"


def run_program(program: str, entry_point: str, limits: Limits = Limits()) -> ExecResult:
    """Run `program` (which must define `check` and `entry_point`) and call ``check(entry_point)``."""
    nonce = secrets.token_hex(16)
    with tempfile.TemporaryDirectory(prefix="advisor-exec-") as tmp:
        work = Path(tmp)
        (work / "program.py").write_text(program, encoding="utf-8")
        if os.geteuid() == 0:  # the program will run as nobody: give it its scratch directory
            os.chown(work, NOBODY, NOBODY)
            os.chmod(work, 0o700)
        cfg = {
            "nonce": nonce, "entry_point": entry_point, "memory_bytes": limits.memory_bytes,
            "cpu_seconds": limits.cpu_seconds, "file_bytes": limits.file_bytes,
            "max_processes": limits.max_processes,
        }
        env = {"PATH": "/usr/bin:/bin", "LANG": "C.UTF-8", "PYTHONHASHSEED": "0", "PYTHONDONTWRITEBYTECODE": "1"}
        with open(work / "stdout", "wb") as out, open(work / "stderr", "wb") as err:
            proc = subprocess.Popen(
                [sys.executable, "-I", "-S", "-B", str(CHILD)],
                cwd=work, stdin=subprocess.PIPE, stdout=out, stderr=err, env=env, start_new_session=True,
                close_fds=True,
            )
            status = ""
            try:
                proc.stdin.write((json.dumps(cfg) + "\n").encode())  # type: ignore[union-attr]
                proc.stdin.close()  # type: ignore[union-attr]
            except BrokenPipeError:
                pass
            try:
                proc.wait(timeout=limits.timeout_s)
            except subprocess.TimeoutExpired:
                status = "timeout"
            finally:
                _kill_group(proc)
        stderr = _tail(work / "stderr")
        # The child's isolation line is the first line of stderr: read it from the head, since a noisy
        # program (a fork bomb's tracebacks) can push it out of the tail.
        isolation = _isolation(_head(work / "stderr"))
        if status == "timeout":
            return ExecResult("timeout", f"killed after {limits.timeout_s:g} s", isolation)
        passed = proc.returncode == 0 and _read(work / "result") == nonce
        if passed:
            return ExecResult("passed", "", isolation)
        if not isolation:
            return ExecResult("error", f"sandbox did not start (exit {proc.returncode}): {stderr[-300:]}")
        return ExecResult("failed", stderr[-500:], isolation)


def run_many(
    jobs: list[tuple[str, str]], limits: Limits = Limits(), workers: int | None = None
) -> list[ExecResult]:
    """Run (program, entry_point) jobs concurrently (threads only wait on child processes)."""
    workers = workers or max(1, min(8, os.cpu_count() or 1))
    with ThreadPoolExecutor(max_workers=workers) as pool:
        return list(pool.map(lambda job: run_program(job[0], job[1], limits), jobs))


def _kill_group(proc: subprocess.Popen) -> None:
    """Kill everything left in the child's process group (the child is its leader: start_new_session)."""
    try:
        os.killpg(proc.pid, signal.SIGKILL)
    except (ProcessLookupError, PermissionError):
        pass
    proc.wait()


def _read(path: Path) -> str:
    try:
        return path.read_text(errors="replace")
    except OSError:
        return ""


def _tail(path: Path, limit: int = 4000) -> str:
    try:
        with open(path, "rb") as fh:
            fh.seek(0, os.SEEK_END)
            size = fh.tell()
            fh.seek(max(0, size - limit))
            return fh.read().decode(errors="replace")
    except OSError:
        return ""


def _head(path: Path, limit: int = 4000) -> str:
    try:
        with open(path, "rb") as fh:
            return fh.read(limit).decode(errors="replace")
    except OSError:
        return ""


def _isolation(stderr: str) -> str:
    """The isolation line the child prints once it is contained ("" if it never got that far)."""
    for line in stderr.splitlines():
        if line.startswith('{"isolation"'):
            try:
                info = json.loads(line)
            except json.JSONDecodeError:
                continue
            return f"{info['isolation']},{'nobody' if info['unprivileged'] else 'same-user'}"
    return ""
