"""Export: render one stored front point for a runtime (llama.cpp, HF, vLLM, KTransformers/SGLang, JSON),
registered by name in `base.TARGETS`.

Read-only and torch-free: may import `advisor.results`, `advisor.quant.spec`/`plan` and the leaf modules
(`errors`, `files`, `registry`); never the tuner, torch or optuna.
"""
