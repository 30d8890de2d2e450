"""User-facing errors: one clear line, exit code 2, no traceback."""

from __future__ import annotations

import re
from collections.abc import Iterator
from contextlib import contextmanager

from advisor.units import format_bytes


class UserError(Exception):
    """Bad input or an unavailable resource. The message says what is wrong and what to do."""

    exit_code = 2


def refuse_empty(options: dict[str, str | None], what: str = "a value") -> None:
    """`UserError` for an option given as '' (an unset "$VAR"): taking the default instead (another model,
    space, study, or no memory cap) would change the answer without a word."""
    for flag, value in options.items():
        if value is not None and not value.strip():
            raise UserError(f"{flag} is empty; give {what} or leave the option out")


@contextmanager
def refuse_out_of_memory(what: str, advice: str) -> Iterator[None]:
    """An allocation the host or device cannot make while `what` runs becomes one line with the size asked and
    what to change, not the allocator's traceback. Matched by name, so this module need not import torch."""
    try:
        yield
    except (RuntimeError, MemoryError) as e:  # torch.OutOfMemoryError is a RuntimeError
        text = str(e)
        if type(e).__name__ != "OutOfMemoryError" and "can't allocate memory" not in text \
                and not isinstance(e, MemoryError):
            raise
        raise UserError(f"out of memory while {what}{_asked(text)}; {advice}") from None


def _asked(message: str) -> str:
    """" (it asked for 476.8 GiB)" from torch's "allocate 512000024064 bytes" / "Tried to allocate 2.00 GiB"."""
    m = re.search(r"allocate (\d+) bytes|allocate ([\d.]+ ?[KMGT]?i?B)", message)
    if m is None:
        return ""
    return f" (one allocation asked for {format_bytes(int(m.group(1))) if m.group(1) else m.group(2)})"


INTERRUPTED = "interrupted; nothing is half-written - run the same command again"
"""The one line (after `error: `, exit code 130) for Ctrl-C/SIGTERM in any command."""
