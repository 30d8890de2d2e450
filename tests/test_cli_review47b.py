"""Review 47b's findings on the last session's CLI commits, through the CLI as a user runs it."""

from __future__ import annotations

import pytest

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


@pytest.mark.parametrize("args", [("export", "s", "-1", "--help"), ("export", "s", "0", "-1", "--help"),
                                  ("studies", "--help", "-1"), ("export", "s", "--help", "-0")],
                         ids=["negative-trial", "extra", "no-arguments", "minus-zero"])
def test_help_is_shown_beside_a_negative_number_as_beside_any_argument(tmp_path, args):
    """`--help` is shown whatever else the line says (`studies --help 5`, `export s --help 0 5`), but beside a
    negative number, read as an argument since 9f08402, the line was refused ('-1 is not a trial number', 'Got
    unexpected extra argument (-1)'): the re-parse that places the number emptied the list help was shown from."""
    r = advisor_entry(*args, cwd=tmp_path)
    assert r.returncode == 0 and r.stderr == "", r.stdout + r.stderr
    assert f"advisor {args[0]} [OPTIONS]" in r.stdout, r.stdout  # (the program name is the runner's here)
    assert list(tmp_path.iterdir()) == []


@pytest.mark.parametrize(("args", "said"), [
    (("export", "s", "-1", "--bogus"), "No such option: --bogus (Possible options: "),
    (("studies", "-1", "--wid"), "No such option: --wid (Possible options: --wide)"),
    (("export", "s", "-1", "--to"), "Option '--to' requires an argument")], ids=["export", "studies", "no-value"])
def test_an_unknown_option_after_a_negative_number_is_the_one_named(tmp_path, args, said):
    """A negative number is read as an argument since 9f08402, but where the line held another mistake after it
    (`export s -1 --bogus`) the refusal was click's 'No such option: -1', naming the number, not the option the user
    mistyped; it is that option now, as without the number."""
    line = one_error_line(advisor_entry(*args, cwd=tmp_path), said)
    assert "-1" not in line.split("(see")[0], line
    assert list(tmp_path.iterdir()) == []


@pytest.mark.parametrize(("args", "said"), [
    (("s", "-1.5"), "Invalid value for 'trial': "), (("s", "5", "-1.5"), "Got unexpected extra argument (-1.5)")],
    ids=["trial", "extra"])
def test_a_negative_decimal_is_an_argument_too(tmp_path, args, said):
    """`export s -1.5` said click's 'No such option: -1' (the decimal read as the short options -1, -., -5), where
    `export s -1` and `export s 1.5` name the trial argument: a negative decimal lands as a negative integer does."""
    line = one_error_line(advisor_entry("export", *args, "--to", "json", cwd=tmp_path), said)
    assert "No such option" not in line, line
    assert list(tmp_path.iterdir()) == []


def test_model_safetensors_is_read_alone_beside_stray_safetensors_files(tmp_path):
    """A directory of model.safetensors and other *.safetensors files without an index (a stray shard of another
    download) is loaded by transformers from model.safetensors alone, but every load read every file: a truncated
    stray shard refused even `inspect`, and a stray file sorting after model.safetensors replaced its tensors of the
    same name in an offloaded load (which then computed with other weights than the whole load)."""
    import torch
    from safetensors.torch import load_file, save_file

    from advisor.models.checkpoint import Checkpoint
    from advisor.models.tiny import build_tiny

    d = tmp_path / "ckpt"
    build_tiny("qwen3_moe", dtype=torch.bfloat16).save_pretrained(d)
    weights = load_file(d / "model.safetensors")
    key = next(k for k in weights if ".experts." in k)
    save_file({key: torch.zeros_like(weights[key])}, d / "zz.safetensors")
    (d / "model-00002-of-00002.safetensors").write_bytes((d / "model.safetensors").read_bytes()[:1000])
    assert torch.equal(Checkpoint(d).read(key), weights[key])
    r = advisor_entry("inspect", "ckpt", cwd=tmp_path)
    assert r.returncode == 0 and "truncated" not in r.stdout + r.stderr, r.stdout + r.stderr


def test_model_safetensors_is_read_alone_beside_an_index_another_save_left(tmp_path):
    """transformers loads model.safetensors before an index beside it, and its save_pretrained leaves the other
    kind of an earlier save behind (a sharded save keeps an earlier model.safetensors; a one-file save keeps an
    earlier sharded save's index): the index was read instead, so an offloaded load computed with the shards'
    weights where the whole load had the file's, and `inspect` of the re-saved checkpoint was refused ('lacks 6 of
    the 6 shards its index names')."""
    import torch
    from safetensors.torch import load_file

    from advisor.models.checkpoint import Checkpoint
    from advisor.models.tiny import build_tiny

    d = tmp_path / "ckpt"
    model = build_tiny("qwen3_moe", dtype=torch.bfloat16)
    model.save_pretrained(d)
    with torch.no_grad():
        for p in model.parameters():
            p.add_(1)
    model.save_pretrained(d, max_shard_size="20KB")  # the shards and their index beside the first model.safetensors
    first = load_file(d / "model.safetensors")
    key = next(k for k in first if ".experts." in k)
    sharded = next(w[key] for w in map(load_file, d.glob("model-0*.safetensors")) if key in w)
    assert not torch.equal(sharded, first[key]) and torch.equal(Checkpoint(d).read(key), first[key])
    model.save_pretrained(d)  # one file again: the shards go, their index stays
    assert (d / "model.safetensors.index.json").is_file() and not list(d.glob("model-0*.safetensors"))
    r = advisor_entry("inspect", "ckpt", cwd=tmp_path)
    assert r.returncode == 0 and "shards" not in r.stdout + r.stderr, r.stdout + r.stderr
