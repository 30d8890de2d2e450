"""`advisor inspect` of a model directory holding only its config.json (a user deciding whether to download the
weights): the same counted table as with the weights, each number labelled as counted from config.json."""

from __future__ import annotations

import json
import re
import shutil
from pathlib import Path

import pytest
import torch
from typer.testing import CliRunner

from advisor.cli import app
from advisor.models.tiny import build_tiny
from tests.test_cli_new_user14 import _refused_light

SIZE = r"\d[\d.]* (?:B|KiB|MiB|GiB)"


@pytest.fixture(autouse=True)
def _cache_dir(tmp_path, monkeypatch):
    monkeypatch.setenv("ADVISOR_CACHE_DIR", str(tmp_path / "cache"))
    monkeypatch.chdir(tmp_path)


def _inspect(*args: str) -> str:
    res = CliRunner().invoke(app, ["inspect", "m", "--wide", *args], terminal_width=250)
    assert res.exit_code == 0, res.output
    return res.output


def _counted(output: str) -> tuple[list[str], list[str]]:
    """The table rows (layer table, fit table), and every size the text around them gives but host RAM's."""
    rows = [ln for ln in output.splitlines() if ln.startswith("│")]
    text = re.sub(r"host RAM [^;)]*\(available RAM, measured now\)", "", " ".join(output.split()))
    text = re.sub(r"free cpu memory " + SIZE, "", text)
    return rows, re.findall(SIZE, text)


def test_inspect_counts_a_config_only_directory_as_the_checkpoint_with_its_weights(tmp_path):
    """A directory with config.json and no weights was refused ('m holds no weights'), though every size inspect
    prints is counted from the shapes config.json gives. It is now built from config.json (experts meta) and the
    same table printed - every counted number equal to the checkpoint's - labelled as counted from config.json;
    other commands still refuse it, naming inspect."""
    build_tiny("qwen3_moe", dtype=torch.bfloat16).save_pretrained("m")
    weights = _inspect("--budget", "24GiB")
    (tmp_path / "m" / "model.safetensors").unlink()
    alone = _inspect("--budget", "24GiB")
    assert _counted(alone) == _counted(weights) and len(_counted(alone)[0]) == 2 + 7, alone
    text = " ".join(alone.split())
    assert "fingerprint=none (no weights)" in text and "48.00 KiB of routed expert weights (counted from " \
        "config.json; no weights read)" in text and "resident weights 45.38 KiB (counted from config.json; no " \
        "weights read;" in text, text
    assert "in the checkpoint's dtype, config.json's dtype bfloat16; counted as resident (counted 93.38 KiB " \
        "of tensors to store" in text, text  # the checkpoint's counted bytes: 93.38 KiB with its weights
    assert "93.38 KiB of checkpoint tensors" in " ".join(weights.split())
    assert _refused_light(tmp_path, "trace", "m", "-o", "t.npz").endswith(
        "(`advisor inspect m --budget SIZE` counts its sizes, and what fits, from config.json alone)")
    # beside the index of shards not downloaded (what lists a hub checkpoint's tensors) as well
    (tmp_path / "m" / "model.safetensors.index.json").write_text('{"weight_map": {"x": "model-1.safetensors"}}')
    offloaded = " ".join(_inspect("--budget", "80KiB").split())  # the probe runs on zero weights: said so
    assert "counted as offloaded" in offloaded and ") on zero weights of config.json's shapes" in offloaded, offloaded
    config = json.loads((tmp_path / "m" / "config.json").read_text())  # an FP8 checkpoint's bytes are not its shapes'
    (tmp_path / "m" / "config.json").write_text(json.dumps({**config, "quantization_config": {"quant_method": "fp8"}}))
    res = CliRunner().invoke(app, ["inspect", "m"])
    assert res.exception.exit_code == 2 and "pre-quantized checkpoint (quantization_config: fp8) with no weight files" in str(
        res.exception), res.output


