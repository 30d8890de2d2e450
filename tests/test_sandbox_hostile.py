"""Hostile completions of every known class: scored failures, nothing written outside the throw-away
directory, no process left, the evaluator's files intact, the canonical solution still passing - as
the user running the tests and, when that is root, as an unprivileged evaluator who owns the files."""

from __future__ import annotations

import json
import os
import re
import shutil
import subprocess
import sys
import tempfile
from pathlib import Path

import pytest

from tests.sandbox_cases import cases, run_all

REPO = Path(__file__).resolve().parents[1]


def _check(report: dict, root: Path) -> None:
    assert set(report["statuses"]) == set(cases(root))
    passed = [name for name, status in report["statuses"].items() if status == "passed"]
    assert passed == []
    assert set(report["statuses"].values()) <= {"failed", "timeout"}
    assert report["canonical"] == "passed" and report["wrong"] == "failed"
    assert report["files_intact"]
    assert report["stray"] == [] and not report["host_tmp_written"]
    assert report["processes_left"] == []
    if "mountns" in report["isolation"]:  # the private root hides the evaluator's files and environment
        assert report["probes"] == {"secret-env-hidden": "passed", "secret-file-hidden": "passed"}


@pytest.fixture
def root():
    path = Path(tempfile.mkdtemp(prefix="advisor-hostile-"))
    os.chmod(path, 0o755)
    yield path
    shutil.rmtree(path, ignore_errors=True)


@pytest.mark.timeout(240)
def test_hostile_completions_as_this_user(root):
    report = run_all(root)
    _check(report, root)
    if os.geteuid() == 0:
        assert report["isolation"].endswith(",nobody") or "(" in report["isolation"]


@pytest.mark.timeout(240)
def test_hostile_completions_as_an_unprivileged_evaluator_owning_the_files(root):
    """When root, run the whole suite as uid 1000 without capabilities in a user namespace: the files are
    the evaluator's own (writable by it), which is the usual way the tool runs."""
    if os.geteuid() != 0:
        report = run_all(root)  # already unprivileged: the first test covered it; check again for symmetry
    else:
        unshare = shutil.which("unshare")
        probe = subprocess.run([unshare or "unshare", "--user", "--map-user=1000", "--map-group=1000", "true"],
                               capture_output=True) if unshare else None
        if probe is None or probe.returncode != 0:
            pytest.skip("cannot start an unprivileged user namespace here (unshare --map-user)")
        env = {**os.environ, "PYTHONPATH": str(REPO)}
        out = subprocess.run(
            [unshare, "--user", "--map-user=1000", "--map-group=1000", sys.executable,
             str(REPO / "tests" / "sandbox_cases.py"), str(root)],
            capture_output=True, text=True, env=env, timeout=220,
        )
        assert out.returncode == 0, out.stderr[-2000:]
        report = json.loads(out.stdout.strip().splitlines()[-1])
        assert report["uid"] == 1000
        assert "no-capabilities" in report["isolation"]
    _check(report, root)


FALLBACK = """
from advisor.eval.humaneval import check_completion, load_problems
p = load_problems()[53]
print(check_completion(p, p["canonical_solution"]).status, check_completion(p, "    return x - y\\n").status)
"""


EVAL_CLI = """
import json, sys
from advisor.cli import run
from advisor.eval.humaneval import load_problems
p = load_problems()[53]
with open(sys.argv[1], "w") as f:
    for completion in (p["canonical_solution"], "    return x - y\\n"):
        f.write(json.dumps({"task_id": p["task_id"], "completion": completion}) + "\\n")
sys.argv = ["advisor", "eval", "--task", "humaneval", "--completions", sys.argv[1]]
run()
"""


