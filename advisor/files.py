"""Paths the user names (`home_path`) and atomic writes: every file or directory the tool writes appears whole
or not at all.

A temporary sibling is written first and renamed into place (a rename within one directory is atomic), so a
crash, a Ctrl-C or a failed step never leaves half an output. Standard library only: any layer may import it.
"""

from __future__ import annotations

import errno
import itertools
import os
import re
import shlex
import shutil
import signal
import stat
import tempfile
import threading
import time
from collections.abc import Callable, Collection, Iterator, Mapping
from contextlib import ExitStack, contextmanager
from pathlib import Path
from typing import TypeVar

from advisor.errors import UserError

try:
    import fcntl
except ImportError:  # not POSIX: no locks, so no folder a killed writer left is ever taken for stale
    fcntl = None  # type: ignore[assignment]


P = TypeVar("P", str, Path, None)

OUTPUT = "-o/--output"
"""The output option of `report`, `pareto`, `export` and `trace` as a refusal names it
(`advisor.commands.option_name`); here, so that a layer below the commands (`advisor.report`) names it alike."""


def home_path(value: P) -> P:
    """`value` with a leading '~' expanded as the shell would, for every path the user names: an option, a MODEL
    spec, an ADVISOR_* variable. The shell expands none after '=' (`--json=~/r.json`) or in quotes
    (`ADVISOR_PROFILES_DIR='~/p'`), and the path kept as typed named a directory '~' here. A `~user` of no such user
    stays as typed (`os.path.expanduser`; `Path.expanduser` raised a RuntimeError, a traceback)."""
    if value is None:
        return value
    home = os.path.expanduser(value)
    return Path(home) if isinstance(value, Path) else home


def _give(option: str) -> str:
    """How a refusal of an output path ends: naming the `option` that gave it (`-o/--output`, `--json`), where the
    caller says which."""
    return f"give {option} another path" if option else "give another path"


def _directory_of(path: Path, create: bool, option: str = "") -> Path:
    parent = path.parent
    if create:
        if not parent.is_dir():  # a file, a link to nothing or a loop of links named as such, not "File exists"
            _refuse_unmakeable(path, _give(option))
        try:
            parent.mkdir(parents=True, exist_ok=True)
        except OSError as e:  # a file where a directory must be, a read-only or pseudo file system
            raise UserError(f"cannot write {path}: cannot create directory {parent} ({e.strerror}); "
                            f"{_give(option)}") from None
    else:
        check_parent(path, option)
    return parent


def check_parent(path: str | os.PathLike, option: str = "") -> None:
    """`UserError` when the directory that would hold `path` is missing, or is no directory. An output file
    (`export -o`, `--json`), `tune --storage`'s SQLite file, or a folder a command creates and fills (`report -o`,
    `pareto -o`, `profile --profiles-dir`) is made, but not the missing directories above it: a mistyped one is
    refused, not made, in the same words whichever `option` named it. Only a default's (studies/, reports/) is
    made; its callers skip this for it. A path still beginning with '~' after `user_path` expanded it names no
    user's home (`~nobody/...`): it is not told to `mkdir -p '~nobody'`, a directory whose name the shell reads as
    a home; nor is a link to nothing (`mkdir -p` cannot make it). A `path` that is a link is checked where the
    write lands (`_through_link`): `report -o LINK` made its target's missing folders."""
    give = _give(option)
    path = _through_link(Path(path), give)
    if path.parent.is_dir():
        return
    _refuse_unmakeable(path, give)
    if path.parts[0].startswith("~"):
        raise UserError(f"cannot create {path}: no directory named {path.parts[0]!r} here, and no user "
                        f"{path.parts[0][1:]!r} whose home it names; {give}")
    raise UserError(f"cannot create {path}: directory {path.parent} does not exist; create it (mkdir -p "
                    f"{shlex.quote(str(path.parent))}) or {give}")


