"""Environment variables the model libraries parse as they are imported (`advisor.libenv`, checked by
`advisor.hub.check_import`): a value they cannot read is one line naming it, before torch, not their ValueError's
traceback."""

from __future__ import annotations

import importlib.util
import os
import subprocess
import sys
from pathlib import Path

import pytest

from advisor.errors import UserError
from advisor.hub import check_import
from tests.test_cli_new_user14 import _refused_light

YES_NO = "give 1 or 0 (true/false, yes/no, on/off), or unset it"
CASES = [("HF_HUB_ETAG_TIMEOUT", "abc", "huggingface_hub", "give a whole number of seconds (10), or unset it"),
         ("HF_HUB_DOWNLOAD_TIMEOUT", "", "huggingface_hub", "give a whole number of seconds (10), or unset it"),
         ("NPU_FA2_SPARSE_MODE", "5", "transformers", "give 2 or 3 (its Ascend NPU attention mask mode), or unset it"),
         ("DISABLE_KERNEL_MAPPING", "x", "kernels", "give 1 or 0, or unset it"),
         ("USE_TORCH_XLA", "", "accelerate", YES_NO),
         ("ACCELERATE_USE_MEGATRON_LM", "abc", "accelerate", YES_NO),
         ("ACCELERATE_ENABLE_RICH", "abc", "accelerate", YES_NO),
         ("ACCELERATE_LOG_LEVEL", "abc", "accelerate",
          "give a logging level (DEBUG, INFO, WARNING, ERROR or CRITICAL), or unset it")]


def _line(name: str, value: str, reader: str, give: str) -> str:
    shown = repr(value) if value else "empty"
    return f"error: {name} is {shown}, which {reader} refuses as it is imported; {give}"


@pytest.mark.parametrize(("name", "value", "reader", "give"), CASES, ids=[c[0] for c in CASES])
def test_a_variable_the_model_libraries_cannot_read_is_refused_in_one_line_before_torch(tmp_path, name, value,
                                                                                       reader, give):
    """Each was a ValueError traceback from `inspect bundled` (huggingface_hub's int(), transformers' NPU mask mode
    check, kernels' int(), accelerate's str_to_bool and logging level), raised as transformers imported."""
    if importlib.util.find_spec(reader) is None:
        pytest.skip(f"{reader} is not installed")
    env = {**os.environ, name: value}
    assert _refused_light(tmp_path, "inspect", "bundled", env=env) == _line(name, value, reader, give)


@pytest.mark.parametrize("args", [["inspect", "some-org/m"], ["eval", "bundled", "--task", "gsm8k", "--limit", "1"],
                                  ["tune", "--trials", "1", "--storage", "s.db"], ["trace", "bundled", "-o", "t.npz"]],
                         ids=lambda a: "-".join(a[:2]))
def test_a_hub_timeout_that_is_no_number_is_refused_by_every_command_that_loads_a_model(tmp_path, args):
    """HF_HUB_ETAG_TIMEOUT=abc was huggingface_hub's int() traceback from each; nothing is written, and a command
    that never imports huggingface_hub (studies) does not read it."""
    env = {**os.environ, "HF_HUB_ETAG_TIMEOUT": "abc"}
    assert _refused_light(tmp_path, *args, env=env) == _line(
        "HF_HUB_ETAG_TIMEOUT", "abc", "huggingface_hub", "give a whole number of seconds (10), or unset it")
    assert list(tmp_path.iterdir()) == []
    example = Path(__file__).resolve().parents[1] / "studies" / "example" / "advisor.db"
    r = subprocess.run([sys.executable, "-m", "advisor", "studies", "--storage", str(example)], env=env,
                       capture_output=True, text=True, cwd=tmp_path, timeout=120)
    assert r.returncode == 0 and "bundled-example" in r.stdout, r.stderr


def test_gsm8k_from_the_hub_refuses_a_datasets_size_that_is_no_number(tmp_path):
    """HF_DATASETS_IN_MEMORY_MAX_SIZE=abc was datasets' float() traceback from `eval --task gsm8k` (GSM8K from the
    hub), raised after the task had been read."""
    env = {**os.environ, "HF_DATASETS_IN_MEMORY_MAX_SIZE": "abc"}
    assert _refused_light(tmp_path, "eval", "bundled", "--task", "gsm8k", "--limit", "1", env=env) == _line(
        "HF_DATASETS_IN_MEMORY_MAX_SIZE", "abc", "datasets", "give a number of bytes, or unset it")


@pytest.mark.parametrize(("name", "value"), [("HF_HUB_ETAG_TIMEOUT", " 10 "), ("HF_HUB_DOWNLOAD_TIMEOUT", "1_000"),
                                             ("NPU_FA2_SPARSE_MODE", "2"), ("DISABLE_KERNEL_MAPPING", "0"),
                                             ("USE_TORCH_XLA", "TRUE"), ("ACCELERATE_ENABLE_RICH", "No"),
                                             ("ACCELERATE_LOG_LEVEL", "warning"),
                                             ("HF_DATASETS_IN_MEMORY_MAX_SIZE", "1e9")])
def test_values_the_libraries_read_are_not_refused(monkeypatch, name, value):
    """What int(), float(), accelerate's str_to_bool and logging read is let through (no model is loaded here)."""
    monkeypatch.setenv(name, value)
    for library in ("huggingface_hub", "transformers", "datasets"):
        check_import(library)


def test_a_variable_of_a_library_not_imported_is_not_refused(monkeypatch):
    """huggingface_hub alone (the spec check's cache lookup) imports neither accelerate nor datasets."""
    monkeypatch.setenv("USE_TORCH_XLA", "abc")
    monkeypatch.setenv("HF_DATASETS_IN_MEMORY_MAX_SIZE", "abc")
    check_import("huggingface_hub")
    with pytest.raises(UserError, match="USE_TORCH_XLA"):
        check_import("transformers")
