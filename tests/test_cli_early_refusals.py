"""Refusals a model's config.json or files can answer before torch imports and the model loads: `eval --precision`
naming a MoE layer the model lacks, `trace --steps` for a cached hub id of an autoregressive model, and load-time
refusals that came after the busy-host note."""

from __future__ import annotations

import json
import socket
import subprocess
import sys
import threading
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path

import pytest

from tests.test_cli_new_user14 import _refused_light


def _checkpoint_dir(path, config: dict) -> str:
    """A model directory that passes the spec and tokenizer checks (config.json, a weights file, a tokenizer file),
    none of whose weights is read by a refusal before the load."""
    path.mkdir()
    (path / "config.json").write_text(json.dumps(config))
    (path / "model.safetensors").write_bytes(b"")
    (path / "tokenizer.json").write_text("{}")
    return str(path)


def test_eval_refuses_a_plan_naming_a_moe_layer_the_model_lacks_before_torch(tmp_path):
    """`eval --precision layers=0-7:int4` for the bundled model (4 MoE layers) was refused only once torch had
    imported and the model had loaded (4.8 s on a host at load 3.6, ~13 s busier); the count is read from its
    config.json now, in the words the load's check uses. A local directory's Qwen3-MoE config with an MLP-only layer
    counts its dense layers out (4 decoder layers, 3 MoE)."""
    assert _refused_light(tmp_path, "eval", "bundled", "--precision", "layers=0-7:int4") == (
        "error: precision plan names MoE layer 7 but the model has 4 (0-3)")
    model = _checkpoint_dir(tmp_path / "m", {"model_type": "qwen3_moe", "num_hidden_layers": 4, "num_experts": 8,
                                             "mlp_only_layers": [0]})
    assert _refused_light(tmp_path, "eval", model, "--precision", "layers=3:int8") == (
        "error: precision plan names MoE layer 3 but the model has 3 (0-2)")
    # an expert past the layer's count, in the words of the load's check (it came after the load: 6.7 s here)
    assert _refused_light(tmp_path, "eval", "bundled", "--precision", "experts=2.70:int8") == (
        "error: precision plan names expert 70 of MoE layer 2, which has 64 experts")
    assert _refused_light(tmp_path, "eval", model, "--precision", "experts=1.8:int8") == (
        "error: precision plan names expert 8 of MoE layer 1, which has 8 experts")


def test_quant_report_refuses_layers_the_model_lacks_before_torch(tmp_path):
    """`quant-report bundled --layers 0-7` (4 MoE layers) was refused only once torch had imported and the model
    had loaded; the config.json's count answers it first, in the words the load's check uses. A tiny family's
    sizes count its layers too."""
    assert _refused_light(tmp_path, "quant-report", "bundled", "--layers", "2-7") == (
        "error: --layers names MoE layer(s) 4-7 but bundled has 4 (0-3)")
    assert _refused_light(tmp_path, "quant-report", "tiny:llada_moe", "--layers", "0,9") == (
        "error: --layers names MoE layer(s) 9 but tiny:llada_moe has 2 (0-1)")
    assert list(tmp_path.iterdir()) == []


def _hub_cache(tmp_path, monkeypatch, repo_id: str, config: dict, weights: bool = True) -> None:
    """A local hub cache (HF_HUB_CACHE, offline) holding `config` as `repo_id`'s config.json at its main
    revision, as `hf download` leaves it, and (`weights`) a weights file of one tensor: the refusals checked here
    come before any weight is read, but a snapshot of config.json alone is refused as such first."""
    import torch
    from safetensors.torch import save_file

    repo = tmp_path / "hub" / f"models--{repo_id.replace('/', '--')}"
    (repo / "snapshots" / ("0" * 40)).mkdir(parents=True)
    (repo / "snapshots" / ("0" * 40) / "config.json").write_text(json.dumps(config))
    if weights:
        save_file({"x": torch.zeros(1)}, str(repo / "snapshots" / ("0" * 40) / "model.safetensors"))
    (repo / "refs").mkdir()
    (repo / "refs" / "main").write_text("0" * 40)
    monkeypatch.setenv("HF_HUB_CACHE", str(tmp_path / "hub"))
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")


def test_a_cached_hub_ids_config_answers_trace_steps_and_eval_precision_before_torch(tmp_path, monkeypatch):
    """For a hub id, `trace --steps` (an autoregressive model's) and `eval --precision` (a layer it lacks) were
    refused only after torch imported and the model loaded; its config.json in the local hub cache answers them
    now, read without the network. An id not in the cache is refused as before, once the loader looks it up."""
    from tests.cli_helpers import advisor_entry, one_error_line

    _hub_cache(tmp_path, monkeypatch, "acme/ar-moe", {"model_type": "qwen3_moe", "num_hidden_layers": 2,
                                                       "num_experts": 8})
    (next((tmp_path / "hub").glob("models--acme--ar-moe/snapshots/*")) / "tokenizer.json").write_text("{}")
    work = tmp_path / "work"
    work.mkdir()
    assert _refused_light(work, "trace", "acme/ar-moe", "--steps", "4", "-o", "t.npz") == (
        "error: --steps: acme/ar-moe (qwen3_moe) decodes autoregressively, one token per forward, with no denoising "
        "steps or blocks; drop them")
    assert _refused_light(work, "eval", "acme/ar-moe", "--precision", "layers=2:int4") == (
        "error: precision plan names MoE layer 2 but the model has 2 (0-1)")
    assert list(work.iterdir()) == []
    one_error_line(advisor_entry("eval", "acme/not-here", "--precision", "layers=2:int4", cwd=work),
                   "model acme/not-here is not available offline")



