"""Commands: the CLI, one module per area (`tune`, `recommend`, `export`, `report`, `evaluate`, `quant`,
`offload`, `models`); each parses options, checks them before any model loads, and calls the domain.

May import every other advisor package; nothing imports it except `advisor.cli`. Heavy imports (torch,
optuna) stay inside command bodies, so `--help` and the read-only commands stay fast.
"""
