"""The CPU expert times a study is priced with are stored with it: a resume reuses them (no re-measurement,
one time model per study) and `advisor report` replays hybrid trials with them, reproducing the stored bytes.

Through the CLI, on the bundled model: tune a tiny study whose every trial computes misses `hybrid`, resume it,
report on it; then a stored profile marked with another date (what a re-measurement could never produce) shows
that the resume prices with the stored times; a stored profile lacking the model's expert shape measures that
shape and says so; a study without stored times (older ones) is labelled as such.
"""

from __future__ import annotations

import contextlib
import json
import re
import shutil
import sqlite3
import subprocess
import sys
from pathlib import Path

import pytest
from cli_helpers import advisor_in_process

SPACE = """
name = "cpuprof"
[precision]
formats = ["int8", "int4"]
groups = 1
[cache]
slots_per_layer = { low = 1, high = "all" }
policies = ["lru"]
prefetch = ["none"]
miss = ["hybrid"]
[objectives]
time_per_token = "minimize"
accuracy = "maximize"
peak_gpu_bytes = "minimize"
[evaluation]
task = "toy"
limit = 4
trace_prompts = 1
fidelity_prompts = 1
"""


def advisor(*args: str, cwd: Path, env: dict[str, str] | None = None) -> str:
    """`advisor ARGS`'s stdout, in this process (`advisor_in_process`): a resume still reads all it reuses from
    the database, nothing of the study is kept in memory; the concurrent workers below stay processes."""
    r = advisor_in_process(*args, cwd=cwd, env={"COLUMNS": "600", **(env or {})})
    assert r.returncode == 0, r.stdout + r.stderr
    return r.stdout


def stored(db: Path) -> tuple[dict, dict[int, str]]:
    """(the study's stored CPU expert times, each finished trial's time_per_token source), read from SQLite."""
    with sqlite3.connect(db) as c:
        rows = c.execute("SELECT value_json FROM study_user_attributes WHERE key = 'cpu_experts'").fetchall()
        sources = {n: json.loads(v)["time_per_token"] for n, v in c.execute(
            "SELECT t.number, a.value_json FROM trials t JOIN trial_user_attributes a ON a.trial_id = t.trial_id "
            "WHERE a.key = 'sources' AND t.state = 'COMPLETE'")}
    return (json.loads(rows[0][0]) if rows else {}), sources


@pytest.fixture
def tmp_path(shm_tmp_path) -> Path:
    """Each test's directory in shared memory (`shm_tmp_path`): its studies' SQLite commits (every resume's trials,
    the workers' claims) need not wait for the disk."""
    return shm_tmp_path


@pytest.fixture(scope="module")
def tuned(shm_module_path) -> tuple[Path, str]:
    """A study "c" tuned on SPACE with `--trials 3` (the warm start's three points, the CPU expert times measured
    and stored), and that run's stdout: tuned once per test process, each test resuming its own copy
    (`copy_tuned`) - the file itself is never written after. In shared memory, as `tmp_path` is."""
    work = shm_module_path
    (work / "space.toml").write_text(SPACE)
    db = work / "s.db"
    out = advisor("tune", "--space", "space.toml", "--storage", f"sqlite:///{db}", "--study", "c", "--trials", "3",
                  cwd=work)
    return db, out


def copy_tuned(tuned: tuple[Path, str], tmp_path: Path) -> Path:
    """`tuned`'s study file copied into `tmp_path` (space.toml beside it), as if tuned there."""
    (tmp_path / "space.toml").write_text(SPACE)
    db = tmp_path / "s.db"
    shutil.copyfile(tuned[0], db)
    return db


def set_stored(db: Path, profile: dict | None) -> None:
    with sqlite3.connect(db) as c:
        if profile is None:
            c.execute("DELETE FROM study_user_attributes WHERE key = 'cpu_experts'")
        else:
            c.execute("UPDATE study_user_attributes SET value_json = ? WHERE key = 'cpu_experts'",
                      (json.dumps(profile),))