def test_eval_of_a_cached_hub_id_without_a_tokenizer_is_refused_offline_before_torch(tmp_path, monkeypatch):
    """`advisor eval ORG/NAME` of an id in the local hub cache, offline, whose snapshot holds no tokenizer file was
    refused only once torch had imported and the whole checkpoint had loaded (17 s for the bundled model's weights
    on the 2-core host), as 'give a model directory with its tokenizer files' - for a hub id. The cached snapshot
    answers it now, saying where none was found and how to fetch them; one whose snapshot has a tokenizer goes on
    (here to the plan check that follows)."""
    _hub_cache(tmp_path, monkeypatch, "acme/moe", {"model_type": "qwen3_moe", "num_hidden_layers": 2,
                                                    "num_experts": 8})
    work = tmp_path / "work"
    work.mkdir()
    assert _refused_light(work, "eval", "acme/moe") == (
        "error: acme/moe has no tokenizer in the local hub cache (its snapshot holds none of tokenizer.json, "
        "tokenizer_config.json, tokenizer.model, vocab.json), and none can be fetched (offline mode is set "
        "(HF_HUB_OFFLINE / TRANSFORMERS_OFFLINE)), so it cannot be evaluated on a text task; download them on a "
        "connected machine (hf download acme/moe), or compare precisions without one: `advisor tune acme/moe` (a "
        "shipped --space tunes fidelity_top1 in place of accuracy), or `advisor quant-report`")
    (next((tmp_path / "hub").glob("models--acme--moe/snapshots/*")) / "tokenizer.json").write_text("{}")
    assert _refused_light(work, "eval", "acme/moe", "--precision", "layers=2:int4") == (
        "error: precision plan names MoE layer 2 but the model has 2 (0-1)")
    assert list(work.iterdir()) == []

def _moe_layers_built(family: str, **changes) -> tuple[int, dict, set[int]]:
    """(MoE layers of tiny:<family> built with `changes` to its config, that config as config.json holds it)."""
    from advisor.models.tiny import _model_class, tiny_config
    from advisor.models.view import moe_layers

    config = tiny_config(family)
    for key, value in changes.items():
        setattr(config, key, value)
    cls = _model_class(family)
    model = cls.from_config(config) if cls.__name__.startswith("Auto") else cls(config)
    built = moe_layers(model)
    return len(built), config.to_dict(), {layer.num_experts for layer in built}


@pytest.mark.parametrize(("family", "changes"), [
    ("qwen3_moe", {}), ("qwen3_moe", {"num_hidden_layers": 4, "decoder_sparse_step": 2, "mlp_only_layers": [1]}),
    ("olmoe", {}), ("mixtral", {}), ("deepseek_v3", {}), ("deepseek_v3", {"first_k_dense_replace": 2}),
    ("llada_moe", {}), ("llada_moe", {"moe_layer_freq": [0, 1]}), ("llada2", {}),
    ("llada2", {"num_hidden_layers": 4, "first_k_dense_replace": 2}), ("diffusion_gemma", {})])
def test_the_torch_free_count_of_moe_layers_is_the_built_models(family, changes):
    """`moe_layer_count` of a config.json (as transformers writes it: published model_type names) and of the tiny
    sizes the CLI reads for tiny:<family> is the number of MoE layers the model built from it has;
    `moe_expert_count` is the routed experts each of them has."""
    from advisor.models import moe_expert_count, moe_layer_count, spec_config

    built, config, experts = _moe_layers_built(family, **changes)
    assert moe_layer_count(config) == built
    assert {moe_expert_count(config)} == experts
    if not changes:
        assert moe_layer_count(spec_config(f"tiny:{family}")) == built
        assert {moe_expert_count(spec_config(f"tiny:{family}"))} == experts


def test_the_torch_free_count_of_the_bundled_model_is_its_loaded_ones():
    from advisor.models import moe_layer_count, spec_config
    from advisor.models.load import load_model

    assert moe_layer_count(spec_config("bundled")) == len(load_model("bundled").moe) == 4


@pytest.mark.parametrize("broken", ["truncated", "missing shard"])
@pytest.mark.parametrize("command", [["eval"], ["trace", "-o", "t.npz"], ["quant-report"]], ids=lambda c: c[0])
def test_a_broken_checkpoint_is_refused_before_torch_and_the_busy_host_note(tmp_path, command, broken):
    """A truncated weights file, or a shard its index names that is not there, was refused by the load: after
    torch's import and, on a busy host, after --threads 0's note (the refusal was not one line). The safetensors
    headers say it without torch, now read first, in the load's words."""
    import shutil

    from advisor.models import BUNDLED_DIR

    model = tmp_path / "m"
    shutil.copytree(BUNDLED_DIR, model)
    weights = model / "model.safetensors"
    if broken == "truncated":
        weights.write_bytes(weights.read_bytes()[:-100])
        said = f"error: {weights} is truncated: tensor "
    else:  # a sharded checkpoint (no model.safetensors, which transformers would load before any index)
        weights.rename(model / "model-00001-of-00002.safetensors")
        (model / "model.safetensors.index.json").write_text(json.dumps({"weight_map": {"x": "gone.safetensors"}}))
        said = f"error: {model} lacks 1 of the 1 shards its index names (first: gone.safetensors)"
    work = tmp_path / "work"
    work.mkdir()
    assert _refused_light(work, command[0], str(model), *command[1:]).startswith(said)
    assert list(work.iterdir()) == []


def test_eval_of_a_truncated_checkpoint_without_a_tokenizer_says_the_damage_first(tmp_path):
    """`advisor eval DIR` of a directory without tokenizer files whose weights file is cut short said "DIR has no
    tokenizer ... compare precisions without one: `advisor tune DIR`", which then failed on the truncated file: the
    checkpoint's own damage is said first now."""
    import shutil

    from advisor.models import BUNDLED_DIR, TOKENIZER_FILES

    model = tmp_path / "m"
    shutil.copytree(BUNDLED_DIR, model)
    for name in TOKENIZER_FILES:
        (model / name).unlink(missing_ok=True)
    weights = model / "model.safetensors"
    weights.write_bytes(weights.read_bytes()[:-100])
    work = tmp_path / "work"
    work.mkdir()
    assert _refused_light(work, "eval", str(model)).startswith(f"error: {weights} is truncated: tensor ")