def check_folder(path: str | os.PathLike, option: str, *, default: bool = False) -> None:
    """`UserError` when the folder a command fills (`pareto -o`, `profile --profiles-dir`) is a file: said before
    the work, in one wording, not as `cannot create directory X (File exists)` once the plots were drawn. `default`:
    `path` is the option's default, which the user did not type, so the line does not say they gave it."""
    if os.path.exists(path) and not os.path.isdir(path):
        if default:
            raise UserError(f"{path} (where {option} writes by default) is a file, not a directory; move it or "
                            f"give {option} a directory")
        raise UserError(f"{option} {path} is a file, not a directory; give a directory")


def _refuse_unmakeable(path: Path, give: str) -> None:
    """`UserError` where the nearest entry above `path` there is cannot hold the missing directories: a file, a
    link to nothing, or a loop of links (`mkdir -p` makes none of them a directory)."""
    where = path.parent
    while not os.path.lexists(where) and where != where.parent:
        where = where.parent
    if where.is_symlink() and not where.exists():
        try:
            os.stat(where)
            why = "which does not exist"
        except OSError as e:
            why = ("which leads back to itself (a loop of links)" if e.errno == errno.ELOOP else
                   "which does not exist")
        raise UserError(f"cannot create {path}: {where} is a link to {os.readlink(where)}, {why}; {give}")
    if where.exists() and not where.is_dir():
        raise UserError(f"cannot create {path}: {where} is not a directory; {give}")


def _through_link(path: Path, give: str = "give another path") -> Path:
    """Where writing `path` lands: a symbolic link's target is replaced (as `report -o` fills a linked directory's
    target), not the link by a file of its own, which left the file the user linked as it was. A link that leads
    back to itself lands nowhere: refused (`tune --storage LOOP` was "its disk is full ... or read-only" from
    SQLite, `report -o LOOP` a traceback, `export -o LOOP` replaced the link)."""
    if not path.is_symlink():
        return path
    try:
        os.stat(path)
    except OSError as e:
        if e.errno == errno.ELOOP:
            raise UserError(_looping(path, give)) from None
    return Path(os.path.realpath(path))


def _looping(path: Path, give: str) -> str:
    """The refusal of an output `path` that is a link leading back to itself."""
    return f"cannot write {path}: it is a link that leads back to itself (a loop of links); {give}"


def _not_a_directory(path: str | os.PathLike, give: str) -> Path:
    """`path` as a Path, refused where it names a directory: one there (the refusal ends with `give`, `_give`: the
    option that gave it - `pareto -o`'s plot files are named after the study, no file name to give), or a name
    typed with a trailing '/' (`export -o out/`), which Path drops - it wrote a file named `out` and said
    `wrote out/`."""
    text = os.fspath(path)
    if Path(text).is_dir():
        raise UserError(f"cannot write {text}: it is a directory; {give}")
    refuse_directory_name(text)
    return Path(text)


def refuse_directory_name(text: str, verb: str = "write") -> None:
    """`UserError` for a file name typed with a trailing '/' (`export -o out/`, `--storage x.db/`): it names a
    directory, but Path and SQLite drop the '/' and write (or read: `verb`) the file `out`."""
    if text.endswith(("/", os.sep)):
        raise UserError(f"cannot {verb} {text}: a name ending in '/' names a directory; give a file name")


def special_kind(path: str | os.PathLike) -> str | None:
    """What `path` is where it is neither a file nor a directory ("a character device", "a named pipe", ...): a
    place no output file or database can be; None where it is either, or nothing is there yet."""
    try:
        mode = os.stat(path).st_mode
    except OSError:  # nothing there yet (or not reachable: said where it is written)
        return None
    if stat.S_ISREG(mode) or stat.S_ISDIR(mode):
        return None
    return ("a character device" if stat.S_ISCHR(mode) else "a block device" if stat.S_ISBLK(mode) else
            "a named pipe" if stat.S_ISFIFO(mode) else "a socket" if stat.S_ISSOCK(mode) else "not a regular file")


