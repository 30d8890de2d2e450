"""Atomic writes (`advisor.files`): an output appears whole or not at all, and an older one survives a failure."""

import pytest

from advisor.errors import UserError
from advisor.files import atomic_dir, atomic_path, check_replaceable, write_atomic


def test_failed_write_keeps_the_old_file_and_leaves_no_temp(tmp_path):
    target = write_atomic(tmp_path / "sub" / "out.json", "old")
    with pytest.raises(RuntimeError), atomic_path(target) as tmp:
        tmp.write_text("half")
        raise RuntimeError("crash mid-write")
    assert target.read_text() == "old" and sorted(p.name for p in target.parent.iterdir()) == ["out.json"]
    assert write_atomic(target, "new").read_text() == "new"
    with pytest.raises(UserError, match="does not exist"):
        write_atomic(tmp_path / "missing" / "x.txt", "x", create_dirs=False)


def test_directory_replaced_only_when_complete(tmp_path):
    out = tmp_path / "report"
    with atomic_dir(out) as d:
        (d / "a.md").write_text("first")
    with pytest.raises(RuntimeError), atomic_dir(out, replaces={"a.md"}) as d:
        (d / "a.md").write_text("second")
        raise RuntimeError("a figure failed")
    assert (out / "a.md").read_text() == "first" and [p.name for p in tmp_path.iterdir()] == ["report"]
    with atomic_dir(out, replaces={"a.md"}) as d:
        (d / "b.md").write_text("third")
    assert [p.name for p in out.iterdir()] == ["b.md"] and [p.name for p in tmp_path.iterdir()] == ["report"]


def test_outputs_get_the_mode_a_plain_open_gives(tmp_path):
    """Not the temporary file's private 0600/0700: 0644 files, 0755 scripts and directories under umask 022."""
    import os

    old = os.umask(0o022)
    try:
        assert (write_atomic(tmp_path / "a.json", "{}").stat().st_mode & 0o777) == 0o644
        assert (write_atomic(tmp_path / "run.sh", "#!/bin/sh\n", executable=True).stat().st_mode & 0o777) == 0o755
        with atomic_dir(tmp_path / "report") as d:
            (d / "x.md").write_text("x")
        assert ((tmp_path / "report").stat().st_mode & 0o777) == 0o755
    finally:
        os.umask(old)


def test_a_directory_holding_other_files_is_never_replaced(tmp_path, monkeypatch):
    """`advisor report -o DIR` removed DIR with whatever else it held (`-o .`, `-o ~/work`): now refused."""
    mine = tmp_path / "work"
    mine.mkdir()
    (mine / "notes.txt").write_text("mine")
    with pytest.raises(UserError, match=r"holds other files \(notes.txt\), which writing there would delete"):
        with atomic_dir(mine, replaces={"a.md"}) as d:
            (d / "a.md").write_text("x")
    assert (mine / "notes.txt").read_text() == "mine"
    monkeypatch.chdir(mine)
    with pytest.raises(UserError, match="holds other files"), atomic_dir(".") as d:
        (d / "a.md").write_text("x")
    assert (mine / "notes.txt").read_text() == "mine"


_SWAP_CUT = """
import os, signal, sys
from pathlib import Path
from advisor.files import atomic_dir

out, sig = Path(sys.argv[1]), getattr(signal, sys.argv[2])
rename = Path.rename


def cut(self, target):  # the signal comes right after the earlier output is set aside, before the new one is in
    moved = rename(self, target)
    if self == out:
        os.kill(os.getpid(), sig)
    return moved


Path.rename = cut
with atomic_dir(out, replaces={"a.md"}) as d:
    (d / "a.md").write_text("second")
"""


def _earlier_report(tmp_path):
    out = tmp_path / "report"
    with atomic_dir(out) as d:
        (d / "a.md").write_text("first")
    return out