def test_a_cached_hub_ids_broken_weights_are_refused_before_torch(tmp_path, monkeypatch):
    """A hub id whose snapshot in the local hub cache holds a truncated weights file (a download cut short) was
    refused only by the load, after torch's import and a busy host's note; its cached files are read first now,
    as a local directory's are."""
    from advisor.models import BUNDLED_DIR

    _hub_cache(tmp_path, monkeypatch, "acme/cut", json.loads((BUNDLED_DIR / "config.json").read_text()))
    weights = next((tmp_path / "hub").glob("models--acme--cut/snapshots/*")) / "model.safetensors"
    weights.write_bytes((BUNDLED_DIR / "model.safetensors").read_bytes()[:-100])
    (weights.parent / "tokenizer.json").write_bytes((BUNDLED_DIR / "tokenizer.json").read_bytes())
    work = tmp_path / "work"
    work.mkdir()
    assert _refused_light(work, "eval", "acme/cut").startswith(f"error: {weights} is truncated: tensor ")
    assert list(work.iterdir()) == []


def test_trace_refuses_an_empty_task_before_torch(tmp_path):
    """`trace bundled --task "$TASK" -o t.npz` with $TASK unset: the empty task chose no prompts, refused as "nothing
    to trace" only once torch had imported and the model had loaded (14 s, after a busy host's note: not one line).
    An empty --task is refused as every empty option is, before torch; nothing is written."""
    assert _refused_light(tmp_path, "trace", "bundled", "--task", "", "-o", "t.npz") == (
        "error: --task is empty; give a value (see `advisor trace --help`) or leave the option out")
    assert list(tmp_path.iterdir()) == []


def test_eval_refuses_a_missing_or_malformed_data_file_before_torch(tmp_path):
    """`eval bundled --task gsm8k --data FILE` read FILE only once torch and transformers had imported (9-12 s on
    the 2-core host) for a typo in its name or a line without 'question'; `trace` reads it before them. So does
    eval now, in the same words."""
    (tmp_path / "bad.jsonl").write_text('{"x": 1}\n')
    assert _refused_light(tmp_path, "eval", "bundled", "--task", "gsm8k", "--data", "missing.jsonl") == (
        "error: GSM8K (question/answer) file 'missing.jsonl' does not exist")
    assert _refused_light(tmp_path, "eval", "bundled", "--task", "gsm8k", "--data", "bad.jsonl") == (
        "error: bad.jsonl:1: needs string fields 'question' and 'answer'")
    assert sorted(p.name for p in tmp_path.iterdir()) == ["bad.jsonl"]


def _with_weights(model: str) -> str:
    """`model` with a readable safetensors file (one small tensor), so the early weights check passes."""
    import numpy as np
    from safetensors.numpy import save_file

    save_file({"x": np.zeros(2, dtype=np.float32)}, f"{model}/model.safetensors")
    return model


@pytest.mark.parametrize("config", [{"model_type": "llada"}, {"model_type": "qwen3_moe", "mlp_only_layers": [0, 7]}],
                         ids=lambda c: c["model_type"])
def test_a_config_of_absurdly_many_layers_is_counted_not_listed(tmp_path, config):
    """A config.json of 10**15 decoder layers: the torch-free MoE layer count built a list of 10**15 entries
    (LLaDA-MoE's default `moe_layer_freq`: a MemoryError traceback) or looped over every layer (Qwen3-MoE: no
    answer for minutes); it is counted now, and a layer past the end is refused before torch as for any model."""
    n = 10**15
    model = _with_weights(_checkpoint_dir(tmp_path / "m", {**config, "num_hidden_layers": n, "num_experts": 8}))
    dense = len(config.get("mlp_only_layers", []))
    assert _refused_light(tmp_path, "quant-report", model, "--layers", str(n)) == (
        f"error: --layers names MoE layer(s) {n} but {model} has {n - dense} (0-{n - dense - 1})")


def test_a_config_whose_model_needs_more_memory_than_the_host_is_one_line(tmp_path):
    """LLaDA-MoE's config class lists `moe_layer_freq` per layer: for 10**15 layers building it is a MemoryError,
    which escaped the load as a traceback where every other unbuildable config.json is one line."""
    model = tmp_path / "m"
    _with_weights(_checkpoint_dir(model, {"model_type": "llada", "num_hidden_layers": 10**15, "num_experts": 8}))
    p = subprocess.run([sys.executable, "-m", "advisor", "quant-report", str(model), "--layers", "5"],
                       capture_output=True, text=True, cwd=tmp_path, timeout=300)
    assert p.returncode == 2 and "Traceback" not in p.stderr, p.stderr
    assert p.stderr.strip().splitlines()[-1] == (
        f"error: {model / 'config.json'} does not describe a model that can be built (MemoryError: more memory than "
        "this host has); fix that field or re-download the model")


@pytest.mark.parametrize("args", [["inspect"], ["eval"], ["trace", "-o", "t.npz"], ["profile", "--cpu", "--model"]],
                         ids=lambda a: a[0])
