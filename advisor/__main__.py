"""`python -m advisor` and the `advisor` console script run the CLI.

The entry point is here, not in `advisor.cli`, so that Ctrl-C or SIGTERM while the CLI itself imports (typer,
every command module: the first ~0.3 s) is the same one line as later, not Python's traceback or a silent
death; `import advisor` as a library is unchanged. It also holds off the garbage collector's scans of what the
imports make (`advisor.startup`): a second of an `advisor tune` start-up and two more at its exit.
"""

import os
import sys

from advisor import startup
from advisor.errors import INTERRUPTED


def main() -> None:
    startup.hold()  # first: every import from here on is the CLI's
    from advisor.tune.interrupt import InterruptOnSignal

    try:
        with InterruptOnSignal() as signals:  # SIGTERM stops the CLI as Ctrl-C does from here on
            # raised once the CLI has imported, not inside an import left half-done
            with signals.deferred():
                from advisor.cli import run
            try:
                run()
            except SystemExit as e:
                if e.code != 130:  # finished (not interrupted): nothing may change its exit status from here on
                    _flush()  # its output written while a signal still stops a write that blocks
                    signals.ignore_from_now()
                raise
    except KeyboardInterrupt:
        print(f"error: {INTERRUPTED}", file=sys.stderr)
        _exit_interrupted()
    except SystemExit as e:
        if e.code == 130:  # the CLI's own interrupted line is printed
            _exit_interrupted()
        raise


def _flush() -> None:
    """stdout and stderr flushed; one that cannot be (a reader gone) is left to Python's exit, as before."""
    for stream in (sys.stdout, sys.stderr):
        try:
            stream.flush()
        except (OSError, ValueError):
            pass


def _exit_interrupted() -> None:
    """Exit status 130, as the line promises. Under `python -m`, CPython ends the process by SIGINT (status -2
    to a parent process) once a KeyboardInterrupt has crossed any `PyRun_*` call - torch's C++ start-up runs
    Python that way - even though it was caught; leaving here skips that check. Every with-block has run and
    every file is closed by now, so only the interpreter's own clean-up is skipped."""
    sys.stdout.flush()
    sys.stderr.flush()
    os._exit(130)


if __name__ == "__main__":
    main()
