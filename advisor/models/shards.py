"""A model directory's safetensors files, checked without torch: every shard its index names is there and holds
the keys the index says, and no file is truncated (each header's data offsets lie inside the file).

`advisor.models.checkpoint.Checkpoint` reads its tensors from here; the commands that load a model check a local
directory here before torch imports (`advisor.models.check_weights`), so a broken download is one line, said before
the seconds of imports and the busy-host note, not after them.
"""

from __future__ import annotations

import json
import math
import struct
from dataclasses import dataclass
from pathlib import Path

from advisor.errors import UserError
from advisor.parsing import loads_json

INDEX_NAME = "model.safetensors.index.json"
ITEMSIZE = {"BF16": 2, "F16": 2, "F32": 4, "F64": 8, "I64": 8, "I32": 4, "I16": 2, "I8": 1, "U8": 1, "BOOL": 1,
            "F8_E4M3": 1, "F8_E5M2": 1}
"""Bytes per element of each safetensors dtype this tool reads (`checkpoint` maps each to its torch dtype)."""


@dataclass(frozen=True)
class StoredTensor:
    """Where one tensor lies: its file, safetensors dtype name, shape and byte range (absolute offsets in the file)."""

    file: Path
    dtype: str
    shape: tuple[int, ...]
    start: int
    end: int


def read_header(path: Path) -> dict[str, StoredTensor]:
    """The tensors of one .safetensors file, checked against the file's size (a truncated download fails)."""
    try:
        size = path.stat().st_size
        with open(path, "rb") as f:
            head = f.read(8)
            if len(head) < 8:
                raise UserError(f"{path} is truncated (no safetensors header); re-download the checkpoint")
            (n,) = struct.unpack("<Q", head)
            if n > min(size - 8, 100 * 2**20):
                raise UserError(f"{path} is truncated or not a safetensors file (header of {n} bytes in a "
                                f"{size}-byte file); re-download the checkpoint")
            meta = loads_json(f.read(n))
    except OSError as e:
        raise UserError(f"cannot read {path} ({e.strerror or e})") from e
    except (json.JSONDecodeError, UnicodeDecodeError) as e:
        raise UserError(f"{path} has a corrupt safetensors header ({e}); re-download the checkpoint") from e
    base = 8 + n
    out: dict[str, StoredTensor] = {}
    if not isinstance(meta, dict):
        raise UserError(f"{path} has a corrupt safetensors header (not a JSON object); re-download the checkpoint")
    for key, v in meta.items():
        if key == "__metadata__":
            continue
        try:
            dtype = str(v.get("dtype"))
            a, b = (int(x) for x in v["data_offsets"])
            shape = tuple(int(s) for s in v["shape"])
        except (AttributeError, KeyError, TypeError, ValueError) as e:
            raise UserError(f"{path} has a corrupt safetensors header (tensor {key}: {type(e).__name__} {e}); "
                            "re-download the checkpoint") from e
        if dtype not in ITEMSIZE:
            raise UserError(f"{path}: tensor {key} has dtype {v.get('dtype')}, which this tool cannot read")
        if not 0 <= a <= b or b - a != math.prod(shape) * ITEMSIZE[dtype]:
            raise UserError(f"{path} has a corrupt safetensors header (tensor {key}: bytes {a}-{b} for shape "
                            f"{list(shape)} of {v.get('dtype')}); re-download the checkpoint")
        if base + b > size:
            raise UserError(f"{path} is truncated: tensor {key} ends at byte {base + b} but the file has {size} "
                            "bytes; re-download the checkpoint")
        out[key] = StoredTensor(path, dtype, shape, base + a, base + b)
    return out


def has_safetensors(directory: Path) -> bool:
    """Whether a model directory's weights are safetensors, which the load reads (and checks) itself: files on disk,
    or an index naming shards (all of them missing is a missing shard, said by `stored_tensors` in one line, not a
    transformers FileNotFoundError after the model was built)."""
    return any(directory.glob("*.safetensors")) or (directory / INDEX_NAME).is_file()


def stored_tensors(directory: Path) -> dict[str, StoredTensor]:
    """Every tensor of a model directory (its model.safetensors, or the shards its index names), its files checked: a
    missing shard, a key not in the shard the index names, a truncated or corrupt file is one `UserError`.
    model.safetensors is read alone wherever it is there, index or not, as transformers loads it: an index beside it
    is another save's (transformers' save_pretrained of one file leaves an earlier sharded save's index behind)."""
    tensors: dict[str, StoredTensor] = {}
    index = directory / INDEX_NAME
    if index.is_file() and not (directory / "model.safetensors").is_file():
        try:
            weight_map: dict[str, str] = loads_json(index.read_text())["weight_map"]
            if not all(isinstance(s, str) for s in weight_map.values()):  # shard file names
                raise TypeError("weight_map must map tensor names to shard file names")
        except (OSError, ValueError, KeyError, TypeError, AttributeError) as e:  # ValueError: not UTF-8, too
            raise UserError(f"{index} is not a valid safetensors index ({e}); re-download the checkpoint") from e
        shards = sorted(set(weight_map.values()))
        missing = [s for s in shards if not (directory / s).is_file()]
        if missing:
            alone = (f" (`advisor inspect {directory}` counts its sizes, and what fits a --budget, from config.json "
                     "alone)") if len(missing) == len(shards) else ""
            raise UserError(f"{directory} lacks {len(missing)} of the {len(shards)} shards its index names "
                            f"(first: {missing[0]}); download the missing files{alone}")
        headers = {s: read_header(directory / s) for s in shards}
        for key, shard in weight_map.items():
            if key not in headers[shard]:
                raise UserError(f"shard {shard} does not hold {key} although {INDEX_NAME} says so: the shards "
                                "and the index come from different downloads; re-download the checkpoint")
            tensors[key] = headers[shard][key]
    else:
        files = sorted(directory.glob("*.safetensors"))
        if not files:
            raise UserError(f"{directory} has no *.safetensors weights (offloaded loading reads safetensors)")
        if not (directory / "model.safetensors").is_file():  # shards whose index did not arrive
            more = f" and {len(files) - 1} more" if len(files) > 1 else ""
            raise UserError(f"{directory} holds {files[0].name}{more} but no {INDEX_NAME}, the index transformers "
                            f"needs to load shards (nor one model.safetensors): an unfinished download? Download "
                            f"{INDEX_NAME} too, or re-download the checkpoint")
        # model.safetensors alone, as transformers loads it: any other *.safetensors beside it (a stray shard of
        # another download) is not the model's, and read too it replaced the file's tensors of the same name
        tensors.update(read_header(directory / "model.safetensors"))
    return tensors
