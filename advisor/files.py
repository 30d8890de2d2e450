"""Atomic writes: every file or directory the tool writes appears whole or not at all.

A temporary sibling is written first and renamed into place (a rename within one directory is atomic), so a
crash, a Ctrl-C or a failed step never leaves half an output. Standard library only: any layer may import it.
"""

from __future__ import annotations

import os
import shutil
import tempfile
import time
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

from advisor.errors import UserError


def _directory_of(path: Path, create: bool) -> Path:
    parent = path.parent
    if create:
        parent.mkdir(parents=True, exist_ok=True)
    elif not parent.is_dir():
        raise UserError(f"cannot write {path}: directory {parent} does not exist")
    return parent


@contextmanager
def atomic_path(path: str | os.PathLike, *, create_dirs: bool = True) -> Iterator[Path]:
    """A temporary path beside `path` to write to; renamed onto `path` when the block succeeds, removed
    otherwise. Without `create_dirs`, a missing directory is a `UserError`."""
    path = Path(path)
    fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".tmp", dir=_directory_of(path, create_dirs))
    os.close(fd)
    try:
        yield Path(tmp)
        os.replace(tmp, path)
    finally:
        Path(tmp).unlink(missing_ok=True)


def write_atomic(path: str | os.PathLike, text: str, *, create_dirs: bool = True) -> Path:
    """Write `text` to `path` atomically."""
    with atomic_path(path, create_dirs=create_dirs) as tmp:
        tmp.write_text(text)
    return Path(path)


@contextmanager
def atomic_dir(path: str | os.PathLike) -> Iterator[Path]:
    """A temporary directory beside `path` to fill; it replaces `path` when the block succeeds (an older
    directory there is removed only after that), and is removed otherwise."""
    path = Path(path)
    tmp = Path(tempfile.mkdtemp(prefix=f".{path.name}-", dir=_directory_of(path.resolve(), True)))
    try:
        yield tmp
        old = None
        if path.exists():
            if not path.is_dir():
                raise UserError(f"{path} exists and is not a directory; choose another -o")
            old = path.with_name(f".{path.name}.old-{int(time.time() * 1000)}")
            path.rename(old)
        try:
            tmp.rename(path)
        except OSError:
            if old is not None:
                old.rename(path)
            raise
        if old is not None:
            shutil.rmtree(old, ignore_errors=True)
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        raise