def test_inspect_of_a_config_only_directory_holds_no_weights_but_what_its_probe_runs_on():
    """Every weight but the routed experts was a zero tensor of its own (Qwen3-30B-A3B's config.json: 3.4 GB RSS,
    even without --budget). Without --budget nothing is allocated (every weight meta; 0.45 GB RSS); with it, one
    zero tensor per shape serves every weight of that shape for the activation probe (1.1 GB). Measured here by the
    bytes of the tensors the command makes and holds (`HeldBytes`), against the resident weights it counts."""
    from advisor.models.memory import HeldBytes

    build_tiny("qwen3_moe", dtype=torch.bfloat16).save_pretrained("m")
    (Path("m") / "model.safetensors").unlink()
    resident = sum(t.numel() * 2 for n, t in build_tiny("qwen3_moe").state_dict().items() if ".experts." not in n)
    for args, most in (((), resident // 2), (("--budget", "80KiB"), resident * 2 // 3)):
        with HeldBytes() as held:
            output = _inspect(*args)
        assert held.peak < most, (args, held.peak, resident)
    assert "counted as offloaded" in " ".join(output.split()) and "activation allowance 13.57 KiB" in output


def test_inspect_counts_a_hub_id_whose_cached_snapshot_holds_only_config_json(tmp_path, monkeypatch):
    """Offline, a hub id whose snapshot in the local hub cache is config.json alone (`hf download ID config.json`)
    went the weights' path and was refused ('cannot load model type ... no file named model.safetensors'), where
    the same config.json in a directory is counted. It is counted now, as that directory is: the same table."""
    build_tiny("qwen3_moe", dtype=torch.bfloat16).save_pretrained("m")
    (tmp_path / "m" / "model.safetensors").unlink()
    snapshot = tmp_path / "hub" / "models--acme--moe" / "snapshots" / ("0" * 40)
    snapshot.mkdir(parents=True)
    (snapshot / "config.json").write_text((tmp_path / "m" / "config.json").read_text())
    (tmp_path / "hub" / "models--acme--moe" / "refs").mkdir()
    (tmp_path / "hub" / "models--acme--moe" / "refs" / "main").write_text("0" * 40)
    monkeypatch.setattr("huggingface_hub.constants.HF_HUB_CACHE", str(tmp_path / "hub"))
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    res = CliRunner().invoke(app, ["inspect", "acme/moe", "--wide"], terminal_width=250)
    assert res.exit_code == 0, res.output
    text = " ".join(res.output.split())
    assert "(acme/moe's snapshot in the local hub cache holds no weight files)" in text, text
    assert _counted(res.output) == _counted(_inspect())


def test_inspect_runs_its_activation_probe_on_one_thread_as_tune_does(monkeypatch):
    """`inspect --budget` of Qwen3-30B-A3B's config.json alone took 55-80 s on the 2-core host when other work kept
    it busy, 46 s of it the activation probe: it ran on every core (torch's default), where `advisor tune` runs
    the same probe on one thread (--threads 1), and its many small ops waited for each other's threads. It runs on
    one thread now (7 s there, the same bytes), and the thread count is given back after it."""
    import advisor.models.generate as generate

    build_tiny("qwen3_moe", dtype=torch.bfloat16).save_pretrained("m")
    (Path("m") / "model.safetensors").unlink()
    seen = []
    widest_step = generate.widest_step

    def spied(*args, **kwargs):
        seen.append(torch.get_num_threads())
        return widest_step(*args, **kwargs)

    monkeypatch.setattr(generate, "widest_step", spied)
    threads = torch.get_num_threads()
    torch.set_num_threads(2)  # a 2-core host's default, on any host
    try:
        output = _inspect("--budget", "80KiB")
        assert seen == [1] and torch.get_num_threads() == 2, seen
    finally:
        torch.set_num_threads(threads)
    assert "activation allowance 13.57 KiB" in output, output  # the bytes measured on every core before


def _fake_hub(monkeypatch, tmp_path) -> list[list[str]]:
    """An online hub of one repository, acme/moe, holding the files of ./m (this host has no network):
    `snapshot_download` copies those its patterns match into a snapshot folder of the hub cache. Returns the list
    each download appends the names it fetched to."""
    from fnmatch import fnmatch

    fetches: list[list[str]] = []

    def snapshot_download(repo_id, *, allow_patterns, local_files_only):
        assert repo_id == "acme/moe" and not local_files_only
        snapshot = tmp_path / "hub" / "models--acme--moe" / "snapshots" / ("0" * 40)
        snapshot.mkdir(parents=True, exist_ok=True)
        fetches.append(sorted(f.name for f in Path("m").iterdir() if any(fnmatch(f.name, p) for p in allow_patterns)))
        for name in fetches[-1]:
            (snapshot / name).write_bytes((Path("m") / name).read_bytes())
        return str(snapshot)

    monkeypatch.setattr("huggingface_hub.constants.HF_HUB_CACHE", str(tmp_path / "hub"))
    monkeypatch.setattr("huggingface_hub.snapshot_download", snapshot_download)
    monkeypatch.setattr("advisor.hub.hub_reachable", lambda *a: True)
    monkeypatch.setattr("advisor.models.load.hub_reachable", lambda *a: True)
    return fetches


def test_inspect_of_a_hub_id_online_fetches_config_json_and_no_weights(tmp_path, monkeypatch):
    """Online, `inspect OWNER/NAME` downloaded the whole checkpoint (Qwen3-30B-A3B: 61 GB) to print sizes it counts
    from config.json alone. It fetches all but the weights now (`hub_files(weights=False)`: config.json, the
    safetensors index, the tokenizer) and prints the table it prints of that directory; a pre-quantized checkpoint,
    whose bytes are its stored tensors', fetches its weights as before. The hub is faked here (this host has no
    network: `_fake_hub`)."""
    from fnmatch import fnmatch

    build_tiny("qwen3_moe", dtype=torch.bfloat16).save_pretrained("m")
    fetches = _fake_hub(monkeypatch, tmp_path)
    res = CliRunner().invoke(app, ["inspect", "acme/moe", "--wide", "--budget", "80KiB"], terminal_width=250)
    assert res.exit_code == 0, res.output
    assert fetches == [["config.json", "generation_config.json"]], fetches
    text = " ".join(res.output.split())
    assert "(acme/moe's snapshot in the local hub cache, where inspect fetched no weights, holds no weight files)" \
        in text, text
    shutil.copytree("m", "c", ignore=shutil.ignore_patterns("*.safetensors"))  # as of its config.json downloaded
    alone = CliRunner().invoke(app, ["inspect", "c", "--wide", "--budget", "80KiB"], terminal_width=250)
    assert _counted(res.output) == _counted(alone.output) and len(_counted(alone.output)[0]) == 2 + 7, alone.output

    config = json.loads(Path("m/config.json").read_text())  # pre-quantized: its weights are fetched to count them
    Path("m/config.json").write_text(json.dumps({**config, "quantization_config": {"quant_method": "fp8"}}))
    shutil.rmtree(tmp_path / "hub")
    fetches.clear()
    CliRunner().invoke(app, ["inspect", "acme/moe"])
    assert fetches == [["config.json", "generation_config.json"],
                       ["config.json", "generation_config.json", "model.safetensors"]], fetches

    from advisor.models.load import hub_files  # the patterns, of a sharded checkpoint's files too

    names = ("config.json", "generation_config.json", "model.safetensors.index.json", "tokenizer.json",
             "tokenizer_config.json", "tokenizer.model", "vocab.txt", "model-00001-of-00002.safetensors")
    assert [n for n in names if any(fnmatch(n, f) for f in hub_files(weights=False))] == list(names[:-1])
    assert all(any(fnmatch(n, f) for f in hub_files()) for n in names)


def test_profile_measures_the_cpu_experts_of_a_model_from_its_config_json_alone(tmp_path, monkeypatch):
    """`profile --model DIR` of a directory holding only config.json (a user deciding whether to download the
    weights) was refused ('holds no weights'), and `profile --model OWNER/NAME` online fetched the whole checkpoint,
    though it measures CPU expert times at the expert shapes config.json gives. Both take config.json alone now, as
    `inspect` does: the directory is measured at its shapes (those of the checkpoint with its weights), and the hub
    id fetches no weights (the hub faked by `_fake_hub`)."""

    build_tiny("qwen3_moe", dtype=torch.bfloat16).save_pretrained("m")
    (tmp_path / "m" / "model.safetensors").unlink()
    fetches = _fake_hub(monkeypatch, tmp_path)
    config = json.loads((tmp_path / "m" / "config.json").read_text())
    shape = f"{config['hidden_size']}x{config['moe_intermediate_size']}"
    for spec, name in (("m", "dir"), ("acme/moe", "hub")):
        res = CliRunner().invoke(app, ["profile", "--cpu", "--repeats", "1", "--profiles-dir", "p", "--name", name,
                                       "--model", spec], terminal_width=250)
        assert res.exit_code == 0, res.output
        stored = json.loads((tmp_path / "p" / f"{name}.json").read_text())["cpu_experts"]["table"]
        assert list(stored) == [shape], stored
    assert fetches == [["config.json", "generation_config.json"]], fetches
