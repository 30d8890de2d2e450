"""A regular (wheel, non-editable) install can tune: build the wheel, install it into a fresh virtual
environment, run `advisor tune --trials 1` there from a directory outside the checkout.

The heavy dependencies (torch, transformers, ...) are not downloaded again: the fresh environment sees the
current one's site-packages through a path file, after its own. So this test proves the package itself -
its modules, the bundled model and the search spaces as package data, the console script - and that every
declared requirement is present; CI's fresh environment (`.ci/run`) proves that nothing undeclared is needed.
"""

from __future__ import annotations

import importlib.util
import os
import shutil
import sqlite3
import subprocess
import sys
import sysconfig
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]

pytestmark = pytest.mark.wheel


def _copy_sources(dst: Path) -> None:
    """The files git tracks (a clean tree to build from; the checkout stays untouched)."""
    if (ROOT / ".git").exists() and shutil.which("git"):
        files = subprocess.run(["git", "ls-files", "-z"], cwd=ROOT, capture_output=True, check=True).stdout
        for rel in filter(None, files.decode().split("\0")):
            src = ROOT / rel
            if src.is_file():
                (dst / rel).parent.mkdir(parents=True, exist_ok=True)
                shutil.copy2(src, dst / rel)
    else:
        shutil.copytree(ROOT, dst, dirs_exist_ok=True,
                        ignore=shutil.ignore_patterns(".git", "*.egg-info", "build", "dist", "__pycache__", "*.db"))


def test_wheel_installs_into_a_fresh_venv_and_tunes(tmp_path):
    src, dist, venv, work = (tmp_path / d for d in ("src", "dist", "venv", "work"))
    for d in (src, work):
        d.mkdir()
    _copy_sources(src)
    isolation = [] if importlib.util.find_spec("setuptools") is None else ["--no-build-isolation"]
    subprocess.run([sys.executable, "-m", "pip", "wheel", "-q", "--no-deps", *isolation, "-w", str(dist), str(src)],
                   check=True, capture_output=True, timeout=300)
    wheel = next(dist.glob("moe_advisor-*.whl"))
    names = subprocess.run([sys.executable, "-m", "zipfile", "-l", str(wheel)], capture_output=True, text=True,
                           check=True).stdout
    assert "advisor/tune/spaces/quick.toml" in names and "advisor/models/bundled/model.safetensors" in names

    # no pip of its own (ensurepip took ~5 s of CPU): this pip installs into it with --python
    subprocess.run([sys.executable, "-m", "venv", "--without-pip", str(venv)], check=True, timeout=300)
    py = venv / "bin" / "python"
    site = subprocess.run([py, "-c", "import sysconfig; print(sysconfig.get_paths()['purelib'])"],
                          capture_output=True, text=True, check=True).stdout.strip()
    (Path(site) / "_heavy_deps.pth").write_text(sysconfig.get_paths()["purelib"] + "\n")
    env = {k: v for k, v in os.environ.items() if k not in ("PYTHONPATH", "VIRTUAL_ENV")}
    subprocess.run([sys.executable, "-m", "pip", "--python", str(py), "install", "-q", "--no-deps", "--no-index",
                    str(wheel)], check=True, env=env, capture_output=True, timeout=300)

    where = subprocess.run([py, "-c", "import advisor, importlib.metadata as m; print(advisor.__file__); "
                            "d = m.distribution('moe-advisor'); print(d.locate_file(''));"
                            "from packaging.requirements import Requirement as R; "
                            "missing = [r for r in map(R, d.requires or []) if not r.marker and not "
                            "any(True for _ in m.distributions(name=r.name))]; print('missing', missing)"],
                           cwd=work, env=env, capture_output=True, text=True, check=True).stdout.splitlines()
    assert where[0].startswith(site), where  # the wheel's copy, not the checkout's
    assert where[-1] == "missing []", where

    r = subprocess.run([venv / "bin" / "advisor", "tune", "--trials", "1", "--storage", "w.db"], cwd=work, env=env,
                       capture_output=True, text=True, timeout=600)
    assert r.returncode == 0, r.stdout + r.stderr
    assert "Pareto front of study bundled-toy-quick" in r.stdout
    con = sqlite3.connect(work / "w.db")
    assert con.execute("SELECT COUNT(*) FROM trials WHERE state = 'COMPLETE'").fetchone()[0] == 1
    con.close()
