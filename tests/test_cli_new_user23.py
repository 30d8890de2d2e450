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



def test_a_device_named_profile_whose_file_holds_another_is_refused_before_measuring(tmp_path, monkeypatch):
    """`profile` without --name stores the profile under the device's name: where that name's file held another
    profile, the refusal came after the measuring (a minute or more with --model). The name is known before it."""
    from advisor.hardware import measure

    def measured(*args, **kwargs):
        raise AssertionError("measured before the refusal")

    monkeypatch.setattr(measure, "measure_cpu_profile", measured)
    other = measure.profile_name(cuda=False).replace(" ", "/")  # the host's name in another spelling: its file
    save_profile(dataclasses.replace(CATALOGUE[0], name=other), tmp_path / "p")
    r = advisor_entry("profile", "--cpu", "--expert-shape", "64x32", "--profiles-dir", "p", cwd=tmp_path)
    one_error_line(r, f"holds the profile {other!r}", "another --name")

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


def test_the_default_study_name_of_a_checkpoint_above_is_one_study_takes(tmp_path):
    """`tune ../ckpt` without --study named its study '.._ckpt-toy-quick': `--study` refuses a name that does not
    start with a letter or digit, so the name `tune` printed could not be given back to it, and `pareto` wrote the
    plots as hidden files. The default name now drops those leading characters (and a path past 100 characters
    is shortened with a digest): `--study` takes it. A study an earlier version named the old way is still
    resumed by the same command (`study_name_for`)."""
    import torch

    from advisor.commands.tune import check_study_name
    from advisor.models.tiny import build_tiny
    from advisor.tune.study import default_study_name
    from tests.cli_helpers import advisor_in_process

    build_tiny("qwen3_moe", dtype=torch.bfloat16).save_pretrained(tmp_path / "ckpt")
    (tmp_path / "work").mkdir()
    base = ("tune", "../ckpt", "--space", "quick", "--budget", "1MiB", "--storage", "s.db")
    r = advisor_in_process(*base, "--trials", "1", cwd=tmp_path / "work")
    assert r.returncode == 0, r.stdout + r.stderr
    assert "as study ckpt-toy-quick" in " ".join(r.stdout.split()), r.stdout
    r = advisor_in_process(*base, "--trials", "1", "--study", "ckpt-toy-quick", cwd=tmp_path / "work")
    assert r.returncode == 0 and "already has 1 finished trial" in " ".join(r.stdout.split()), r.stdout + r.stderr
    long = default_study_name("/" + "/".join(["models--inclusionAI--LLaDA-MoE-7B-A1B-Instruct", "snapshots",
                                              "0123456789abcdef" * 3]), "gsm8k", "dllm")
    check_study_name(long)
    assert long.endswith("0123456789abcdef-gsm8k-dllm") and len(long) == 100


def test_shards_without_their_index_are_one_line_for_every_load(tmp_path):
    """A download that stopped before model.safetensors.index.json: `inspect` (a whole load) ended in transformers'
    'no file named model.safetensors', while `tune --budget` (offloaded, which read every *.safetensors) tuned the
    checkpoint - whose report and exports then load it whole, and fail. Both are one line naming the index now."""
    import torch

    from advisor.models.tiny import build_tiny

    build_tiny("qwen3_moe", dtype=torch.bfloat16).save_pretrained(tmp_path / "ckpt", max_shard_size="60KB")
    (tmp_path / "ckpt" / "model.safetensors.index.json").unlink()
    assert len(list((tmp_path / "ckpt").glob("*.safetensors"))) > 1
    for args in (("inspect", "ckpt"), ("tune", "ckpt", "--space", "quick", "--budget", "80KiB", "--trials", "1",
                                       "--storage", "s.db")):
        one_error_line(advisor_entry(*args, cwd=tmp_path), "no model.safetensors.index.json", "download")
    assert not (tmp_path / "s.db").exists()
