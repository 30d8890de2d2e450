"""Atomic writes (`advisor.files`): an output appears whole or not at all, and an older one survives a failure."""

import pytest

from advisor.errors import UserError
from advisor.files import atomic_dir, atomic_path, write_atomic


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
