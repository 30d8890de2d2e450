"""`advisor studies --delete NAME`: a study's Optuna trials and the project's rows of it go, on SQLite and
PostgreSQL; another study in the same database and the eval cache stay; it asks first (or takes --yes), refuses
an unknown name, a stdin it cannot ask on and a study a worker is tuning, each in one line; an interrupt between
its two transactions leaves a study every command reads, which the same command then finishes deleting."""

from __future__ import annotations

import os
import pty
import shutil
import signal
import subprocess
import sys
from pathlib import Path

import pytest
from cli_helpers import flat
from sqlalchemy import text
from tune_helpers import FakeBackend, small_space

from advisor.cli import run
from advisor.results.registry import list_studies
from advisor.results.store import engine_for
from advisor.tune.study import TuneOptions, run_tune

OPTUNA_TABLES = {  # Optuna's rows of a study, by study or by trial
    "study_id": ("trials", "study_directions", "study_user_attributes", "study_system_attributes"),
    "trial_id": ("trial_params", "trial_values", "trial_intermediate_values", "trial_user_attributes",
                 "trial_system_attributes", "trial_heartbeats"),
}


@pytest.fixture
def tmp_path(shm_tmp_path):
    """Study databases in shared memory (conftest.shm_tmp_path)."""
    return shm_tmp_path


@pytest.fixture
def pg_url(pg_schema_url: str) -> str:
    """A fresh schema on the test server: no other study there (conftest.pg_schema_url)."""
    return pg_schema_url


def _two_studies(url: str) -> None:
    """Studies `a` (3 trials) and `b` (4 trials) of the stand-in model, sharing the eval cache."""
    for name, n in (("a", 3), ("b", 4)):
        run_tune(FakeBackend(), small_space(), TuneOptions(study_name=name, storage=url, sampler="random", seed=0,
                                                           n_trials=n, heartbeat_interval=None), budget_bytes=None)


def _advisor(capsys, monkeypatch, *args: str) -> tuple[int, str]:
    """`advisor ARGS` as the console entry point runs it: (exit code, stdout + stderr)."""
    monkeypatch.setenv("COLUMNS", "220")
    monkeypatch.setattr(sys, "argv", ["advisor", *args])
    with pytest.raises(SystemExit) as e:
        run()
    out = capsys.readouterr()
    return e.value.code or 0, out.out + out.err


def _rows(url: str, study: str) -> dict[str, int]:
    """How many rows of `study` each table holds (Optuna's and the project's), and the eval cache's size."""
    ids = "SELECT study_id FROM studies WHERE study_name = :n"
    of = {"study_id": ids, "trial_id": f"SELECT trial_id FROM trials WHERE study_id IN ({ids})"}
    engine = engine_for(url)
    with engine.connect() as c:
        out = {"studies": c.execute(text("SELECT COUNT(*) FROM studies WHERE study_name = :n"), {"n": study}).scalar()}
        for key, tables in OPTUNA_TABLES.items():
            for table in tables:
                out[table] = c.execute(text(f"SELECT COUNT(*) FROM {table} WHERE {key} IN ({of[key]})"),
                                       {"n": study}).scalar()
        for table in ("advisor_front", "advisor_study"):
            out[table] = c.execute(text(f"SELECT COUNT(*) FROM {table} WHERE study_name = :n"), {"n": study}).scalar()
        out["advisor_eval_cache (all)"] = c.execute(text("SELECT COUNT(*) FROM advisor_eval_cache")).scalar()
    engine.dispose()
    return out