def _not_special(path: Path, give: str) -> Path:
    """`path`, refused where it is a device, a named pipe or a socket (`export -o /dev/null`, a FIFO): the
    temporary file renamed onto it replaced the node itself with a regular file (as root, /dev/null for every
    process), and a pipe's reader read nothing. The refusal ends with `give` (`_give`: the option's name). Checked
    on the path as given (`os.stat` follows a link), before `_through_link`: `-o /dev/stdout` into a pipe resolves
    to `/proc/PID/fd/pipe:[N]`, no path at all, and was "cannot write /proc/PID/fd/pipe:[N]: No such file or
    directory"."""
    kind = special_kind(path)
    if kind is not None:
        raise UserError(f"cannot write {path}: it is {kind}, which a file written whole would replace; {give}")
    return path


def _check_names(path: Path, where: Path) -> None:
    """`UserError` for a name in `path` longer than the file system under `where` (its nearest existing
    directory) takes: found when the file or its directories are created, after the work, otherwise."""
    try:
        limit = os.pathconf(where, "PC_NAME_MAX")
    except (OSError, ValueError):
        limit = 255
    for part in path.parts:
        if len(os.fsencode(part)) > limit:
            shown = part if len(part) <= 40 else f"{part[:20]}...{part[-17:]}"
            raise UserError(f"cannot write {shown!r}: a name of {len(os.fsencode(part))} bytes, and the file "
                            f"system takes {limit}; give a shorter path")


def check_writable(path: str | os.PathLike, *, create_dirs: bool = True, option: str = "") -> None:
    """`UserError` now if `path` cannot be written, before the work whose result it would hold (an evaluation
    can take minutes): a missing directory (without `create_dirs`), a directory, or a place that refuses files -
    for a symbolic link, its target's (`_through_link`: where the write lands). The refusal names `option` (the
    one that gave `path`), as `check_parent`'s does."""
    give = _give(option)
    path = _through_link(_not_special(_not_a_directory(path, give), give), give)
    where = path.parent
    if not create_dirs:
        _directory_of(path, False, option)
    elif not where.is_dir():  # to be made: refused now where it cannot be, not once the work is done
        _refuse_unmakeable(path, give)
    while not where.exists() and where != where.parent:
        where = where.parent
    _check_names(path, where)
    if (why := no_new_file(where)) is not None:
        raise UserError(f"cannot write {path}: {where} does not take files ({why}); {give}")


def no_new_file(directory: Path) -> str | None:
    """Why no file can be created in `directory` (the error's words), found by creating one there and removing it;
    None where one can. Tried, not asked: `os.access` says yes to root in /proc and on a read-only file system."""
    try:
        tempfile.TemporaryFile(dir=directory).close()
    except OSError as e:
        return e.strerror or str(e)
    return None


def _umask() -> int:
    mask = os.umask(0o022)
    os.umask(mask)
    return mask


def _usual_mode(path: Path, *, executable: bool, replaced: Path | None = None) -> None:
    """The mode a plain `open()` (or `mkdir`) would have given - 0644 / 0755 under the usual umask - instead
    of the temporary file's private 0600 (0700 for directories); where it replaces a regular file (`replaced`),
    that file's mode (and a script's execute bits), as writing into it would keep it: a private 0600 file - one a
    link named, written through since `_through_link` - was left readable by everyone."""
    usual = (0o777 if executable or path.is_dir() else 0o666) & ~_umask()
    try:
        kept = os.stat(replaced) if replaced is not None else None
    except OSError:  # nothing there yet
        kept = None
    if kept is not None and stat.S_ISREG(kept.st_mode):
        usual = stat.S_IMODE(kept.st_mode) | (usual & 0o111 if executable else 0)
    path.chmod(usual)


