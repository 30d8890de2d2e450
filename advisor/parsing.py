"""JSON and TOML that users hand the tool (a precision plan, a data line, a hardware profile, a config.json, a
search space, a stored row) parsed with two rules beside the parsers' own, so that each reader's
`except JSONDecodeError` / `TOMLDecodeError` refuses them in its own line: arrays or tables nested deeper than
Python's parser recurses (a RecursionError), and an integer longer than Python converts (4300 digits: a plain
ValueError), are malformed input like any other. Both escaped those catches as tracebacks."""

from __future__ import annotations

import json
import re
import sys
import tomllib
from typing import Any

NESTED = "nested too deeply"


def _long_number(text: str) -> tuple[str, int] | None:
    """(what is wrong, where) for an integer past Python's digit limit in `text`, else None."""
    limit = sys.get_int_max_str_digits()
    m = re.search(rf"\d{{{limit + 1},}}", text) if limit else None
    return (f"an integer of {len(m[0])} digits, more than the {limit} a number may have", m.start()) if m else None


def loads_json(text: str | bytes) -> Any:
    """`json.loads`; input nested past the parser's stack or an integer past the digit limit is a
    `json.JSONDecodeError`."""
    try:
        return json.loads(text)
    except RecursionError:
        raise json.JSONDecodeError(NESTED, text if isinstance(text, str) else "", 0) from None
    except json.JSONDecodeError:
        raise
    except ValueError as e:  # int() refused the digits, or bytes that are not UTF-8 (UnicodeDecodeError)
        doc = text if isinstance(text, str) else text.decode("utf-8", "replace")
        what, pos = _long_number(doc) or (str(e), 0)
        raise json.JSONDecodeError(what, doc, pos) from None


def loads_toml(text: str) -> dict[str, Any]:
    """`tomllib.loads`; input nested past the parser's stack or an integer past the digit limit is a
    `tomllib.TOMLDecodeError`."""
    try:
        return tomllib.loads(text)
    except RecursionError:
        raise tomllib.TOMLDecodeError(f"{NESTED} (at line 1, column 1)") from None
    except tomllib.TOMLDecodeError:
        raise
    except ValueError as e:  # int() refused the digits
        what, pos = _long_number(text) or (str(e), 0)
        line = text.count("\n", 0, pos) + 1
        raise tomllib.TOMLDecodeError(f"{what} (at line {line}, column {pos - text.rfind(chr(10), 0, pos)})") from None
