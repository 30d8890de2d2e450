"""The tables each committed SQLite transaction wrote (tests that count what a write costs: each commit of a
SQLite file is an fsync)."""

from __future__ import annotations

import re

from sqlalchemy import event
from sqlalchemy.engine import Engine

WRITE = re.compile(r"^\s*(?:INSERT\s+INTO|UPDATE|DELETE\s+FROM)\s+\"?(\w+)", re.I)


class Transactions:
    """The tables each committed SQLite transaction wrote, for every connection opened in the block."""

    def __init__(self) -> None:
        self.committed: list[frozenset[str]] = []

    def __enter__(self) -> Transactions:
        event.listen(Engine, "connect", self._connect)
        return self

    def __exit__(self, *exc) -> None:
        event.remove(Engine, "connect", self._connect)

    def _connect(self, con, record) -> None:
        tables: set[str] = set()

        def trace(sql: str) -> None:
            if m := WRITE.match(sql):
                tables.add(m.group(1))
            elif sql.lstrip().upper().startswith("COMMIT"):
                if tables:
                    self.committed.append(frozenset(tables))
                tables.clear()

        con.set_trace_callback(trace)
