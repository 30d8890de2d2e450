"""One routed expert (SwiGLU gate/up/down) held in a precision format."""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass

import torch

from advisor.models.experts import ExpertFn, ExpertWeights
from advisor.quant.formats import Format, QTensor, get_format
from advisor.quant.spec import expert_nbytes_of


@dataclass
class QuantizedExpert:
    """gate/up [I, H] and down [H, I] as `QTensor`s; `nbytes` is what storing or copying the expert costs."""

    gate: QTensor
    up: QTensor
    down: QTensor

    @property
    def nbytes(self) -> int:
        return self.gate.nbytes + self.up.nbytes + self.down.nbytes

    @property
    def format(self) -> Format:
        return self.gate.format

    def to(self, device: str | torch.device, non_blocking: bool = False) -> QuantizedExpert:
        return QuantizedExpert(
            *(t.to(device, non_blocking=non_blocking) for t in (self.gate, self.up, self.down))
        )

    def pin_memory(self) -> QuantizedExpert:
        return QuantizedExpert(self.gate.pin_memory(), self.up.pin_memory(), self.down.pin_memory())

    def fn(self, act: Callable[[torch.Tensor], torch.Tensor]) -> ExpertFn:
        """The expert as a function of activations [n, H] -> [n, H], computed in the activations' dtype."""

        def expert(x: torch.Tensor) -> torch.Tensor:
            return self.down.linear(act(self.gate.linear(x)) * self.up.linear(x))

        return expert

    def dequantize(self, dtype: torch.dtype = torch.float32) -> ExpertWeights:
        return ExpertWeights(
            gate=self.gate.dequantize(dtype), up=self.up.dequantize(dtype), down=self.down.dequantize(dtype)
        )


def quantize_expert(w: ExpertWeights, fmt: Format | str) -> QuantizedExpert:
    """Quantize the three projections of one expert to `fmt` (a `Format` or a name such as "int4:g64")."""
    f = get_format(fmt)
    return QuantizedExpert(gate=f.quantize(w.gate), up=f.quantize(w.up), down=f.quantize(w.down))


def expert_nbytes(fmt: Format | str, hidden: int, intermediate: int) -> int:
    """Exact bytes of one expert (hidden H, expert FFN I) in `fmt`: payload + scales/zeros."""
    name = fmt.name if isinstance(fmt, Format) else fmt
    return expert_nbytes_of(name, hidden, intermediate)