def _check_deleted(capsys, monkeypatch, url: str, before_b: dict[str, int]) -> None:
    """`a` is gone from every table and every command; `b` and the shared eval cache are as they were."""
    gone = _rows(url, "a")
    assert not any(n for table, n in gone.items() if table != "advisor_eval_cache (all)"), gone
    assert _rows(url, "b") == before_b
    code, out = _advisor(capsys, monkeypatch, "studies", "--storage", url, "--wide")
    assert code == 0 and "│ b " in out and "│ a " not in out, out
    code, out = _advisor(capsys, monkeypatch, "recommend", "--study", "a", "--storage", url)
    assert code == 2 and "no stored Pareto front for study 'a'" in out and "(studies with a front there: b)" in out, out
    assert [s.name for s in list_studies(engine_for(url))] == ["b"]
    code, out = _advisor(capsys, monkeypatch, "recommend", "--study", "b", "--storage", url)
    assert code == 0 and "Recommended: study 'b'" in out, out


def test_delete_asks_on_the_terminal_then_removes_the_study_and_nothing_else(tmp_path, capsys, monkeypatch):
    """On a terminal: 'n' keeps the study (exit 1), 'y' deletes it; without importing torch."""
    url = f"sqlite:///{tmp_path}/t.db"
    _two_studies(url)
    before_a, before_b = _rows(url, "a"), _rows(url, "b")
    assert before_a["trials"] == 6 and before_a["advisor_front"] and before_a["advisor_study"] == 1
    code = ("import sys\nfrom advisor.cli import run\n"
            "for _ in range(2):\n"
            f"    sys.argv = ['advisor', 'studies', '--delete', 'a', '--storage', {url!r}]\n"
            "    try:\n        run()\n    except SystemExit as e:\n        print('EXIT', e.code)\n"
            "print('HEAVY', sorted(m for m in ('torch', 'transformers') if m in sys.modules))\n")
    master, slave = pty.openpty()
    try:
        proc = subprocess.Popen([sys.executable, "-u", "-c", code], stdin=slave, stdout=subprocess.PIPE,
                                stderr=subprocess.STDOUT, text=True, cwd=tmp_path)
        os.write(master, b"n\ny\n")
        out, _ = proc.communicate(timeout=120)
    finally:
        os.close(master)
        os.close(slave)
    asked = ("about to delete study 'a' (fake-moe, fake: 3 finished trials, 3 waiting; 3 front points) from "
             f"{url}; this cannot be undone delete it? [y/N]:")  # wrapped at the width: compared `flat`
    first, second = out.split("EXIT 1\n")
    assert flat(first) == f"{asked} nothing deleted" and first.endswith("delete it? [y/N]: nothing deleted\n"), out
    assert flat(second).startswith(f"{asked} deleted study 'a' ") and "the eval cache" in second, out
    assert "Studies left: b" in flat(second), out
    assert second.endswith("EXIT 0\nHEAVY []\n"), out
    _check_deleted(capsys, monkeypatch, url, before_b)


@pytest.mark.postgres
def test_delete_on_postgresql(pg_url, capsys, monkeypatch):
    _two_studies(pg_url)
    before_b = _rows(pg_url, "b")
    assert _rows(pg_url, "a")["trials"] == 6
    code, out = _advisor(capsys, monkeypatch, "studies", "--delete", "a", "--yes", "--storage", pg_url)
    assert code == 0 and "deleted study 'a' (fake-moe, fake: 3 finished trials" in out, out
    _check_deleted(capsys, monkeypatch, pg_url, before_b)


def test_delete_refuses_an_unknown_name_a_read_only_url_and_a_stdin_it_cannot_ask_on(tmp_path, capsys, monkeypatch):
    url = f"sqlite:///{tmp_path}/t.db"
    _two_studies(url)
    before = _rows(url, "a")
    code, out = _advisor(capsys, monkeypatch, "studies", "--delete", "aa", "--storage", url)
    assert (code, out) == (2, f"error: no study named 'aa' in {url} (studies there: a, b); nothing deleted - "
                              f"`advisor studies --storage {url}` lists them\n")
    monkeypatch.setattr(sys, "stdin", open(os.devnull))  # noqa: SIM115 - as `... < /dev/null` or a pipe gives it
    code, out = _advisor(capsys, monkeypatch, "studies", "--delete", "a", "--storage", url)
    assert code == 2 and out.count("\n") == 1 and "there is no terminal to ask on" in out and "add --yes" in out, out
    code, out = _advisor(capsys, monkeypatch, "studies", "--delete", "a", "--yes", "--storage", f"{url}?mode=ro")
    assert (code, out) == (2, f"error: --storage opens {url}?mode=ro read-only (mode=ro), and deleting a study writes; "
                              "drop that option from the URL\n")
    code, out = _advisor(capsys, monkeypatch, "studies", "--yes", "--storage", url)
    assert code == 2 and "--yes goes with --delete NAME" in out, out
    assert _rows(url, "a") == before


