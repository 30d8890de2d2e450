"""Peak bytes held by the tensors torch creates while a block of code runs (CPU, any allocator): the meter the
activation probe uses off CUDA (`advisor.models.memory.HeldBytes`), one definition for the tests and the probe."""

from __future__ import annotations

from advisor.models.memory import HeldBytes

__all__ = ["HeldBytes"]