def test_a_study_keeps_its_cpu_expert_times_across_resume_and_report(tmp_path, tuned):
    db, first = copy_tuned(tuned, tmp_path), tuned[1]  # `tune --trials 3` of a new study, run by `tuned`
    tune = ["tune", "--space", "space.toml", "--storage", f"sqlite:///{db}", "--study", "c"]
    profile, sources = stored(db)
    src = profile["source"]
    assert re.fullmatch(r"measured:wall-clock\(\d{4}-\d\d-\d\d, 1 thread, .*\)", src), src
    assert "128x16" in profile["table"] and len(sources) == 3
    assert (f"CPU expert times: {src}, measured by this run, stored with the study (a resume and `advisor report` "
            "reuse them)") in first

    again = advisor(*tune, "--more", "2", cwd=tmp_path)
    assert f"CPU expert times: the study's stored measurement {src}\n" in again, again
    after, sources = stored(db)
    assert after == profile and len(sources) == 5  # not re-measured, not rewritten
    assert all(s.endswith(f";cpu={src}") for s in sources.values()), sources  # one time model for every trial

    out = tmp_path / "r"
    advisor("report", "c", "--storage", f"sqlite:///{db}", "--out", str(out), "--block-lengths", "", cwd=tmp_path)
    rows = [r for r in json.loads((out / "report.json").read_text())["headline"] if r["trial"] is not None]
    assert rows and all(r["miss"] == "hybrid" for r in rows), rows
    for r in rows:  # hybrid replays split misses by the stored times: the stored bytes come back exactly
        assert r["replayed_bytes_per_token"] == r["h2d_bytes_per_token"], r
    md = " ".join((out / "report.md").read_text().split())
    date = src.split("(")[1].split(",")[0]
    assert (f"the study's stored measurement of {date}, the one its trials were priced with ({src})") in md, md
    assert "so they replay to their stored bytes, as copy and cpu trials do" in md and "taken now" not in md

    # a resume prices with the stored times as stored: times and a date no measurement today could give
    marked = {**profile, "source": src.replace(date, "2020-01-02"),
              "table": {k: {f: [[n, ms * 50] for n, ms in pts] for f, pts in v.items()}
                        for k, v in profile["table"].items()}}
    set_stored(db, marked)
    resumed = advisor(*tune, "--more", "1", cwd=tmp_path)
    assert f"CPU expert times: the study's stored measurement {marked['source']}\n" in resumed, resumed
    _, sources = stored(db)
    assert sources[5].endswith(f";cpu={marked['source']}"), sources[5]

    # stored times lacking the model's expert shape: that shape is measured now and stored back beside them
    # (kept as stored), the run says so, and the next resume and the report measure nothing
    set_stored(db, {**profile, "table": {"64x8": profile["table"]["128x16"]}})
    partial = advisor(*tune, "--more", "1", cwd=tmp_path)
    completed, sources = stored(db)
    mixed = completed["source"]
    assert re.fullmatch(re.escape(src) + r" \(study\) \+ 128x16 measured:wall-clock\(\d{4}-\d\d-\d\d, 1 thread, .*\)",
                        mixed), mixed
    assert completed["table"].keys() == {"64x8", "128x16"} and completed["table"]["64x8"] == profile["table"]["128x16"]
    assert (f"CPU expert times: the study's stored measurement, what it lacked (128x16) measured now and stored "
            f"with it: {mixed}\n") in partial, partial
    assert sources[max(sources)].endswith(f";cpu={mixed}"), sources
    assert len(sources) == 7  # the next resume runs no trial: the times are priced as the study opens
    again = advisor(*tune, "--trials", "7", cwd=tmp_path)
    assert "already has 7 finished trials" in again, again
    assert f"CPU expert times: the study's stored measurement {mixed}\n" in again, again
    assert stored(db)[0] == completed  # nothing measured twice, nothing rewritten

    # a stored shape lacking one CPU kernel (times stored by an older version): only that kernel is measured
    table = {"128x16": {f: v for f, v in completed["table"]["128x16"].items() if f != "int3"}}
    set_stored(db, {**profile, "table": table})
    kernel = advisor(*tune, "--more", "1", cwd=tmp_path)
    grown = stored(db)[0]
    assert "what it lacked (128x16:int3) measured now and stored with it" in kernel, kernel
    assert grown["table"]["128x16"] == {**table["128x16"], "int3": grown["table"]["128x16"]["int3"]}
    assert re.fullmatch(re.escape(src) + r" \(study\) \+ 128x16:int3 measured:wall-clock\(.*\)", grown["source"])
    advisor("report", "c", "--storage", f"sqlite:///{db}", "--out", str(out), "--block-lengths", "", cwd=tmp_path)
    md = " ".join((out / "report.md").read_text().split())
    assert f"the one its trials were priced with ({grown['source']})." in md, md  # the report measured nothing

    # a study stored before the times were (no `cpu_experts`): today's behaviour, labelled
    set_stored(db, None)
    old = advisor(*tune, "--more", "1", cwd=tmp_path)
    assert re.search(r"CPU expert times: measured:wall-clock\(.*\), taken by this run \(the study predates "
                     r"storing them: its earlier runs may have had others\)", old), old
    advisor("report", "c", "--storage", f"sqlite:///{db}", "--out", str(out), "--block-lengths", "", cwd=tmp_path)
    md = " ".join((out / "report.md").read_text().split())
    assert "taken by this report (the study predates storing the ones its trials were priced with)" in md, md


