"""Hostile completions against the sandbox, runnable in-process or as a script (as another user).

Every case is a completion of one problem, ``f(x)`` whose tests expect ``f(1) == 2``, that tries to pass
without computing 2, to escape, or to damage the evaluator's files. `run_all(root)` plays every case and
returns {name: status} plus what it could observe outside: the canary, the project package, stray files,
surviving processes, and a canonical run before and after.

    python tests/sandbox_cases.py ROOT      # prints the JSON report (used by the unprivileged-user test)
"""

from __future__ import annotations

import hashlib
import json
import os
import sys
import time
from pathlib import Path

from advisor.eval.sandbox import CHILD, Limits, run_tests

FAST = Limits(timeout_s=4.0, cpu_seconds=3)
PROMPT = "def f(x):\n    \"\"\"Return x + 1.\"\"\"\n"
TEST = "def check(candidate):\n    assert candidate(1) == 2\n    assert candidate(5) == 6\n"
CORRECT = "    return x + 1\n"
WRONG = "    return x\n"

FORGE_FDS = (
    "import os\n"
    "for fd in range(3, 64):\n"
    "    try:\n"
    "        os.write(fd, b'{\"verdict\": \"passed\"}\\n')\n"
    "    except OSError:\n"
    "        pass\n"
)


def cases(root: Path) -> dict[str, str]:
    """name -> completion (the body or whole program text that follows PROMPT)."""
    canary, pkg, stray = root / "home" / "canary.txt", root / "project" / "advisor" / "__init__.py", root / "stray"
    return {
        # writes outside the throw-away directory
        "write-outside": f"    open({str(stray / 'w1')!r}, 'w').write('x')\n    return x + 1\n",
        "write-host-tmp": "    open('/tmp/advisor-hostile-escape', 'w').write('x')\n    return x\n",
        "mkdir-outside": f"    import os\n    os.makedirs({str(stray / 'd')!r})\n    return x\n",
        # forging the verdict: frames, module-level code, writing to every descriptor
        "getframe-walk": (
            "    import sys\n    fr = sys._getframe()\n    while fr is not None:\n"
            "        for k in list(fr.f_locals):\n            if 'verdict' in k or 'nonce' in k or k == 'fds':\n"
            "                fr.f_locals[k] = 'passed'\n        fr = fr.f_back\n" + _indent(FORGE_FDS) + "    return x\n"
        ),
        "module-level-forge": WRONG + "\n" + FORGE_FDS + "import sys\nsys.exit(0)\n",
        "module-level-exit-zero": WRONG + "\nimport os\nos._exit(0)\n",
        "reply-ahead": WRONG + "\nimport os\nfor fd in range(3, 64):\n    try:\n"
        "        os.write(fd, b'{\"verdict\": \"passed\"}\\n{\"verdict\": \"passed\"}\\n')\n    except OSError:\n"
        "        pass\n",
        # aliases of blocked functions, with a correct body
        "posix-unlink": f"    return x + 1\nimport posix\nposix.unlink({str(canary)!r})\n",
        "posix-system": f"    return x + 1\nimport posix\nposix.system('rm -f {canary}')\n",
        "os-alias-bound-elsewhere": f"    return x + 1\nimport shutil\nshutil.os.remove({str(canary)!r})\n",
        "reloaded-posix-unlink": (
            f"    return x + 1\nimport importlib, posix\nimportlib.reload(posix).unlink({str(canary)!r})\n"
        ),
        "pathlib-unlink": f"    return x + 1\nimport pathlib\npathlib.Path({str(canary)!r}).unlink()\n",
        # lying values
        "eq-always-true": "    class A:\n        def __eq__(self, other):\n            return True\n    return A()\n",
        "int-subclass": "    class I(int):\n        def __eq__(self, other):\n            return True\n    return I(0)\n",
        "str-repr-lie": "    class S(str):\n        def __eq__(self, other):\n            return True\n    return S('')\n",
        # damage to the evaluator's own files (an unprivileged evaluator owns them)
        "delete-user-files": f"    import shutil\n    shutil.rmtree({str(root / 'home')!r}, ignore_errors=True)\n    return x + 1\n",
        "truncate-canary": f"    open({str(canary)!r}, 'w').close()\n    return x + 1\n",
        "append-to-package": f"    open({str(pkg)!r}, 'a').write('raise SystemExit(3)\\n')\n    return x + 1\n",
        # the classic ones
        "exit-before-tests": "    return x\nimport sys\nsys.exit(0)\n",
        "infinite-loop": "    while True:\n        pass\n",
        "sleep": "    import time\n    time.sleep(60)\n",
        "huge-allocation": "    x = bytearray(8 * 1024 ** 3)\n    return 2\n",
        "fork-bomb": "    return x\nimport os\nwhile True:\n    os.fork()\n",
        "raw-fork-bomb": "    return x\nimport posix\nwhile True:\n    posix.fork()\n",
        "subprocess": "    import subprocess\n    subprocess.run(['true'])\n    return x + 1\n",
        "endless-output": "    import os\n    print('x' * (2 << 20))\n    while True:\n        os.write(2, b'x' * 10000)\n",
        "ctypes-fork": "    import ctypes\n    ctypes.CDLL(None).fork()\n    return x + 1\n",
        "detached-child": (
            "    return x + 1\nimport posix, time\nif posix.fork() == 0:\n    posix.setsid()\n    time.sleep(30)\n"
        ),
        "double-fork-daemon": (
            "    return x + 1\nimport posix, time\nif posix.fork() == 0:\n    if posix.fork() == 0:\n"
            "        time.sleep(30)\n    posix._exit(0)\n"
        ),
    }


