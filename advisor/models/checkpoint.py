"""Read a safetensors checkpoint one tensor at a time, without ever holding the whole model.

A model bigger than the GPU (and often than host RAM at full precision) is loaded by reading its routed
experts straight from the shards, one expert at a time, into the quantized host store. This
module owns that reading:

* `Checkpoint` validates a directory before anything is loaded: the index's shards exist, every key the
  index names is in its shard, no file is truncated (each header's data offsets lie inside the file) - checks
  that need no torch, made in `advisor.models.shards`.
* A tensor (or one expert's slice of a fused 3-D tensor) is read with one positional read (`os.preadv`)
  straight into the tensor it becomes: the file's pages stay in the OS page cache, not in this process, so
  reading every expert once never leaves the checkpoint resident (peak RSS stays the store plus one expert).
  Readers that read experts every forward (an offloaded model computing at full precision: `advisor trace
  --offload`, the fidelity reference) read into staging buffers that are reused (`read_staged`), one expert
  at a time, when the expert computes.
  Why not a memory map, as before: copying out of one and dropping its pages (`madvise(MADV_DONTNEED)`)
  page-faulted every read again, torch ran each copy on all its threads, and every routed expert of a layer
  was read up front into fresh allocations (fresh pages again). On 2 shared CPU cores that made `advisor trace
  --offload` of a LLaDA-MoE-shaped checkpoint 1.3x (idle host) to 3x (loaded host) the resident trace's time;
  now the only difference is the read itself, at memory-copy speed (`benchmarks/big_model.py --trace-only`).
* `CheckpointExperts` is the expert view (`advisor.models.experts.ExpertSet`) of one MoE layer whose weights
  stay in the checkpoint: fused keys (`...experts.gate_up_proj` [E, 2I, H]) are sliced per expert, per-expert
  keys (the LLaDA list layout, and the per-expert form transformers saves Qwen3-MoE/OLMoE/Mixtral in) are
  read key by key.
"""

from __future__ import annotations

import math
import os
import threading
import time
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch

from advisor.errors import UserError
from advisor.models.experts import ExpertFn, ExpertWeights, swiglu
from advisor.models.shards import stored_tensors

_DTYPES = {  # the torch dtype of each safetensors dtype `shards.ITEMSIZE` reads
    "BF16": torch.bfloat16, "F16": torch.float16, "F32": torch.float32, "F64": torch.float64,
    "I64": torch.int64, "I32": torch.int32, "I16": torch.int16, "I8": torch.int8, "U8": torch.uint8,
    "BOOL": torch.bool, "F8_E4M3": torch.float8_e4m3fn, "F8_E5M2": torch.float8_e5m2,
}


@dataclass(frozen=True)
class TensorInfo:
    """Where one tensor lies: its file, dtype, shape and byte range (absolute offsets in the file)."""

    file: Path
    dtype: torch.dtype
    shape: tuple[int, ...]
    start: int
    end: int

    @property
    def nbytes(self) -> int:
        return self.end - self.start


