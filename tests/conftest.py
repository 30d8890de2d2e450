"""Test-wide settings: no hub access (nothing can be downloaded here), torch threads per test process, and how
pytest-xdist shares the test files between processes."""

import os
import shutil
import tempfile
from collections import Counter
from pathlib import Path

import pytest

os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("HF_DATASETS_OFFLINE", "1")
os.environ.setdefault("TRANSFORMERS_OFFLINE", "1")
os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")

# the collector held off as in an `advisor` process (advisor.startup): torch and transformers leave ~400k objects
# that every full collection scanned again in this long-lived process; the first in-process command's
# `import_runtime` freezes what was imported by then and puts the thresholds back
from advisor import startup  # noqa: E402

startup.hold()

import torch  # noqa: E402

# one thread per test process when pytest-xdist runs several (two processes on two cores, not four threads)
_PROCESSES = int(os.environ.get("PYTEST_XDIST_WORKER_COUNT", "1"))
_THREADS = max(1, min(2, (os.cpu_count() or 1) // _PROCESSES))
torch.set_num_threads(_THREADS)
# ... and in the `advisor` subprocesses a pytest-xdist worker starts: `eval`, `trace` and `quant-report` default to
# every core (torch reads OMP_NUM_THREADS), and two workers' subprocesses spun their waiting threads on two shared
# cores - the HumanEval long-prompt test's 2 generations took 4 s on one thread, 7-52 s on two (measured). A test
# that is about threads passes --threads, which still wins. (Not in xdist's controller: workers inherit its env.)
if "PYTEST_XDIST_WORKER" in os.environ:
    os.environ["OMP_NUM_THREADS"] = str(_THREADS)

# Files whose tests start HumanEval sandboxes: test_sandbox_hostile counts every sandbox process left on the
# host, so an evaluation in another test process would count too; these files share one process.
SANDBOX_FILES = frozenset({"test_eval_humaneval.py", "test_eval_humaneval_cli.py", "test_sandbox_hostile.py"})

# Files that run long for their number of tests (tunes, signals at timed moments, a wheel built and installed;
# measured one file at a time, 2026-12-06), handed out first: by test count alone they came late, and the one
# left last kept one process busy while the other had nothing left (the wheel test, one test, was the very last).
LONG_FIRST = ("test_study_cpu_profile.py", "test_tune_interrupts.py", "test_tune_cli_flow.py", "test_wheel_install.py")


def _scope(path: str) -> str:
    """The unit pytest-xdist hands to one process: a test file, or the sandbox files together."""
    return "sandbox" if path.rsplit("/", 1)[-1] in SANDBOX_FILES else path


def pytest_collection_modifyitems(config, items):
    """Whole files in the order the processes take them: LONG_FIRST, then the files with most tests (a file's
    own tests keep their order)."""
    counts = Counter(_scope(item.nodeid.split("::", 1)[0]) for item in items)
    first = {name: n for n, name in enumerate(LONG_FIRST)}

    def order(item) -> tuple[int, int]:
        scope = _scope(item.nodeid.split("::", 1)[0])
        return first.get(scope.rsplit("/", 1)[-1], len(first)), -counts[scope]

    items.sort(key=order)


@pytest.hookimpl(optionalhook=True)
def pytest_xdist_make_scheduler(config, log):
    """pytest-xdist hands out whole files (module fixtures are built once; tests of a file keep their order), in
    the collection's order (`pytest_collection_modifyitems`), not re-sorted by xdist. Not `--dist loadgroup`:
    xdist 3.8 marks groups in a node id pytest 9 ignores."""
    from xdist.scheduler import LoadScopeScheduling

    class ByFile(LoadScopeScheduling):
        def _split_scope(self, nodeid: str) -> str:
            return _scope(nodeid.split("::", 1)[0])

    config.option.loadscopereorder = False
    return ByFile(config, log)


def _shm_dir(tmp_path_factory):
    """A scratch directory in shared memory when there is some (removed after), else one of pytest's: SQLite commits
    fsync, and study tests make many (8.7 ms a commit on this host's disk, 0.3 ms in /dev/shm)."""
    if os.path.isdir("/dev/shm") and os.access("/dev/shm", os.W_OK):
        d = Path(tempfile.mkdtemp(prefix="advisor-test-", dir="/dev/shm"))
        yield d
        shutil.rmtree(d, ignore_errors=True)
    else:
        yield tmp_path_factory.mktemp("shm")


@pytest.fixture
def shm_tmp_path(tmp_path_factory):
    """`_shm_dir` for one test."""
    yield from _shm_dir(tmp_path_factory)


@pytest.fixture(scope="module")
def shm_module_path(tmp_path_factory):
    """`_shm_dir` for a module's fixtures (a study its tests share)."""
    yield from _shm_dir(tmp_path_factory)


@pytest.fixture
def pg_schema_url():
    """A PostgreSQL URL on the test server (ADVISOR_TEST_POSTGRES_URL) whose search path is a fresh schema, dropped
    after the test: no other test's study is there. Skipped without a server."""
    import uuid

    base = os.environ.get("ADVISOR_TEST_POSTGRES_URL")
    if not base:
        pytest.skip("ADVISOR_TEST_POSTGRES_URL is not set (source .ci/start_postgres.sh to start a local server)")
    from sqlalchemy import create_engine, text

    from advisor.results.urls import normalize_url

    schema = f"t_{uuid.uuid4().hex[:8]}"
    admin = create_engine(normalize_url(base))
    with admin.begin() as c:
        c.execute(text(f"CREATE SCHEMA {schema}"))
    try:
        yield f"{base}?options=-csearch_path%3D{schema}"
    finally:
        with admin.begin() as c:
            c.execute(text(f"DROP SCHEMA {schema} CASCADE"))
        admin.dispose()