def test_a_profile_lacking_a_kernel_gives_its_times_and_only_that_kernel_is_measured(tmp_path, monkeypatch):
    """`advisor profile` times that cover the model's expert shape but not every CPU kernel (an older profile):
    the study is priced with the profile's times as they are, the kernel it lacks measured once, and the label
    says the times are mixed."""
    from advisor.hardware.profiles import HardwareProfile, save_profile
    from advisor.offload.cpu_profile import measure_cpu_experts

    cpu = measure_cpu_experts([(128, 16)], ["bf16", "int8", "int4"], repeats=1).to_dict()
    monkeypatch.setenv("ADVISOR_PROFILES_DIR", str(tmp_path / "profiles"))
    save_profile(HardwareProfile("NVIDIA H200", 139 * 2**30, 50.0, 20.0, 10.0, "measured:2026-12-03 cuda-events",
                                 "measured", cpu_experts=cpu))
    (tmp_path / "space.toml").write_text(SPACE)
    db = tmp_path / "s.db"
    out = advisor("tune", "--space", "space.toml", "--storage", f"sqlite:///{db}", "--study", "p", "--gpu", "NVIDIA H200",
                  "--trials", "1", cwd=tmp_path)
    times, sources = stored(db)
    assert re.fullmatch(re.escape(cpu["source"]) + r" \(profile\) \+ 128x16:int3 measured:wall-clock\(.*\)",
                        times["source"]), times["source"]
    assert times["table"]["128x16"] == {**cpu["table"]["128x16"], "int3": times["table"]["128x16"]["int3"]}
    assert (f"CPU expert times: {times['source']}, from the hardware profile 'NVIDIA H200', completed by this run, "
            "stored with the study") in out, out
    assert all(s.endswith(f";cpu={times['source']}") for s in sources.values()), sources


def test_times_measured_on_another_cpu_say_so_on_resume_and_in_the_report(tmp_path, tuned):
    """The CPU that measured a study's times is stored with them: a resume or `advisor report` on another machine
    says "(measured on another CPU: X; this host: Y)"; on the same CPU, or where older times did not record it,
    nothing more (both said nothing: the times did not record their CPU)."""
    from advisor.hardware.profiles import host_cpu

    db = copy_tuned(tuned, tmp_path)  # a study tuned here
    tune = ["tune", "--space", "space.toml", "--storage", f"sqlite:///{db}", "--study", "c"]
    profile, _ = stored(db)
    assert profile["host"] == host_cpu()  # recorded where measured
    src, other = profile["source"], "Other CPU 9000, 96 logical cores"
    where = f" (measured on another CPU: {other}; this host: {host_cpu()})"

    set_stored(db, {**profile, "host": other})
    resumed = advisor(*tune, "--more", "1", cwd=tmp_path)
    assert f"CPU expert times: the study's stored measurement {src}{where}\n" in resumed, resumed
    out = tmp_path / "r"
    advisor("report", "c", "--storage", f"sqlite:///{db}", "--out", str(out), "--block-lengths", "", cwd=tmp_path)
    md = " ".join((out / "report.md").read_text().split())
    assert f"the one its trials were priced with ({src}){where}." in md, md

    set_stored(db, {k: v for k, v in profile.items() if k != "host"})  # times stored before the host was
    older = advisor(*tune, "--more", "1", cwd=tmp_path)
    assert f"CPU expert times: the study's stored measurement {src}\n" in older, older