def test_delete_on_a_read_only_file_system_names_the_file(tmp_path):
    """A database on a read-only mount (a backup, a shared volume): `--delete` said "cannot write the SQLite
    database (--storage) (attempt to write a readonly database): its disk is full, ...; nothing finished is lost",
    naming no file; now `tune`'s up-front line for the same file (`preflight.refuse_read_only`)."""
    if shutil.which("unshare") is None:
        pytest.skip("no unshare")
    src, ro = tmp_path / "src", tmp_path / "ro"
    src.mkdir()
    ro.mkdir()
    _two_studies(f"sqlite:///{src}/t.db")
    before = _rows(f"sqlite:///{src}/t.db", "a")
    mount = f"mount --bind {src} {ro} && mount -o remount,bind,ro {ro}"
    probe = subprocess.run(["unshare", "-m", "sh", "-c", f"{mount} && touch {ro}/y"], capture_output=True, text=True)
    if "Read-only file system" not in probe.stderr:
        pytest.skip(f"cannot make a read-only mount here: {probe.stderr.strip()[:80]}")
    r = subprocess.run(["unshare", "-m", "sh", "-c", f"{mount} && exec {sys.executable} -m advisor studies --delete a "
                        f"--yes --storage sqlite:///{ro}/t.db"], capture_output=True, text=True, timeout=60)
    assert (r.returncode, r.stdout, r.stderr) == (2, "", f"error: {ro}/t.db is read-only (deleting a study writes, and "
                                                  "SQLite its journal next to the file); make the file and its "
                                                  "directory writable; nothing deleted\n")
    assert _rows(f"sqlite:///{src}/t.db", "a") == before


@pytest.mark.parametrize("where", ["sqlite", "postgresql"])
def test_an_interrupted_delete_leaves_a_readable_study_that_the_same_command_finishes(where, tmp_path, capsys,
                                                                                      monkeypatch, request):
    """Ctrl-C after the project's rows went but before Optuna's study did: `studies` lists what Optuna still
    holds (as a study another tool made), `recommend` finds no front of it, `b` is untouched, and the same
    command again deletes the rest."""
    import optuna

    url = request.getfixturevalue("pg_url") if where == "postgresql" else f"sqlite:///{tmp_path}/t.db"
    _two_studies(url)
    before_b = _rows(url, "b")

    def interrupted(**_kw) -> None:  # Ctrl-C as Optuna's delete starts
        os.kill(os.getpid(), signal.SIGINT)

    with monkeypatch.context() as m:
        m.setattr(optuna, "delete_study", interrupted)
        code, out = _advisor(capsys, monkeypatch, "studies", "--delete", "a", "--yes", "--storage", url)
    assert (code, out) == (130, "error: interrupted; nothing is half-written - run the same command again\n")
    half = _rows(url, "a")
    assert half["advisor_front"] == half["advisor_study"] == 0 and half["trials"] == 6, half
    code, out = _advisor(capsys, monkeypatch, "studies", "--storage", url, "--wide")
    assert code == 0 and "│ a     │ ?  " in out and "│ b " in out, out
    code, out = _advisor(capsys, monkeypatch, "recommend", "--study", "a", "--storage", url)
    assert code == 2 and "no stored Pareto front for study 'a'" in out, out
    assert _rows(url, "b") == before_b
    code, out = _advisor(capsys, monkeypatch, "studies", "--delete", "a", "--yes", "--storage", url)
    assert code == 0 and out.startswith("deleted study 'a' (3 finished trials, 3 waiting; 0 front points)"), out
    _check_deleted(capsys, monkeypatch, url, before_b)


