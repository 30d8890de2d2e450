"""Refusals that name what the user gave: an unfinished trial of a study without a front, a path that is not there."""

from __future__ import annotations

from pathlib import Path

from tests.cli_helpers import advisor_entry, one_error_line


def _unfinished_study(db: Path) -> str:
    """A study of three trials none of which completed (so no stored front): #0 running, #1 failed, #2 queued."""
    import optuna

    url = f"sqlite:///{db}"
    study = optuna.create_study(study_name="q", storage=url, directions=["minimize"])
    study.enqueue_trial({"x": 1})
    study.ask()
    study.tell(study.ask(), state=optuna.trial.TrialState.FAIL)
    study.enqueue_trial({"x": 2})
    return url


def test_exporting_an_unfinished_trial_of_a_study_without_a_front_names_its_state(tmp_path):
    """`advisor export STUDY N` of a queued, running or failed trial, in a study with no stored front yet, said
    "no stored Pareto front for study 'q'" - true of the study, silent on the trial asked for. It now says what
    the trial is and what to do; a study that does not exist is refused as before."""
    url = _unfinished_study(tmp_path / "q.db")
    said = {n: one_error_line(advisor_entry("export", "q", str(n), "--to", "vllm", "--storage", url, cwd=tmp_path))
            for n in (0, 1, 2)}
    assert said[0].startswith("error: trial 0 of study 'q' is running, not complete: it has no measured "
                              "configuration to export, and the study has no stored Pareto front yet: "), said[0]
    assert "was stopped while it ran (running the same command again resumes the study)" in said[0], said[0]
    assert said[1].startswith("error: trial 1 of study 'q' failed, not complete: "), said[1]
    assert "tune more trials of the study (`advisor tune ... --study q`)" in said[1], said[1]
    assert said[2].startswith("error: trial 2 of study 'q' is queued, not complete: "), said[2]
    assert "the next `advisor tune` of the study (--study q) runs it" in said[2], said[2]
    assert all(s.endswith("then `advisor pareto q` lists the trials to export") for s in said.values()), said
    other = one_error_line(advisor_entry("export", "nope", "0", "--to", "vllm", "--storage", url, cwd=tmp_path))
    assert other.startswith("error: no stored Pareto front for study 'nope' in "), other


def test_a_model_path_that_is_not_there_is_said_to_be_no_directory(tmp_path):
    """`advisor tune ./LLaDA-MoE-7B` (a directory not there) was "'./LLaDA-MoE-7B' is neither a model directory,
    a tiny config (...), 'bundled', nor a Hugging Face model id (owner/name)", as if it could have been any of
    them. A MODEL that can only be a path (./ ../ / ~, more than one '/', a trailing '/') is now said to be no
    directory, as typed, with a directory of a close name or the nearest that exists; a URL is refused as
    before."""
    (tmp_path / "LLaDA-MoE-7B-A1B").mkdir()
    (tmp_path / "models" / "big").mkdir(parents=True)
    head = "a MODEL that is a path names a model directory (config.json + *.safetensors)"

    def said(model: str) -> str:
        return one_error_line(advisor_entry("inspect", model, cwd=tmp_path))

    assert said("./LLaDA-MoE-7B") == f"error: no directory './LLaDA-MoE-7B': {head}; did you mean './LLaDA-MoE-7B-A1B'?"
    assert said("LLaDA-MoE-7B/") == f"error: no directory 'LLaDA-MoE-7B/': {head}; did you mean 'LLaDA-MoE-7B-A1B'?"
    assert said("models/bgi/x") == f"error: no directory 'models/bgi/x': {head}; 'models' exists, but holds no 'bgi' " \
                                   "(did you mean 'big'?)"
    assert said("./models/big/a/b") == f"error: no directory './models/big/a/b': {head}; './models/big' exists, " \
                                       "but holds no 'a'"
    absent = str(tmp_path / "nowhere" / "m")
    assert said(absent) == f"error: no directory '{absent}': {head}; '{tmp_path}' exists, but holds no 'nowhere'"
    assert said("../nothing-like-it") == f"error: no directory '../nothing-like-it': {head}"
    assert "is neither a model directory" in said("https://huggingface.co/inclusionAI/LLaDA-MoE-7B-A1B-Instruct")