def test_times_completed_on_this_cpu_name_only_the_other_cpu(tmp_path, tuned):
    """Times stored from another CPU and completed here record both hosts ("X + this"); a resume said "(measured
    on another CPU: X + this; this host: this)", naming this host as another CPU. Now only the other CPU is named,
    and "partly" says some of the times were measured here."""
    from advisor.hardware.profiles import host_cpu

    db = copy_tuned(tuned, tmp_path)  # a study tuned here
    tune = ["tune", "--space", "space.toml", "--storage", f"sqlite:///{db}", "--study", "c"]
    profile, _ = stored(db)
    other, here = "Other CPU 9000, 96 logical cores", host_cpu()
    lacking = {k: {f: v for f, v in row.items() if f != "int4"} for k, row in profile["table"].items()}
    set_stored(db, {**profile, "table": lacking, "host": other})
    resumed = " ".join(advisor(*tune, "--more", "1", cwd=tmp_path).split())
    completed, _ = stored(db)
    assert completed["host"] == f"{other} + {here}", completed  # int4 measured here, the rest on the other CPU
    where = f" (partly measured on another CPU: {other}; this host: {here})"
    assert f"measured now and stored with it: {completed['source']}{where}" in resumed, resumed
    again = " ".join(advisor(*tune, "--more", "1", cwd=tmp_path).split())
    assert f"CPU expert times: the study's stored measurement {completed['source']}{where}" in again, again


def _gated_workers(args: list[str], cwd: Path, n: int = 2) -> list[tuple[str, str]]:
    """(stdout, stderr) of `n` processes `advisor *args` released together once each has loaded the model: each
    writes to a pipe filled beforehand, so it blocks at its first line (the run header, printed just before the
    study opens) until all are blocked and their pipes are drained at once."""
    import os
    import time
    from concurrent.futures import ThreadPoolExecutor

    pipes, workers = [], []
    for _ in range(n):
        r, w = os.pipe()
        os.set_blocking(w, False)
        with contextlib.suppress(BlockingIOError):
            while True:
                os.write(w, b"\n" * 4096)
        os.set_blocking(w, True)
        workers.append(subprocess.Popen([sys.executable, "-m", "advisor", *args], cwd=cwd, stdout=w,
                                        stderr=subprocess.PIPE, text=True,
                                        env={**os.environ, "COLUMNS": "600", "PYTHONUNBUFFERED": "1"}))
        os.close(w)
        pipes.append(r)
    deadline = time.monotonic() + 300
    while not all("pipe_write" in Path(f"/proc/{w.pid}/wchan").read_text() for w in workers):
        assert time.monotonic() < deadline and all(w.poll() is None for w in workers), \
            [w.communicate() for w in workers if w.poll() is not None]
        time.sleep(0.2)
    with ThreadPoolExecutor(n) as ex:
        outs = list(ex.map(lambda r: os.fdopen(r).read().lstrip("\n"), pipes))
    errs = [w.communicate(timeout=600)[1] for w in workers]
    assert all(w.returncode == 0 for w in workers), list(zip(outs, errs, strict=True))
    return list(zip(outs, errs, strict=True))