def test_an_uncached_hub_id_with_no_hub_is_refused_in_one_line_before_torch(tmp_path, args):
    """With no offline variable set and no network, an id not in the local hub cache was refused only after torch
    and transformers had imported (4.2-5.7 s on the 2-core host at load 3, 10-40 s busier), and `eval`/`trace` put
    the busy-host note before it. The spec check asks the hub's endpoint for a TCP connect first (here a port
    nothing listens on, so the test waits on no network): one line, exit 2, neither torch nor transformers."""
    import os
    import subprocess
    import sys
    import time

    env = {k: v for k, v in os.environ.items()
           if k not in ("HF_HUB_OFFLINE", "TRANSFORMERS_OFFLINE", "HF_DATASETS_OFFLINE", "HF_HUB_CACHE")}
    env.update(HF_ENDPOINT="http://127.0.0.1:9", HF_HOME=str(tmp_path / "hf"))
    code = ("import sys\nfrom advisor.cli import run\nsys.argv = ['advisor', *sys.argv[1:]]\n"
            "try:\n    run()\nexcept SystemExit as e:\n"
            "    print('HEAVY', sorted(m for m in ('torch', 'transformers') if m in sys.modules), 'exit', e.code)\n")
    start = time.monotonic()
    p = subprocess.run([sys.executable, "-c", code, *args, "some-org/uncached-model"], capture_output=True,
                       text=True, cwd=tmp_path, env=env, timeout=120)
    took = time.monotonic() - start
    assert p.stderr.splitlines() == [
        "error: model some-org/uncached-model is not available offline (the hub (http://127.0.0.1:9) could not be "
        "reached in 2 s); download it on a connected machine (hf download some-org/uncached-model) or pass a local "
        "directory"], p.stderr
    assert "HEAVY [] exit 2" in p.stdout, p.stdout
    assert took < 10, took
    assert sorted(q.name for q in tmp_path.iterdir()) in ([], ["hf"])


@pytest.mark.parametrize("repeats", ["99999999", "0"])
def test_profile_repeats_out_of_range_is_refused_in_one_line_with_the_range_and_why(tmp_path, repeats):
    """`profile --cpu --repeats 99999999` measured for days (each repeat copies 169 MiB again; 100 took 10.6 s
    here) without a word; now 1 to 100 is asked for, and why, before torch imports and before the busy-host note,
    and nothing is stored."""
    said = _refused_light(tmp_path, "profile", "--cpu", "--repeats", repeats, "--profiles-dir", "p")
    assert said == (f"error: --repeats {repeats}: give 1 to 100 (the median of a size's copies; each repeat copies all "
                    "4 sizes, 169 MiB, once more, and a median of 100 is already steady)")
    assert list(tmp_path.iterdir()) == []


def _no_offline_env(tmp_path, **extra: str) -> dict[str, str]:
    """This process's environment with no offline variable, an empty hub home, and `extra`."""
    import os

    env = {k: v for k, v in os.environ.items() if k not in (
        "HF_HUB_OFFLINE", "TRANSFORMERS_OFFLINE", "HF_DATASETS_OFFLINE", "HF_HUB_CACHE", "NO_PROXY", "no_proxy")}
    return {**env, "HF_HOME": str(tmp_path / "hf"), **extra}


def _closing_server() -> tuple[socket.socket, list[bytes]]:
    """A server on a free local port that takes each connection, keeps the first 200 bytes asked of it (the
    list) and closes it - a hub or proxy that resets every request. Close the server to stop it."""
    server = socket.create_server(("127.0.0.1", 0))
    asked: list[bytes] = []

    def close_each() -> None:
        while True:
            try:
                conn, _ = server.accept()
            except OSError:
                return
            conn.settimeout(5)  # a client that connects and sends nothing does not hold the loop
            try:
                asked.append(conn.recv(200))
            except OSError:
                asked.append(b"?")
            conn.close()

    threading.Thread(target=close_each, daemon=True).start()
    return server, asked


def test_a_hub_behind_a_proxy_is_asked_through_it_and_a_reset_is_one_line(tmp_path):
    """With HTTP(S)_PROXY set, the hub probe connected straight to the hub's address - blocked behind a proxy, so
    an id the hub would serve was refused as 'not available offline'. It connects to the proxy now; here the proxy
    takes the request and resets it, which escaped as an httpx ReadError traceback and is one line now. A proxy
    that does not answer is named in the refusal."""
    proxy, asked = _closing_server()
    env = _no_offline_env(tmp_path, HF_ENDPOINT="http://127.0.0.1:9",
                          HTTP_PROXY=f"http://127.0.0.1:{proxy.getsockname()[1]}")
    p = subprocess.run([sys.executable, "-m", "advisor", "inspect", "some-org/m"], capture_output=True, text=True,
                       cwd=tmp_path, env=env, timeout=120)
    proxy.close()
    assert p.returncode == 2 and p.stderr.startswith(
        "error: model some-org/m could not be fetched from the hub (ReadError"), p.stderr
    assert len(p.stderr.splitlines()) == 1 and b"some-org/m" in b"".join(asked), (p.stderr, asked)
    env["HTTP_PROXY"] = "http://127.0.0.1:9"  # nothing listens there
    assert _refused_light(tmp_path, "inspect", "some-org/m", env=env) == (
        "error: model some-org/m is not available offline (the hub (http://127.0.0.1:9) could not be reached through "
        "the proxy 127.0.0.1:9 in 2 s); download it on a connected machine (hf download some-org/m) or pass a local "
        "directory")


@pytest.mark.parametrize("variable", ["HF_ENDPOINT", "HTTPS_PROXY"])
def test_a_host_name_the_resolver_cannot_encode_is_no_traceback_in_the_probe(tmp_path, variable):
    """A hub or proxy host with a label longer than DNS takes (70 letters): the probe's connect raised the idna
    codec's UnicodeError, which is no OSError, so its thread printed a traceback above the one line. The host
    counts as not reached, as an unknown name does: the one line alone."""
    host = "a" * 70
    env = _no_offline_env(tmp_path, HF_ENDPOINT="https://hub.example", HTTPS_PROXY=f"http://{host}:3128")
    if variable == "HF_ENDPOINT":
        env = {**{k: v for k, v in env.items() if k.lower() not in ("https_proxy", "all_proxy")},
               "HF_ENDPOINT": f"https://{host}.com"}
    line = _refused_light(tmp_path, "inspect", "some-org/m", env=env)
    assert line.startswith("error: model some-org/m is not available offline (the hub (https://"), line
    p = subprocess.run([sys.executable, "-m", "advisor", "inspect", "some-org/m"], capture_output=True, text=True,
                       cwd=tmp_path, env=env, timeout=120)
    assert p.returncode == 2 and p.stderr.splitlines() == [line], p.stderr


