"""New user 33's findings, through the CLI as a user runs it."""

from __future__ import annotations

import json
from pathlib import Path

from tests.cli_helpers import advisor

EXAMPLE_DB = Path(__file__).resolve().parent.parent / "studies" / "example" / "advisor.db"


def test_json_export_of_a_default_link_study_writes_no_memory_as_null(tmp_path):
    """The example was tuned without --gpu: its copies were priced on the default link, a profile that gives no
    memory. The export wrote `hardware.memory_bytes: 0`, which reads as a real value; it is null now."""
    r = advisor("export", "bundled-example", "129", "--storage", str(EXAMPLE_DB), "--to", "json", cwd=tmp_path)
    assert r.returncode == 0, r.stdout + r.stderr
    hw = json.loads(r.stdout)["hardware"]
    assert hw["name"] == "default PCIe 4.0 x16 link" and hw["h2d_gbps_pinned"] == 25.0, hw
    assert "memory_bytes" in hw and hw["memory_bytes"] is None, hw
