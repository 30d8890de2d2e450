"""Tables that stay readable at any width: the table when it fits, else one block per row.

A rich table squeezed below its natural width cuts names to `bun…` and splits values over two rows, so
`advisor studies | grep NAME` finds nothing. Here a table is printed only when every cell fits whole (or
with `wide`, whatever the width); otherwise each row becomes a heading line and its `label value` items,
wrapped between items, never inside one.
"""

from __future__ import annotations

from collections.abc import Sequence

from rich.console import Console
from rich.table import Table
from rich.text import Text

Record = tuple[str, Sequence[tuple[str, str]]]
"""(heading, [(label, value), ...]) - one table row in the narrow layout."""


def natural_width(console: Console, table: Table) -> int:
    """The width `table` needs to show every cell on one line (measured without the console's limit)."""
    return console.measure(table, options=console.options.update(max_width=100_000)).maximum


def fits(console: Console, table: Table) -> bool:
    """Whether `table` renders at the console's width without shrinking a column."""
    return natural_width(console, table) <= console.width


def print_fitted(console: Console, table: Table, records: Sequence[Record], *, wide: bool = False) -> None:
    """`table` if it fits (or `wide`), else `records` as blocks; the table's title and caption (where a table
    says how its values were obtained) are kept either way."""
    if wide or fits(console, table):
        for col in table.columns:
            col.no_wrap = True
        width = console.width
        console.width = max(width, natural_width(console, table))
        try:
            console.print(table, crop=False)
        finally:
            console.width = width
        return
    if table.title:
        console.print(Text(str(table.title)))
    width = max(20, console.width)
    for heading, items in records:
        console.print(Text(heading, style="bold"), soft_wrap=True)
        line = "   "
        for label, value in items:
            item = f"{label} {value}"
            if len(line) > 3 and len(line) + 3 + len(item) > width:
                console.print(Text(line.rstrip()), soft_wrap=True)
                line = "   "
            line += ("" if len(line) == 3 else " · ") + item
        if len(line) > 3:
            console.print(Text(line), soft_wrap=True)
    if table.caption:
        console.print(Text(str(table.caption)))
