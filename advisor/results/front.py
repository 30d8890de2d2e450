"""Front points as plain data, and a fast read path that needs neither SQLAlchemy nor torch.

`recommend` and `export` must answer in well under a second; importing SQLAlchemy alone costs a good part
of that. So for SQLite files (the default storage) the stored front is read with the standard library's
sqlite3; any other URL goes through `advisor.results.store` (SQLAlchemy). Both return `FrontPoint`s.
The table layout is defined once, in `advisor.results.store.FrontRow`.
"""

from __future__ import annotations

import datetime as dt
import json
import sqlite3
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from advisor.errors import UserError

METRICS = (
    "h2d_bytes_per_token",
    "transfer_ms_per_token",
    "latency_ms_per_token",
    "hit_rate",
    "accuracy",
    "fidelity_kl",
    "fidelity_top1",
    "peak_gpu_bytes",
)


@dataclass
class FrontPoint:
    """A front point as the rest of the project sees it (plain data, no database session attached)."""

    study_name: str
    trial_number: int
    model: str
    model_fingerprint: str
    task: str
    config: dict[str, Any]
    values: dict[str, float]
    sources: dict[str, str]
    device: str = "cpu"
    hardware: dict[str, Any] = field(default_factory=dict)
    space: str = ""
    budget_bytes: float | None = None
    created_at: dt.datetime | None = None


_COLUMNS = (
    "study_name, trial_number, model, model_fingerprint, task, config, \"values\", sources, device, hardware, "
    "space, budget_bytes, created_at"
)


DEFAULT_STORAGE = "sqlite:///studies/advisor.db"
"""Where studies live unless --storage says otherwise (relative to the working directory)."""


def sqlite_path(url: str) -> Path | None:
    """The file behind a SQLite URL (or a plain path), query string dropped; None for other databases and
    for in-memory SQLite."""
    if "://" not in url:
        return Path(url.split("?", 1)[0])
    if url.startswith("sqlite:///"):
        path = url[len("sqlite:///") :].split("?", 1)[0]
        return None if path in ("", ":memory:") else Path(path)
    return None


def require_database(url: str) -> None:
    """Readers never create a database: a missing SQLite file is one clear `UserError`."""
    path = sqlite_path(url)
    if path is not None and not path.is_file():
        raise UserError(f"no advisor database at {path}; run `advisor tune` first or pass --storage URL")


def read_fronts(url: str, study_name: str | None = None) -> list[FrontPoint]:
    """Stored front points of one study (or all) from any storage URL."""
    path = sqlite_path(url)
    if path is None:
        from advisor.results.store import engine_for, load_fronts

        return load_fronts(engine_for(url), study_name)
    require_database(url)
    try:
        con = sqlite3.connect(f"file:{path}?mode=ro", uri=True)
        try:
            if not con.execute("SELECT 1 FROM sqlite_master WHERE type='table' AND name='advisor_front'").fetchone():
                return []
            q = f"SELECT {_COLUMNS} FROM advisor_front"
            args: tuple = ()
            if study_name is not None:
                q += " WHERE study_name = ?"
                args = (study_name,)
            rows = con.execute(q + " ORDER BY study_name, trial_number", args).fetchall()
        finally:
            con.close()
        return [_point(r) for r in rows]
    except (sqlite3.DatabaseError, json.JSONDecodeError) as e:
        raise UserError(
            f"{path} is not a readable advisor database ({e}); point --storage at the file `advisor tune` wrote"
        ) from e


def _point(r: tuple) -> FrontPoint:
    created = dt.datetime.fromisoformat(r[12]) if r[12] else None
    return FrontPoint(
        study_name=r[0],
        trial_number=int(r[1]),
        model=r[2],
        model_fingerprint=r[3],
        task=r[4],
        config=json.loads(r[5]),
        values=json.loads(r[6]),
        sources=json.loads(r[7]),
        device=r[8],
        hardware=json.loads(r[9]),
        space=r[10],
        budget_bytes=r[11],
        created_at=created,
    )