@pytest.mark.parametrize("where", ["sqlite", "postgresql"])
def test_a_study_with_a_state_optuna_does_not_know_is_deleted_and_nothing_else(where, tmp_path, capsys, monkeypatch,
                                                                               request):
    """A trial state this Optuna has no member for (a garbled SQLite row; on PostgreSQL one a newer Optuna added
    to its enum type) made Optuna's delete raise a LookupError as it decoded the rows: `--delete` deleted our
    front, kept Optuna's trials and refused, and no command could read or delete the study after. Optuna's rows
    of the study go as plain SQL now, in one transaction; `b` and the eval cache stay."""
    url = request.getfixturevalue("pg_url") if where == "postgresql" else f"sqlite:///{tmp_path}/t.db"
    _two_studies(url)
    before_b = _rows(url, "b")
    engine = engine_for(url)
    if where == "postgresql":
        with engine.connect().execution_options(isolation_level="AUTOCOMMIT") as c:
            c.execute(text("ALTER TYPE trialstate ADD VALUE 'BOGUS'"))
    with engine.begin() as c:
        c.execute(text("UPDATE trials SET state = 'BOGUS' WHERE study_id = (SELECT study_id FROM studies WHERE "
                       "study_name = 'a')"))
    engine.dispose()
    code, out = _advisor(capsys, monkeypatch, "studies", "--delete", "a", "--yes", "--storage", url)
    assert code == 0 and out.startswith("deleted study 'a' (fake-moe, fake: ") and "Studies left: b" in out, out
    _check_deleted(capsys, monkeypatch, url, before_b)


@pytest.mark.filterwarnings("ignore:Heartbeat of storage is supposed to be used with Study.optimize")
def test_delete_refuses_a_study_a_worker_is_tuning(tmp_path, capsys, monkeypatch):
    """A running trial with a fresh heartbeat is most likely a worker tuning the study now: deleting under it
    would fail its next trial; once its heartbeat is older than `SILENT_AFTER_S` (a dead worker) it goes."""
    import optuna

    from advisor.results.registry import SILENT_AFTER_S

    url = f"sqlite:///{tmp_path}/t.db"
    _two_studies(url)
    trials = _rows(url, "a")["trials"]
    storage = optuna.storages.RDBStorage(url, heartbeat_interval=10)
    trial = optuna.load_study(study_name="a", storage=storage).ask()
    storage.record_heartbeat(trial._trial_id)
    storage.engine.dispose()
    code, out = _advisor(capsys, monkeypatch, "studies", "--delete", "a", "--yes", "--storage", url)
    assert code == 2 and "study 'a' has 1 running trial whose worker sent a heartbeat in the last" in out, out
    assert _rows(url, "a")["trials"] == trials
    engine = engine_for(url)
    with engine.begin() as c:
        c.execute(text(f"UPDATE trial_heartbeats SET heartbeat = datetime(heartbeat, '-{SILENT_AFTER_S + 5} seconds')"))
    engine.dispose()
    code, out = _advisor(capsys, monkeypatch, "studies", "--delete", "a", "--yes", "--storage", url)
    assert code == 0 and "1 running" in out, out
    assert _rows(url, "a")["trials"] == 0



HELPER = str(Path(__file__).parent / "tune_helpers.py")