def test_an_uncached_hub_id_is_probed_once_per_command(tmp_path):
    """The spec check probed the hub for an uncached id, and the loader probed it again after torch's imports
    (a second TCP connect, up to 2 s more where the hub does not answer). The loader reuses the spec check's answer
    now (`advisor.hub.KEPT_S`). Here a local 'hub' takes each connection and closes it: the probe's connect sends
    nothing, the download's request does; the fetch fails in one line as before."""
    hub, first_bytes = _closing_server()
    env = _no_offline_env(tmp_path, HF_ENDPOINT=f"http://127.0.0.1:{hub.getsockname()[1]}")
    p = subprocess.run([sys.executable, "-m", "advisor", "inspect", "some-org/m"], capture_output=True, text=True,
                       cwd=tmp_path, env=env, timeout=120)
    hub.close()
    assert p.returncode == 2 and p.stderr.startswith("error: model some-org/m could not be fetched from the hub ("), \
        p.stderr
    assert len(p.stderr.splitlines()) == 1, p.stderr
    assert first_bytes.count(b"") == 1 and any(first_bytes), first_bytes  # one probe, then the download's request


@pytest.mark.parametrize(("variable", "port"), [("HTTPS_PROXY", "3l28"), ("ALL_PROXY", "3l28"), ("HTTPS_PROXY", "0"),
                                               ("https_proxy", "3l28"), ("all_proxy", "3l28")])
def test_a_proxy_with_a_mistyped_port_is_refused_in_one_line_without_its_password(tmp_path, variable, port):
    """The hub probe read the proxy's port with urllib, whose ValueError for a port that is no number ('3l28') or
    out of range escaped as a traceback for an uncached hub id. It is one line naming the variable now, before
    torch; the proxy's user:password@ is not echoed. Port 0, which urllib reads as none, was asked as port 80 and
    the refusal named 'the proxy proxy:80'. A variable set in lower case (https_proxy) is named so: the line said
    HTTPS_PROXY, which was not set."""
    env = _no_offline_env(tmp_path, HF_ENDPOINT="https://127.0.0.1:9", **{variable: f"http://me:s3cret@proxy:{port}"})
    for other in ("HTTPS_PROXY", "https_proxy", "ALL_PROXY", "all_proxy"):
        if other != variable:
            env.pop(other, None)
    assert _refused_light(tmp_path, "inspect", "some-org/m", env=env) == (
        f"error: {variable} gives an address with no valid port (proxy:{port}); give a port from 1 to 65535, or none")


def test_a_proxy_url_urllib_cannot_read_is_refused_in_one_line_without_its_password(tmp_path):
    """An IPv6 proxy with its closing bracket left out (HTTPS_PROXY=http://[::1:3128) made urllib's urlparse raise
    'Invalid IPv6 URL' in the hub probe: a traceback for an uncached hub id. It is one line naming the variable,
    before torch; the proxy's user:password@ is not echoed."""
    env = _no_offline_env(tmp_path, HF_ENDPOINT="https://127.0.0.1:9", HTTPS_PROXY="http://me:s3cret@[::1:3128")
    for other in ("https_proxy", "ALL_PROXY", "all_proxy"):
        env.pop(other, None)
    assert _refused_light(tmp_path, "inspect", "some-org/m", env=env) == (
        "error: HTTPS_PROXY gives an address that is no URL ([::1:3128); give it as http://HOST:PORT, an IPv6 host "
        "in brackets ([::1])")


@pytest.mark.parametrize("no_proxy", [".localhost", "example.org,*"])
def test_no_proxy_is_read_as_huggingface_hubs_http_client_reads_it(tmp_path, no_proxy):
    """The probe read NO_PROXY as urllib does, the download as httpx does: NO_PROXY=.localhost exempted the hub at
    localhost from the proxy for the probe only (httpx: subdomains only), so it passed and the download failed
    through the proxy after torch's import (13 s); NO_PROXY='example.org,*' exempted nothing for the probe (httpx:
    every host), which refused an id the hub would be asked for directly. Here the proxy does not answer and the
    hub takes each connection and closes it."""
    hub, asked = _closing_server()
    endpoint = f"http://localhost:{hub.getsockname()[1]}"
    env = _no_offline_env(tmp_path, HF_ENDPOINT=endpoint, HTTP_PROXY="http://127.0.0.1:9", NO_PROXY=no_proxy)
    for other in ("http_proxy", "ALL_PROXY", "all_proxy"):
        env.pop(other, None)
    if no_proxy == ".localhost":  # through the proxy, which does not answer: refused before torch
        assert _refused_light(tmp_path, "inspect", "some-org/m", env=env) == (
            f"error: model some-org/m is not available offline (the hub ({endpoint}) could not be reached through "
            "the proxy 127.0.0.1:9 in 2 s); download it on a connected machine (hf download some-org/m) or pass a "
            "local directory")
    else:  # straight to the hub, which closes the connection: asked (not through a proxy), then one line
        p = subprocess.run([sys.executable, "-m", "advisor", "inspect", "some-org/m"], capture_output=True,
                           text=True, cwd=tmp_path, env=env, timeout=300)
        assert p.returncode == 2 and p.stderr.startswith("error: model some-org/m could not be fetched from the hub ("), p.stderr
        assert any(b"some-org/m" in a and not a.split(b" ")[1].startswith(b"http") for a in asked), asked
    hub.close()