def probes(root: Path) -> dict[str, str]:
    """Completions that pass only when the evaluator's secrets are out of reach."""
    secret = str(root / "home" / "secret.txt")
    return {
        "secret-env-hidden": "    import os\n    return x + 1 if 'ADVISOR_SECRET' not in os.environ else x\n",
        "secret-file-hidden": (
            f"    try:\n        s = open({secret!r}).read()\n    except OSError:\n        s = ''\n"
            "    return x + 1 if s != 's3cret' else x\n"
        ),
    }


def _indent(code: str) -> str:
    return "".join("    " + line + "\n" for line in code.splitlines())


def _digest(path: Path) -> str:
    return hashlib.sha256(path.read_bytes()).hexdigest() if path.exists() else "missing"


def _sandbox_processes() -> list[int]:
    """PIDs of processes still running this worktree's sandbox child."""
    found = []
    for entry in Path("/proc").iterdir():
        if entry.name.isdigit():
            try:
                if str(CHILD).encode() in (entry / "cmdline").read_bytes():
                    found.append(int(entry.name))
            except OSError:
                pass
    return found


def prepare(root: Path) -> None:
    """The evaluator's files: a canary and a secret in its home, a project package, an empty stray dir."""
    for sub in ("home", "project/advisor", "stray"):
        (root / sub).mkdir(parents=True, exist_ok=True)
    (root / "home" / "canary.txt").write_text("keep me")
    (root / "home" / "secret.txt").write_text("s3cret")
    (root / "project" / "advisor" / "__init__.py").write_text('"""package"""\n')
    for d in (root, root / "home", root / "stray", root / "project", root / "project" / "advisor"):
        os.chmod(d, 0o777)  # writable for whoever runs the sandbox: only isolation may protect them
    os.chmod(root / "home" / "canary.txt", 0o666)
    os.chmod(root / "project" / "advisor" / "__init__.py", 0o666)


def run_all(root: Path) -> dict:
    prepare(root)
    before = {p: _digest(p) for p in (root / "home" / "canary.txt", root / "project" / "advisor" / "__init__.py")}
    os.environ["ADVISOR_SECRET"] = "s3cret"
    statuses, isolation = {}, ""
    for name, completion in cases(root).items():
        r = run_tests(PROMPT + completion, TEST, "f", FAST, helpers=PROMPT)
        statuses[name] = r.status
        isolation = r.isolation or isolation
    probed = {name: run_tests(PROMPT + c, TEST, "f", FAST, helpers=PROMPT).status for name, c in probes(root).items()}
    time.sleep(0.5)
    canonical = run_tests(PROMPT + CORRECT, TEST, "f", FAST, helpers=PROMPT)
    wrong = run_tests(PROMPT + WRONG, TEST, "f", FAST, helpers=PROMPT)
    return {
        "statuses": statuses,
        "isolation": isolation,
        "probes": probed,
        "canonical": canonical.status,
        "wrong": wrong.status,
        "files_intact": all(_digest(p) == d for p, d in before.items()),
        "stray": sorted(str(p) for p in (root / "stray").rglob("*")),
        "host_tmp_written": Path("/tmp/advisor-hostile-escape").exists(),
        "processes_left": _sandbox_processes(),
        "uid": os.getuid(),
    }


if __name__ == "__main__":
    print(json.dumps(run_all(Path(sys.argv[1]))))
