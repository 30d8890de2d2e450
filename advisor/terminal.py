"""Output that stays readable at any width: tables (the table when it fits, else one block per row) and long
lines (wrapped under their own indent).

A rich table squeezed below its natural width cuts names to `bun…` and splits values over two rows, so
`advisor studies | grep NAME` finds nothing. Here a table is printed only when every cell fits whole (or
with `wide`, whatever the width); otherwise each row becomes a heading line and its `label value` items,
wrapped between items, never inside one.

Imports nothing of the package (rich only): the tuner's live display and the read-only commands (recommend,
export, studies, pareto, which never import the tuner) print through the same definitions.
"""

from __future__ import annotations

import re
from collections.abc import Sequence

from rich.cells import cell_len, chop_cells
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
            print_table(console, table, crop=False)
        finally:
            console.width = width
        return
    if table.title:
        print_wrapped(console, str(table.title), 2)
    width = max(20, console.width)
    between = _item_separator(console)
    for heading, items in records:
        console.print(Text(heading, style="bold"), soft_wrap=True)
        line = "   "
        for label, value in items:
            item = f"{label} {value}"
            if len(line) > 3 and cell_len(line) + 3 + cell_len(item) > width:
                console.print(Text(line.rstrip()), soft_wrap=True)
                line = "   "
            line += ("" if len(line) == 3 else between) + item
        if len(line) > 3:
            console.print(Text(line), soft_wrap=True)
    if table.caption:
        print_wrapped(console, str(table.caption))


def _item_separator(console: Console) -> str:
    """What separates a block's items: a middle dot, or ' | ' where the output's encoding has none (ASCII: a C
    locale with PYTHONUTF8=0), where the dot was a UnicodeEncodeError traceback - `tune`'s after its trials ran;
    rich's own tables fall back to ASCII there."""
    try:
        " · ".encode(console.encoding)
    except (UnicodeEncodeError, LookupError):
        return " | "
    return " · "


def print_table(console: Console, table: Table, *, crop: bool = True) -> None:
    """`table` with its title and caption (paragraphs: where a table says how its values were obtained) printed
    as `print_wrapped` lines above and below it: rich pads such paragraphs to the table's width with spaces, so
    piped output (`advisor inspect ... | less`) had lines ending in dozens of them."""
    title, caption = table.title, table.caption
    if title:
        print_wrapped(console, str(title))
    table.title = table.caption = None
    try:
        console.print(table, crop=crop)
    finally:
        table.title, table.caption = title, caption
    if caption:
        print_wrapped(console, str(caption))


def print_wrapped(console: Console, line: str, indent: int = 0, style: str | None = None) -> None:
    """`line` (plain text: no markup) wrapped at the console's width - between words - its continuation lines
    `indent` columns in, none ending in a space. A reason or a value's source of hundreds of characters then reads
    as a paragraph under its own bullet or column, where printed whole it ran past the edge of an 80-column
    terminal. Widths are terminal cells (`rich.cells.cell_len`: a CJK character or an emoji takes two), not
    characters. A `quoted command` (backticks, or double quotes opening a word) is never broken: copied, it
    pastes whole. A word longer than a line (a source such as `measured:wall-clock(...)+modelled:pcie(...)`) is
    broken after a separator (`_separated`); one without (a path) stays whole on its own line, for the terminal to
    fold, so it still pastes as one path. A negative `indent`: printed whole (a shell command stays one line)."""
    if indent < 0:
        console.print(line, style=style, highlight=False, markup=False, emoji=False, soft_wrap=True)
        return
    width = max(console.width, indent + 20)
    for piece in line.expandtabs().split("\n"):
        for out in _wrap(piece, width, indent):
            console.out(out, style=style, highlight=False)


def print_rich(console: Console, text: str, *, markup: bool | None = None) -> None:
    """`text` (rich markup, unless `markup` is False) as `console.print` prints it - its styles, its highlighting,
    broken where rich breaks it - but no line ending in the space rich leaves where it broke one: piped at 80
    columns, `advisor tune`'s header had lines ending in ' | '. `print_wrapped` is for plain text; this keeps the
    markup (the header's bold) and rich's breaks (the README quotes tune's output)."""
    lines = console.render_str(text, markup=markup).wrap(console, console.width)
    for line in lines:
        line.rstrip()
    console.print(Text("\n").join(lines), soft_wrap=True)  # one print: another thread's line never comes between


def print_parts(console: Console, first: str, parts: Sequence[str], indent: int, end: str = "") -> None:
    """`first` then `parts` joined by ', ', broken between parts (never inside one) where a line would pass the
    console's width (in cells, as `print_wrapped` counts them), continuation lines `indent` columns in: a row of
    figures, each with how it was obtained, whose parts stay whole. A line's closing ',' (or `end`, on the last)
    counts toward its width: a line filled to the width with the comma after it was one cell too wide. A part
    longer than a whole line (a measured profile's device and source, 140 cells) is wrapped between its words."""
    def begin(text: str, closing: int) -> str:  # `text` opens a line: what passes the width is broken off first
        *full, last = _wrap(text, max(console.width - closing, indent + 20), indent)
        for ln in full:
            console.out(ln, highlight=False)
        return last

    line = begin(first + parts[0], cell_len(end) if len(parts) == 1 else 1)
    for i, part in enumerate(parts[1:], 2):
        closing = cell_len(end) if i == len(parts) else 1
        if cell_len(line) + 2 + cell_len(part) + closing > console.width:
            console.out(line + ",", highlight=False)
            line = begin(" " * indent + part, closing)
        else:
            line += ", " + part
    console.out(line + end, highlight=False)


_CHUNK = re.compile(r' +|(?:`[^`]*`|(?<![^ (=])"[^"]*"|[^ ])+')
"""A run of spaces, or a word: non-spaces, where a `quoted` span (backticks; double quotes opening a word) is one
piece whatever it holds - a command printed for copying must not be cut at its inner spaces."""


def _wrap(text: str, width: int, indent: int) -> list[str]:
    """`text`'s lines, filled greedily to `width` cells; continuation lines `indent` in, the first as `text` begins;
    a word that does not fit goes whole to the next line (`_separated` cuts one longer than a line first)."""
    pad, lines = " " * indent, []
    line, size = "", 0
    for chunk in _CHUNK.findall(text):
        pieces = [chunk] if chunk.startswith(" ") else _separated(chunk, width - indent)
        for k, piece in enumerate(pieces):
            cells = cell_len(piece)
            if not piece.startswith(" ") and line.strip() and (k > 0 or size + cells > width):
                lines.append(line.rstrip())
                line, size = pad, indent
            line, size = line + piece, size + cells
    return [*lines, line.rstrip()]


def _separated(word: str, room: int) -> list[str]:
    """`word` in pieces, each after its last ',', ';' or '+' that keeps it within `room` cells (where it has one;
    one piece when it fits, or is quoted): whole on its own line, the terminal folds such a word at its edge,
    leaving `...lat=1` above `0us)]`."""
    if "`" in word or '"' in word:
        return [word]
    pieces = []
    while cell_len(word) > room and (at := max(word.rfind(c, 0, len(chop_cells(word, room)[0])) for c in ",;+") + 1) > 0:
        pieces.append(word[:at])
        word = word[at:]
    return [*pieces, word]
