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


def test_recommend_model_takes_the_directory_as_given_to_tune(tmp_path):
    """`advisor tune ./ckpt` stores its model as `ckpt`; `recommend --model ./ckpt` (the spec the user tuned with)
    answered 'no front point matches model='./ckpt'', as did its absolute path. A directory given to --model now
    picks the studies that loaded it; another model beside it is not mixed in."""
    from recommend_helpers import make_db, model_meta, point

    (tmp_path / "ckpt").mkdir()
    (tmp_path / "work").mkdir()
    meta = {**model_meta(), "path": str(tmp_path / "ckpt")}
    url = make_db(tmp_path / "a.db", [point("mine", 1, "int8", 8, acc=0.9, h2d=1e6, peak_gib=1, meta=meta, model="ckpt"),
                                      point("other", 1, "int4", 8, acc=0.9, h2d=1e5, peak_gib=1, model="another")])
    for given in ("../ckpt", str(tmp_path / "ckpt")):
        r = advisor_entry("recommend", "--storage", url, "--budget", "8GiB", "--model", given, cwd=tmp_path / "work")
        assert r.returncode == 0, r.stdout + r.stderr
        assert "Recommended: study 'mine', trial #1" in r.stdout, r.stdout
    one_error_line(advisor_entry("recommend", "--storage", url, "--budget", "8GiB", "--model", "./nope", cwd=tmp_path),
                   "no front point matches model='./nope'")
