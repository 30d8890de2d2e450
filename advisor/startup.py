"""The cyclic garbage collector while an `advisor` process starts up.

Imports make objects that live as long as the process: ~400k for torch plus transformers (counted). CPython
scans them again at each collection of an older generation (of the middle one every 10 young collections, a full
one each time the heap has grown by a quarter): ~1.2 s of gc while an `advisor tune` started, and its exit took
~2 s more, when the interpreter collected them all once more (measured, benchmarks/startup_gc.py). So the CLI entry point holds
those collections off (`hold`) - the youngest generation is still collected, so an import's short-lived garbage
still goes - and once the heavy imports are done (`settle`, from `import_runtime`) what they made is frozen
(`gc.freeze`: never scanned or collected again, at exit neither) and the collector works as before for the
command's own objects. A read-only command never imports the runtime: it is short, and ends with the older
generations still held off.

Only where `hold` was called: the CLI's entry point calls it in a process the CLI owns (`advisor`, `python -m
advisor`). A program that imports advisor, or runs its CLI in-process (CliRunner), keeps its collector as it set
it unless it calls `hold` itself, as the test suite does (tests/conftest.py): its first command that imports the
runtime then settles it as the CLI's does.
"""

from __future__ import annotations

import gc

# while held, an older generation is collected once per this many collections of the one below it (CPython's
# default: 10): not once while torch and transformers import (~1,500 young collections; at 1,000 one scan of
# the whole heap came inside it), and still now and then in a long command that never imports them
HELD = 10_000

_restore: tuple[int, ...] | None = None  # the thresholds `settle` puts back, while collections are held off


def hold() -> None:
    """Hold off collections of the older generations until `settle` (the CLI entry point, first)."""
    global _restore
    if _restore is None:
        _restore = gc.get_threshold()
        gc.set_threshold(_restore[0], HELD, HELD)


def settle() -> None:
    """The objects made so far frozen and the collector's thresholds back, if `hold` held them off; otherwise
    (no CLI process, or settled already) nothing."""
    global _restore
    if _restore is not None:
        gc.freeze()
        gc.set_threshold(*_restore)
        _restore = None
