"""HumanEval: every canonical solution passes, altered ones fail, hostile programs are contained."""

from __future__ import annotations

import os
import socket
import threading
import time

import pytest

from advisor.eval import humaneval
from advisor.eval.sandbox import Limits, run_program

PROBLEMS = humaneval.load_problems()
FAST = Limits(timeout_s=3.0, cpu_seconds=3)


def test_all_164_problems_load_in_order():
    assert len(PROBLEMS) == 164
    assert PROBLEMS[0]["task_id"] == "HumanEval/0" and PROBLEMS[-1]["task_id"] == "HumanEval/163"


@pytest.mark.timeout(180)
def test_every_canonical_solution_passes():
    results = humaneval.check_many(PROBLEMS, [p["canonical_solution"] for p in PROBLEMS], workers=4)
    failed = [(p["task_id"], r.status, r.detail[-200:]) for p, r in zip(PROBLEMS, results, strict=True) if not r.passed]
    assert failed == []
    assert humaneval.pass_at_1(results) == 1.0


def _altered(problem: dict) -> str:
    """A wrong but valid body: only executing the tests can tell."""
    return "    return None\n"


@pytest.mark.timeout(120)
def test_altered_solutions_fail():
    sample = PROBLEMS[::4]  # a fixed, deterministic sample of 41 problems
    results = humaneval.check_many(sample, [_altered(p) for p in sample], workers=4)
    assert [p["task_id"] for p, r in zip(sample, results, strict=True) if r.passed] == []
    assert all(r.status == "failed" for r in results)


def test_an_off_by_one_solution_fails_while_the_canonical_one_passes():
    problem = next(p for p in PROBLEMS if p["entry_point"] == "add")  # HumanEval/53: add(x, y)
    assert humaneval.check_completion(problem, problem["canonical_solution"]).passed
    assert not humaneval.check_completion(problem, "    return x + y + 1\n").passed


def test_clean_completion_variants():
    p = next(p for p in PROBLEMS if p["entry_point"] == "add")
    body = "    return x + y\n"
    assert humaneval.clean_completion(body + "\ndef other():\n    pass\n", p) == body
    assert humaneval.clean_completion(body + "\nprint(add(1, 2))\n", p) == body
    assert humaneval.clean_completion("return x + y", p) == "    return x + y"  # unindented body
    fenced = "```python\ndef add(x: int, y: int):\n    return x + y\n```\nExplanation"
    assert humaneval.check_completion(p, humaneval.clean_completion(fenced, p)).passed
    assert humaneval.check_completion(p, humaneval.clean_completion(p["prompt"] + body, p)).passed
    tail = humaneval.clean_completion(body + "\nif __name__ == '__main__':\n    add(1, 2)\n", p)
    assert tail == body


def _check_of(body: str) -> str:
    return f"def f(x):\n    return x\n\ndef check(c):\n    assert c(1) == 1\n{body}"


HOSTILE = {
    "exit-before-tests": "import sys\nsys.exit(0)\n",
    "os-exit-zero": "import os\nos._exit(0)\n",
    "infinite-loop": "while True:\n    pass\n",
    "sleep": "import time\ntime.sleep(60)\n",
    "huge-allocation": "x = bytearray(8 * 1024 ** 3)\n",
    "fork-bomb": "import os\nwhile True:\n    os.fork()\n",
    "raw-fork-bomb": "import posix\nwhile True:\n    posix.fork()\n",
    "subprocess": "import subprocess\nsubprocess.run(['true'])\n",
    "endless-output": "while True:\n    print('x' * 10000)\n",
    "ctypes": "import ctypes\nctypes.CDLL(None).fork()\n",
}


@pytest.mark.parametrize("name", sorted(HOSTILE))
def test_hostile_programs_are_contained_and_fail(name):
    start = time.perf_counter()
    result = run_program(HOSTILE[name] + _check_of(""), "f", FAST)
    assert not result.passed, result
    assert result.status in ("failed", "timeout")
    assert time.perf_counter() - start < FAST.timeout_s + 5


def test_file_deletion_and_overwrite_do_not_touch_the_host(tmp_path):
    victim = tmp_path / "precious.txt"
    victim.write_text("keep me")
    os.chmod(tmp_path, 0o755)
    for body in (
        f"import shutil\nshutil.rmtree({str(tmp_path)!r})\n",
        f"import os\nos.remove({str(victim)!r})\n",
        f"open({str(victim)!r}, 'w').write('gone')\n",
        f"import pathlib\npathlib.Path({str(victim)!r}).unlink()\n",
    ):
        assert not run_program(body + _check_of(""), "f", FAST).passed
    assert victim.read_text() == "keep me"


def test_no_network_from_the_sandbox():
    server = socket.socket()
    server.bind(("127.0.0.1", 0))
    server.listen(1)
    server.settimeout(4)
    port = server.getsockname()[1]
    accepted: list = []
    thread = threading.Thread(target=lambda: _accept(server, accepted), daemon=True)
    thread.start()
    for body in (
        f"import socket\nsocket.create_connection(('127.0.0.1', {port}), timeout=2)\n",
        f"import _socket\ns = _socket.socket()\ns.settimeout(2)\ns.connect(('127.0.0.1', {port}))\n",
    ):
        result = run_program(body + _check_of(""), "f", FAST)
        assert not result.passed
    thread.join(timeout=6)
    server.close()
    assert accepted == []


def _accept(server, accepted):
    try:
        accepted.append(server.accept())
    except OSError:
        pass


@pytest.fixture
def shared_dir():
    """A directory the sandboxed user may write to (pytest's tmp_path parents are private)."""
    import shutil
    import tempfile

    path = tempfile.mkdtemp(prefix="advisor-test-")
    os.chmod(path, 0o777)
    yield __import__("pathlib").Path(path)
    shutil.rmtree(path, ignore_errors=True)


def test_no_processes_survive_a_contained_run(shared_dir):
    tmp_path = shared_dir
    alive, main = tmp_path / "alive", tmp_path / "main"
    body = (
        "import posix, time\n"
        f"open({str(main)!r}, 'w').write('1')\n"
        "if posix.fork() == 0:\n"
        "    time.sleep(1.0)\n"
        f"    open({str(alive)!r}, 'w').write('1')\n"
        "    posix._exit(0)\n"
    )
    result = run_program(body + _check_of(""), "f", FAST)
    assert result.passed, result  # the program itself is fine
    assert main.exists()  # control: the program could write there
    if "pidns" not in result.isolation:
        pytest.skip(f"no PID namespace here ({result.isolation}); orphans rely on the process-group kill")
    time.sleep(2.0)
    assert not alive.exists()  # its orphaned child died with the sandbox


def test_a_passing_program_really_runs():
    marker = "def f(x):\n    return x * 2\n\ndef check(c):\n    assert c(3) == 6\n"
    assert run_program(marker, "f", FAST).passed
    assert not run_program(marker.replace("x * 2", "x * 3"), "f", FAST).passed