@pytest.mark.skipif(not sys.platform.startswith("linux"), reason="the gate reads /proc/PID/wchan")
def test_two_workers_resuming_on_sqlite_complete_the_stored_times_once(tmp_path, tuned):
    """The PostgreSQL test below on a SQLite file, whose seed lock is a file lock beside the database
    (`s.db.lock`): two workers released together once both have loaded the model; one measures the lacking
    shape and stores it back, the other finds it stored; every trial of both is priced with the one completed
    set. The read-only commands neither need nor create the lock file."""
    # the warm start's three points all ran (`tuned`), before the stored times are cut: the workers' two trials
    # below are the only ones priced with the completed set
    db = copy_tuned(tuned, tmp_path)
    tune = ["tune", "--space", "space.toml", "--storage", f"sqlite:///{db}", "--study", "c"]
    profile, _ = stored(db)
    partial = {**profile, "table": {"64x8": profile["table"]["128x16"]}}
    set_stored(db, partial)
    outs = _gated_workers([*tune, "--more", "1"], tmp_path)
    completed, sources = stored(db)
    mixed = completed["source"]
    assert completed["table"]["64x8"] == partial["table"]["64x8"] and completed["table"].keys() == {"64x8", "128x16"}
    lines = sorted(next(ln for ln in o.splitlines() if ln.startswith("CPU expert times:")) for o, _ in outs)
    assert lines == sorted([f"CPU expert times: the study's stored measurement, what it lacked (128x16) measured "
                            f"now and stored with it: {mixed}", f"CPU expert times: the study's stored measurement {mixed}"])
    assert [sources[n].endswith(f";cpu={mixed}") for n in sorted(sources)] == [False] * 3 + [True] * 2, sources

    assert (tmp_path / "s.db.lock").is_file()  # the lock the workers took turns on
    (tmp_path / "s.db.lock").unlink()
    assert "c " in advisor("studies", "--storage", f"sqlite:///{db}", cwd=tmp_path)
    advisor("pareto", "c", "--storage", f"sqlite:///{db}", "--no-plots", cwd=tmp_path)
    assert not (tmp_path / "s.db.lock").exists()


def test_the_sqlite_study_lock_taken_inside_itself_is_reentered_and_still_excludes_others(tmp_path):
    """Each lock file of a SQLite file (the file's turn, the seed lock) serves every study in it: taken again
    inside itself (the front saved while seeding, another study) it must be re-entered - a second lock object on
    the same file in one thread waits on the first for ever (older filelock) or raises "Deadlock" (filelock 4) -
    while another thread (a worker) still waits for both."""
    import threading

    from filelock import FileLock, Timeout
    from sqlalchemy import create_engine

    from advisor.tune.study import _study_lock

    engine = create_engine(f"sqlite:///{tmp_path / 's.db'}")
    outcome: list[str] = []

    def nested() -> None:
        with _study_lock(engine, "a", "seed"), _study_lock(engine, "a"), _study_lock(engine, "b", "seed"):
            other: list[BaseException] = []

            def worker() -> None:
                for lock in ("lock", "seed.lock"):
                    try:
                        FileLock(f"{tmp_path / 's.db'}.{lock}").acquire(timeout=0.3)
                    except Timeout as e:
                        other.append(e)

            t = threading.Thread(target=worker)
            t.start()
            t.join()
            outcome.append("waited" if len(other) == 2 else "not excluded")

    t = threading.Thread(target=nested, daemon=True)
    t.start()
    t.join(timeout=20)
    assert outcome == ["waited"], "the nested lock hung" if t.is_alive() else outcome  # [] if it raised


def test_a_worker_measuring_cpu_expert_times_leaves_the_sqlite_files_turn_free(tmp_path, monkeypatch):
    """Seeding a new study measures its CPU expert times (2.4 s for a 2048x1024-expert model on this host): the
    file's turn (`s.db.lock`), which every worker of every study in the file takes to start or end a trial and
    save its front, must be free meanwhile; only the seed lock (`s.db.seed.lock`) is held, which workers already
    running trials never take. Before, the file's turn was held throughout."""
    from concurrent.futures import ThreadPoolExecutor

    from filelock import FileLock, Timeout
    from typer.testing import CliRunner

    import advisor.offload.cpu_profile as cpu_profile
    from advisor.cli import app

    db, held = tmp_path / "s.db", []
    measure = cpu_profile.measure_cpu_experts

    def free(name: str) -> bool:  # another worker's try, from another thread (this one re-enters its own locks)
        lock = FileLock(f"{db}.{name}")
        try:
            lock.acquire(timeout=0)
        except Timeout:
            return False
        lock.release()
        return True

    def probed(*args, **kwargs):
        with ThreadPoolExecutor(1) as ex:
            held.append({name: not ex.submit(free, name).result() for name in ("lock", "seed.lock")})
        return measure(*args, **kwargs)

    monkeypatch.setattr(cpu_profile, "measure_cpu_experts", probed)
    monkeypatch.chdir(tmp_path)
    (tmp_path / "space.toml").write_text(SPACE)
    res = CliRunner().invoke(app, ["tune", "--space", "space.toml", "--storage", f"sqlite:///{db}", "--study", "m",
                                   "--trials", "1"])
    assert res.exit_code == 0, res.output
    assert held and all(h == {"lock": False, "seed.lock": True} for h in held), held