def test_refused_namespaces_fall_back_with_one_line_naming_the_weaker_isolation(tmp_path):
    """A user namespace whose namespace limits are 0 refuses every new namespace, as some kernels do. The line is
    a `note:`, as every other remark on stderr (it was a bare `sandbox: ...` line), from the library and from
    `advisor eval --completions` alike."""
    unshare = shutil.which("unshare")
    limits = "; ".join(f"echo 0 > /proc/sys/user/max_{n}_namespaces" for n in ("user", "net", "mnt", "pid", "ipc"))
    if unshare is None or subprocess.run([unshare, "--user", "--map-root-user", "sh", "-c", limits]).returncode:
        pytest.skip("cannot make a user namespace with namespace limits here")
    for program, args in ((FALLBACK, []), (EVAL_CLI, [str(tmp_path / "c.jsonl")])):
        out = subprocess.run(
            [unshare, "--user", "--map-root-user", "sh", "-c", f'{limits}; exec "$0" -c "$@"', sys.executable,
             program, *args], capture_output=True, text=True, env={**os.environ, "PYTHONPATH": str(REPO)},
            timeout=120,
        )
        assert out.returncode == 0, out.stderr[-2000:]
        if program == FALLBACK:
            assert out.stdout.split() == ["passed", "failed"]
        else:
            assert "pass@1: 50.0%" in out.stdout, out.stdout
        # one note, wrapped at the terminal's width: its lines joined
        notes = [" ".join(n.split()) for n in re.split(r"\n(?=\S)", out.stderr) if "no-capabilities" in n]
        assert len(notes) == 1, out.stderr
        assert notes[0].startswith("note: sandbox: none,no-capabilities (no private read-only filesystem (the kernel "
                                   "refused namespaces"), notes[0]
        assert "weaker isolation by resource limits and the interpreter guard" in notes[0]


OVERWRITE = """
import json, sys
from pathlib import Path
from advisor.eval.humaneval import check_completion, load_problems
victim = sys.argv[1]
p = load_problems()[53]
body = "    return x + y\\n"
writes = {
    "open-w": f"    open({victim!r}, 'w').write('gone')\\n" + body,
    "open-a": f"    open({victim!r}, 'a').write('more')\\n" + body,
    "pathlib": f"    import pathlib\\n    pathlib.Path({victim!r}).write_text('gone')\\n" + body,
    "os-open": f"    import os\\n    os.close(os.open({victim!r}, os.O_WRONLY | os.O_TRUNC))\\n" + body,
    "scratch-in-workdir": "    open('scratch.txt', 'w').write('ok')\\n    assert open('scratch.txt').read() == 'ok'\\n" + body,
    "tempfile": "    import os, tempfile\\n    fd, name = tempfile.mkstemp()\\n    os.write(fd, b'ok')\\n    os.close(fd)\\n"
                "    assert open(name).read() == 'ok'\\n" + body,
}
print(json.dumps({name: check_completion(p, code).status for name, code in writes.items()}))
"""


def test_the_fallback_refuses_writes_outside_the_working_directory(tmp_path):
    """Without a private read-only root the runner runs as the evaluator's user: file removal was refused but an
    open(..., 'w') truncated the user's files (and the completion still passed). Writing is allowed in the
    throw-away working directory only, where `tempfile` puts its files too (the host's /tmp is outside it)."""
    unshare = shutil.which("unshare")
    limits = "; ".join(f"echo 0 > /proc/sys/user/max_{n}_namespaces" for n in ("user", "net", "mnt", "pid", "ipc"))
    if unshare is None or subprocess.run([unshare, "--user", "--map-root-user", "sh", "-c", limits]).returncode:
        pytest.skip("cannot make a user namespace with namespace limits here")
    victim = tmp_path / "victim.txt"
    victim.write_text("precious")
    out = subprocess.run(
        [unshare, "--user", "--map-root-user", "sh", "-c", f'{limits}; exec "$0" -c "$1" "$2"', sys.executable,
         OVERWRITE, str(victim)],
        capture_output=True, text=True, env={**os.environ, "PYTHONPATH": str(REPO)}, timeout=120,
    )
    assert out.returncode == 0, out.stderr[-2000:]
    status = json.loads(out.stdout.strip().splitlines()[-1])
    assert victim.read_text() == "precious"
    assert status == {"open-w": "failed", "open-a": "failed", "pathlib": "failed", "os-open": "failed",
                      "scratch-in-workdir": "passed", "tempfile": "passed"}
