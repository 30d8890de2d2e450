"""What a new user met in pass 19b: each test failed before its fix."""

from __future__ import annotations

from typer.testing import CliRunner

from advisor.cli import app


def test_tune_and_inspect_label_the_host_ram_they_measure_alike(tmp_path, monkeypatch):
    """`tune`'s header said host stores are kept while they total "<= X (available RAM)" where `inspect` said
    "host RAM available X (measured now)": the same figure (`host_available_bytes`), two wordings. Both now say
    "(available RAM, measured now)"."""
    import torch

    torch.set_num_threads(1)
    monkeypatch.chdir(tmp_path)
    run = CliRunner(env={"COLUMNS": "200"})
    shown = run.invoke(app, ["inspect", "bundled", "--budget", "3MiB"])
    assert shown.exit_code == 0, shown.output
    tuned = run.invoke(app, ["tune", "bundled", "--offload", "--trials", "1", "--storage", "t.db"])
    assert tuned.exit_code == 0, tuned.output
    for out in (" ".join(shown.output.split()), " ".join(tuned.output.split())):
        assert " GiB (available RAM, measured now)" in out or " MiB (available RAM, measured now)" in out, out
    assert "(measured now)" not in shown.output and "(available RAM)" not in tuned.output


def test_inspect_names_the_budget_as_typed_beside_its_bytes(tmp_path, monkeypatch):
    """`inspect --budget '3 mb'` headed its table "budget 2.86 MiB:", bytes the user never typed (3 mb is SI:
    3,000,000 bytes), where `tune` and `recommend` name the option beside them (`budget_text`)."""
    import torch

    torch.set_num_threads(1)
    monkeypatch.chdir(tmp_path)
    r = CliRunner(env={"COLUMNS": "200"}).invoke(app, ["inspect", "bundled", "--budget", " 3 mb"])
    assert r.exit_code == 0, r.output
    assert "budget 2.86 MiB (--budget 3 mb): resident weights" in r.output, r.output
