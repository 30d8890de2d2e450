"""User-facing errors: one clear line, exit code 2, no traceback."""

from __future__ import annotations


class UserError(Exception):
    """Bad input or an unavailable resource. The message says what is wrong and what to do."""

    exit_code = 2


INTERRUPTED = "interrupted; nothing is half-written - run the same command again"
"""The one line (after `error: `, exit code 130) for Ctrl-C/SIGTERM in any command."""