@contextmanager
def atomic_path(path: str | os.PathLike, *, create_dirs: bool = True, executable: bool = False,
                option: str = "") -> Iterator[Path]:
    """A temporary path beside `path` to write to; renamed onto `path` when the block succeeds, removed
    otherwise, with the usual file mode (`executable`: a script, 0755). Without `create_dirs`, a missing
    directory is a `UserError`, and so is a `path` that is a directory (the rename would fail after the work).
    A `path` that is a symbolic link is written through (`_through_link`). A refusal names `option`, the one that
    gave `path` (`check_writable`)."""
    give = _give(option)
    path = _through_link(_not_special(_not_a_directory(path, give), give), give)
    directory = _directory_of(path, create_dirs, option)
    _remove_stale_files(path)
    fd, tmp = -1, ""
    try:
        with _signals_deferred():  # a signal as the temporary is made: raised once `finally` below knows to remove it
            fd, tmp = _new_temp_file(path, directory, give)
        yield Path(tmp)
        if Path(tmp).exists():
            _usual_mode(Path(tmp), executable=executable, replaced=path)
        os.replace(tmp, path)
    finally:
        if tmp:
            Path(tmp).unlink(missing_ok=True)
            os.close(fd)


def _new_temp_file(path: Path, directory: Path, give: str) -> tuple[int, str]:
    """A new temporary file beside `path` (`.NAME.` + 8 characters + `.tmp`), open and locked: locked while it is
    written (another writer's `_remove_stale_files` leaves it), released by the kernel however the process ends."""
    while True:
        try:
            fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".tmp", dir=directory)
        except OSError as e:
            raise UserError(f"cannot write {path}: {e.strerror}; {give}") from e
        # that cleaner may have taken it between mkstemp and the lock: then make another
        if not _lock(fd, wait=True) or _same(fd, Path(tmp)):
            return fd, tmp
        os.close(fd)


def _remove_stale_files(path: Path) -> None:
    """Remove the temporary files of `atomic_path` writers of `path` that were killed (SIGKILL, the OOM killer)
    while they wrote: named as `atomic_path` names them (`.NAME.` + 8 characters + `.tmp`), regular files, and
    locked by no live writer."""
    _remove_unlocked(path.parent, re.compile(rf"\.{re.escape(path.name)}\.[a-z0-9_]{{8}}\.tmp"), os.O_NONBLOCK,
                     lambda fd: stat.S_ISREG(os.fstat(fd).st_mode), Path.unlink)


def write_atomic(path: str | os.PathLike, text: str, *, create_dirs: bool = True, executable: bool = False,
                 option: str = "") -> Path:
    """Write `text` to `path` atomically (`executable`: a script, mode 0755; else 0644 under the usual umask);
    a refusal names `option` (`atomic_path`)."""
    with atomic_path(path, create_dirs=create_dirs, executable=executable, option=option) as tmp:
        tmp.write_text(text)
    return Path(path)


def write_together(files: Mapping[Path, bytes | str], *, option: str = "") -> list[Path]:
    """Write each of `files` (path: its bytes, or text written as UTF-8) to a temporary beside it (`atomic_path`),
    then rename them all into place with SIGINT and SIGTERM held off: an interrupt leaves every file as it was or
    every one new, never a new one beside an old or missing one (`pareto`'s PNG without its HTML page)."""
    with ExitStack() as stack:
        for path, content in files.items():
            tmp = stack.enter_context(atomic_path(path, option=option))
            if isinstance(content, bytes):
                tmp.write_bytes(content)
            else:
                tmp.write_text(content, encoding="utf-8")
        renames = stack.pop_all()  # the temporaries are all written: only their renames are left
    with _signals_deferred():
        renames.close()
    return list(files)


_ASIDE = itertools.count()


def _aside_name(path: Path) -> Path:
    """Where `atomic_dir` sets the earlier output at `path` aside: `.NAME.old-<ms>-<pid>-<n>`, a name no other
    writer (process, or thread of this one) takes in the same millisecond."""
    return path.with_name(f".{path.name}.old-{int(time.time() * 1000)}-{os.getpid()}-{next(_ASIDE)}")