def test_a_signal_between_the_two_renames_waits_for_the_second(tmp_path, monkeypatch):
    """Replacing an earlier output is two renames (it aside to `.NAME.old-<ms>`, the new one to NAME): a Ctrl-C
    between them left the earlier output only in the hidden folder and NAME missing. The signal (a real one, sent
    between them) now waits until both are done."""
    import os
    import signal
    from pathlib import Path

    out = _earlier_report(tmp_path)
    rename = Path.rename

    def cut(self, target):
        moved = rename(self, target)
        if self == out:
            os.kill(os.getpid(), signal.SIGINT)
        return moved

    monkeypatch.setattr(Path, "rename", cut)
    with pytest.raises(KeyboardInterrupt), atomic_dir(out, replaces={"a.md"}) as d:
        (d / "a.md").write_text("second")
    monkeypatch.undo()
    assert (out / "a.md").read_text() == "second"
    assert [p.name for p in tmp_path.iterdir()] == ["report"]


@pytest.mark.parametrize("sig", ["SIGTERM", "SIGKILL"])
def test_a_process_killed_between_the_two_renames_leaves_an_output_in_place(tmp_path, sig):
    """SIGTERM (whose default ends the process at once) waits until the new output is in place; SIGKILL cannot
    wait, and the next writer of that path (`advisor report` checks it first) puts the earlier output back;
    either way no hidden copy of it stays."""
    import subprocess
    import sys

    out = _earlier_report(tmp_path)
    r = subprocess.run([sys.executable, "-c", _SWAP_CUT, str(out), sig], capture_output=True, text=True)
    assert r.returncode == -getattr(__import__("signal"), sig), r.stderr
    if sig == "SIGTERM":
        assert (out / "a.md").read_text() == "second"
    check_replaceable(out, {"a.md"})
    assert (out / "a.md").read_text() == ("second" if sig == "SIGTERM" else "first")
    # (SIGKILL also leaves the new output's temporary folder, `.report-<random>`: another writer may be filling it)
    assert not [p.name for p in tmp_path.iterdir() if ".old-" in p.name]


@pytest.mark.parametrize("meanwhile", ["recovers", "writes"])
def test_another_writer_of_the_same_path_between_the_two_renames_is_no_traceback(tmp_path, monkeypatch, meanwhile):
    """Two writers of one -o at the same moment (two `advisor report`s): between this one's two renames the other
    one's `check_replaceable` saw NAME missing and put the set-aside copy back (`recovers`), or put its own
    output in place (`writes`). The second rename then failed, putting the copy back found it gone, and the
    FileNotFoundError (or "Directory not empty") ended the run in a traceback. Now the newest output is in place
    and no copy is left aside."""
    from pathlib import Path

    out = _earlier_report(tmp_path)
    rename = Path.rename
    once = []

    def other_writer(self, target):
        moved = rename(self, target)
        if self == out and not once:
            once.append(target)
            monkeypatch.setattr(Path, "rename", rename)
            if meanwhile == "recovers":
                check_replaceable(out, {"a.md"})
            else:
                with atomic_dir(out, replaces={"a.md"}) as d:
                    (d / "a.md").write_text("other")
            monkeypatch.setattr(Path, "rename", other_writer)
        return moved

    monkeypatch.setattr(Path, "rename", other_writer)
    with atomic_dir(out, replaces={"a.md"}) as d:
        (d / "a.md").write_text("second")
    monkeypatch.undo()
    assert once and (out / "a.md").read_text() == "second"
    assert [p.name for p in tmp_path.iterdir()] == ["report"]


def test_a_real_failure_of_the_second_rename_still_raises_and_restores_the_earlier_output(tmp_path, monkeypatch):
    """Only what another writer causes (a copy gone, NAME taken) is tolerated: any other error of the rename
    (here EXDEV) is raised as before, with the earlier output put back."""
    import errno
    from pathlib import Path

    out = _earlier_report(tmp_path)
    rename = Path.rename

    def fails(self, target):
        if Path(target) == out and self.name.startswith(".report-"):
            raise OSError(errno.EXDEV, "Invalid cross-device link")
        return rename(self, target)

    monkeypatch.setattr(Path, "rename", fails)
    with pytest.raises(OSError, match="cross-device"), atomic_dir(out, replaces={"a.md"}) as d:
        (d / "a.md").write_text("second")
    monkeypatch.undo()
    assert (out / "a.md").read_text() == "first" and [p.name for p in tmp_path.iterdir()] == ["report"]


