"""Execute untrusted generated code against trusted tests, in two contained child processes.

The *runner* executes the untrusted code and answers call requests with the entry point's return values
as plain data; the *judge* runs the tests (``check(candidate)``) against a proxy that asks the runner, and
alone reports the verdict, on a pipe only this process holds. The completion never runs where the
comparison is made, so it cannot forge a pass (a lying ``__eq__``, a frame walk to a token, module-level
code). Both children (`_sandbox_child.py`) run in private mount, network, PID and IPC namespaces (a
read-only root with only the system and Python libraries, a throw-away writable tmpfs), without
privileges, with time, memory, file-size, open-file and process limits. This process enforces a
wall-clock limit and kills both process groups at the end. Every outcome other than "the tests ran to
the end" is a failure.
"""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import tempfile
import threading
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
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
    """Outcome of one run: status is "passed", "failed", "timeout" or "error" (sandbox trouble).
    `isolation` is the runner's isolation line (namespaces, user, and the fallback when namespaces were refused)."""

    status: str
    detail: str = ""
    isolation: str = ""

    @property
    def passed(self) -> bool:
        return self.status == "passed"


@dataclass
class _Batch:
    """The children a `run_many` call has running, so that an interrupt (Ctrl-C) kills them at once."""

    live: set[subprocess.Popen] = field(default_factory=set)
    lock: threading.Lock = field(default_factory=threading.Lock)
    stopped: bool = False

    def add(self, proc: subprocess.Popen) -> None:
        """Track a started child; one started after `stop` is killed at once."""
        with self.lock:
            self.live.add(proc)
            if self.stopped:
                _signal_group(proc)

    def discard(self, proc: subprocess.Popen) -> None:
        """Stop tracking a child its own thread is about to kill and reap."""
        with self.lock:
            self.live.discard(proc)

    def stop(self) -> None:
        """Kill every child running now and any started later."""
        with self.lock:
            self.stopped = True
            for proc in self.live:
                if proc.returncode is None:  # not reaped: its pid is still its own
                    _signal_group(proc)


def run_tests(code: str, test: str, entry_point: str, limits: Limits = Limits(), helpers: str = "",
              batch: _Batch | None = None) -> ExecResult:
    """Run ``check(candidate)`` from `test` (with `helpers`, e.g. the problem's prompt, defined beside it)
    where `candidate` calls `entry_point` of the untrusted `code`, executed in another process."""
    batch = batch or _Batch()
    with tempfile.TemporaryDirectory(prefix="advisor-exec-") as tmp:
        work = Path(tmp)
        req_r, req_w = os.pipe()
        resp_r, resp_w = os.pipe()
        verdict_r, verdict_w = os.pipe()
        common = {
            "entry_point": entry_point, "memory_bytes": limits.memory_bytes, "cpu_seconds": limits.cpu_seconds,
            "file_bytes": limits.file_bytes, "max_processes": limits.max_processes,
            "tmp_bytes": max(limits.file_bytes * 4, 1 << 20),
        }
        procs: list[subprocess.Popen] = []
        try:
            procs.append(_start(work / "run", {**common, "role": "run", "code": code, "fds": [req_r, resp_w]}))
            batch.add(procs[-1])
            procs.append(_start(
                work / "judge",
                {**common, "role": "judge", "test": test, "helpers": helpers, "fds": [req_w, resp_r, verdict_w]},
            ))
            batch.add(procs[-1])
        finally:
            for fd in (req_r, resp_w, req_w, resp_r, verdict_w):
                os.close(fd)
            timed_out = _wait(procs, limits.timeout_s)
            for proc in procs:
                batch.discard(proc)
                _kill_group(proc)
            verdict = _read_fd(verdict_r)
            os.close(verdict_r)
        run_err, judge_err = _tail(work / "run" / "stderr"), _tail(work / "judge" / "stderr")
        # The isolation line is the first line of stderr: read it from the head, since a noisy
        # program (a fork bomb's tracebacks) can push it out of the tail.
        isolation = _isolation(_head(work / "run" / "stderr"))
        if timed_out:
            return ExecResult("timeout", f"killed after {limits.timeout_s:g} s", isolation)
        if procs[-1].returncode == 0 and verdict == {"verdict": "passed"}:
            return ExecResult("passed", "", isolation)
        if not isolation or not _isolation(_head(work / "judge" / "stderr")):
            return ExecResult("error", f"sandbox did not start: {(run_err + judge_err)[-300:]}", isolation)
        return ExecResult("failed", (judge_err[-400:] + "\n" + run_err[-200:]).strip(), isolation)


