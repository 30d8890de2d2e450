"""`python -m advisor` and the `advisor` console script run the CLI.

The entry point is here, not in `advisor.cli`, so that a Ctrl-C while the CLI itself imports (typer, every
command module: the first ~0.1 s) is the same one line as later, not Python's traceback; `import advisor` as
a library is unchanged.
"""

import sys

from advisor.errors import INTERRUPTED


def main() -> None:
    try:
        from advisor.cli import run
    except KeyboardInterrupt:
        print(f"error: {INTERRUPTED}", file=sys.stderr)
        sys.exit(130)
    run()


if __name__ == "__main__":
    main()