def test_a_report_killed_mid_write_leaves_a_folder_the_next_report_removes(tmp_path):
    """A SIGKILL (or the OOM killer) while `advisor report` fills its temporary folder left `.NAME-XXXXXXXX`
    beside the output for ever. The next report removes such a folder - only one named so, holding only report
    entries, and held by no live writer (a writer keeps its folder locked while it fills it)."""
    import fcntl
    import os
    import subprocess
    import sys
    from pathlib import Path

    root = Path(__file__).resolve().parents[1]
    killed = tmp_path / ".rep-k1ll3d00"
    (killed / "figures").mkdir(parents=True)
    (killed / "figures" / "pareto.png").write_bytes(b"\x89PNG")
    (killed / "report.md").write_text("# half")
    theirs = tmp_path / ".rep-notes000"  # the user's own folder, named alike by chance
    theirs.mkdir()
    (theirs / "notes.txt").write_text("mine")
    live = tmp_path / ".rep-l1ve0000"  # another report being written right now
    (live / "figures").mkdir(parents=True)
    fd = os.open(live, os.O_RDONLY | os.O_DIRECTORY)
    try:
        fcntl.flock(fd, fcntl.LOCK_EX)
        r = subprocess.run([sys.executable, "-m", "advisor", "report", "bundled-example", "--storage",
                            "studies/example/advisor.db", "-o", str(tmp_path / "rep"), "--data",
                            str(tmp_path / "missing.jsonl")], capture_output=True, text=True, timeout=120, cwd=root)
    finally:
        os.close(fd)
    assert r.returncode == 2 and r.stderr.startswith("error: --data"), r.stderr
    assert sorted(p.name for p in tmp_path.iterdir()) == [".rep-l1ve0000", ".rep-notes000"]
    assert (theirs / "notes.txt").read_text() == "mine" and (live / "figures").is_dir()


def test_a_file_write_killed_midway_leaves_a_temporary_the_next_write_removes(tmp_path):
    """A SIGKILL while `advisor export -o` (or trace -o, eval --json, a plot) wrote its temporary sibling left
    `.NAME.XXXXXXXX.tmp` for ever. The next write of NAME removes such a file - only one named so, and not one a
    live writer holds locked."""
    import fcntl
    import os
    import subprocess
    import sys
    from pathlib import Path

    root = Path(__file__).resolve().parents[1]
    killed = tmp_path / ".out.json.k1ll3d00.tmp"
    killed.write_text('{"half": ')
    live = tmp_path / ".out.json.l1ve0000.tmp"  # another export of the same file, being written right now
    live.write_text("{")
    theirs = tmp_path / ".out.json.notes.tmp"  # not a name the writer gives
    theirs.write_text("mine")
    fd = os.open(live, os.O_RDONLY)
    try:
        fcntl.flock(fd, fcntl.LOCK_EX)
        r = subprocess.run([sys.executable, "-m", "advisor", "export", "bundled-example", "129", "--to", "json",
                            "--storage", "studies/example/advisor.db", "-o", str(tmp_path / "out.json")],
                           capture_output=True, text=True, timeout=120, cwd=root)
    finally:
        os.close(fd)
    assert r.returncode == 0, r.stderr
    assert sorted(p.name for p in tmp_path.iterdir()) == [".out.json.l1ve0000.tmp", ".out.json.notes.tmp", "out.json"]


def test_a_temporary_folder_another_writer_removes_before_it_is_opened_is_made_again(tmp_path, monkeypatch):
    """Another `advisor report -o` of the same path removes an empty, unlocked `.NAME-XXXXXXXX` as a killed
    writer's: one this writer had just made and not yet opened to lock. It makes another, instead of failing
    with "cannot create ...: No such file or directory; choose another -o"."""
    import shutil
    import tempfile

    made = []
    mkdtemp = tempfile.mkdtemp

    def taken_once(*args, **kwargs):
        d = mkdtemp(*args, **kwargs)
        if ".probe-" not in d:
            made.append(d)
            if len(made) == 1:
                shutil.rmtree(d)  # the other writer's sweep, between mkdtemp and the lock
        return d

    monkeypatch.setattr(tempfile, "mkdtemp", taken_once)
    out = tmp_path / "rep"
    with atomic_dir(out, replaces={"a.md"}) as d:
        (d / "a.md").write_text("done")
    assert len(made) == 2 and (out / "a.md").read_text() == "done" and [p.name for p in tmp_path.iterdir()] == ["rep"]