def _start(cwd: Path, cfg: dict) -> subprocess.Popen:
    """One child in its own session, its settings on stdin (never on argv or in the environment)."""
    cwd.mkdir()
    (cwd / "root").mkdir()  # the mount point of its private root
    cfg["new_root"] = str(cwd / "root")
    if os.geteuid() == 0:  # without a mount namespace it runs as nobody in this directory
        try:
            os.chown(cwd, NOBODY, NOBODY)
            os.chmod(cwd, 0o700)
        except OSError:  # root of a user namespace that does not map nobody: the child keeps this user
            pass
    env = {"PATH": "/usr/bin:/bin", "LANG": "C.UTF-8", "PYTHONHASHSEED": "0", "PYTHONDONTWRITEBYTECODE": "1"}
    with open(cwd / "stderr", "wb") as err:  # stdout is read by no one: a program's prints are dropped
        proc = subprocess.Popen(
            [sys.executable, "-I", "-S", "-B", str(CHILD)], cwd=cwd, stdin=subprocess.PIPE, stdout=subprocess.DEVNULL,
            stderr=err, env=env, start_new_session=True, close_fds=True, pass_fds=tuple(cfg["fds"]),
        )
    try:
        proc.stdin.write((json.dumps(cfg) + "\n").encode())  # type: ignore[union-attr]
        proc.stdin.close()  # type: ignore[union-attr]
    except BrokenPipeError:
        pass
    return proc


def _wait(procs: list[subprocess.Popen], timeout_s: float) -> bool:
    """Wait for the judge (the last one) to finish; True if the wall-clock limit ran out first."""
    if len(procs) < 2:
        return False
    try:
        procs[-1].wait(timeout=timeout_s)
        return False
    except subprocess.TimeoutExpired:
        return True


def _read_fd(fd: int, limit: int = 256):
    """The judge's verdict message (its write end is closed by now), or None."""
    os.set_blocking(fd, False)
    try:
        data = os.read(fd, limit)
        return json.loads(data) if data else None
    except (OSError, ValueError):
        return None


def run_many(jobs: list[dict], limits: Limits = Limits(), workers: int | None = None) -> list[ExecResult]:
    """Run many `run_tests` jobs (keyword dicts) concurrently (threads only wait on child processes)."""
    workers = workers or max(2, min(8, 2 * (os.cpu_count() or 1)))
    batch = _Batch()
    pool = ThreadPoolExecutor(max_workers=workers)
    try:
        return list(pool.map(lambda job: run_tests(**job, limits=limits, batch=batch), jobs))
    except BaseException:  # Ctrl-C: no job waits out its time limit, none is left running, none starts
        pool.shutdown(wait=False, cancel_futures=True)
        batch.stop()
        raise
    finally:
        pool.shutdown(wait=True)


def _kill_group(proc: subprocess.Popen) -> None:
    """Kill everything left in the child's process group (the child is its leader: start_new_session)."""
    _signal_group(proc)
    proc.wait()


def _signal_group(proc: subprocess.Popen) -> None:
    """SIGKILL the child's process group, without waiting for it."""
    try:
        os.killpg(proc.pid, signal.SIGKILL)
    except (ProcessLookupError, PermissionError):
        pass


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
            text = f"{info['isolation']},{info['user']}"
            return text + (f" ({info['fallback']})" if info.get("fallback") else "")
    return ""
