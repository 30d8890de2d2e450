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


def test_a_cpu_profile_stored_under_a_catalogue_gpus_name_before_the_refusal_does_not_replace_its_row(tmp_path):
    """A `--cpu` profile stored as 'RTX 4090' by a version before the refusal above still won over the catalogue
    row: `recommend --gpu 4090` said "--gpu RTX 4090 is a CPU profile" and priced the transfer with the host's memory
    copy. The catalogue row is taken now, with a note naming the stored file and what to do with it; `profile
    --list` says the same beside the profile."""
    import json

    from tests.cli_helpers import flat
    from tests.example_study import EXAMPLE_DB

    (tmp_path / "p").mkdir()
    old = {"name": "RTX 4090", "memory_bytes": int(23.6 * 2**30), "h2d_gbps_pinned": 3.5, "h2d_gbps_pageable": 3.4,
           "copy_latency_us": 3.0, "source": "measured-cpu:2026-12-06", "link": "", "free_bytes": None,
           "cpu_experts": None, "device": None}  # as `advisor profile --cpu --name 'RTX 4090'` wrote it
    (tmp_path / "p" / "rtx-4090.json").write_text(json.dumps(old, indent=2) + "\n")
    note = ("note: p/rtx-4090.json holds a --cpu profile (a host memory copy, no GPU) named 'RTX 4090' as the "
            "catalogue GPU 'RTX 4090 24GB'")
    r = advisor_entry("recommend", "--gpu", "4090", "--profiles-dir", "p", "--storage", str(EXAMPLE_DB),
                      cwd=tmp_path)
    out = flat(r.stdout)
    assert r.returncode == 0, r.stderr
    assert "fits 24.00 GiB (--gpu RTX 4090 24GB, catalogue (nominal))" in out, r.stdout
    assert "CPU profile" not in out and "host-copy" not in out and "measured-cpu" not in out, r.stdout
    assert note in flat(r.stderr) and "else delete it" in flat(r.stderr), r.stderr
    r = advisor_entry("profile", "--list", "--profiles-dir", "p", cwd=tmp_path)
    assert r.returncode == 0 and note in flat(r.stdout), r.stdout
    # another GPU's --gpu says nothing of it
    r = advisor_entry("recommend", "--gpu", "H100 SXM", "--profiles-dir", "p", "--storage", str(EXAMPLE_DB),
                      cwd=tmp_path)
    assert r.returncode == 0 and "rtx-4090.json" not in r.stdout + r.stderr, r.stderr


def test_a_study_tuned_with_such_a_cpu_profile_is_not_sent_to_resume_with_its_name(tmp_path):
    """A study tuned with such a profile (`--gpu 'RTX 4090'` when it was the host's memory copy) was refused on
    resume with `--gpu 'RTX 4090'`, which now takes the catalogue row, and told to "resume it with --gpu 'RTX 4090'":
    the same refusal again. It now says that no --gpu gives that profile any more."""
    import json
    import shutil
    import sqlite3

    from tests.example_study import EXAMPLE_DB

    (tmp_path / "p").mkdir()
    old = {"name": "RTX 4090", "memory_bytes": int(23.6 * 2**30), "h2d_gbps_pinned": 3.5, "h2d_gbps_pageable": 3.4,
           "copy_latency_us": 3.0, "source": "measured-cpu:2026-12-06", "link": "", "free_bytes": None,
           "cpu_experts": None, "device": None}
    (tmp_path / "p" / "rtx-4090.json").write_text(json.dumps(old))
    shutil.copy(EXAMPLE_DB, tmp_path / "s.db")
    with sqlite3.connect(tmp_path / "s.db") as con:  # as the study stored it when tuned with that profile
        con.execute("UPDATE study_user_attributes SET value_json = ? WHERE key = 'hardware'", (json.dumps(old),))
    r = advisor_entry("tune", "--study", "bundled-example", "--storage", "s.db", "--gpu", "4090", "--profiles-dir", "p",
                      "--trials", "1", cwd=tmp_path)
    line = one_error_line(r, "study 'bundled-example' was tuned with --gpu 'RTX 4090' (measured-cpu:2026-12-06), "
                             "this run with --gpu 'RTX 4090 24GB' (catalogue (nominal)); use a new --study name",
                          "no --gpu gives that profile any more")
    assert "resume it with" not in line, line