def _old_copies(path: Path) -> list[Path]:
    """The earlier outputs `atomic_dir` set aside beside `path` (`.NAME.old-<ms>[-<pid>-<n>]`), oldest first."""
    pattern = re.compile(rf"\.{re.escape(path.name)}\.old-(\d+)(?:-(\d+)-(\d+))?")
    try:
        found = [(int(m.group(1)), p.name, p) for p in path.parent.iterdir()
                 if (m := pattern.fullmatch(p.name)) and p.is_dir()]
    except OSError:  # no directory there yet, or one that cannot be listed: nothing set aside
        return []
    return [p for *_, p in sorted(found)]


def _recover(path: Path) -> None:
    """What a replacement cut short left beside `path` (a process killed between `atomic_dir`'s two renames, or
    before it removed the earlier output): the earlier output back in place when `path` is missing, any other
    copy set aside removed."""
    old = _old_copies(path)
    if old and not path.exists():
        try:
            old.pop().rename(path)
        except OSError as e:
            if not _other_writer(e):
                return  # the copy stays: it may be the only one
            # another writer of `path` got there first: it took the copy, or put an output in place
    for p in old:
        shutil.rmtree(p, ignore_errors=True)


def _temp_dir_name(path: Path) -> re.Pattern[str]:
    """The names `atomic_dir` fills its output under beside `path`: `tempfile.mkdtemp`'s `.NAME-` + 8 characters."""
    return re.compile(rf"\.{re.escape(path.name)}-[a-z0-9_]{{8}}")


def _lock(fd: int, *, wait: bool) -> bool:
    """Take the exclusive lock on the file or directory open as `fd`: a writer holds it on its temporary file or
    folder while it fills it, and the kernel lets it go when the process ends, however (SIGKILL, a power cut:
    then there is no process to hold it). False when another process holds it (`wait=False`), or when the file
    system takes no locks (a writer goes on without; nothing there is then taken for stale)."""
    if fcntl is None:
        return False
    try:
        fcntl.flock(fd, fcntl.LOCK_EX | (0 if wait else fcntl.LOCK_NB))
    except OSError:
        return False
    return True


def _same(fd: int, path: Path) -> bool:
    """Whether `path` is still the file or directory open as `fd` (not removed, nor replaced, since it was
    opened)."""
    try:
        here, held = os.lstat(path), os.fstat(fd)
    except OSError:
        return False
    return (here.st_dev, here.st_ino) == (held.st_dev, held.st_ino)


def _remove_stale(path: Path, replaces: Collection[str]) -> None:
    """Remove the temporary folders of `atomic_dir` writers of `path` that were killed (SIGKILL, the OOM killer)
    before they finished: named as `atomic_dir` names them, holding only entries that writer writes (`replaces`),
    and locked by no live writer. A folder of the user's - another name, other files, a symbolic link - stays."""
    _remove_unlocked(path.parent, _temp_dir_name(path), os.O_DIRECTORY,
                     lambda fd: all(e.name in replaces for e in os.scandir(fd)),
                     lambda p: shutil.rmtree(p, ignore_errors=True))


def _remove_unlocked(directory: Path, pattern: re.Pattern[str], flags: int, leftover: Callable[[int], bool],
                     remove: Callable[[Path], None]) -> None:
    """Remove each entry of `directory` named as `pattern` says that no live writer holds locked and that
    `leftover` (given it open) takes for a killed writer's; one gone meanwhile, a symbolic link or one not ours
    to read stays."""
    try:
        found = [p for p in directory.iterdir() if pattern.fullmatch(p.name)]
    except OSError:
        return
    for p in found:
        try:
            fd = os.open(p, os.O_RDONLY | os.O_NOFOLLOW | flags)
        except OSError:
            continue
        try:
            if _lock(fd, wait=False) and _same(fd, p) and leftover(fd):  # not a live writer's, nor replaced
                remove(p)
        except OSError:
            continue
        finally:
            os.close(fd)  # the lock goes with it