def test_offline_variables_are_read_in_huggingface_hubs_order(tmp_path):
    """huggingface_hub reads HF_HUB_OFFLINE, and TRANSFORMERS_OFFLINE only where that is unset or empty: with
    HF_HUB_OFFLINE=0 TRANSFORMERS_OFFLINE=1 it downloads. The probe took either as offline and refused such an id
    ('offline mode is set') without asking the hub; it asks the hub's endpoint now (here nothing listens)."""
    env = _no_offline_env(tmp_path, HF_ENDPOINT="http://127.0.0.1:9", HF_HUB_OFFLINE="0", TRANSFORMERS_OFFLINE="1")
    for name in ("HTTP_PROXY", "http_proxy", "ALL_PROXY", "all_proxy"):
        env.pop(name, None)
    assert _refused_light(tmp_path, "inspect", "some-org/m", env=env) == (
        "error: model some-org/m is not available offline (the hub (http://127.0.0.1:9) could not be reached in "
        "2 s); download it on a connected machine (hf download some-org/m) or pass a local directory")
    env.pop("HF_HUB_OFFLINE")  # TRANSFORMERS_OFFLINE=1 alone: offline, as huggingface_hub reads it
    assert _refused_light(tmp_path, "inspect", "some-org/m", env=env) == (
        "error: model some-org/m is not available offline (offline mode is set (HF_HUB_OFFLINE / "
        "TRANSFORMERS_OFFLINE)); download it on a connected machine (hf download some-org/m) or pass a local "
        "directory")


def test_datasets_own_offline_variable_decides_for_gsm8k(monkeypatch):
    """datasets reads HF_DATASETS_OFFLINE, where set, alone (0 is online though HF_HUB_OFFLINE=1); GSM8K's probe
    (`hub_reachable(PROBE_S, "HF_DATASETS_OFFLINE")`) reads it so."""
    from advisor.hub import offline_set

    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    monkeypatch.setenv("HF_DATASETS_OFFLINE", "0")
    assert offline_set("HF_DATASETS_OFFLINE") is False and offline_set() is True
    monkeypatch.setenv("HF_DATASETS_OFFLINE", "yes")
    monkeypatch.setenv("HF_HUB_OFFLINE", "0")
    assert offline_set("HF_DATASETS_OFFLINE") is True and offline_set() is False


def test_an_endpoint_the_http_client_cannot_read_is_no_traceback_in_the_probe(tmp_path):
    """The probe asks huggingface_hub's HTTP client which proxy a request takes; an HF_ENDPOINT it refuses
    ('https://[::1]x': httpx2.InvalidURL, which is no ValueError) escaped that as a traceback. urllib's reading
    decides then: the proxy, which does not answer, is named in one line before torch."""
    env = _no_offline_env(tmp_path, HF_ENDPOINT="https://[::1]x", HTTPS_PROXY="http://127.0.0.1:9")
    for other in ("https_proxy", "ALL_PROXY", "all_proxy"):
        env.pop(other, None)
    assert _refused_light(tmp_path, "inspect", "some-org/m", env=env) == (
        "error: model some-org/m is not available offline (the hub (https://[::1]x) could not be reached through "
        "the proxy 127.0.0.1:9 in 2 s); download it on a connected machine (hf download some-org/m) or pass a "
        "local directory")


def test_the_probe_hides_only_what_the_http_client_raises_on_an_address_it_cannot_read(monkeypatch):
    """The probe's question to huggingface_hub's HTTP client caught every exception and fell back to urllib's
    proxy rules without a word; it catches the client's InvalidURL only now (the test above), so an error of
    ours in reading the client's answer is seen, not hidden. Users see no change."""
    httpx2_utils = pytest.importorskip("httpx2._utils")

    from advisor.hub import unreachable_note

    def broken() -> dict:
        raise RuntimeError("a bug of ours")

    monkeypatch.setattr(httpx2_utils, "get_environment_proxies", broken)
    for name in ("HTTPS_PROXY", "https_proxy", "ALL_PROXY", "all_proxy", "NO_PROXY", "no_proxy"):
        monkeypatch.delenv(name, raising=False)
    monkeypatch.setenv("HF_HUB_OFFLINE", "0")
    monkeypatch.setenv("HF_ENDPOINT", "https://127.0.0.1:9")
    monkeypatch.setenv("HTTPS_PROXY", "http://127.0.0.1:9")
    with pytest.raises(RuntimeError, match="a bug of ours"):
        unreachable_note(0.01)


def test_gsm8k_says_why_a_proxy_variable_cannot_be_read(tmp_path):
    """GSM8K's loader caught every error of its hub probe and the load as 'not available offline': a proxy with a
    mistyped port, refused by the probe in one line naming the variable, read 'GSM8K is not available offline
    (UserError)'. The probe's refusal is said as it is (before torch)."""
    env = _no_offline_env(tmp_path, HF_ENDPOINT="https://127.0.0.1:9", HTTPS_PROXY="http://me:s3cret@proxy:3l28")
    for other in ("https_proxy", "ALL_PROXY", "all_proxy"):
        env.pop(other, None)
    assert _refused_light(tmp_path, "eval", "bundled", "--task", "gsm8k", "--limit", "1", env=env) == (
        "error: HTTPS_PROXY gives an address with no valid port (proxy:3l28); give a port from 1 to 65535, or none")


def test_an_ipv6_proxy_is_named_in_brackets(tmp_path):
    """An unanswering IPv6 proxy (HTTPS_PROXY=http://[::1]:9) was named 'the proxy ::1:9', which reads as a
    host '::1' and no port; it is '[::1]:9', as a URL writes it."""
    env = _no_offline_env(tmp_path, HF_ENDPOINT="https://127.0.0.1:9", HTTPS_PROXY="http://[::1]:9")
    assert "could not be reached through the proxy [::1]:9 in 2 s)" in _refused_light(
        tmp_path, "inspect", "some-org/m", env=env)


@pytest.mark.parametrize("args", [["inspect", "bundled"], ["inspect", "some-org/m"],
                                  ["eval", "bundled", "--task", "gsm8k", "--limit", "1"],
                                  ["tune", "--trials", "1", "--storage", "s.db"], ["trace", "bundled", "-o", "t.npz"]],
                         ids=lambda a: "-".join(a[:2]))
