"""Peak bytes held by the tensors torch creates while a block of code runs (CPU, any allocator).

`HeldBytes` is a dispatch mode: every tensor an aten op returns is counted, by its storage, from its creation
until the last Python tensor on that storage is gone (views share their base's count). Weights and inputs made
before the block are not counted. Deterministic and allocator-independent, unlike RSS."""

from __future__ import annotations

import weakref

import torch
from torch.utils._python_dispatch import TorchDispatchMode
from torch.utils._pytree import tree_leaves


class HeldBytes(TorchDispatchMode):
    def __init__(self) -> None:
        super().__init__()
        self.now = self.peak = self.largest = 0
        self._refs: dict[tuple[str, int], int] = {}

    def _drop(self, key: tuple[str, int], nbytes: int) -> None:
        self._refs[key] -= 1
        if not self._refs[key]:
            del self._refs[key]
            self.now -= nbytes

    def __torch_dispatch__(self, func, types, args=(), kwargs=None):
        out = func(*args, **(kwargs or {}))
        for t in tree_leaves(out):
            if not isinstance(t, torch.Tensor):
                continue
            storage = t.untyped_storage()
            nbytes = storage.nbytes()
            if not nbytes:
                continue
            key = (str(t.device), storage.data_ptr())
            if key not in self._refs:
                self._refs[key] = 0
                self.now += nbytes
                self.peak = max(self.peak, self.now)
                self.largest = max(self.largest, nbytes)
            self._refs[key] += 1
            weakref.finalize(t, self._drop, key, nbytes)
        return out