def test_an_export_of_a_database_that_cannot_be_read_reads_it_once(tmp_path):
    """c5ae06c's state check of the trial asked for ran after ANY refusal of the stored front: a PostgreSQL server
    that could not be read was connected to a second time (on one that does not answer, another 5 s connect
    timeout before the same line). Only "no stored Pareto front" (`recommend.NoFront`) is followed by the check
    now: `export` connects as often as `pareto` does."""
    import socket
    import threading

    server = socket.create_server(("127.0.0.1", 0))
    accepted: list[int] = []

    def serve() -> None:  # a "server" that takes each connection and closes it at once
        while True:
            try:
                conn, _ = server.accept()
            except OSError:
                return
            accepted.append(1)
            conn.close()

    threading.Thread(target=serve, daemon=True).start()
    url = f"postgresql://u@127.0.0.1:{server.getsockname()[1]}/db"
    try:
        counts = []
        for args in (("pareto", "q"), ("export", "q", "2", "--to", "vllm")):
            before = len(accepted)
            one_error_line(advisor_entry(*args, "--storage", url, cwd=tmp_path), "check the URL and that the server runs")
            counts.append(len(accepted) - before)
    finally:
        server.close()
    assert counts[0] >= 1 and counts[1] == counts[0], counts


def test_a_model_path_that_is_a_file_is_said_to_be_a_file(tmp_path):
    """`advisor inspect ./ckpt/config.json` (or a *.safetensors shard) - an existing file typed for its checkpoint
    directory - was "'...' is neither a model directory, a tiny config (...), 'bundled', nor a Hugging Face model
    id", as if the path were not there. It is now said to be a file, what MODEL must be, and the file's directory
    where that holds a config.json."""
    (tmp_path / "ckpt").mkdir()
    (tmp_path / "ckpt" / "config.json").write_text("{}")
    (tmp_path / "w.safetensors").write_text("x")
    head = "MODEL must be a checkpoint directory (config.json + *.safetensors) or a Hugging Face model id (owner/name)"

    def said(model: str) -> str:
        return one_error_line(advisor_entry("inspect", model, cwd=tmp_path))

    assert said("./ckpt/config.json") == f"error: './ckpt/config.json' is a file: {head}; did you mean its directory " \
                                         "'./ckpt'?"
    assert said("ckpt/config.json") == f"error: 'ckpt/config.json' is a file: {head}; did you mean its directory 'ckpt'?"
    assert said("w.safetensors") == f"error: 'w.safetensors' is a file: {head}"


def test_a_hub_shaped_model_under_a_local_directory_says_the_local_path_is_not_there(tmp_path):
    """`advisor inspect models/lada-moe` with ./models here (holding llada-moe): one '/' reads as a hub id, so it was
    refused only as "model models/lada-moe is not available offline (...)" - a user who typed a local path was told
    about the hub. The refusal now says first that the local directory is not there (with a close name), then the
    hub id reading; an id whose owner is no local directory is refused as before."""
    (tmp_path / "models" / "llada-moe").mkdir(parents=True)
    env = {"HF_HUB_OFFLINE": "1"}

    def said(model: str) -> str:
        return one_error_line(advisor_entry("inspect", model, cwd=tmp_path, env=env))

    assert said("models/lada-moe").startswith(
        "error: no directory 'models/lada-moe': 'models' exists here, but holds no 'lada-moe' (did you mean "
        "'models/llada-moe'?); read as a Hugging Face model id, model models/lada-moe is not available offline ("), \
        said("models/lada-moe")
    assert said("models/zzz").startswith("error: no directory 'models/zzz': 'models' exists here, but holds no 'zzz'; "
                                         "read as a Hugging Face model id, model models/zzz is not available offline")
    assert said("acme/zzz").startswith("error: model acme/zzz is not available offline ("), said("acme/zzz")
