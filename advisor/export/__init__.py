"""Export: render one stored trial (a front point, or any complete trial) for a runtime (llama.cpp, HF, vLLM,
KTransformers/SGLang, JSON), registered by name in `base.TARGETS`.

Read-only and torch-free: may import `advisor.results`, `advisor.quant.spec`/`plan` and the leaf modules
(`errors`, `files`, `registry`), and `advisor.offload.policies` (torch-free: TIDE's default tau and refresh
rule); never the tuner, torch or optuna.
"""