@contextmanager
def _own_temp_dir(path: Path) -> Iterator[Path]:
    """A new temporary folder beside `path`, locked for as long as the block runs (`_remove_stale` leaves it),
    and removed when the block fails (not when it has put the folder in place)."""
    fd, tmp = -1, None
    try:
        with _signals_deferred():  # a signal as the folder is made: raised once the `except` below knows to remove it
            fd, tmp = _new_temp_dir(path)
        yield tmp
    except BaseException:
        if tmp is not None:
            shutil.rmtree(tmp, ignore_errors=True)
        raise
    finally:
        if fd >= 0:
            os.close(fd)


def _new_temp_dir(path: Path) -> tuple[int, Path]:
    """A new temporary folder beside `path` (`.NAME-` + 8 characters), open and locked."""
    while True:
        try:
            tmp = Path(tempfile.mkdtemp(prefix=f".{path.name}-", dir=_directory_of(path, True)))
        except OSError as e:
            raise UserError(f"cannot create {path}: {e.strerror}; {_give(OUTPUT)}") from None
        try:
            fd = os.open(tmp, os.O_RDONLY | os.O_DIRECTORY)
        except FileNotFoundError:  # another writer's `_remove_stale` took it, still empty, before it was opened
            continue
        except OSError as e:
            shutil.rmtree(tmp, ignore_errors=True)
            raise UserError(f"cannot create {path}: {e.strerror}; {_give(OUTPUT)}") from None
        # another writer's `_remove_stale` may have taken it between mkdtemp and the lock: then make another
        if not _lock(fd, wait=True) or _same(fd, tmp):
            return fd, tmp
        os.close(fd)


def _other_writer(e: OSError) -> bool:
    """What another writer of the same path, at the same moment, makes a rename see: its source gone (set aside,
    put back, or removed by that writer) or its target taken (that writer's output in place)."""
    return e.errno in (errno.ENOENT, errno.ENOTEMPTY, errno.EEXIST)


@contextmanager
def _signals_deferred() -> Iterator[None]:
    """SIGINT and SIGTERM that arrive in the block are delivered when it has finished, to the handlers in force
    before it (a KeyboardInterrupt, or the process's end): a few renames are never cut in half. Only the main
    thread can install handlers; elsewhere the block runs as it is (`_recover` repairs what a signal left)."""
    if threading.current_thread() is not threading.main_thread():
        yield
        return
    got: list[int] = []
    before: dict[int, object] = {}
    try:
        for sig in (signal.SIGINT, signal.SIGTERM):
            handler = signal.getsignal(sig)
            if handler is not None and handler is not signal.SIG_IGN:  # None: set outside Python, cannot be put back
                before[sig] = signal.signal(sig, lambda s, _frame: got.append(s))
        yield
    finally:
        for sig, handler in before.items():
            signal.signal(sig, handler)  # type: ignore[arg-type]
        for sig in dict.fromkeys(got):
            signal.raise_signal(sig)