@pytest.mark.postgres
def test_two_workers_resuming_on_postgresql_complete_the_stored_times_once(tmp_path):
    """Two workers resume one PostgreSQL study whose stored times lack the model's expert shape: one measures it
    and stores it back (under the study's seed lock), the other finds it stored; nothing stored is lost, and
    every trial of both is priced with the one completed set."""
    import os
    import time
    import uuid
    import zlib

    import optuna
    from sqlalchemy import text

    from advisor.results.store import engine_for, save_front
    from advisor.results.urls import normalize_url

    base = os.environ.get("ADVISOR_TEST_POSTGRES_URL")
    if not base:
        pytest.skip("ADVISOR_TEST_POSTGRES_URL is not set (source .ci/start_postgres.sh to start a local server)")
    (tmp_path / "space.toml").write_text(SPACE)
    name, url = f"cpuprof-{uuid.uuid4().hex[:8]}", normalize_url(base)
    tune = ["tune", "--space", "space.toml", "--storage", base, "--study", name]
    engine = engine_for(url)
    attr = ("FROM study_user_attributes WHERE key = 'cpu_experts' AND study_id = "
            "(SELECT study_id FROM studies WHERE study_name = :n)")
    try:
        advisor(*tune, "--trials", "1", cwd=tmp_path)
        with engine.begin() as c:
            profile = json.loads(c.execute(text(f"SELECT value_json {attr}"), {"n": name}).scalar_one())
            partial = {**profile, "table": {"64x8": profile["table"]["128x16"]}}
            c.execute(text("UPDATE study_user_attributes SET value_json = :v WHERE key = 'cpu_experts' AND "
                           "study_id = (SELECT study_id FROM studies WHERE study_name = :n)"),
                      {"v": json.dumps(partial), "n": name})
        key = zlib.crc32(f"advisor_seed:{name}".encode())  # the study's seed lock (`advisor.tune.study`)
        with engine.connect() as gate:  # held here until both workers wait on it: then they start together
            gate.execute(text("SELECT pg_advisory_lock(:k)"), {"k": key})
            gate.commit()
            workers = [subprocess.Popen([sys.executable, "-m", "advisor", *tune, "--more", "1"], cwd=tmp_path,
                                        text=True, stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                                        env={**os.environ, "COLUMNS": "600"}) for _ in range(2)]
            waiting = "SELECT count(*) FROM pg_locks WHERE locktype = 'advisory' AND NOT granted AND objid::text = :k"
            deadline = time.monotonic() + 300
            while gate.execute(text(waiting), {"k": str(key)}).scalar_one() < 2:
                assert time.monotonic() < deadline and all(w.poll() is None for w in workers), \
                    [w.communicate() for w in workers if w.poll() is not None]
                time.sleep(0.2)
            gate.execute(text("SELECT pg_advisory_unlock(:k)"), {"k": key})
            gate.commit()
        outs = [w.communicate(timeout=600) for w in workers]
        assert all(w.returncode == 0 for w in workers), outs
        with engine.connect() as c:
            completed = json.loads(c.execute(text(f"SELECT value_json {attr}"), {"n": name}).scalar_one())
        mixed = completed["source"]
        assert completed["table"]["64x8"] == partial["table"]["64x8"] and completed["table"].keys() == {"64x8", "128x16"}
        lines = sorted(next(ln for ln in o.splitlines() if ln.startswith("CPU expert times:")) for o, _ in outs)
        assert lines == sorted([f"CPU expert times: the study's stored measurement, what it lacked (128x16) measured "
                                f"now and stored with it: {mixed}", f"CPU expert times: the study's stored measurement {mixed}"])
        trials = [t for t in optuna.load_study(study_name=name, storage=url).trials if t.state.name == "COMPLETE"]
        assert len(trials) == 3 and [t.user_attrs["sources"]["time_per_token"].endswith(f";cpu={mixed}")
                                     for t in trials] == [False, True, True], [t.user_attrs for t in trials]
    finally:
        with contextlib.suppress(KeyError):
            optuna.delete_study(study_name=name, storage=url)
        save_front(engine, name, [])


