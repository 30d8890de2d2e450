"""Format names and exact byte counts, without torch.

Kept apart from `formats.py` so that read-only commands (recommend, export, report) can canonicalise a plan's
format names and count expert bytes without importing torch. `formats.py` builds its quantizers on these specs
and its tests check that every stored tensor adds up to exactly `nbytes(shape)`.

Name grammar: ``KIND[:gN][:sym|:asym]``.

* ``fp32``, ``fp16``, ``bf16``: dense payload, no scales.
* ``int8``: weight-only, per-output-row symmetric; int8 payload + one fp32 scale per row.
* ``fp8``: float8 e4m3 payload + one fp32 scale per row (fp32 because CUDA's scaled matmuls take fp32 scales).
* ``int4`` / ``int3`` / ``int2``: group-wise along the input dimension (default group 128), asymmetric by
  default (fp16 scale + fp16 minimum per group; ``:sym`` keeps the fp16 scale only). Values are bit-packed
  densely per row (int4: 2 per byte, int3: 8 per 3 bytes, int2: 4 per byte). Rows are padded to a multiple of
  8 values so every packed row ends on a byte; that padding is stored, so it is counted. A row whose length is
  not a multiple of the group ends in one shorter group (with its own scale), so small layers are not padded
  to a whole group.
* ``nf4``: bitsandbytes NF4, blocks of 64 (``nf4:g128`` etc.) over the *flattened* tensor: ceil(n/2) payload
  bytes + one fp32 absmax per block. The 16-entry NF4 code table is a constant of the format, not stored per
  tensor.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

from advisor.errors import UserError
from advisor.units import DTYPE_FORMATS

DENSE_BYTES = {"fp32": 4, "fp16": 2, "bf16": 2}
GROUPED_BITS = {"int4": 4, "int3": 3, "int2": 2}
DEFAULT_GROUP = {"int4": 128, "int3": 128, "int2": 128, "nf4": 64}
NF4_BLOCKS = (32, 64, 128, 256, 512, 1024, 2048, 4096)
KINDS = ("bf16", "fp16", "fp32", "int8", "fp8", "int4", "nf4", "int3", "int2")
SCALE_BYTES = 2  # fp16 scale (and fp16 minimum) per group of the grouped integer formats
ROW_SCALE_BYTES = 4  # fp32 scale per row for int8 and fp8


@dataclass(frozen=True)
class FormatSpec:
    """A parsed format name: what is stored, and therefore how many bytes a weight of a given shape takes."""

    kind: str
    group: int | None = None
    symmetric: bool = True

    @property
    def name(self) -> str:
        """Canonical name: defaults are left out, so "int4:g128:asym" and "int4" are the same format."""
        parts = [self.kind]
        if self.group is not None and self.group != DEFAULT_GROUP.get(self.kind):
            parts.append(f"g{self.group}")
        if self.kind in GROUPED_BITS and self.symmetric:
            parts.append("sym")
        return ":".join(parts)

    @property
    def bits(self) -> int:
        """Payload bits per weight (scales and padding not included)."""
        if self.kind in DENSE_BYTES:
            return 8 * DENSE_BYTES[self.kind]
        if self.kind in ("int8", "fp8"):
            return 8
        if self.kind == "nf4":
            return 4
        return GROUPED_BITS[self.kind]

    def padded_in(self, in_features: int) -> int:
        """Stored row length of a grouped integer format: padded to a multiple of 8 values (whole bytes)."""
        return math.ceil(in_features / 8) * 8

    def n_groups(self, in_features: int) -> int:
        """Groups per row; the last one is shorter when the group does not divide the row."""
        assert self.group is not None
        return math.ceil(in_features / self.group)

    def nbytes(self, shape: tuple[int, ...] | list[int]) -> int:
        """Exact bytes of a quantized [out, in] weight: payload + scales/zeros (+ stored padding)."""
        if len(shape) != 2:
            raise ValueError(f"expected a 2-D weight shape [out, in], got {tuple(shape)}")
        rows, cols = int(shape[0]), int(shape[1])
        if self.kind in DENSE_BYTES:
            return rows * cols * DENSE_BYTES[self.kind]
        if self.kind in ("int8", "fp8"):
            return rows * cols + rows * ROW_SCALE_BYTES
        if self.kind == "nf4":
            n = rows * cols
            return math.ceil(n / 2) + 4 * math.ceil(n / self.group)
        per_group = SCALE_BYTES if self.symmetric else 2 * SCALE_BYTES
        return rows * (self.padded_in(cols) * self.bits // 8) + rows * self.n_groups(cols) * per_group


def _bad(name: str, why: str) -> UserError:
    return UserError(
        f"unknown precision format '{name}' ({why}); available: {', '.join(KINDS)} "
        "(grouped ones take ':gN' and ':sym', e.g. int4:g64)"
    )


def parse_format(name: str) -> FormatSpec:
    """Parse a format name such as "int8", "int4:g64", "int3:g32:sym", "nf4:g128" (`UserError` if bad)."""
    if not isinstance(name, str) or not name.strip():
        raise _bad(str(name), "empty")
    parts = [p.strip() for p in name.strip().lower().split(":")]
    kind, options = parts[0], parts[1:]
    kind = {**DTYPE_FORMATS, "fp8_e4m3": "fp8"}.get(kind, kind)
    if kind not in KINDS:
        raise _bad(name, f"no format '{kind}'")
    group = DEFAULT_GROUP.get(kind)
    symmetric = kind not in GROUPED_BITS
    for opt in options:
        if opt.startswith("g") and opt[1:].isdigit() and kind in DEFAULT_GROUP:
            group = int(opt[1:])
        elif opt in ("sym", "asym") and kind in GROUPED_BITS:
            symmetric = opt == "sym"
        else:
            raise _bad(name, f"option '{opt}' does not apply to {kind}")
    if kind == "nf4" and group not in NF4_BLOCKS:
        raise _bad(name, f"nf4 block size must be one of {NF4_BLOCKS}")
    if kind in GROUPED_BITS and (group is None or group <= 0 or group % 8):
        raise _bad(name, "group size must be a positive multiple of 8")
    return FormatSpec(kind=kind, group=group, symmetric=symmetric)


def canonical_name(name: str) -> str:
    """The canonical spelling of a format name (raises `UserError` if it is not one)."""
    return parse_format(name).name


def format_nbytes(name: str, shape: tuple[int, ...] | list[int]) -> int:
    """Exact bytes of an [out, in] weight stored in format `name` (torch-free)."""
    return parse_format(name).nbytes(shape)


def expert_nbytes_of(name: str, hidden: int, intermediate: int) -> int:
    """Exact bytes of one SwiGLU expert (gate/up [I, H], down [H, I]) in format `name` (torch-free)."""
    spec = parse_format(name)
    return 2 * spec.nbytes((intermediate, hidden)) + spec.nbytes((hidden, intermediate))
