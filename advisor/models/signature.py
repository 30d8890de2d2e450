"""What a model's load depends on, read without torch in milliseconds (`load_signature`): a tune run stores it with
what the load gave (`advisor.tune.shortcut`), so that the same command run again on a finished study can say
'nothing to run' without loading the model - only where every input is the same and none is in doubt.

A local directory (and 'bundled') is signed by every file under it: name, size, mtime and ctime (ns), inode and
device, plus the sha256 of config.json and of each safetensors header. A file saved anew in place gets a new
ctime, which no copy tool can set (`cp -p`, `rsync -a` and `touch -r` set the mtime only). A file changed within
`RACY_NS` of the signature is in doubt (a coarse file-system clock could keep its times): no signature. A
tiny:<family> model is built by this code from a seed: its spec signs it. A hub id gets none: online, its load
asks the hub for the revision. Every signature also holds the advisor code's digest, the versions of the libraries
a load goes through, and for a CUDA device the driver's and the GPUs' identity (none readable: no signature)."""

from __future__ import annotations

import hashlib
import os
import sys
import time
from importlib import metadata
from pathlib import Path
from typing import Any

RACY_NS = 2_000_000_000
"""A file changed this close to the signature (ns) is in doubt: FAT keeps mtimes to 2 s."""

MAX_FILES = 10_000
"""A directory with more files than this is not signed (a model directory holds tens)."""

LIBRARIES = ("torch", "transformers", "safetensors", "accelerate", "huggingface_hub", "numpy", "tokenizers", "datasets")
"""The libraries a load goes through: another version may build, cast or fingerprint the model otherwise, or
encode (tokenizers) or read (datasets: gsm8k, humaneval) the prompts whose lengths the activation probe takes."""

_CODE: list[str] = []  # the advisor code's digest, computed once per process


def load_signature(spec: str, device: str) -> dict[str, Any] | None:
    """The signature of loading `spec` (canonical, checked) on `device` with this code, or None where any part
    is unknown or in doubt (then nothing is shortened)."""
    from advisor.models import BUNDLED_DIR, spec_path

    if spec.startswith("tiny:"):
        model: Any = spec
    else:
        path = BUNDLED_DIR if spec == "bundled" else spec_path(spec)
        model = directory_signature(path) if path.is_dir() else None
    env = _environment(device)
    if model is None or env is None:
        return None
    return {"model": model, **env}


def directory_signature(path: Path) -> dict[str, Any] | None:
    """Every file under `path` as the file system has it (see the module's docstring), or None."""
    root = path.resolve()
    files: list[list[Any]] = []
    for top, dirs, names in os.walk(root):
        dirs.sort()
        for name in sorted(names):
            full = Path(top) / name
            try:
                s = full.stat()
                link = os.readlink(full) if full.is_symlink() else None
                digest = _content_digest(full) if name == "config.json" or name.endswith(".safetensors") else None
            except OSError:
                return None
            files.append([str(full.relative_to(root)), s.st_size, s.st_mtime_ns, s.st_ctime_ns, s.st_ino, s.st_dev,
                          link, digest])
            if len(files) > MAX_FILES:
                return None
    now = time.time_ns()
    if not files or any(max(f[2], f[3]) > now - RACY_NS for f in files):
        return None
    return {"path": str(root), "files": files}


def _content_digest(path: Path) -> str | None:
    """sha256 of config.json, or of a safetensors file's header (its 8-byte length and JSON); None if unreadable."""
    with open(path, "rb") as f:
        if path.name == "config.json":
            return hashlib.sha256(f.read()).hexdigest()
        head = f.read(8)
        if len(head) < 8:
            return None
        n = int.from_bytes(head, "little")
        if n > 100_000_000:
            return None
        return hashlib.sha256(head + f.read(n)).hexdigest()


def _environment(device: str) -> dict[str, Any] | None:
    """The code, libraries and device a load runs with, or None where the device's identity cannot be read."""
    if not _CODE:
        h = hashlib.sha256()
        root = Path(__file__).resolve().parents[1]
        for p in sorted(root.rglob("*")):
            if p.suffix in (".py", ".toml", ".json") and "__pycache__" not in p.parts and p.is_file():
                h.update(str(p.relative_to(root)).encode() + b"\0" + p.read_bytes() + b"\0")
        _CODE.append(h.hexdigest())
    libs = {}
    for name in LIBRARIES:
        try:
            libs[name] = metadata.version(name)
        except metadata.PackageNotFoundError:
            libs[name] = None
    env: dict[str, Any] = {"code": _CODE[0], "python": sys.version, "libraries": libs, "device": device}
    if device.split(":")[0].strip().lower() != "cpu":
        gpus = _gpu_identity()
        if gpus is None:
            return None
        env["gpus"] = gpus
    return env


def _gpu_identity() -> dict[str, Any] | None:
    """The NVIDIA driver's version, each GPU's information and the variables that number them for CUDA, or None."""
    proc = Path("/proc/driver/nvidia")
    try:
        infos = [p.read_text() for p in sorted((proc / "gpus").glob("*/information"))]
        version = (proc / "version").read_text()
    except OSError:
        return None
    if not infos:
        return None
    return {"driver": version, "gpus": infos,
            "env": {k: os.environ.get(k) for k in ("CUDA_VISIBLE_DEVICES", "CUDA_DEVICE_ORDER")}}