class Checkpoint:
    """Every tensor of a model directory (single file or sharded with an index), read lazily, one tensor at a time."""

    def __init__(self, directory: str | Path):
        self.dir = Path(directory)
        self.tensors = {key: TensorInfo(t.file, _DTYPES[t.dtype], t.shape, t.start, t.end)
                        for key, t in stored_tensors(self.dir).items()}
        self._files: dict[Path, Any] = {}
        self._staging: dict[str, torch.Tensor] = {}
        self.lock = threading.Lock()  # held across a staged read and the use of what it read
        self.bytes_read = 0  # counted: every byte `read`/`read_staged` copied out of the files
        self.read_seconds = 0.0  # measured (wall clock) time in those reads

    # -- sizes -------------------------------------------------------------------------------------------
    @property
    def nbytes(self) -> int:
        return sum(t.nbytes for t in self.tensors.values())

    @property
    def fp16_nbytes(self) -> int:
        """`nbytes` at 16 bits per element, whatever the stored dtype: what a share of the model's FP16 bytes
        (`advisor tune --budgets 25%`) is a share of before the model is loaded."""
        return 2 * sum(math.prod(t.shape) for t in self.tensors.values())

    # -- reading -----------------------------------------------------------------------------------------
    def _file(self, path: Path) -> Any:
        if path not in self._files:
            self._files[path] = open(path, "rb", buffering=0)  # noqa: SIM115 - open while the model lives
        return self._files[path]

    def _locate(self, key: str, index: int | None) -> tuple[TensorInfo, int, tuple[int, ...]]:
        info = self.tensors[key]
        if index is None:
            return info, info.start, info.shape
        return info, info.start + index * (info.nbytes // info.shape[0]), info.shape[1:]

    def read(self, key: str, *, index: int | None = None, device: torch.device | str = "cpu",
             dtype: torch.dtype | None = None) -> torch.Tensor:
        """A copy of tensor `key` (or of its `index`-th slice along dim 0) on `device`, in `dtype` if given.

        Read from the file straight into a new host tensor (no memory map: see the module docstring), then
        moved or converted only when `device`/`dtype` ask for it."""
        info, start, shape = self._locate(key, index)
        out = torch.empty(shape, dtype=info.dtype)
        self._read_into(info.file, start, out)
        return _moved(out, device, dtype)

    def read_staged(self, key: str, *, slot: str, index: int | None = None, device: torch.device | str = "cpu",
                    dtype: torch.dtype | None = None) -> torch.Tensor:
        """As `read`, but into a host buffer this checkpoint keeps for `slot` and reuses: valid until the next
        staged read of that slot, so hold `lock` from the read until its last use. Why: per-forward readers
        (experts read when they compute) then allocate nothing when they compute in the checkpoint's dtype (else
        one converted copy per read) - a fresh allocation of an expert's size is fresh
        pages, each faulted in on the first write, which cost more than the read itself."""
        info, start, shape = self._locate(key, index)
        buf = self._staging.get(slot)
        if buf is None or tuple(buf.shape) != tuple(shape) or buf.dtype != info.dtype:
            buf = self._staging[slot] = torch.empty(shape, dtype=info.dtype)
        self._read_into(info.file, start, buf)
        return _moved(buf, device, dtype)

    def _read_into(self, path: Path, start: int, out: torch.Tensor) -> None:
        """Fill the contiguous host tensor `out` with the bytes at `start` of `path` (a short read is retried;
        end of file before `out` is full means the file changed since its header was checked)."""
        buf = memoryview(out.reshape(-1).view(torch.uint8).numpy())
        f, done, t0 = self._file(path), 0, time.perf_counter()
        while done < len(buf):
            n = _pread_into(f, buf[done:], start + done)
            if n <= 0:
                raise UserError(f"{path} ended at byte {start + done} while reading a tensor its header places "
                                "there: the file changed or is truncated; re-download the checkpoint")
            done += n
        self.bytes_read += done
        self.read_seconds += time.perf_counter() - t0

    def elements(self, key: str, flat: Sequence[int]) -> bytes:
        """The raw bytes of elements `flat` (flat indices) of tensor `key`, read without copying the tensor."""
        info = self.tensors[key]
        size = torch.empty((), dtype=info.dtype).element_size()
        fd = self._file(info.file).fileno()
        return b"".join(os.pread(fd, size, info.start + i * size) for i in flat)

    def close(self) -> None:
        for f in self._files.values():
            f.close()
        self._files = {}


def _moved(t: torch.Tensor, device: torch.device | str, dtype: torch.dtype | None) -> torch.Tensor:
    """`t` itself when it is already on `device` in `dtype` (or `dtype` is None), else a converted copy."""
    if t.device != torch.device(device) or (dtype is not None and dtype != t.dtype):
        return t.to(device=device, dtype=dtype or t.dtype)
    return t


def _pread_into(f: Any, buf: memoryview, offset: int) -> int:
    """One positional read into `buf` from the unbuffered file `f` (`os.preadv` where the OS has it, else
    seek + readinto): bytes read, 0 at end of file."""
    if hasattr(os, "preadv"):
        return os.preadv(f.fileno(), [buf], offset)
    f.seek(offset)
    return f.readinto(buf) or 0


# ---- key names -------------------------------------------------------------------------------------------

PER_EXPERT = ("gate_proj.weight", "up_proj.weight", "down_proj.weight")


def key_mapping(model_type: str) -> tuple[list[tuple[str, str]], tuple[str, str, str]]:
    """How checkpoint keys become model keys for `model_type`: transformers' renamings (regex, replacement),
    and the per-expert tensor names (gate, up, down) its expert-fusing converters read."""
    try:
        from transformers.conversion_mapping import (
            WeightConverter,
            WeightRenaming,
            get_checkpoint_conversion_mapping,
        )
    except ImportError:
        return [], PER_EXPERT
    renames: list[tuple[str, str]] = []
    names = list(PER_EXPERT)
    for op in get_checkpoint_conversion_mapping(model_type) or []:
        if isinstance(op, WeightRenaming):
            renames += list(zip(op.source_patterns, op.target_patterns, strict=False))
        elif isinstance(op, WeightConverter) and any("experts" in t for t in op.target_patterns):
            tails = [s.split("*.", 1)[1] for s in op.source_patterns if "*." in s]
            if any(t.endswith("gate_up_proj") for t in op.target_patterns) and len(tails) == 2:
                names[0], names[1] = tails
            elif any(t.endswith("down_proj") for t in op.target_patterns) and len(tails) == 1:
                names[2] = tails[0]
    return renames, (names[0], names[1], names[2])


def model_keys(checkpoint: Checkpoint, renames: list[tuple[str, str]]) -> dict[str, str]:
    """Model key -> checkpoint key, after the family's renamings."""
    import re

    out = {}
    for key in checkpoint.tensors:
        new = key
        for pattern, target in renames:
            new = re.sub(pattern, target, new)
        out[new] = key
    return out


# config.json fields of the routed-expert count and width, in the order the families use them (first found wins)
EXPERT_COUNT_KEYS = ("num_experts", "n_routed_experts", "num_local_experts", "moe_num_experts")
EXPERT_WIDTH_KEYS = ("moe_intermediate_size", "expert_intermediate_size", "intermediate_size")


def held_experts(checkpoint: Checkpoint, keys: dict[str, str], names: tuple[str, str, str]
                 ) -> tuple[int, int, int, str] | None:
    """(experts, expert width, hidden size, a checkpoint key) of the routed experts the checkpoint holds, read from
    its headers alone, per-expert (`...experts.{e}.<gate name>`) or fused (`...experts.gate_up_proj`, [E, 2I, H]);
    None when it holds no routed experts in a layout the loader reads. Only floating-point tensors (FP8 included)
    give sizes: a packed one's shape is not the expert's."""
    import re

    per_expert = re.compile(r"^(.*\.experts)\.(\d+)\." + re.escape(names[0]) + "$")
    counts: dict[str, int] = {}
    dims: tuple[int, int, str] | None = None
    for name, key in keys.items():
        if not checkpoint.tensors[key].dtype.is_floating_point:  # packed (bitsandbytes' uint8 [n, 1]): no sizes
            continue
        shape = tuple(checkpoint.tensors[key].shape)
        if name.endswith(".experts.gate_up_proj") and len(shape) == 3:
            counts[name] = shape[0]
            dims = dims or (shape[1] // 2, shape[2], key)
        elif (m := per_expert.match(name)) and len(shape) == 2:
            counts[m.group(1)] = max(counts.get(m.group(1), 0), int(m.group(2)) + 1)
            dims = dims or (shape[0], shape[1], key)
    if not counts or dims is None:
        return None
    return max(counts.values()), dims[0], dims[1], dims[2]


def held_sizes(checkpoint: Checkpoint, keys: dict[str, str]) -> dict[str, tuple[int, str]]:
    """The largest vocabulary, decoder-layer count and dense MLP width the checkpoint's headers show, each with a
    checkpoint key that shows it (model key -> checkpoint key `keys`, as `model_keys`); a size they do not show is
    absent.

    * "vocab": rows of the token embedding or LM head (`embed_tokens`, `word_embeddings`, `wte`, `lm_head`, ...);
    * "layers": 1 + the highest index in a layer list (`<prefix>.layers.{i}.`) that holds routed experts (a key with
      `.experts.` in it: per-expert, fused or packed alike, as only key names count), the longest such list;
    * "dense": rows of a dense MLP in that list (`<prefix>.layers.{i}.mlp.gate_proj.weight`: DeepSeek-V3's and
      LLaDA2's first layers, a LLaDA-MoE layer of `moe_layer_freq` 0, DiffusionGemma's MLP beside its experts).
    Vocabulary and MLP sizes come from floating-point 2-D tensors only (FP8 included): the shape of a packed one
    (GPTQ/AWQ `qweight`, bitsandbytes' uint8 [n, 1]) is not the weight's."""
    import re

    out: dict[str, tuple[int, str]] = {}

    def keep(what: str, size: int, key: str) -> None:
        if size > out.get(what, (0, ""))[0]:
            out[what] = (size, key)

    layer = re.compile(r"^(.*?\.layers)\.(\d+)\.")
    last: dict[str, tuple[int, str]] = {}  # layer-list prefix -> (its highest index, a key of that layer)
    with_experts: set[str] = set()
    for name, key in keys.items():
        if (m := layer.match(name)) is not None:
            if int(m.group(2)) >= last.get(m.group(1), (-1, ""))[0]:
                last[m.group(1)] = (int(m.group(2)), key)
            if ".experts." in name[m.end() - 1:]:
                with_experts.add(m.group(1))
    for prefix in with_experts:
        keep("layers", last[prefix][0] + 1, last[prefix][1])
    dense = re.compile("^(?:" + "|".join(map(re.escape, with_experts)) + r")\.\d+\.mlp\.gate_proj\.weight$")
    embeddings = {"embed_tokens.weight", "word_embeddings.weight", "wte.weight", "embed_in.weight", "lm_head.weight",
                  "embed_out.weight"}
    for name, key in keys.items():
        info = checkpoint.tensors[key]
        if not info.dtype.is_floating_point or len(info.shape) != 2:
            continue
        if ".".join(name.split(".")[-2:]) in embeddings:
            keep("vocab", info.shape[0], key)
        elif with_experts and dense.match(name):
            keep("dense", info.shape[0], key)
    return out


def check_config_sizes(path: Path, raw: dict[str, Any], checkpoint: Checkpoint) -> None:
    """Refuse, in one line and before any model is built, a config.json whose sizes the checkpoint's headers
    contradict: building the model the config describes (num_experts 200000 over a checkpoint of 8, 10**6 decoder
    layers over 2) took minutes or all the memory before any check ran.

    The routed experts' count, width and hidden size must be those of the expert tensors (`held_experts`).
    vocab_size, num_hidden_layers and the dense MLP width (`dense_intermediate_size`, else `intermediate_size` where
    the experts' width has a field of its own) must not exceed what the checkpoint holds (`held_sizes`): a smaller
    value can be valid (a vocabulary padded past config.json's, a multi-token-prediction layer after the decoder
    layers), and a model of it is cheap to build for the loader's own layout check to judge."""
    text = raw.get("text_config") if isinstance(raw.get("text_config"), dict) else raw

    def field(candidates: tuple[str, ...]) -> list[tuple[str, int]]:  # sizes < 1: the build's own one-line refusal
        return [(k, v) for k in candidates
                if isinstance(v := text.get(k), int) and not isinstance(v, bool) and v > 0]

    renames, names = key_mapping(str(raw.get("model_type", "")))
    keys = model_keys(checkpoint, renames)
    fix = "fix that field of config.json or re-download the model"
    where = f"{path / 'config.json'} does not match the checkpoint"

    def shape(key: str) -> str:
        return f"{key} is {list(checkpoint.tensors[key].shape)}"

    held = held_experts(checkpoint, keys, names)
    if held is not None:
        experts, width, hidden, key = held
        for name, value in field(EXPERT_COUNT_KEYS):
            if value != experts:
                raise UserError(f"{where}: {name} is {value} but the checkpoint holds {experts} routed experts per "
                                f"MoE layer (e.g. {key}); {fix}")
        widths = field(EXPERT_WIDTH_KEYS)
        if widths and width not in [v for _, v in widths]:
            raise UserError(f"{where}: {widths[0][0]} is {widths[0][1]} but the checkpoint's experts are {width} "
                            f"wide ({shape(key)}); {fix}")
        size = field(("hidden_size",))
        if size and size[0][1] != hidden:
            raise UserError(f"{where}: hidden_size is {size[0][1]} but the checkpoint's experts take {hidden} "
                            f"({shape(key)}); {fix}")
    sizes = held_sizes(checkpoint, keys)
    own_width = any(k != "intermediate_size" for k, _ in field(EXPERT_WIDTH_KEYS))  # else it is the experts' width
    asked = {"vocab": field(("vocab_size",)), "layers": field(("num_hidden_layers",)),
             "dense": field(("dense_intermediate_size",)) or (field(("intermediate_size",)) if own_width else [])}
    for what, fields in asked.items():
        if not fields or what not in sizes or fields[0][1] <= sizes[what][0]:
            continue
        (name, value), (n, key) = fields[0], sizes[what]
        holds = {"vocab": f"the checkpoint's token embedding and LM head have at most {n} rows ({shape(key)})",
                 "layers": f"the checkpoint holds {n} decoder layers (the last has {key})",
                 "dense": f"the checkpoint's dense MLP layers are {n} wide ({shape(key)})"}[what]
        raise UserError(f"{where}: {name} is {value} but {holds}; {fix}")


class CheckpointExperts:
    """The routed experts of one MoE layer, read from the checkpoint expert by expert (an `ExpertSet`)."""

    def __init__(self, checkpoint: Checkpoint, keys: dict[str, str], module_name: str, inner: Any,
                 names: tuple[str, str, str], *, device: torch.device, dtype: torch.dtype):
        self.checkpoint, self.inner = checkpoint, inner
        self.layout: str = inner.layout
        self.num_experts: int = inner.num_experts
        self.device, self.dtype = device, dtype
        fused = (keys.get(f"{module_name}.gate_up_proj"), keys.get(f"{module_name}.down_proj"))
        self.fused = fused if all(fused) else None
        self.names = names
        self._keys = keys
        self.prefix = module_name
        if self.fused is None:
            for e in range(self.num_experts):
                for name in names:
                    if f"{module_name}.{e}.{name}" not in keys:
                        raise UserError(f"{checkpoint.dir}: no weights for expert {e} of {module_name} "
                                        f"(looked for {module_name}.{e}.{name} and a fused {module_name}.gate_up_proj)")

    def _key(self, e: int, part: int) -> str:
        return self._keys[f"{self.prefix}.{e}.{self.names[part]}"]

    def shapes(self, e: int) -> ExpertWeights:
        """Expert `e` as meta tensors of the shapes and dtype `get` returns: its sizes without reading it."""
        info = self.checkpoint.tensors
        if self.fused is not None:
            two_i, h = info[self.fused[0]].shape[1:]
            dims = [(two_i // 2, h), (two_i // 2, h), info[self.fused[1]].shape[1:]]
        else:
            dims = [info[self._key(e, p)].shape for p in range(3)]
        gate, up, down = (torch.empty(d, device="meta", dtype=self.dtype) for d in dims)
        return ExpertWeights(gate=gate, up=up, down=down)

    def get(self, e: int) -> ExpertWeights:
        return self._read(e, staged=False)

    def _read(self, e: int, *, staged: bool) -> ExpertWeights:
        """Expert `e` read into new tensors, or (`staged`) into the checkpoint's staging buffers."""
        ck = self.checkpoint

        def read(key: str, slot: str, index: int | None = None) -> torch.Tensor:
            if staged:
                return ck.read_staged(key, slot=slot, index=index, device=self.device, dtype=self.dtype)
            return ck.read(key, index=index, device=self.device, dtype=self.dtype)

        if self.fused is not None:
            gate, up = read(self.fused[0], "gate_up", e).chunk(2, dim=0)
            return ExpertWeights(gate=gate, up=up, down=read(self.fused[1], "down", e))
        gate, up, down = (read(self._key(e, p), ("gate", "up", "down")[p]) for p in range(3))
        return ExpertWeights(gate=gate, up=up, down=down)

    def fn(self, e: int) -> ExpertFn:
        """Expert `e` computed from its weights read when it computes, into the checkpoint's reused staging
        buffers (`Checkpoint.read_staged`): a forward allocates nothing for expert weights and holds one expert's
        weights at a time, where reading with `get` up front held every routed expert of the layer in fresh
        allocations (measured: `benchmarks/big_model.py`, section `advisor trace`)."""

        def run(x: torch.Tensor) -> torch.Tensor:
            with self.checkpoint.lock:
                return swiglu(self.act, self._read(e, staged=True))(x)

        return run

    def set(self, e: int, weights: ExpertWeights) -> None:
        raise UserError("the experts of an offloaded model live in its checkpoint and cannot be overwritten")

    def act(self, x: torch.Tensor) -> torch.Tensor:
        return self.inner.act(x)

    def param_elements(self, attr: str, shape: tuple[int, ...], flat: Sequence[int]) -> bytes:
        """Raw bytes of elements of the model's (meta) fused parameter `attr` ('gate_up_proj'/'down_proj'),
        read from wherever the checkpoint keeps them, so an offloaded model fingerprints like a resident one."""
        if self.fused is not None:
            return self.checkpoint.elements(self.fused[0 if attr == "gate_up_proj" else 1], flat)
        out = []
        for i in flat:
            per_expert = shape[1] * shape[2]
            e, rem = divmod(i, per_expert)
            if attr == "gate_up_proj":
                row, col = divmod(rem, shape[2])
                inter = shape[1] // 2
                part, rem = (0, row * shape[2] + col) if row < inter else (1, (row - inter) * shape[2] + col)
            else:
                part = 2
            out.append(self.checkpoint.elements(self._key(e, part), [rem]))
        return b"".join(out)

