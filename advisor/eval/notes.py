"""One-line notices that must be said once per run, not once per example (a fallback, a shortened prompt)."""

from __future__ import annotations

_said: set[str] = set()


def note_once(message: str) -> None:
    """Write `message` to stderr the first time it comes up in this process, wrapped at the terminal's width (80
    piped) under a 2-column indent, as the busy-host note beside it: printed whole, `eval --task gsm8k`'s note on
    prompts past the model's positions ran to 150 columns."""
    if message not in _said:
        _said.add(message)
        from rich.console import Console

        from advisor.terminal import print_wrapped

        print_wrapped(Console(stderr=True), message, 2)
