"""Polish pass 59's findings, through the CLI as a user runs it."""

from __future__ import annotations

from tests.cli_helpers import advisor_entry, one_error_line


def test_a_cpu_profile_is_not_stored_under_a_catalogue_gpus_name(tmp_path):
    """`profile --cpu --name 'RTX 4090'` stored a host memory copy under the 4090's name, which then won over the
    catalogue row: `--gpu 4090` got a 3.5 GB/s "link" and the H200's device figures. It is refused now, before the
    measuring, naming the catalogue GPU (another name is stored as before: test_cli_new_user2)."""
    for name in ("RTX 4090", "rtx4090 48GB"):
        r = advisor_entry("profile", "--cpu", "--repeats", "1", "--name", name, "--profiles-dir", "p", cwd=tmp_path)
        one_error_line(r, f"--name {name!r} is the catalogue GPU 'RTX 4090 24GB'", "another --name")
    assert not (tmp_path / "p").exists() or not list((tmp_path / "p").iterdir())


def test_a_gpu_the_catalogue_lacks_is_not_offered_gpus_that_share_only_its_digits(tmp_path):
    """`--gpu MI300X` listed 'close matches: RTX 3090 24GB, RTX 3080 10GB, ...', found on the digits alone. A match
    now needs the letters of the name close too: MI300X has none and says where profiles are read; a typo still gets
    its neighbours."""
    r = advisor_entry("recommend", "--gpu", "MI300X", "--storage", "s.db", cwd=tmp_path)
    line = one_error_line(r, "unknown GPU 'MI300X'; no catalogue GPU, and no profile measured in")
    assert "RTX" not in line, line
    r = advisor_entry("recommend", "--gpu", "RTX 4909", "--storage", "s.db", cwd=tmp_path)
    line = one_error_line(r, "unknown GPU 'RTX 4909'; close matches: RTX 4090 24GB")
    assert "A40" not in line and "L40S" not in line, line  # a letter ahead of the digits is another GPU


def test_a_letter_slipped_into_a_digits_only_gpu_name_still_gets_its_neighbours(tmp_path):
    """The letters test above refused every key whose letters differ: 'RTX 4O90' (a letter O for a zero) and 'RTX
    4090D' (a variant the catalogue lacks) had letters where the 4090's key ('4090') has none, and were told no GPU
    has that name. One letter more than a key's own, after its leading letters, is a slip: they are offered the RTX
    4090 again. A leading letter names another GPU: the Tesla P40 and K80 are offered no GeForce card."""
    for typed in ("RTX 4O90", "RTX 4090D"):
        r = advisor_entry("recommend", "--gpu", typed, "--storage", "s.db", cwd=tmp_path)
        one_error_line(r, f"unknown GPU '{typed}'; close matches: RTX 4090 24GB")
    for typed in ("P40", "K80"):
        r = advisor_entry("recommend", "--gpu", typed, "--storage", "s.db", cwd=tmp_path)
        one_error_line(r, f"unknown GPU '{typed}'; no catalogue GPU, and no profile measured in")
