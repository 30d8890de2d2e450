"""The refusals of a MODEL that names no directory: clearly a path (./x, ../x, /x, ~/x, a/b/c, x/) with nothing
there, or an existing file; and what a hub id's refusal says first when the id (owner/name) reads as a local path
that is not there."""

from __future__ import annotations

import difflib
import os
from pathlib import Path

from advisor.files import home_path

SCAN_MAX = 2000  # entries of a directory looked at for a close name: a huge one is not listed whole


def path_like(spec: str) -> bool:
    """Whether `spec` can only be a path: it starts with ./ ../ / or ~, has more than one '/' (a hub id has one),
    ends in '/', or holds the OS's other separator; a URL is none."""
    if "://" in spec:
        return False
    seps = {s for s in (os.sep, os.altsep) if s and s != "/"}
    return (spec.startswith(("./", "../", "/", "~")) or spec.count("/") > 1 or spec.endswith("/")
            or any(s in spec for s in seps))


def missing_directory(spec: str) -> str | None:
    """The refusal of `spec` when it is `path_like` and nothing is there (None otherwise): the path as typed,
    and where it helps, a directory of a close name ('did you mean ./LLaDA-MoE-7B-A1B?') or the nearest
    directory above it that exists, as typed."""
    path = Path(home_path(spec))
    if not path_like(spec) or os.path.lexists(path):
        return None
    missing = []  # the names that are not there, the last first
    above = path
    while not os.path.lexists(above) and above != above.parent:
        missing.append(above.name)
        above = above.parent
    text = f"no directory '{spec}': a MODEL that is a path names a model directory (config.json + *.safetensors)"
    typed = spec.replace(os.sep, "/") if os.sep != "/" else spec
    lead = "/" if typed.startswith("/") else "./" if typed.startswith("./") else ""
    parts = [p for p in typed.split("/") if p not in ("", ".")]
    kept = len(parts) - len(missing)  # the typed names of `above`
    if not above.is_dir() or not missing or kept < 0:
        return text
    close = difflib.get_close_matches(missing[-1], _subdirectories(above), n=1, cutoff=0.6)
    if len(missing) == 1 and close:
        return f"{text}; did you mean '{lead}{'/'.join([*parts[:kept], close[0]])}'?"
    if kept == 0 or len(missing) == 1:  # the working directory or the root, or the directory it is typed in
        return text
    hint = f" (did you mean '{close[0]}'?)" if close else ""
    return f"{text}; '{lead}{'/'.join(parts[:kept])}' exists, but holds no '{missing[-1]}'{hint}"


def not_a_directory(spec: str) -> str | None:
    """The refusal of `spec` when it names something that exists but is no directory (a file: a checkpoint's
    config.json or a *.safetensors shard, typed for its directory); None otherwise. Where the file's directory holds
    a config.json, it is named as the MODEL meant."""
    path = Path(home_path(spec))
    if not os.path.lexists(path) or path.is_dir():
        return None
    what = "a file" if path.is_file() else "not a directory"
    text = (f"'{spec}' is {what}: MODEL must be a checkpoint directory (config.json + *.safetensors) or a Hugging "
            "Face model id (owner/name)")
    if not (path.parent / "config.json").is_file():
        return text
    typed = spec.replace(os.sep, "/") if os.sep != "/" else spec
    parent = typed.rstrip("/").rpartition("/")[0] if "/" in typed.rstrip("/") else "."
    return f"{text}; did you mean its directory '{parent or '/'}'?"


def as_local_path(spec: str, refusal: str) -> str:
    """`refusal` of `spec` read as a Hugging Face model id, preceded - where `spec` (owner/name) also reads as a path
    under a local directory `owner` that holds no `name` (`models/x` typed with ./models here) - by that, as typed,
    with a directory of a close name: a user who meant the local path learns it is not there, not only that the hub
    has no such model."""
    if path_like(spec) or spec.count("/") != 1:
        return refusal
    owner, name = spec.split("/")
    if os.path.lexists(spec) or not Path(owner).is_dir():
        return refusal
    close = difflib.get_close_matches(name, _subdirectories(Path(owner)), n=1, cutoff=0.6)
    hint = f" (did you mean '{owner}/{close[0]}'?)" if close else ""
    return (f"no directory '{spec}': '{owner}' exists here, but holds no '{name}'{hint}; read as a Hugging Face model "
            f"id, {refusal}")


def _subdirectories(directory: Path) -> list[str]:
    """Names of the directories in `directory` (at most `SCAN_MAX` entries looked at; none if unreadable)."""
    names = []
    try:
        with os.scandir(directory) as entries:
            for i, e in enumerate(entries):
                if i >= SCAN_MAX:
                    break
                if e.is_dir():
                    names.append(e.name)
    except OSError:
        return []
    return names