def check_replaceable(path: str | os.PathLike, replaces: Collection[str] = ()) -> Path:
    """`UserError` unless `path` (resolved: `.` is the current directory) is new, empty, or holds only entries
    named in `replaces` (an earlier output of the same writer): `atomic_dir` removes the directory it replaces,
    which must never take a user's other files with it. An earlier output a cut-short replacement left aside
    is put back first (`_recover`). A link that leads back to itself, here or above `path`, is refused before
    `resolve`: it raised a RuntimeError (a traceback) for `report -o LOOP` to Python 3.12, and from 3.13 resolves
    what it can and says nothing, so the loop was found only once the report was built."""
    give = _give(OUTPUT)
    typed = Path(path)
    path = _through_link(typed, give)
    if not os.path.lexists(path):  # a file, a link to nothing or a loop of links above it (`reports` for the
        _refuse_unmakeable(path, give)  # default reports/<study>, which `check_parent` does not look at)
    try:
        path = path.resolve()
    except RuntimeError:  # a loop it still met (Python < 3.13)
        raise UserError(_looping(path, give)) from None
    _recover(path)
    _remove_stale(path, replaces)
    try:  # one look: exists() then is_dir() saw another writer's path, set aside in between, as no directory
        mode: int | None = path.stat().st_mode
    except OSError as e:
        if e.errno not in (errno.ENOENT, errno.ENOTDIR, errno.EBADF, errno.ELOOP):  # what exists() takes as absent
            raise
        mode = None
    if mode is not None and not stat.S_ISDIR(mode):
        raise UserError(f"{path} exists and is not a directory; {give}")
    if not path.exists():  # where it would be created must take a directory: found now, not after the work
        where = path.parent
        while not where.exists() and where != where.parent:
            where = where.parent
        _check_names(path, where)
        try:  # a signal between making the probe and removing it: raised once it is gone (nothing removes it later)
            with _signals_deferred():
                os.rmdir(tempfile.mkdtemp(prefix=f".{path.name}.probe-", dir=where))  # not a name `_remove_stale` takes
        except OSError as e:
            raise UserError(f"cannot create {path}: {where} does not take directories ({e.strerror}); "
                            f"{give}") from None
    if path.is_dir():
        try:
            others = sorted(p.name for p in path.iterdir() if p.name not in replaces)
        except FileNotFoundError:  # another writer set it aside meanwhile: nothing of the user's there
            others = []
        if others:
            shown = ", ".join(others[:3]) + (f" and {len(others) - 3} more" if len(others) > 3 else "")
            # as typed; the directory it is where that does not name it (`-o .`, a link)
            named = str(typed) if typed.name == path.name else f"{typed} ({path})"
            raise UserError(f"{named} holds other files ({shown}), which writing there would delete; choose a new "
                            "or empty -o directory (an earlier output there is replaced)")
    return path


@contextmanager
def atomic_dir(path: str | os.PathLike, replaces: Collection[str] = ()) -> Iterator[Path]:
    """A temporary directory beside `path` to fill; it replaces `path` when the block succeeds (an older
    directory there - empty, or holding only entries named in `replaces` - is removed only after that), and is
    removed otherwise; one a killed writer left is removed by the next writer's `check_replaceable`."""
    path = check_replaceable(path, replaces)
    with _own_temp_dir(path) as tmp:
        yield tmp
        _usual_mode(tmp, executable=True)
        for attempt in itertools.count(1):
            if _swap_in(tmp, path, replaces, last=attempt == _SWAP_TRIES):
                break


_SWAP_TRIES = 20


def _swap_in(tmp: Path, path: Path, replaces: Collection[str], last: bool) -> bool:
    """Put `tmp` in place of `path` (the earlier output there set aside, then removed): True when done; False
    when another writer of `path` changed it in between (its output set aside or put in place, or a copy put
    back by its `_recover`), so the caller looks again - its own output is the newest. `last`: no more looks,
    a `UserError` then."""
    old = None
    if path.exists():
        check_replaceable(path, replaces)  # again: files may have appeared while the block ran
        old = _aside_name(path)
    try:
        # a signal between the two renames left the earlier output only in the hidden `old`, and none at `path`
        with _signals_deferred():
            if old is not None:
                try:
                    path.rename(old)
                except FileNotFoundError:  # another writer set it aside meanwhile
                    old = None
                    return _again(path, last)
            try:
                tmp.rename(path)
            except OSError as e:
                if e.errno in (errno.ENOTEMPTY, errno.EEXIST):  # another writer's output (or the copy its
                    return _again(path, last)  # `_recover` put back) is in place: `old` is not needed, look again
                if old is not None:
                    try:
                        old.rename(path)
                    except OSError as back:
                        if not _other_writer(back):
                            raise
                        # another writer's recovery put it back, or its output is in place: nothing to restore
                raise
        return True
    finally:
        if old is not None and path.exists():  # not when putting it back failed: then `old` is the only copy
            shutil.rmtree(old, ignore_errors=True)


def _again(path: Path, last: bool) -> bool:
    if last:
        raise UserError(f"{path} kept changing while this output replaced it (another process writing the same "
                        f"path?); run again, or {_give(OUTPUT)}")
    return False
