"""Runs one untrusted program inside the sandbox. Started by `advisor.eval.sandbox` as
``python -I -S -B _sandbox_child.py`` in a throw-away directory; reads its settings as JSON on stdin.

Layers, each independent of the others (so a platform lacking one still has the rest):
1. new network + PID namespaces when the kernel allows (root, or an unprivileged user namespace): no
   network interface but loopback-less isolation, and every process the program starts dies with it;
2. the program runs as an unprivileged user (``nobody``) when started as root, so it cannot touch the
   host's files; resource limits: address space, CPU seconds, file size, open files, process count;
3. a guard in the interpreter: sockets, process creation and file removal raise before they act.
The verdict is a nonce (given on stdin, never on argv or in the environment) written to ``result``
only after ``check(entry_point)`` returned, so a program that exits early cannot pass.
This file must stay stdlib-only: it runs with ``-S`` (no site-packages).
"""

import ctypes
import json
import os
import sys
import traceback

# Modules HumanEval programs import, loaded before privileges are dropped (the interpreter's own
# library directory may not be readable by the unprivileged user).
PRELOAD = (
    "math", "typing", "collections", "itertools", "functools", "re", "string", "heapq", "bisect", "hashlib",
    "random", "statistics", "fractions", "decimal", "operator", "copy", "json", "datetime", "time", "sys",
    "array", "dataclasses", "enum", "numbers", "abc", "textwrap", "unicodedata", "struct", "resource",
    "socket", "subprocess", "shutil", "signal",
)
CLONE_NEWNET = 0x40000000
CLONE_NEWPID = 0x20000000
CLONE_NEWUSER = 0x10000000
NOBODY = 65534


def _unshare(libc) -> str:
    """New network + PID namespaces if the kernel lets us; says which isolation was obtained."""
    if os.geteuid() == 0 and libc.unshare(CLONE_NEWNET | CLONE_NEWPID) == 0:
        return "netns+pidns"
    if os.geteuid() != 0 and libc.unshare(CLONE_NEWUSER | CLONE_NEWNET | CLONE_NEWPID) == 0:
        return "userns+netns+pidns"
    return "none"


def _limits(cfg: dict) -> None:
    import resource

    mem = int(cfg["memory_bytes"])
    cpu = int(cfg["cpu_seconds"])
    for name, value in (
        ("RLIMIT_AS", mem), ("RLIMIT_DATA", mem), ("RLIMIT_CPU", cpu), ("RLIMIT_FSIZE", int(cfg["file_bytes"])),
        ("RLIMIT_NOFILE", 64), ("RLIMIT_CORE", 0), ("RLIMIT_NPROC", int(cfg["max_processes"])),
    ):
        try:
            resource.setrlimit(getattr(resource, name), (value, value))
        except (ValueError, OSError):
            soft, hard = resource.getrlimit(getattr(resource, name))
            if hard == resource.RLIM_INFINITY or value < hard:
                raise
            resource.setrlimit(getattr(resource, name), (min(value, hard), hard))


def _drop_privileges() -> bool:
    if os.geteuid() != 0:
        return False
    os.setgroups([])
    os.setgid(NOBODY)
    os.setuid(NOBODY)
    return True


def _refuse(what: str):
    def refused(*_args, **_kwargs):
        raise PermissionError(f"sandbox: {what} is not allowed")

    return refused


def _guard() -> None:
    """Make the dangerous calls raise (after the kernel-level layers, as a belt to their braces)."""
    import builtins
    import shutil
    import socket
    import subprocess

    for name in ("socket", "create_connection", "create_server", "socketpair", "fromfd", "getaddrinfo"):
        setattr(socket, name, _refuse(f"socket.{name}"))
    for name in (
        "fork", "forkpty", "system", "popen", "execv", "execve", "execvp", "execvpe", "execl", "execle", "execlp",
        "execlpe", "spawnv", "spawnve", "spawnvp", "spawnvpe", "spawnl", "spawnle", "posix_spawn", "posix_spawnp",
        "kill", "killpg", "setsid", "setuid", "remove", "unlink", "rmdir", "removedirs", "rename", "renames",
        "replace", "truncate", "chmod", "chown", "lchown", "putenv", "unsetenv", "chdir", "fchdir",
    ):
        if hasattr(os, name):
            setattr(os, name, _refuse(f"os.{name}"))
    subprocess.Popen = _refuse("subprocess")  # type: ignore[misc]
    for name in ("rmtree", "move", "chown"):
        setattr(shutil, name, _refuse(f"shutil.{name}"))
    builtins.help = _refuse("help")
    sys.modules["ctypes"] = None  # type: ignore[assignment]
    for name in ("_ctypes", "multiprocessing", "_posixsubprocess", "pty", "resource"):
        sys.modules[name] = None  # type: ignore[assignment]


def _run(cfg: dict, nonce: str, result_fd: int) -> int:
    with open("program.py", encoding="utf-8") as fh:
        source = fh.read()
    code = compile(source, "program.py", "exec")
    _guard()
    scope: dict = {"__name__": "__main__", "__builtins__": __builtins__}
    write = os.write
    try:
        exec(code, scope)  # noqa: S102 - the whole point: run the program, contained
        scope["check"](scope[cfg["entry_point"]])
    except BaseException:  # noqa: BLE001 - any failure of the program is a failed test
        traceback.print_exc(limit=5)
        return 1
    write(result_fd, nonce.encode())
    return 0


def main() -> int:
    cfg = json.loads(sys.stdin.readline())
    nonce = cfg.pop("nonce")
    sys.stdin.close()
    for name in PRELOAD:
        __import__(name)
    libc = ctypes.CDLL(None, use_errno=True)
    isolation = _unshare(libc)
    result_fd = os.open("result", os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
    if isolation != "none":
        # The first child is PID 1 of the new namespace: when it ends, the kernel kills every process
        # the program may have started.
        pid = os.fork()
        if pid:
            os.close(result_fd)
            _, status = os.waitpid(pid, 0)
            return os.waitstatus_to_exitcode(status) if os.WIFEXITED(status) else 1
    _limits(cfg)
    dropped = _drop_privileges()
    sys.stderr.write(json.dumps({"isolation": isolation, "unprivileged": dropped}) + "\n")
    sys.stderr.flush()
    code = _run(cfg, nonce, result_fd)
    sys.stdout.flush()
    sys.stderr.flush()
    os._exit(code)


if __name__ == "__main__":
    sys.exit(main())
