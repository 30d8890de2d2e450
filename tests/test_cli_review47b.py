"""Review 47b's findings on the last session's CLI commits, through the CLI as a user runs it."""

from __future__ import annotations

from tests.cli_helpers import advisor_entry, one_error_line


def test_a_profile_stored_under_a_catalogue_gpus_name_is_offered_once_for_a_typo(tmp_path):
    """A profile measured under a catalogue GPU's own name (`advisor profile --name 'H100 80GB'`) was offered twice
    for a slip in it ('close matches: H100 80GB, H100 80GB, ...'): the measured profiles' names and the
    catalogue's were listed one after the other without dropping the name they share."""
    import dataclasses

    from advisor.hardware.profiles import CATALOGUE, save_profile

    h100 = next(p for p in CATALOGUE if p.name == "H100 80GB")
    save_profile(dataclasses.replace(h100), tmp_path / "p")
    r = advisor_entry("recommend", "--gpu", "H10O", "--profiles-dir", "p", "--storage", "s.db", cwd=tmp_path)
    line = one_error_line(r, "unknown GPU 'H10O'", "close matches: H100 80GB, H100 SXM 80GB")
    assert line.count("H100 80GB") == 1, line
    assert list(tmp_path.iterdir()) == [tmp_path / "p"]