def test_an_endpoint_urllib_cannot_read_is_refused_in_one_line_before_huggingface_hub(tmp_path, args):
    """HF_ENDPOINT=http://[::1 (its closing bracket left out): huggingface_hub parses the variable as it is imported,
    and its 'Invalid IPv6 URL' ValueError was a traceback from every command that imports it - through transformers
    each that loads a model, the bundled one too. One line naming the variable now, before torch, its user:password@
    not echoed, nothing written; a command that never imports huggingface_hub (studies) does not read it."""
    import os

    env = {**os.environ, "HF_ENDPOINT": "http://me:s3cret@[::1"}
    assert _refused_light(tmp_path, *args, env=env) == (
        "error: HF_ENDPOINT gives an address that is no URL ([::1); give it as http://HOST:PORT, an IPv6 host in "
        "brackets ([::1])")
    assert list(tmp_path.iterdir()) == []
    example = Path(__file__).resolve().parents[1] / "studies" / "example" / "advisor.db"
    r = subprocess.run([sys.executable, "-m", "advisor", "studies", "--storage", str(example)], env=env,
                       capture_output=True, text=True, cwd=tmp_path, timeout=120)
    assert r.returncode == 0 and "bundled-example" in r.stdout, r.stderr


@pytest.mark.parametrize("args", [["inspect", "bundled"], ["inspect", "some-org/m"]], ids=lambda a: "-".join(a[:2]))
@pytest.mark.parametrize("port", ["99999", "3l28"])
def test_an_endpoint_port_urllib_cannot_read_is_refused_in_one_line_before_huggingface_hub(tmp_path, args, port):
    """HF_ENDPOINT=https://hub:99999 (or a typo, ':3l28'): huggingface_hub reads the endpoint's port as it is
    imported, and urllib's 'Port out of range' ValueError was a traceback from every command importing it, the
    bundled model's too. One line naming the variable, as for a proxy's port, its user:password@ not echoed."""
    import os

    env = {**os.environ, "HF_ENDPOINT": f"https://me:s3cret@hub.example:{port}"}
    assert _refused_light(tmp_path, *args, env=env) == (
        f"error: HF_ENDPOINT gives an address with no valid port (hub.example:{port}); give a port from 1 to 65535, "
        "or none")
    assert list(tmp_path.iterdir()) == []


def _answering_hub(files: tuple[str, ...] = ("config.json",)) -> ThreadingHTTPServer:
    """A local 'hub' that answers as much of the hub's API as a download of some-org/m asks before it writes into
    the cache (its revision, its file tree: `files`, each file's headers and body `{}`). Shut it down after."""
    sha = "a" * 40

    class Hub(BaseHTTPRequestHandler):
        def do_GET(self) -> None:
            if "/resolve/" in self.path:
                body, headers = b"{}", {"X-Repo-Commit": sha, "ETag": '"e1"'}
            else:
                data: object = ([{"type": "file", "path": f, "size": 2, "oid": "b" * 40} for f in files]
                                if "/tree/" in self.path else {"id": "some-org/m", "sha": sha} if
                                self.path.startswith("/api/models/") else {})
                body, headers = json.dumps(data).encode(), {}
            self.send_response(200)
            for k, v in {"Content-Type": "application/json", "Content-Length": str(len(body)), **headers}.items():
                self.send_header(k, v)
            self.end_headers()
            if self.command == "GET":
                self.wfile.write(body)

        do_HEAD = do_GET

        def log_message(self, *_a) -> None:
            pass

    server = ThreadingHTTPServer(("127.0.0.1", 0), Hub)
    threading.Thread(target=server.serve_forever, daemon=True).start()
    return server


@pytest.mark.parametrize("cache", ["a file on the path", "not writable"])
def test_a_hub_cache_it_cannot_write_is_named_not_called_a_network_failure(tmp_path, cache):
    """A download the hub answered but the local cache could not take (a cache directory this user cannot write, a
    file where a directory of it belongs) was 'could not be fetched from the hub (PermissionError ...); check the
    network or proxy settings': every OSError was the network's. One naming the file it could not write is the
    cache's now, with what to do (HF_HUB_CACHE, HF_HOME)."""
    import os

    if cache == "not writable" and os.geteuid() == 0:
        pytest.skip("root writes a directory whatever its mode")
    (tmp_path / "cache").write_text("") if cache == "a file on the path" else (tmp_path / "cache").mkdir(mode=0)
    hub = _answering_hub()
    env = _no_offline_env(tmp_path, HF_ENDPOINT=f"http://127.0.0.1:{hub.server_address[1]}",
                          HF_HUB_CACHE=str(tmp_path / "cache" / "hub"))
    try:
        p = subprocess.run([sys.executable, "-m", "advisor", "inspect", "some-org/m"], capture_output=True,
                           text=True, cwd=tmp_path, env=env, timeout=120)
    finally:
        hub.shutdown()
        (tmp_path / "cache").chmod(0o700)
    said = "Not a directory" if cache == "a file on the path" else "Permission denied"
    # (huggingface_hub's own warnings of the files it could not write come before it: its logging, not ours)
    assert p.returncode == 2 and "Traceback" not in p.stderr and p.stderr.splitlines()[-1] == (
        f"error: model some-org/m could not be stored in the local hub cache ({said}: {tmp_path / 'cache' / 'hub'}); "
        "make the cache a directory you can write (or set HF_HUB_CACHE or HF_HOME to one), or pass a local "
        "directory"), p.stderr


