"""Peak bytes of the tensors a block of code holds: what an activation probe measures, on a GPU and on the CPU.

A meter is a context manager around the code; `open()` and `close()` mark the windows whose peak counts (the
decoding step a probe measures, after the state it needs was built), and `peak` is the most held in any window,
above what was held when the meter started (the weights, on either device, are not counted).

* `CudaPeak`: the CUDA caching allocator's `max_memory_allocated`, reset as each window opens.
* `HeldBytes` (any device; what a CPU probe uses): a dispatch mode that counts every tensor an aten op returns, by its
  storage, from its creation until the last Python tensor on that storage is gone. Views share their base's count,
  and a view of a tensor made before the meter (a weight's transpose) counts nothing. Deterministic and
  allocator-independent, unlike RSS; scratch memory a kernel allocates and frees inside one op is not seen.
"""

from __future__ import annotations

import weakref
from typing import Any

import torch
from torch.utils._python_dispatch import TorchDispatchMode
from torch.utils._pytree import tree_leaves


class HeldBytes(TorchDispatchMode):
    """`now`: bytes held by tensors made while the mode is on; `peak`: the most `now` reached in any window
    (without `open()`, one window from the start); `largest`: the largest storage made."""

    name = "live-tensors"

    def __init__(self) -> None:
        super().__init__()
        self.now = self.largest = 0
        self._peak = 0
        self._window: int | None = 0  # the most `now` in the open window (open from the start until `open()`)
        self._explicit = False
        self._refs: dict[tuple[str, int], int] = {}

    @property
    def peak(self) -> int:
        return max(self._peak, self._window or 0)

    def open(self) -> None:
        """Start a window: its peak counts from what is held now."""
        if not self._explicit:  # the implicit window from the start does not count once windows are marked
            self._explicit, self._window = True, None
        self._window = self.now

    def close(self) -> None:
        if self._window is not None:
            self._peak = max(self._peak, self._window)
        self._window = None

    def _drop(self, key: tuple[str, int], nbytes: int) -> None:
        self._refs[key] -= 1
        if not self._refs[key]:
            del self._refs[key]
            self.now -= nbytes

    def __torch_dispatch__(self, func, types, args=(), kwargs=None):
        out = func(*args, **(kwargs or {}))
        inputs = None
        for t in tree_leaves(out):
            if not isinstance(t, torch.Tensor):
                continue
            storage = t.untyped_storage()
            nbytes = storage.nbytes()
            if not nbytes:
                continue
            key = (str(t.device), storage.data_ptr())
            if key not in self._refs:
                if inputs is None:
                    inputs = {(str(a.device), a.untyped_storage().data_ptr())
                              for a in tree_leaves((args, kwargs)) if isinstance(a, torch.Tensor)}
                if key in inputs:  # a view of (or in place on) a tensor made before the mode: no new bytes
                    continue
                self._refs[key] = 0
                self.now += nbytes
                self.largest = max(self.largest, nbytes)
                if self._window is not None:
                    self._window = max(self._window, self.now)
            self._refs[key] += 1
            weakref.finalize(t, self._drop, key, nbytes)
        return out


class CudaPeak:
    """The CUDA allocator's peak above what was allocated when the meter started, in the windows `open()` and
    `close()` mark (without them, from the start)."""

    name = "cuda-allocator"

    def __init__(self, device: torch.device) -> None:
        self.device = device
        self.base = self._peak = 0
        self._open = False
        self._explicit = False

    def __enter__(self) -> CudaPeak:
        torch.cuda.synchronize(self.device)
        self.base = torch.cuda.memory_allocated(self.device)
        torch.cuda.reset_peak_memory_stats(self.device)
        self._open = True
        return self

    def __exit__(self, *exc: Any) -> None:
        self.close()

    @property
    def peak(self) -> int:
        return self._peak

    def open(self) -> None:
        if not self._explicit:
            self._explicit, self._open = True, False
        torch.cuda.synchronize(self.device)
        torch.cuda.reset_peak_memory_stats(self.device)
        self._open = True

    def close(self) -> None:
        if self._open:
            torch.cuda.synchronize(self.device)
            self._peak = max(self._peak, int(torch.cuda.max_memory_allocated(self.device) - self.base))
        self._open = False


def peak_meter(device: torch.device) -> HeldBytes | CudaPeak:
    """The meter of a probe on `device`: the allocator's peak on CUDA, the tensors held elsewhere."""
    return CudaPeak(device) if device.type == "cuda" else HeldBytes()
