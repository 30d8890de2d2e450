"""New user 23's findings, through the CLI as a user runs it."""

from __future__ import annotations

import dataclasses
import json

from advisor.hardware.profiles import CATALOGUE, save_profile
from tests.cli_helpers import advisor_entry, one_error_line


def test_a_profile_name_that_shares_another_profiles_file_is_refused_not_written_over_it(tmp_path):
    """`profile --name 'my/host'` stored itself in my-host.json, the file of the profile 'my host', without a word:
    that profile was gone (and its CPU expert times carried into the new one). Now one line, before measuring, and
    the earlier profile stays; the same name in another case still re-measures it."""
    save_profile(dataclasses.replace(CATALOGUE[0], name="my host"), tmp_path / "p")
    before = (tmp_path / "p" / "my-host.json").read_text()
    r = advisor_entry("profile", "--cpu", "--name", "my/host", "--profiles-dir", "p", cwd=tmp_path)
    one_error_line(r, "'my/host'", "holds the profile 'my host'", "--name")
    assert (tmp_path / "p" / "my-host.json").read_text() == before
    assert json.loads(before)["name"] == "my host"
