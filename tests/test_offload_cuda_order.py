"""The offload runtime's CUDA stream ordering, checked on a CPU with a fake torch.cuda (no GPU needed).

On CUDA every copy runs on a side stream and the compute stream waits only for the copies it needs; a missing
`wait_event` (compute reading a slot before its copy is done) or `wait_stream` (a copy overwriting a slot that
queued compute still reads) is a silent data race on a GPU and invisible on a CPU, where the same code copies
in line. Here the CPU runs the runtime's CUDA branch against fake streams and events that keep the ordering a GPU
would have: a copy on the side stream is pending until the compute stream waits for an event recorded after it,
and every op computed meanwhile is checked against the storages it touches.
"""

from __future__ import annotations

import contextlib

import pytest
import torch
from torch.utils._python_dispatch import TorchDispatchMode
from torch.utils._pytree import tree_leaves

from advisor.models.generate import generate
from tests.offload_helpers import GEN_KW, prompt_ids, tiny_llada


class _Stream:
    def __init__(self, name: str) -> None:
        self.name, self.ops, self.waited = name, 0, 0  # waited: the other stream's ops this one waits for

    def wait_event(self, event: _Event) -> None:
        self.waited = max(self.waited, event.at)

    def wait_stream(self, other: _Stream) -> None:
        self.waited = max(self.waited, other.ops)


class _Event:
    def __init__(self, enable_timing: bool = False) -> None:
        self.at = 0

    def record(self, stream: _Stream | None = None) -> None:
        self.at = (stream or _GPU.current).ops

    def synchronize(self) -> None:
        pass

    def elapsed_time(self, other: _Event) -> float:
        return 0.5


class _Gpu(TorchDispatchMode):
    """Two streams; ops run on the CPU at once, their order checked as a GPU would queue them."""

    def __init__(self) -> None:
        super().__init__()
        self.compute, self.side = _Stream("compute"), _Stream("side")
        self.current = self.compute
        self.written: dict[int, int] = {}  # storage -> the side stream's op that last wrote it
        self.read: dict[int, int] = {}  # storage -> the compute stream's last op that touched it
        self.races: list[str] = []

    def __torch_dispatch__(self, func, types, args=(), kwargs=None):
        if func.is_view or func in (torch.ops.aten.empty.memory_format, torch.ops.aten.detach.default):
            return func(*args, **(kwargs or {}))
        touched = {t.untyped_storage().data_ptr() for t in tree_leaves((args, kwargs)) if isinstance(t, torch.Tensor)}
        s = self.current
        s.ops += 1
        if s is self.side:
            dst = args[0].untyped_storage().data_ptr()
            if self.read.get(dst, 0) > s.waited:
                self.races.append(f"copy over a storage queued compute still reads ({func})")
            self.written[dst] = s.ops
        else:
            for ptr in touched:
                if self.written.get(ptr, 0) > s.waited:
                    self.races.append(f"{func} reads a storage before its copy is waited for")
                self.read[ptr] = s.ops
        return func(*args, **(kwargs or {}))


_GPU: _Gpu


@pytest.fixture()
def fake_cuda(monkeypatch):
    global _GPU
    _GPU = _Gpu()

    @contextlib.contextmanager
    def stream(s):
        before, _GPU.current = _GPU.current, s
        try:
            yield
        finally:
            _GPU.current = before

    monkeypatch.setattr(torch.cuda, "Stream", lambda device=None: _GPU.side)
    monkeypatch.setattr(torch.cuda, "Event", _Event)
    monkeypatch.setattr(torch.cuda, "current_stream", lambda device=None: _GPU.compute)
    monkeypatch.setattr(torch.cuda, "stream", stream)
    monkeypatch.setattr(torch.cuda, "synchronize", lambda device=None: None)
    return _GPU


def _on_fake_cuda(rt) -> None:
    """The runtime's CUDA state (what __init__ makes when its device is cuda) over its CPU slot pool."""
    rt.cuda = True
    rt.copy_stream = torch.cuda.Stream(device=rt.device)
    rt._events, rt._ready = [], [None for _ in rt.moe]


@pytest.mark.parametrize(("prefetch", "miss", "overlap"), [("lookahead", "copy", False), ("prev_step", "cpu", True)])
def test_compute_waits_for_every_copy_it_reads_and_copies_wait_for_compute(fake_cuda, prefetch, miss, overlap):
    from advisor.offload.runtime import OffloadRuntime

    loaded = tiny_llada(num_experts=16, top_k=2)
    ids = prompt_ids()
    ref = generate(loaded, ids, **GEN_KW)
    rt = OffloadRuntime(loaded, "fp32", slots_per_layer=4, policy="lru", prefetch=prefetch, miss=miss,
                        overlap=overlap)
    _on_fake_cuda(rt)
    try:
        with fake_cuda:
            out = generate(loaded, ids, on_forward=rt.on_forward, **GEN_KW)
        st, rep = rt.stats(), rt.overlap_report()
    finally:
        rt.close()
    assert torch.equal(out, ref)
    assert st.misses > 0 and st.transfer_source == "measured:cuda-events" and st.transfer_ms > 0
    assert fake_cuda.side.ops > 0 and fake_cuda.races == [], fake_cuda.races[:3]
    # CPU experts beside the device's: the device side timed by CUDA events (combine's CUDA branch ran)
    assert (rep["cpu"] > 0 and rep["device"] > 0 and "cuda-events" in rep["source"]) == overlap, rep
