"""`python -m advisor` and the `advisor` console script run the CLI.

The entry point is here, not in `advisor.cli`, so that Ctrl-C or SIGTERM while the CLI itself imports (typer,
every command module: the first ~0.3 s) is the same one line as later, not Python's traceback or a silent
death; `import advisor` as a library is unchanged.
"""

import sys

from advisor.errors import INTERRUPTED


def main() -> None:
    from advisor.tune.interrupt import InterruptOnSignal

    try:
        with InterruptOnSignal() as signals:  # SIGTERM stops the CLI as Ctrl-C does from here on
            # raised once the CLI has imported: a KeyboardInterrupt inside exec() (a dataclass being made) makes
            # Python end by SIGINT whoever catches it (exit status -2, not 130)
            with signals.deferred():
                from advisor.cli import run
            run()
    except KeyboardInterrupt:
        print(f"error: {INTERRUPTED}", file=sys.stderr)
        sys.exit(130)


if __name__ == "__main__":
    main()
