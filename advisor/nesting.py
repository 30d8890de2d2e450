"""JSON and TOML that users hand the tool (a precision plan, a data line, a hardware profile, a config.json, a
search space, a stored row) parsed with one rule beside the parsers' own: arrays or tables nested deeper than
Python's parser recurses are malformed input like any other. The parsers raise RecursionError there, which each
reader's `except JSONDecodeError` / `TOMLDecodeError` (both ValueErrors) let through as a traceback."""

from __future__ import annotations

import json
import tomllib
from typing import Any

NESTED = "nested too deeply"


def loads_json(text: str | bytes) -> Any:
    """`json.loads`; input nested past the parser's stack is a `json.JSONDecodeError` ("nested too deeply")."""
    try:
        return json.loads(text)
    except RecursionError:
        raise json.JSONDecodeError(NESTED, text if isinstance(text, str) else "", 0) from None


def loads_toml(text: str) -> dict[str, Any]:
    """`tomllib.loads`; input nested past the parser's stack is a `tomllib.TOMLDecodeError` ("nested too deeply")."""
    try:
        return tomllib.loads(text)
    except RecursionError:
        raise tomllib.TOMLDecodeError(f"{NESTED} (at line 1, column 1)") from None