def test_a_hub_repository_without_config_json_is_said_to_lack_it_not_to_be_unavailable_offline(tmp_path):
    """A hub id the hub answered for, whose repository holds no config.json (a GGUF-only one here), was refused as
    'not available offline (its snapshot in the local hub cache holds no config.json); download it on a connected
    machine' - on a connected machine, and after huggingface_hub's own 'No files matched allow_patterns' line. It
    now says what the hub's answer showed, in one line."""
    hub = _answering_hub(("model.gguf", "README.md"))
    env = _no_offline_env(tmp_path, HF_ENDPOINT=f"http://127.0.0.1:{hub.server_address[1]}")
    try:
        p = subprocess.run([sys.executable, "-m", "advisor", "inspect", "some-org/m"], capture_output=True,
                           text=True, cwd=tmp_path, env=env, timeout=120)
    finally:
        hub.shutdown()
    assert (p.returncode, p.stderr) == (2, (
        "error: model some-org/m has no config.json on the hub (revision aaaaaaaaaaaa), so it is no transformers "
        "checkpoint (a GGUF-only or dataset repository?); check the id, or pass a local directory\n")), p.stderr


def test_a_hub_cache_write_past_a_size_limit_is_the_caches_not_the_networks(tmp_path):
    """A write into the cache that fails with no file named - a full disk, a quota, here a file-size limit of 1 byte
    (RLIMIT_FSIZE; Python ignores SIGXFSZ, so the write says EFBIG) - was 'could not be fetched from the hub
    (OSError: [Errno 27] File too large); check the network or proxy settings'. It is the cache's, naming the
    cache directory (HF_HUB_CACHE)."""
    import resource

    hub = _answering_hub()
    env = _no_offline_env(tmp_path, HF_ENDPOINT=f"http://127.0.0.1:{hub.server_address[1]}",
                          HF_HUB_CACHE=str(tmp_path / "cache"), PYTHONDONTWRITEBYTECODE="1")
    try:
        p = subprocess.run([sys.executable, "-m", "advisor", "inspect", "some-org/m"], capture_output=True,
                           text=True, cwd=tmp_path, env=env, timeout=120,
                           preexec_fn=lambda: resource.setrlimit(resource.RLIMIT_FSIZE, (1, 1)))
    finally:
        hub.shutdown()
    assert p.returncode == 2 and "Traceback" not in p.stderr and p.stderr.splitlines()[-1] == (
        f"error: model some-org/m could not be stored in the local hub cache (File too large: {tmp_path / 'cache'}); "
        "make the cache a directory you can write (or set HF_HUB_CACHE or HF_HOME to one), or pass a local "
        "directory"), p.stderr


def test_a_hub_fetch_that_fails_for_an_id_under_a_local_directory_says_the_local_path_is_not_there(tmp_path):
    """`models/x` with ./models here, the hub reachable but failing the fetch: the refusal ('could not be fetched from
    the hub') said nothing of the local directory a user may have meant; it says first that it is not there."""
    (tmp_path / "models").mkdir()
    hub, _ = _closing_server()
    env = _no_offline_env(tmp_path, HF_ENDPOINT=f"http://127.0.0.1:{hub.getsockname()[1]}")
    p = subprocess.run([sys.executable, "-m", "advisor", "inspect", "models/x"], capture_output=True, text=True,
                       cwd=tmp_path, env=env, timeout=120)
    hub.close()
    assert p.returncode == 2 and len(p.stderr.splitlines()) == 1, p.stderr
    assert p.stderr.startswith("error: no directory 'models/x': 'models' exists here, but holds no 'x'; read as a "
                               "Hugging Face model id, model models/x could not be fetched from the hub ("), p.stderr


def test_a_cached_hub_id_of_config_json_alone_is_refused_offline_before_torch_with_the_inspect_hint(tmp_path,
                                                                                                   monkeypatch):
    """Offline, a hub id whose snapshot in the local hub cache holds config.json alone (`hf download ID
    config.json`, to learn whether it fits) was refused by trace/eval/tune only after torch imported, as 'cannot
    load model type ... no file named model.safetensors ... in directory <the snapshot's hash path>', where the
    same config.json in a directory is refused before torch with the hint that `inspect` counts it. Now alike."""
    _hub_cache(tmp_path, monkeypatch, "acme/moe", {"model_type": "qwen3_moe", "num_hidden_layers": 2,
                                                    "num_experts": 8}, weights=False)
    work = tmp_path / "work"
    work.mkdir()
    said = ("error: acme/moe's snapshot in the local hub cache holds no weights (config.json alone), and they cannot "
            "be fetched (offline mode is set (HF_HUB_OFFLINE / TRANSFORMERS_OFFLINE)); download them on a connected "
            "machine (hf download acme/moe), or count its sizes, and what fits, from config.json alone: `advisor "
            "inspect acme/moe --budget SIZE`")
    assert _refused_light(work, "trace", "acme/moe", "--prompt", "hi", "-o", "t.npz") == said
    assert _refused_light(work, "tune", "acme/moe", "--trials", "1") == said
    assert list(work.iterdir()) == []


def test_a_cached_hub_id_of_config_json_and_its_index_is_not_said_to_hold_config_json_alone(tmp_path, monkeypatch):
    """The refusal above said "(config.json alone)" of a snapshot that also holds model.safetensors.index.json
    (`hf download ID config.json model.safetensors.index.json`): it names what the snapshot holds now."""
    _hub_cache(tmp_path, monkeypatch, "acme/moe", {"model_type": "qwen3_moe", "num_hidden_layers": 2,
                                                    "num_experts": 8}, weights=False)
    snapshot = tmp_path / "hub" / "models--acme--moe" / "snapshots" / ("0" * 40)
    (snapshot / "model.safetensors.index.json").write_text(json.dumps(
        {"metadata": {}, "weight_map": {"x": "model-00001-of-00002.safetensors"}}))
    work = tmp_path / "work"
    work.mkdir()
    said = _refused_light(work, "trace", "acme/moe", "--prompt", "hi", "-o", "t.npz")
    assert said.startswith("error: acme/moe's snapshot in the local hub cache holds no weights (config.json and "
                           "model.safetensors.index.json, none of its shards), and they cannot be fetched"), said
    assert list(work.iterdir()) == []
