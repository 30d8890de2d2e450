"""Offload: the experts cache as users run it - expert store, slot/prefetch grammar (`slots`), eviction
policies (`policies.POLICIES`), counters, the live runtime, routing traces and the simulator (with Belady).

May import `advisor.models`, `advisor.quant`, `advisor.hardware` (the transfer-time formula) and the leaf
modules (`errors`, `files`, `registry`).
"""