def test_a_new_study_says_its_cpu_expert_times_came_from_the_gpu_profile(tmp_path):
    """`advisor profile --cpu` then `tune --gpu <it>`: the profile's times price the study, and the line says
    so (without --gpu the same line says this run measured them)."""
    (tmp_path / "space.toml").write_text(SPACE)
    pp = tmp_path / "pp"
    advisor("profile", "--cpu", "--repeats", "1", "--expert-shape", "128x16", "--profiles-dir", str(pp),
            "--name", "myhost", cwd=tmp_path)
    prof = json.loads(next(pp.glob("*.json")).read_text())["cpu_experts"]
    db = tmp_path / "s.db"
    out = advisor("tune", "--space", "space.toml", "--storage", f"sqlite:///{db}", "--study", "p", "--trials", "1",
                  "--gpu", "myhost", cwd=tmp_path, env={"ADVISOR_PROFILES_DIR": str(pp)})
    stored_times, _ = stored(db)
    assert stored_times["table"] == prof["table"] and stored_times["source"] == prof["source"]
    assert f"CPU expert times: {prof['source']}, from the hardware profile 'myhost', stored with the study" in out, out
    assert "were measured with" not in out  # replay: the profile's times model the deployment's CPU
    # live trials compute CPU experts with --threads: a profile measured with other threads is named
    path = next(pp.glob("*.json"))
    edited = json.loads(path.read_text())
    edited["cpu_experts"]["threads"] = 3  # as if measured with 3 threads (this host has 2 cores)
    path.write_text(json.dumps(edited))
    out = advisor("tune", "--space", "space.toml", "--storage", f"sqlite:///{db}", "--study", "live", "--trials", "1",
                  "--gpu", "myhost", "--mode", "live", "--threads", "1", cwd=tmp_path,
                  env={"ADVISOR_PROFILES_DIR": str(pp)})
    assert ("note: the CPU expert times of profile 'myhost' were measured with 3 threads, but this run computes "
            "CPU experts with 1 (--threads)" in out and "pass --threads 3" in out), out


@pytest.mark.skipif(not sys.platform.startswith("linux"), reason="the gate reads /proc/PID/wchan")
def test_two_workers_on_one_sqlite_file_run_each_queued_trial_once(tmp_path):
    """Two workers released together on a fresh SQLite study that queues 19 trials (the warm start, the
    --budgets points and baselines; 20 when baselines of one configuration were queued apart, 21 when the offloaded
    model's activation allowance was the two largest module outputs, 63 KiB, not the 478 KiB its probe step holds)
    pop them at the same instants: Optuna's claim of a WAITING trial is a
    SELECT ... FOR UPDATE that SQLite ignores, so both ran one and the later one's tell crashed ("Cannot tell a
    COMPLETE trial"). The claim now takes the study file's lock: every queued trial runs exactly once."""
    (tmp_path / "space.toml").write_text(SPACE)
    db = tmp_path / "s.db"
    tune = ["tune", "--space", "space.toml", "--storage", f"sqlite:///{db}", "--study", "q", "--budgets", "25%,50%"]
    outs = _gated_workers([*tune, "--trials", "20"], tmp_path)
    assert not any("Traceback" in o + e for o, e in outs), outs
    with sqlite3.connect(db) as c:
        queued = c.execute("SELECT t.number, t.state FROM trials t JOIN trial_user_attributes a ON "
                           "a.trial_id = t.trial_id WHERE a.key IN ('seeded', 'baseline')").fetchall()
    assert len(queued) == 19 and {s for _, s in queued} == {"COMPLETE"}, queued