@pytest.mark.parametrize("when", ["between trials", "mid-trial without heartbeats"])
def test_a_worker_whose_study_is_deleted_under_it_stops_in_one_line_and_leaves_nothing_of_it(when, tmp_path, capsys,
                                                                                            monkeypatch):
    """A worker between two trials sends no heartbeat (nor does one running with heartbeats off), so `--delete`
    goes through under it, and its next write finds the study gone. It stops with one line - no traceback, no
    trial, front or study row of the deleted study written back - the measurement it made stays in the eval
    cache, and the other studies stay as they were."""
    url = f"sqlite:///{tmp_path}/t.db"
    _two_studies(url)
    def others() -> dict[str, dict[str, int]]:
        return {name: {k: n for k, n in _rows(url, name).items() if k != "advisor_eval_cache (all)"} for name in "ab"}

    before = others()
    go = tmp_path / "go"
    how = (["--heartbeat", "1", "--grace", "2", "--between", str(go)] if when == "between trials" else
           ["--heartbeat", "0", "--hold", str(go)])  # (each accuracy measurement waits for `go`)
    worker = subprocess.Popen([sys.executable, HELPER, "--storage", url, "--study", "w", "--trials", "5", "--no-staging",
                               "--fingerprint", "w", *how],  # (a model of its own: no measurement found cached)
                              stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    try:
        for line in worker.stdout:  # its first trial finished and its front stored; or its measurement begun
            if line.startswith("BETWEEN " if when == "between trials" else "STAGE accuracy"):
                break
        cache = _rows(url, "w")["advisor_eval_cache (all)"]
        code, out = _advisor(capsys, monkeypatch, "studies", "--delete", "w", "--yes", "--storage", url)
        assert code == 0 and out.startswith("deleted study 'w' ("), out
        go.touch()
        out, err = worker.communicate(timeout=120)
    finally:
        worker.kill()
    assert worker.returncode == 2, (out, err)
    assert err == ("error: study 'w' was deleted (`advisor studies --delete`) while this worker tuned it; it "
                   "stopped, writing nothing more of it\n"), err
    gone = _rows(url, "w")
    assert not any(n for table, n in gone.items() if table != "advisor_eval_cache (all)"), gone
    assert gone["advisor_eval_cache (all)"] == cache + (when != "between trials")  # the measurement kept
    assert others() == before


def test_a_worker_that_finishes_a_trial_while_the_delete_is_between_our_rows_and_optunas_writes_none_back(
        tmp_path, capsys, monkeypatch):
    """`--delete` removes our rows (front, study row) first, then Optuna's study. A worker that finished a trial
    between the two still found its study in Optuna: it wrote its front back (and at its end its study row), so
    the study was listed again after the delete and needed a second one; or, where its row vanished between
    reading and updating it, it stopped with 'storage error: UPDATE statement on table advisor_study expected to
    update 1 row(s)' and 'check --storage'. It stops with the deleted study's one line and writes nothing back."""
    import optuna

    url = f"sqlite:///{tmp_path}/t.db"
    go = tmp_path / "go"
    worker = subprocess.Popen([sys.executable, HELPER, "--storage", url, "--study", "w", "--trials", "5",
                               "--no-staging", "--heartbeat", "1", "--grace", "2", "--between", str(go)],
                              stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    real_delete = optuna.delete_study

    def delete_when_the_worker_is_done(**kw):  # our rows are gone, Optuna's study not yet: let the worker go on
        go.touch()
        delete_when_the_worker_is_done.ended = worker.communicate(timeout=120)
        return real_delete(**kw)

    monkeypatch.setattr(optuna, "delete_study", delete_when_the_worker_is_done)
    try:
        for line in worker.stdout:
            if line.startswith("BETWEEN "):
                break
        code, out = _advisor(capsys, monkeypatch, "studies", "--delete", "w", "--yes", "--storage", url)
    finally:
        worker.kill()
    assert code == 0 and out.startswith("deleted study 'w' ("), out
    err = delete_when_the_worker_is_done.ended[1]
    assert worker.returncode == 2 and err == (
        "error: study 'w' was deleted (`advisor studies --delete`) while this worker tuned it; it stopped, writing "
        "nothing more of it\n"), err
    gone = _rows(url, "w")
    assert not any(n for table, n in gone.items() if table != "advisor_eval_cache (all)"), gone
    assert list_studies(engine_for(url)) == []
