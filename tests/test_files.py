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
    with pytest.raises(RuntimeError), atomic_dir(out) as d:
        (d / "a.md").write_text("second")
        raise RuntimeError("a figure failed")
    assert (out / "a.md").read_text() == "first" and [p.name for p in tmp_path.iterdir()] == ["report"]
    with atomic_dir(out) as d:
        (d / "b.md").write_text("third")
    assert [p.name for p in out.iterdir()] == ["b.md"] and [p.name for p in tmp_path.iterdir()] == ["report"]
