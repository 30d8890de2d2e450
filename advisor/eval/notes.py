"""One-line notices that must be said once per run, not once per example (a fallback, a shortened prompt)."""

from __future__ import annotations

import sys

_said: set[str] = set()


def note_once(message: str) -> None:
    """Write `message` to stderr the first time it comes up in this process."""
    if message not in _said:
        _said.add(message)
        print(message, file=sys.stderr, flush=True)
