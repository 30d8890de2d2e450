"""Reading jsonl data files (plain or .gz) with errors that name the file and line; a record's excerpt (`tail`)."""

from __future__ import annotations

import gzip
import json
import os
from collections.abc import Iterator
from pathlib import Path

from advisor.errors import UserError
from advisor.parsing import loads_json
from advisor.units import format_bytes

MAX_RECORD_BYTES = 1 << 20
"""The longest line a task or completions file may hold: GSM8K questions and HumanEval problems (tests included)
are a few KiB; a line of hundreds of MiB (a file that lost its newlines, or not a task file) was tokenized and run
until the host ran out of memory (a 300 MB question: 23.7 GB, then the kernel's OOM killer)."""


def records(path: str | os.PathLike, what: str) -> Iterator[tuple[str, dict]]:
    """("file:line", object) for every non-blank line of `path`; UserError naming file:line for a line that
    is not UTF-8, not JSON, or not an object. `what` names the expected content in the messages."""
    p = Path(path)
    if not p.is_file():
        raise UserError(f"{what} file {str(p)!r} " + ("is a directory; give the file's own path" if p.is_dir()
                                                         else "does not exist"))
    opener = gzip.open if p.suffix == ".gz" else open
    try:
        with opener(p, "rb") as fh:
            # at most a record and its line end read at a time: iterating the file read a whole line first, so a
            # file of GBs without a newline took GBs of RAM (twice its size) before its size was refused
            for lineno, raw in enumerate(iter(lambda: fh.readline(MAX_RECORD_BYTES + 2), b""), 1):
                where = f"{p}:{lineno}"
                if len(raw.removesuffix(b"\n").removesuffix(b"\r")) > MAX_RECORD_BYTES:
                    raise UserError(f"{where}: a line longer than {format_bytes(MAX_RECORD_BYTES)}, where a {what} "
                                    "record is a few KiB; check the file - one that lost its line breaks holds "
                                    "every record on one line")
                try:  # a BOM (a Windows editor's) before the first line is no error, as in a precision plan file
                    line = raw.decode("utf-8-sig" if lineno == 1 else "utf-8")
                except UnicodeDecodeError as e:
                    raise UserError(
                        f"{where}: not UTF-8 (byte 0x{raw[e.start]:02x} at column {e.start + 1}); save it as UTF-8"
                    ) from None
                if not line.strip():
                    continue
                try:
                    obj = loads_json(line)
                except json.JSONDecodeError as e:
                    raise UserError(f"{where}: not valid JSON ({e.msg}); expected one {what} object per line") from None
                if not isinstance(obj, dict):
                    raise UserError(f"{where}: expected one {what} object per line")
                yield where, obj
    except (OSError, EOFError) as e:  # a truncated or non-gzip .gz file
        raise UserError(f"cannot read {what} file {str(p)!r} ({e})") from None


def tail(text: str, chars: int) -> str:
    """`text`'s last `chars` characters, led by "..." where that cut it: what a per-example record of
    `eval --json` keeps of a long prompt or sandbox detail, saying it is the end of one."""
    return text if len(text) <= chars else "..." + text[-chars:]
